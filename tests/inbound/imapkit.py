"""What the IMAP intake tests share: an intake on the test's resources with no jitter,
the stored reports, sample mails, and a mailbox without IDLE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.cli.imap import report_handle
from app.config import ImapSettings
from app.inbound.imap import Handle, ImapIntake, Sleep
from app.inbound.mailbox import Mailbox
from app.resources import Resources

SAMPLES = Path(__file__).parent.parent / "samples"
EML = sorted((SAMPLES / "eml").glob("*.eml"))
RFC = (SAMPLES / "json/rfc8460_appendix-b_verbatim.json").read_bytes()
NOT_A_REPORT = b"From: someone@example.org\r\nSubject: hello\r\n\r\nJust a note.\r\n"
DONE, INVALID = "TLSRPT/done", "TLSRPT/invalid"


class Stop(BaseException):
    """Ends a watch from inside a fake sleep (the watch retries after any Exception)."""


def sleeps_until_stop(calls: int) -> tuple[list[float], Sleep]:
    """A fake sleep that records each delay asked for and raises Stop at the `calls`th."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == calls:
            raise Stop

    return slept, sleep


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


class NoIdle(Mailbox):
    """A server without IDLE (RFC 2177): the watch polls."""

    @property
    def can_idle(self) -> bool:
        return False
