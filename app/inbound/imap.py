"""Reading report mails from a mailbox over IMAP, for operators whose `rua=mailto:`
address is an ordinary mailbox (as parsedmarc does for DMARC).

A round takes the mailbox's lock (a PostgreSQL session advisory lock on a connection of
its own, so one instance at a time reads a mailbox), connects, and hands each waiting
message's bytes to `handle` (injected: the entry points use
`inbound.messages.receive_message`, which stores reports and records bounces). A handled
mail is moved to the done folder, a mail that holds no storable report to the invalid
folder, with the reason logged; a mail whose store failed for a passing reason (the
database away) stays for the next round. A crash between store and move is harmless:
the store acknowledges an (organization, report-id) it has as a duplicate and the next
round moves the mail. Nothing is deleted that was not copied first. `watch` repeats
rounds, woken by IDLE when the server offers it and at least every poll interval;
connection and login failures are retried with the one backoff rule. The clock, sleep
and jitter are injected, so tests do not wait on the real clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg_pool import PoolTimeout

from app.backoff import backoff_seconds
from app.clock import Clock
from app.config import ImapSettings
from app.db.pool import Pool
from app.inbound import store
from app.inbound.mail import NoReportError
from app.inbound.mailbox import Mailbox, MailboxError, describe
from app.tlsrpt.inflate import InflatedTooLargeError, InflateError
from app.tlsrpt.received import InvalidReportError, ReportTooLargeError
from app.tlsrpt.text import display

log = logging.getLogger(__name__)

# Stores one message's raw bytes; returns a short outcome word for the log.
Handle = Callable[[bytes], Awaitable[str]]
Sleep = Callable[[float], Awaitable[None]]
# What `handle` raises for a mail that will never be a storable report.
REFUSED = (
    NoReportError,
    InvalidReportError,
    ReportTooLargeError,
    InflateError,
    InflatedTooLargeError,
)
# Connection and login failures: first retry after this long, doubling up to the cap.
RETRY_INITIAL_SECONDS = 10.0
RETRY_CAP_SECONDS = 900.0
# RFC 2177: servers may log out a client idle for 30 minutes; IDLE is renewed before.
MAX_IDLE_SECONDS = 25 * 60.0


class MailboxBusyError(Exception):
    """Another instance holds this mailbox's lock."""


@dataclass
class RoundSummary:
    """What one round did: messages per outcome of `handle` (`report_stored`, `duplicate`,
    `bounce_recorded`, ...), or
    `invalid` (moved to the invalid folder), `left` (database away) or `failed` (a bug;
    both stay in the folder)."""

    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def mailbox_key(settings: ImapSettings) -> int:
    """The lock key of a mailbox: a 31-bit hash of host, user and folder."""
    name = f"{settings.host}\0{settings.user}\0{settings.folder}".lower().encode()
    return int.from_bytes(hashlib.sha256(name).digest()[:4], "big") & 0x7FFF_FFFF


class ImapIntake:
    def __init__(
        self,
        settings: ImapSettings,
        pool: Pool,
        handle: Handle,
        *,
        max_bytes: int,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        mailbox: Callable[[ImapSettings], Mailbox] = Mailbox,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.handle = handle
        self.max_bytes = max_bytes
        self.clock = clock
        self.sleep = sleep
        self.jitter = jitter
        self.mailbox = mailbox
        self.key = mailbox_key(settings)
        self.failures = 0
        self.waiting = False

    async def run_once(self) -> RoundSummary:
        """One round over what is in the folder now; MailboxBusyError when another
        instance holds the mailbox, MailboxError when the server can not be used."""
        async with self._lock():
            box = await self._open()
            try:
                return await self._round(box)
            finally:
                await asyncio.to_thread(box.close)

    async def watch(self) -> None:
        """Rounds until cancelled: after IDLE wakes up or every poll interval."""
        while True:
            try:
                async with self._lock() as conn:
                    await self._watch_locked(conn)
            except MailboxBusyError:
                # Said once per wait, not every poll interval of every waiting instance.
                if not self.waiting:
                    log.info("imap_mailbox_busy", extra={"fields": describe(self.settings)})
                self.waiting = True
                await self.sleep(self.settings.poll_seconds)
            except (MailboxError, psycopg.OperationalError, PoolTimeout) as exc:
                await self._back_off(exc)
            except Exception as exc:
                # A bug must not end the watch of a long-running `serve` unseen.
                log.exception("imap_watch_failed")
                await self._back_off(exc)

    async def _watch_locked(self, conn: store.Conn) -> None:
        self.waiting = False
        box = await self._open()
        fields = {**describe(self.settings), "idle": box.can_idle}
        log.info("imap_watching", extra={"fields": fields})
        try:
            while True:
                # The lock lives as long as its connection: a lost one ends this watch
                # (OperationalError, backed off) before another instance may read too.
                if not await store.get_mailbox_lock_held(conn, self.key):
                    raise MailboxBusyError
                started = self.clock()
                await self._round(box)
                if box.can_idle:
                    elapsed = (self.clock() - started).total_seconds()
                    timeout = min(max(self.settings.poll_seconds - elapsed, 1.0), MAX_IDLE_SECONDS)
                    await asyncio.to_thread(box.idle, timeout)
                else:
                    await self.sleep(self.settings.poll_seconds)
        finally:
            # Wakes an IDLE wait still running in its thread when the task is cancelled.
            box.abort()
            await asyncio.shield(asyncio.to_thread(box.close))

    async def _back_off(self, exc: Exception) -> None:
        self.failures += 1
        delay = backoff_seconds(
            self.failures,
            initial=RETRY_INITIAL_SECONDS,
            cap=RETRY_CAP_SECONDS,
            jitter=self.jitter(),
        )
        if isinstance(exc, MailboxError):
            reason = exc.reason
            event = "imap_login_failed" if exc.login else "imap_unavailable"
        elif isinstance(exc, psycopg.OperationalError | PoolTimeout):
            # The lock's connection: the mailbox is not touched while the database is
            # away. Said once per outage (`database_unavailable`), not every attempt.
            self.pool.outage.failed("imap", exc)
            await self.sleep(delay)
            return
        else:
            reason, event = display(repr(exc), 300), "imap_watch_retry"
        fields = {**describe(self.settings), "reason": reason, "failures": self.failures}
        log.error(event, extra={"fields": {**fields, "retry_seconds": round(delay, 1)}})
        await self.sleep(delay)

    async def _open(self) -> Mailbox:
        box = self.mailbox(self.settings)
        try:
            await asyncio.to_thread(box.open)
        except BaseException:
            box.abort()
            raise
        self.failures = 0
        return box

    @asynccontextmanager
    async def _lock(self) -> AsyncIterator[store.Conn]:
        """Hold the mailbox's session advisory lock on a connection of its own."""
        async with self.pool.connection() as conn:
            if not await store.try_lock_mailbox(conn, self.key):
                raise MailboxBusyError
            try:
                yield conn
            finally:
                try:
                    await asyncio.shield(store.unlock_mailbox(conn, self.key))
                except psycopg.Error:
                    pass  # the connection is gone, and the lock with it

    async def _round(self, box: Mailbox) -> RoundSummary:
        summary = RoundSummary()
        for uid in await asyncio.to_thread(box.waiting):
            outcome = await self._one(box, uid)
            if outcome is not None:
                summary.count(outcome)
            if outcome == "left":
                break  # the database is away: the rest waits for the next round too
        if summary.outcomes:
            log.info("imap_round", extra={"fields": {**summary.outcomes}})
        return summary

    async def _one(self, box: Mailbox, uid: int) -> str | None:
        s = self.settings
        size = await asyncio.to_thread(box.size, uid)
        if size is None:
            return None
        if size > self.max_bytes:
            return await self._refuse(box, uid, f"the mail is larger than {self.max_bytes} bytes")
        raw = await asyncio.to_thread(box.fetch, uid)
        if raw is None:
            return None
        try:
            outcome = await self.handle(raw)
        except REFUSED as exc:
            return await self._refuse(box, uid, _refusal(exc))
        except (psycopg.Error, PoolTimeout) as exc:
            # The database is away: the mail stays for the next round.
            fields = {"uid": uid, "reason": _db_reason(exc)}
            log.warning("imap_store_failed", extra={"fields": fields})
            return "left"
        except Exception:
            log.exception("imap_store_failed", extra={"fields": {"uid": uid}})
            return "failed"
        await asyncio.to_thread(box.move, uid, s.done_folder)
        log.info("imap_message_done", extra={"fields": {"uid": uid, "outcome": outcome}})
        return outcome

    async def _refuse(self, box: Mailbox, uid: int, reason: str) -> str:
        log.warning("imap_message_invalid", extra={"fields": {"uid": uid, "reason": reason}})
        await asyncio.to_thread(box.move, uid, self.settings.invalid_folder)
        return "invalid"


def _refusal(exc: Exception) -> str:
    if isinstance(exc, NoReportError | InflateError):
        return display(exc.reason, 300)
    return display(str(exc) or type(exc).__name__, 300)


def _db_reason(exc: BaseException) -> str:
    return display(" ".join(str(exc).split()) or type(exc).__name__, 300)
