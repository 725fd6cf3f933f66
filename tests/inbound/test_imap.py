"""The IMAP intake against a real Dovecot on loopback: stored mails go to the done folder,
refused ones to the invalid folder, nothing is stored twice, one instance reads a
mailbox at a time, IDLE and polling, login failures backed off, TLS and STARTTLS."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.cli.imap import report_handle
from app.config import ImapSecurity, ImapSettings
from app.inbound.imap import Handle, ImapIntake, MailboxBusyError, RoundSummary
from app.inbound.mailbox import Mailbox, MailboxError
from app.inbound.store import MAILBOX_LOCK_NAMESPACE
from app.resources import Resources
from tests.dns.fake_resolver import FakeResolver
from tests.inbound.dovecot import PASSWORD, Dovecot
from tests.inbound.mailkit import build_report_mail
from tests.tlsrpt.test_inflate import zero_bomb

SAMPLES = Path(__file__).parent.parent / "samples"
EML = sorted((SAMPLES / "eml").glob("*.eml"))
RFC = (SAMPLES / "json/rfc8460_appendix-b_verbatim.json").read_bytes()
NOT_A_REPORT = b"From: someone@example.org\r\nSubject: hello\r\n\r\nJust a note.\r\n"
DONE, INVALID = "TLSRPT/done", "TLSRPT/invalid"


class Stop(BaseException):
    """Ends a watch from inside a fake sleep (the watch retries after any Exception)."""


def intake(
    res: Resources, settings: ImapSettings, handle: Handle | None = None, **options: Any
) -> ImapIntake:
    return ImapIntake(
        settings,
        res.pool,
        handle or report_handle(res),
        max_bytes=res.settings.inbound.max_body_bytes,
        clock=res.clock,
        jitter=lambda: 0.0,
        **options,
    )


async def stored(res: Resources) -> list[tuple[str, str, int]]:
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT report_id, received_via, times_received FROM inbound_reports ORDER BY id"
        )
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def invalid_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.fields["reason"]  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage() == "imap_message_invalid"
    ]


async def test_samples_stored_and_moved_to_done(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    raws = [p.read_bytes() for p in EML]
    dovecot.append(*raws)
    summary = await intake(resources, dovecot.settings()).run_once()
    assert summary.outcomes == {"stored": len(raws)}
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
    assert summary.outcomes == {"invalid": 1, "stored": 1}
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
    assert (await first).outcomes == {"stored": len(raws)}
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
    assert summary.outcomes == {"stored": 1, "invalid": 1}
    assert dovecot.messages() == []
    assert dovecot.messages(INVALID) == [NOT_A_REPORT]
    assert len(dovecot.messages(DONE)) == 1


async def test_watch_with_idle_wakes_on_new_mail(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    loop = asyncio.get_running_loop()
    moved: asyncio.Queue[str] = asyncio.Queue()

    class Signalling(Mailbox):
        def move(self, uid: int, folder: str) -> None:
            super().move(uid, folder)
            loop.call_soon_threadsafe(moved.put_nowait, folder)

    async def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s although the server has IDLE")

    # The poll interval is far longer than the test: only IDLE can wake the watch.
    settings = dovecot.settings(poll_seconds=600)
    run = intake(resources, settings, sleep=no_sleep, mailbox=Signalling)
    task = asyncio.create_task(run.watch())
    try:
        await asyncio.to_thread(dovecot.append, build_report_mail(RFC))
        assert await asyncio.wait_for(moved.get(), 15) == DONE
        # The same report again (a resend): IDLE wakes the watch, stored once.
        await asyncio.to_thread(dovecot.append, build_report_mail(RFC))
        assert await asyncio.wait_for(moved.get(), 15) == DONE
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert dovecot.messages() == []
    assert len(dovecot.messages(DONE)) == 2
    assert [n for _, _, n in await stored(resources)] == [2]


class NoIdle(Mailbox):
    @property
    def can_idle(self) -> bool:
        return False


async def test_watch_without_idle_polls_every_poll_seconds(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    slept: list[float] = []
    asleep = asyncio.Event()
    wake = asyncio.Event()

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        asleep.set()
        await wake.wait()
        wake.clear()

    settings = dovecot.settings(poll_seconds=42)
    task = asyncio.create_task(intake(resources, settings, sleep=sleep, mailbox=NoIdle).watch())
    try:
        await asyncio.wait_for(asleep.wait(), 10)
        asleep.clear()
        assert await stored(resources) == []
        await asyncio.to_thread(dovecot.append, build_report_mail(RFC))
        wake.set()
        await asyncio.wait_for(asleep.wait(), 10)
        assert len(await stored(resources)) == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert slept == [42, 42]
    assert len(dovecot.messages(DONE)) == 1


async def test_wrong_password_logged_without_it_and_retried_with_backoff(
    dovecot: Dovecot, resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-" + PASSWORD
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 4:
            raise Stop

    settings = dovecot.settings(password=wrong)
    # DEBUG: imapclient's own log of the commands must not show it either.
    with caplog.at_level(logging.DEBUG), pytest.raises(Stop):
        await intake(resources, settings, sleep=sleep).watch()
    assert slept == [10, 20, 40, 80]
    failures = [r for r in caplog.records if r.getMessage() == "imap_login_failed"]
    assert len(failures) == 4
    reason = failures[0].fields["reason"]  # type: ignore[attr-defined]
    assert "login as 'reports' refused" in reason and "AUTHENTICATIONFAILED" in reason
    for record in caplog.records:
        assert wrong not in record.getMessage() + repr(getattr(record, "fields", ""))
        assert PASSWORD not in record.getMessage() + repr(getattr(record, "fields", ""))


async def test_unreachable_server_backs_off(
    dovecot: Dovecot, resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise Stop

    settings = dovecot.settings(port=1)
    with caplog.at_level(logging.INFO), pytest.raises(Stop):
        await intake(resources, settings, sleep=sleep).watch()
    assert slept == [10, 20]
    assert [r.getMessage() for r in caplog.records].count("imap_unavailable") == 2


@pytest.mark.parametrize("security", [ImapSecurity.TLS, ImapSecurity.STARTTLS])
async def test_tls_and_starttls_with_the_test_ca(
    security: ImapSecurity, dovecot: Dovecot, resources: Resources, dns: FakeResolver
) -> None:
    dovecot.append(build_report_mail(RFC))
    summary = await intake(resources, dovecot.settings(security)).run_once()
    assert summary.outcomes == {"stored": 1}


@pytest.mark.parametrize("security", [ImapSecurity.TLS, ImapSecurity.STARTTLS])
async def test_tls_refuses_a_certificate_of_an_unknown_ca(
    security: ImapSecurity, dovecot: Dovecot, resources: Resources
) -> None:
    with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED"):
        await intake(resources, dovecot.settings(security, ca_file=None)).run_once()


async def test_watch_waits_while_another_instance_holds_the_mailbox(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver, caplog: pytest.LogCaptureFixture
) -> None:
    dovecot.append(build_report_mail(RFC))
    inside, release = asyncio.Event(), asyncio.Event()
    store = report_handle(resources)

    async def slow(raw: bytes) -> str:
        inside.set()
        await release.wait()
        return await store(raw)

    holder = asyncio.create_task(intake(resources, dovecot.settings(), slow).run_once())
    await asyncio.wait_for(inside.wait(), 10)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:  # the lock was busy, then one round of its own
            raise Stop
        release.set()
        await holder

    settings = dovecot.settings(poll_seconds=7)
    with caplog.at_level(logging.INFO), pytest.raises(Stop):
        await intake(resources, settings, sleep=sleep, mailbox=NoIdle).watch()
    assert slept == [7, 7]
    events = [r.getMessage() for r in caplog.records]
    assert events.count("imap_mailbox_busy") == 1 and "imap_watching" in events
    assert (await holder).outcomes == {"stored": 1}
    assert [n for _, _, n in await stored(resources)] == [1]


async def test_watch_that_loses_its_lock_connection_backs_off_and_takes_it_again(
    dovecot: Dovecot, resources: Resources, dns: FakeResolver, caplog: pytest.LogCaptureFixture
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:  # after the first round: the lock's connection dies
            async with resources.pool.connection() as conn:
                await conn.execute(
                    """
                    SELECT pg_terminate_backend(pid) FROM pg_locks
                    WHERE locktype = 'advisory' AND classid = %(ns)s
                    """,
                    {"ns": MAILBOX_LOCK_NAMESPACE},
                )
        elif len(slept) == 3:
            raise Stop

    settings = dovecot.settings(poll_seconds=5)
    with caplog.at_level(logging.INFO), pytest.raises(Stop):
        await intake(resources, settings, sleep=sleep, mailbox=NoIdle).watch()
    # poll, back off after the lost connection (the one backoff rule), poll again
    assert slept == [5, 10, 5]
    events = [r.getMessage() for r in caplog.records]
    assert events.count("imap_database_unavailable") == 1
    assert events.count("imap_watching") == 2


async def test_watch_outlives_a_bug_and_backs_off(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise Stop

    def broken(settings: ImapSettings) -> Mailbox:
        raise RuntimeError("a bug")

    settings = ImapSettings(host="127.0.0.1", security=ImapSecurity.NONE, user="u", password="p")  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO), pytest.raises(Stop):
        await intake(resources, settings, sleep=sleep, mailbox=broken).watch()
    assert slept == [10, 20]
    assert [r.getMessage() for r in caplog.records].count("imap_watch_failed") == 2
