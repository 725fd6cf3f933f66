"""The IMAP intake's rounds against a real Dovecot on loopback: stored mails go to the
done folder, refused ones to the invalid folder with the reason, nothing is stored twice,
one instance reads a mailbox at a time, TLS and STARTTLS with the test CA."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from app.cli.imap import report_handle
from app.config import ImapSecurity, ImapSettings
from app.inbound.imap import MailboxBusyError, RoundSummary
from app.inbound.mailbox import Mailbox, MailboxError
from app.resources import Resources
from tests.dns.fake_resolver import FakeResolver
from tests.inbound.dovecot import Dovecot
from tests.inbound.imapkit import (
    DONE,
    EML,
    INVALID,
    NOT_A_REPORT,
    RFC,
    crlf,
    intake,
    invalid_reasons,
    stored,
)
from tests.inbound.mailkit import build_report_mail
from tests.tlsrpt.test_inflate import zero_bomb


async def test_samples_stored_and_moved_to_done(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    raws = [p.read_bytes() for p in EML]
    dovecot.append(*raws)
    summary = await intake(resources, dovecot.settings()).run_once()
    assert summary.outcomes == {"report_stored": len(raws)}
    rows = await stored(resources)
    assert len(rows) == len(raws)
    assert {via for _, via, _ in rows} == {"imap"}
    assert dovecot.messages() == []
    # IMAP keeps messages with CRLF line ends; the sample files have LF.
    assert sorted(dovecot.messages(DONE)) == sorted(crlf(raw) for raw in raws)
    assert dovecot.messages(INVALID) == []
    # A second round finds nothing.
    assert (await intake(resources, dovecot.settings()).run_once()).outcomes == {}


async def test_non_report_moved_to_invalid_with_reason(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver, caplog: pytest.LogCaptureFixture
) -> None:
    dovecot.append(NOT_A_REPORT, build_report_mail(RFC))
    with caplog.at_level(logging.INFO):
        summary = await intake(resources, dovecot.settings()).run_once()
    assert summary.outcomes == {"invalid": 1, "report_stored": 1}
    assert dovecot.messages(INVALID) == [NOT_A_REPORT]
    assert len(dovecot.messages(DONE)) == 1
    [reason] = invalid_reasons(caplog)
    assert "no report part" in reason


async def test_gzip_bomb_and_oversized_mail_go_to_invalid_and_nothing_is_stored(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver, caplog: pytest.LogCaptureFixture
) -> None:
    bomb = build_report_mail(zero_bomb(1), compress=False)
    # A valid report, but the mail is over the size limit (checked before it is fetched).
    big = build_report_mail(RFC + b" " * (3 * len(bomb)), compress=False)
    dovecot.append(bomb, big)
    run = intake(resources, dovecot.settings())
    run.max_bytes = 2 * len(bomb)
    with caplog.at_level(logging.INFO):
        summary = await run.run_once()
    assert summary.outcomes == {"invalid": 2}
    assert await stored(resources) == []
    assert len(dovecot.messages(INVALID)) == 2
    reasons = invalid_reasons(caplog)
    assert any("inflates to more than" in r for r in reasons), reasons
    assert any("larger than" in r for r in reasons), reasons


class MoveFailsOnce(Mailbox):
    """The connection breaks after the report was stored, before the mail moved."""

    failed = False

    def move(self, uid: int, folder: str) -> None:
        if not MoveFailsOnce.failed:
            MoveFailsOnce.failed = True
            raise MailboxError("connection lost")
        super().move(uid, folder)


async def test_crash_between_store_and_move_stores_nothing_twice(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    dovecot.append(build_report_mail(RFC))
    with pytest.raises(MailboxError):
        await intake(resources, dovecot.settings(), mailbox=MoveFailsOnce).run_once()
    assert len(dovecot.messages()) == 1
    assert [n for _, _, n in await stored(resources)] == [1]

    summary = await intake(resources, dovecot.settings()).run_once()
    assert summary.outcomes == {"duplicate": 1}
    rows = await stored(resources)
    assert len(rows) == 1
    assert dovecot.messages() == []
    assert len(dovecot.messages(DONE)) == 1


async def test_cancelled_round_leaves_the_mail_for_the_next(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    dovecot.append(build_report_mail(RFC))
    store = report_handle(resources)
    entered = asyncio.Event()

    async def store_then_hang(raw: bytes) -> str:
        await store(raw)
        entered.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.create_task(intake(resources, dovecot.settings(), store_then_hang).run_once())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(dovecot.messages()) == 1
    assert (await intake(resources, dovecot.settings()).run_once()).outcomes == {"duplicate": 1}
    assert len(await stored(resources)) == 1


async def test_database_error_leaves_the_mail_in_place(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    dovecot.append(build_report_mail(RFC), NOT_A_REPORT)

    async def database_away(raw: bytes) -> str:
        raise psycopg.OperationalError("connection refused")

    summary = await intake(resources, dovecot.settings(), database_away).run_once()
    assert summary.outcomes == {"left": 1}
    assert len(dovecot.messages()) == 2
    assert dovecot.messages(DONE) == dovecot.messages(INVALID) == []


async def test_two_intakes_one_mailbox_store_each_mail_once(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    raws = [p.read_bytes() for p in EML]
    dovecot.append(*raws)
    store = report_handle(resources)
    inside, release = asyncio.Event(), asyncio.Event()

    async def slow(raw: bytes) -> str:
        inside.set()
        await release.wait()
        return await store(raw)

    first = asyncio.create_task(intake(resources, dovecot.settings(), slow).run_once())
    await asyncio.wait_for(inside.wait(), 10)
    with pytest.raises(MailboxBusyError):
        await intake(resources, dovecot.settings()).run_once()
    release.set()
    assert (await first).outcomes == {"report_stored": len(raws)}
    results = await asyncio.gather(
        intake(resources, dovecot.settings()).run_once(),
        intake(resources, dovecot.settings()).run_once(),
        return_exceptions=True,
    )
    assert all(isinstance(r, RoundSummary | MailboxBusyError) for r in results)
    assert [n for _, _, n in await stored(resources)] == [1] * len(raws)
    assert len(dovecot.messages(DONE)) == len(raws)


async def test_without_move_copies_then_expunges_only_that_mail(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    dovecot.append(build_report_mail(RFC), NOT_A_REPORT)

    def no_move(settings: ImapSettings) -> Mailbox:
        return Mailbox(settings, use_move=False)

    summary = await intake(resources, dovecot.settings(), mailbox=no_move).run_once()
    assert summary.outcomes == {"report_stored": 1, "invalid": 1}
    assert dovecot.messages() == []
    assert dovecot.messages(INVALID) == [NOT_A_REPORT]
    assert len(dovecot.messages(DONE)) == 1


@pytest.mark.parametrize("security", [ImapSecurity.TLS, ImapSecurity.STARTTLS])
async def test_tls_and_starttls_with_the_test_ca(
    security: ImapSecurity, dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    dovecot.append(build_report_mail(RFC))
    summary = await intake(resources, dovecot.settings(security)).run_once()
    assert summary.outcomes == {"report_stored": 1}


@pytest.mark.parametrize("security", [ImapSecurity.TLS, ImapSecurity.STARTTLS])
async def test_tls_refuses_a_certificate_of_an_unknown_ca(
    security: ImapSecurity, dovecot: Dovecot, resources: Resources
) -> None:
    with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED"):
        await intake(resources, dovecot.settings(security, ca_file=None)).run_once()
