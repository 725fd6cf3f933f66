"""`tlsrpt inbound imap [--watch]` and the IMAP intake that `serve` and `worker` run in the
background when `TLSRPT_IMAP__HOST` is set.

The intake's `handle` is built here, from the process's resources: each mail goes
through `inbound.messages.receive_message`, the one entry for incoming mail, so a report
is stored as received via IMAP, a bounce of our report mail is recorded on its delivery,
and an auto-reply is ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable

from app.cli.runtime import run_with_resources, settings_or_exit
from app.inbound.imap import Handle, ImapIntake, MailboxBusyError
from app.inbound.mailbox import MailboxError
from app.inbound.messages import receive_message
from app.inbound.service import Via
from app.resources import Resources


def register(isub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = isub.add_parser("imap", help="read report mails from the TLSRPT_IMAP__* mailbox")
    p.add_argument(
        "--watch", action="store_true", help="keep reading (IDLE or polling) until stopped"
    )
    p.set_defaults(func=_imap)


def report_handle(res: Resources) -> Handle:
    """Handle one mail of the mailbox; the outcome word is for the log."""
    settings = res.settings

    async def handle(raw: bytes) -> str:
        outcome = await receive_message(
            res.inbound_committer,
            res.resolver,
            res.pool,
            res.clock,
            raw,
            inbound=settings.inbound,
            mail=settings.mail,
            bounces=settings.bounces,
            tags=res.bounce_tags(),
            via=Via.IMAP,
        )
        return str(outcome.handled.value)

    return handle


def intake_of(res: Resources) -> ImapIntake:
    return ImapIntake(
        res.settings.imap,
        res.pool,
        report_handle(res),
        max_bytes=res.settings.inbound.max_body_bytes,
        clock=res.clock,
    )


async def start_imap(res: Resources) -> Callable[[], Awaitable[None]] | None:
    """Run the intake's watch in the background when a mailbox is configured; returns
    the coroutine function that stops it (a `serve` lifespan hook, used by `worker`)."""
    if not res.settings.imap.enabled:
        return None
    task = asyncio.create_task(intake_of(res).watch(), name="tlsrpt-imap")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


def _imap(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    if not settings.imap.enabled:
        print("tlsrpt: no mailbox configured (TLSRPT_IMAP__HOST)", file=sys.stderr)
        return 2
    if args.watch:
        return run_with_resources(settings, _watch)
    return run_with_resources(settings, _once)


async def _once(res: Resources) -> int:
    try:
        summary = await intake_of(res).run_once()
    except MailboxBusyError:
        print("tlsrpt: another instance is reading this mailbox now; try again later")
        return 0
    except MailboxError as exc:
        print(f"tlsrpt: mailbox unavailable: {exc.reason}", file=sys.stderr)
        return 1
    done = ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in sorted(summary.outcomes.items()))
    print(f"{res.settings.imap.folder}: {done or 'no messages'}")
    return 0


async def _watch(res: Resources) -> int:
    task = asyncio.create_task(intake_of(res).watch())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return 0
