"""The IMAP intake's watch against a real Dovecot on loopback: woken by IDLE or polling
on the injected sleep, login and connection failures logged without the password and
backed off, waiting for and regaining the mailbox lock, outliving a bug."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.cli.imap import report_handle
from app.config import ImapSecurity, ImapSettings
from app.inbound.mailbox import Mailbox
from app.inbound.store import MAILBOX_LOCK_NAMESPACE
from app.resources import Resources
from tests.dns.fake_resolver import FakeResolver
from tests.inbound.dovecot import PASSWORD, Dovecot
from tests.inbound.imapkit import DONE, RFC, NoIdle, Stop, intake, sleeps_until_stop, stored
from tests.inbound.mailkit import build_report_mail


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
    slept, sleep = sleeps_until_stop(4)

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
    slept, sleep = sleeps_until_stop(2)

    settings = dovecot.settings(port=1)
    with caplog.at_level(logging.INFO), pytest.raises(Stop):
        await intake(resources, settings, sleep=sleep).watch()
    assert slept == [10, 20]
    assert [r.getMessage() for r in caplog.records].count("imap_unavailable") == 2


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
    assert (await holder).outcomes == {"report_stored": 1}
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
    assert events.count("database_unavailable") == 1
    assert events.count("imap_watching") == 2


async def test_watch_outlives_a_bug_and_backs_off(
    resources: Resources, caplog: pytest.LogCaptureFixture
) -> None:
    slept, sleep = sleeps_until_stop(2)

    def broken(settings: ImapSettings) -> Mailbox:
        raise RuntimeError("a bug")

    settings = ImapSettings(host="127.0.0.1", security=ImapSecurity.NONE, user="u", password="p")  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO), pytest.raises(Stop):
        await intake(resources, settings, sleep=sleep, mailbox=broken).watch()
    assert slept == [10, 20]
    assert [r.getMessage() for r in caplog.records].count("imap_watch_failed") == 2
