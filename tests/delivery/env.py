"""A delivery environment for tests: loopback SMTP and HTTPS sinks, a DKIM key, settings
and resources aimed at them, helpers to store reports the way `build_day` does, and
`deliver`, which runs `deliver_due` with what a resources object holds."""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.config import (
    DeliverySettings,
    DkimSettings,
    HttpsSettings,
    MailSettings,
    ReportSettings,
    Settings,
    SmtpSecurity,
    SmtpSettings,
)
from app.db.migrate import expected_heads
from app.db.pool import open_pool
from app.delivery.service import deliver_due
from app.dns.resolver import TxtAnswer
from app.dnscheck.dkim import format_dkim_record, public_key_der
from app.resources import Resources
from tests.clock import FakeClock
from tests.delivery.certs import LoopbackCa
from tests.delivery.sinks import HttpsReceiver, SmtpHandler, https_receiver, smtp_sink
from tests.dns.fake_resolver import FakeResolver


def dkim_record(pem: bytes) -> bytes:
    """The DKIM TXT value publishing the public half of `pem` (s=tlsrpt)."""
    line = format_dkim_record("sel", "sender.example", public_key_der(pem))
    return "".join(line.split(" IN TXT ", 1)[1].split('"')[1::2]).encode()


class FakeAddressResolver:
    """Host names to address lists; anything else has no address."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = dict(answers or {})

    async def resolve_addresses(self, host: str) -> list[str]:
        return self.answers.get(host, [])


@dataclass
class DeliveryEnv:
    settings: Settings
    smtp: SmtpHandler
    https: HttpsReceiver
    https_port: int
    resolver: FakeAddressResolver
    clock: FakeClock
    database_url: str
    # What DNS publishes: the DKIM key of the settings (a sender set up right).
    dns: dict[str, TxtAnswer | Exception] = field(default_factory=dict)
    opened: list[Resources] = field(default_factory=list)

    def https_rua(self, path: str = "/tlsrpt") -> str:
        return f"https://rua.test:{self.https_port}{path}"

    async def open_resources(self, **changes: Any) -> Resources:
        """Resources with their own pool (one per simulated instance)."""
        settings = self.settings.model_copy(update=changes) if changes else self.settings
        pool = await open_pool(self.database_url, settings.database)
        resources = Resources(
            settings=settings,
            pool=pool,
            resolver=FakeResolver(self.dns),
            clock=self.clock,
            expected_heads=expected_heads(),
            address_resolver=self.resolver,
        )
        self.opened.append(resources)
        return resources


@contextlib.asynccontextmanager
async def delivery_env(
    database_url: str,
    tmp_path: Path,
    ca: LoopbackCa,
    dkim_pem: bytes,
    clock: FakeClock,
    *,
    dkim: bool = True,
    send_reports: bool = True,
) -> AsyncIterator[DeliveryEnv]:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(dkim_pem)
    smtp = SmtpHandler()
    https = HttpsReceiver()
    async with (
        smtp_sink(smtp) as smtp_port,
        https_receiver(https, str(ca.cert_file), str(ca.key_file)) as https_port,
    ):
        settings = Settings(
            database_url=SecretStr(database_url),
            data_dir=tmp_path / "data",
            send_reports=send_reports,
            report=ReportSettings(
                organization_name="Sender Org", contact_info="tlsrpt@sender.example"
            ),
            smtp=SmtpSettings(host="127.0.0.1", port=smtp_port, security=SmtpSecurity.NONE),
            mail=MailSettings.model_validate({"from": "reports@sender.example"}),
            dkim=DkimSettings(selector="sel", private_key_file=key_file)
            if dkim
            else DkimSettings(),
            https=HttpsSettings(
                allowed_networks=[ipaddress.ip_network("127.0.0.0/8")], ca_file=ca.ca_file
            ),
            delivery=DeliverySettings(retry_initial_seconds=60, lease_seconds=60),
        )
        env = DeliveryEnv(
            settings=settings,
            smtp=smtp,
            https=https,
            https_port=https_port,
            resolver=FakeAddressResolver({"rua.test": ["127.0.0.1"]}),
            clock=clock,
            database_url=database_url,
            dns={"sel._domainkey.sender.example.": [(dkim_record(dkim_pem),)]},
        )
        try:
            yield env
        finally:
            for resources in env.opened:
                await resources.close()


async def deliver(res: Resources, **options: Any) -> int:
    """`deliver_due` on the resources' pool, senders, clock and delivery settings."""
    s = res.settings
    return await deliver_due(
        res.pool, res.open_senders(), res.clock, s.delivery, sending=s.send_reports, **options
    )


async def store_report(
    resources: Resources,
    *,
    day: date,
    policy_domain: str,
    rua: list[str],
    next_attempt_at: datetime,
    report_json: bytes | None = None,
) -> int:
    """Store a report and its deliveries as the reports contract defines them."""
    report_id = f"{day.isoformat()}_{policy_domain}@sender.example"
    body = report_json or b'{"report-id":"' + report_id.encode() + b'"}'
    filename = f"sender.example!{policy_domain}!1!2.json.gz"
    async with resources.pool.connection() as conn, conn.transaction():
        cur = await conn.execute(
            """
            INSERT INTO reports (report_id, day, policy_domain, report_json, report_gzip,
                                 filename, rua)
            VALUES (%(report_id)s, %(day)s, %(domain)s, %(json)s, %(gzip)s, %(filename)s,
                    %(rua)s)
            RETURNING id
            """,
            {
                "report_id": report_id,
                "day": day,
                "domain": policy_domain,
                "json": body,
                "gzip": gzip.compress(body),
                "filename": filename,
                "rua": rua,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        report_pk = int(row[0])
        for uri in rua:
            await conn.execute(
                """
                INSERT INTO deliveries (report_pk, rua, kind, next_attempt_at)
                VALUES (%(pk)s, %(rua)s, %(kind)s, %(at)s)
                """,
                {"pk": report_pk, "rua": uri, "kind": uri.split(":")[0], "at": next_attempt_at},
            )
    return report_pk


async def delivery_states(resources: Resources) -> dict[str, tuple[str, int, str | None]]:
    """rua -> (state, attempts, last_error) of every delivery."""
    async with resources.pool.connection() as conn:
        cur = await conn.execute("SELECT rua, state, attempts, last_error FROM deliveries")
        return {str(r[0]): (str(r[1]), int(r[2]), r[3]) for r in await cur.fetchall()}


async def attempt_rows(resources: Resources, rua: str) -> list[tuple[Any, ...]]:
    async with resources.pool.connection() as conn:
        cur = await conn.execute(
            """
            SELECT a.attempt, a.outcome, a.smtp_reply_code, a.http_status, a.reason, a.excerpt
            FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
            WHERE d.rua = %(rua)s ORDER BY a.id
            """,
            {"rua": rua},
        )
        return list(await cur.fetchall())
