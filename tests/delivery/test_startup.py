"""The one start-up line of `serve` and `worker`: what will happen to built reports."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.cli.runtime import announce_configuration
from app.config import DkimSettings, DnsSettings, ReportSettings, Settings, SmtpSettings
from app.delivery.senders import open_senders, startup_summary
from app.dns.resolver import DnsResolver
from app.dnscheck.dkim import generate_key
from app.resources import Resources
from tests.dns.fake_resolver import FakeResolver


def make_settings(**values: object) -> Settings:
    return Settings(
        database_url=SecretStr("postgresql://unused/"),
        report=ReportSettings(contact_info="tlsrpt@sender.test"),
        smtp=SmtpSettings(host="relay.test", port=587),
        **values,  # type: ignore[arg-type]
    )


async def test_summary_says_what_will_happen(tmp_path: Path) -> None:
    resolver = DnsResolver(DnsSettings())
    key = tmp_path / "k.pem"
    generate_key("sender.test", "s1", key)
    signed = make_settings(dkim=DkimSettings(selector="s1", private_key_file=key))
    senders = open_senders(signed, resolver)
    assert startup_summary(signed, senders) == (
        "sending on: mail reports via relay relay.test:587 (starttls), DKIM domain "
        "sender.test selector s1; https reports posted directly"
    )
    await senders.aclose()
    unsigned = make_settings()
    senders = open_senders(unsigned, resolver)
    assert startup_summary(unsigned, senders) == (
        "sending on: mail reports disabled: no DKIM key; https reports posted directly"
    )
    off = make_settings(send_reports=False)
    assert startup_summary(off, senders).startswith("sending off (TLSRPT_SEND_REPORTS=false)")
    await senders.aclose()


async def test_serve_and_worker_log_it(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from app.db.pool import open_pool

    settings = make_settings()
    pool = await open_pool(database_url, settings.database)
    resources = Resources(
        settings=settings,
        pool=pool,
        resolver=FakeResolver(),
        address_resolver=DnsResolver(settings.dns),
    )
    try:
        with caplog.at_level(logging.INFO, logger="app.cli.runtime"):
            announce_configuration(resources)
    finally:
        await resources.close()
    [line] = [r for r in caplog.records if r.getMessage() == "delivery_configuration"]
    assert line.fields["message"] == (  # type: ignore[attr-defined]
        "sending on: mail reports disabled: no DKIM key; https reports posted directly"
    )
