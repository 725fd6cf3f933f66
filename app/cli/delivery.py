"""`tlsrpt send`, `tlsrpt worker` and `tlsrpt suppress`: delivery from the command line.

`send --day D` closes and builds the day now and sends its reports at once, with progress
on stderr; running it again sends nothing twice (sent deliveries are never claimed
again). `--dry-run` changes nothing: it prints what would go where. `worker` runs the
scheduler (and the IMAP intake when a mailbox is configured) until SIGTERM/SIGINT.
`suppress` manages the suppression list.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta

from app.cli.imap import start_imap
from app.cli.runtime import (
    Progress,
    announce_configuration,
    run_with_resources,
    scheduler_of,
    settings_or_exit,
)
from app.clock import system_clock
from app.delivery import suppression
from app.delivery.errors import DeliveryError
from app.delivery.mail import parse_mailto
from app.delivery.service import DeliveryRow, deliver_due, list_deliveries, make_day_due
from app.delivery.signing import DkimKeyError
from app.resources import Resources
from app.scheduler.service import instance_name, stop_scheduler


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("send", help="build a UTC day's reports and send them now")
    p.add_argument("--day", required=True, type=date.fromisoformat, help="YYYY-MM-DD (UTC)")
    p.add_argument(
        "--dry-run", action="store_true", help="change nothing; print what would go where"
    )
    p.set_defaults(func=_send)

    p = sub.add_parser("worker", help="run the scheduler and delivery alone (no API)")
    p.set_defaults(func=_worker)

    p = sub.add_parser("suppress", help="add, list and remove suppressed addresses or URIs")
    ssub = p.add_subparsers(dest="suppress_command", required=True, metavar="ACTION")
    a = ssub.add_parser("add", help="suppress an address, mailto: or https: URI")
    a.add_argument(
        "target", help="an address (a@example.com), mailto:a@example.com or an https:// URI"
    )
    a.add_argument("--comment", default="", help="why (shown in the delivery's status)")
    a.add_argument(
        "--expires",
        type=_expiry,
        default=None,
        help="30d, 12h, YYYY-MM-DD or an RFC 3339 time (default: until removed)",
    )
    a.set_defaults(func=_suppress_add)
    ssub.add_parser("list", help="list suppressions").set_defaults(func=_suppress_list)
    r = ssub.add_parser("remove", help="remove a suppression")
    r.add_argument("target", help="the address or URI as listed by `tlsrpt suppress list`")
    r.set_defaults(func=_suppress_remove)


def _expiry(text: str) -> datetime:
    match = re.fullmatch(r"(\d+)([dh])", text.strip())
    if match:
        amount = int(match.group(1))
        delta = timedelta(days=amount) if match.group(2) == "d" else timedelta(hours=amount)
        return system_clock() + delta
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration or time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _fail(message: str, status: int = 1) -> int:
    print(f"tlsrpt: {message}", file=sys.stderr)
    return status


def _send(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    day: date = args.day
    if day >= system_clock().date():
        return _fail(f"{day} is not over yet (UTC); only past days can be sent", 2)
    try:
        return run_with_resources(settings, lambda res: _send_async(res, day, dry_run=args.dry_run))
    except DkimKeyError as exc:
        return _fail(f"invalid configuration: {exc}", 2)


async def _send_async(res: Resources, day: date, *, dry_run: bool) -> int:
    from app.report.service import build_day

    if dry_run:
        return await _dry_run(res, day)
    announce_configuration(res)

    with Progress() as progress:

        def built(done: int, total: int) -> None:
            progress.update(f"building {day}: {done}/{total} domains")

        summary = await build_day(
            res.pool, res.resolver, res.clock, res.settings.report, day, progress=built
        )
        progress.done(
            f"built {day}: {summary.built} reports, {summary.no_report} domains without, "
            f"{summary.pending} waiting for DNS, {summary.already_done} already done"
        )
        total = await make_day_due(res.pool, res.clock, day)
        owner, sent = instance_name(), 0
        while True:
            attempted = await deliver_due(
                res.pool,
                res.open_senders(),
                res.clock,
                res.settings.delivery,
                sending=res.settings.send_reports,
                owner=owner,
                limit=res.settings.delivery.batch_size,
                day=day,
            )
            if attempted == 0:
                break
            sent += attempted
            progress.update(f"delivering {day}: {sent}/{total} attempted")
        states = Counter(d.state for d in await _day_deliveries(res, day))
        progress.done(
            f"delivered {day}: "
            + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "nothing to send")
        )
    return 0


async def _day_deliveries(res: Resources, day: date) -> list[DeliveryRow]:
    rows: list[DeliveryRow] = []
    after = 0
    while page := await list_deliveries(res.pool, day=day, after_id=after, limit=1000):
        rows.extend(page)
        after = page[-1].id
    return rows


async def _dry_run(res: Resources, day: date) -> int:
    """Print each report's destinations and how each would be reached; change nothing."""
    from app.dns.lookup import TemporaryDnsError
    from app.ingest.service import day_aggregates
    from app.report.service import NoReportError
    from app.report.views import preview_report

    relay = res.open_senders().relay.target
    domains = sorted({a.policy.policy_domain for a in await day_aggregates(res.pool, day)})
    if not domains:
        print(f"no results for {day}: nothing would be sent")
    for domain in domains:
        try:
            preview = await preview_report(
                res.pool, res.resolver, res.settings.report, day, domain, now=res.clock()
            )
        except NoReportError as exc:
            print(f"{domain}: no report ({exc.reason})")
            continue
        except TemporaryDnsError as exc:
            print(f"{domain}: DNS can not tell now ({exc})")
            continue
        built = "built" if preview.stored else "not built yet"
        print(f"{domain} ({built}, {len(preview.report_json)} bytes JSON):")
        suppressed = {skipped.rua for skipped in preview.not_used}
        for rua in preview.rua:
            if rua not in suppressed:
                print(f"  {rua} -> {await _route(res, rua, relay)}")
        for skipped in preview.not_used:
            print(f"  {skipped.rua} -> not sent: {skipped.reason}")
    if not res.settings.send_reports:
        print("(TLSRPT_SEND_REPORTS is false: nothing would actually be sent)")
    return 0


async def _route(res: Resources, rua: str, relay: str) -> str:
    senders = res.open_senders()
    if rua.startswith("mailto:"):
        if senders.dkim_key is None:
            return "not sent: no DKIM key configured"
        try:
            return f"mail to {parse_mailto(rua)} via {relay}"
        except ValueError as exc:
            return f"not sent: {exc}"
    try:
        target, addresses = await senders.poster.check(rua)
    except DeliveryError as exc:
        return f"not sent: {exc.reason}"
    return f"POST to {target.host} at {', '.join(map(str, addresses))}"


def _worker(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    try:
        run_with_resources(settings, _worker_async)
    except DkimKeyError as exc:
        return _fail(f"invalid configuration: {exc}", 2)
    return 0


async def _worker_async(res: Resources) -> None:
    scheduler = scheduler_of(res)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, scheduler.stop)
    task = asyncio.create_task(scheduler.run())
    # The IMAP intake too, when a mailbox is configured.
    stop_imap = await start_imap(res)
    await scheduler.stop_requested()
    if stop_imap is not None:
        await stop_imap()
    # Sends in flight get the stop timeout; the rest wait for their leases to expire.
    await stop_scheduler(scheduler, task, res.settings.scheduler.stop_timeout_seconds)


def _suppress_add(args: argparse.Namespace) -> int:
    settings = settings_or_exit()

    try:
        row = run_with_resources(
            settings,
            lambda res: suppression.add_suppression(
                res.pool, res.clock, args.target, comment=args.comment, expires_at=args.expires
            ),
        )
    except ValueError as exc:
        return _fail(f"can not suppress {args.target!r}: {exc}", 2)
    until = row.expires_at.isoformat() if row.expires_at else "until removed"
    print(f"suppressed {row.target} ({until})")
    return 0


def _suppress_list(args: argparse.Namespace) -> int:
    settings = settings_or_exit()

    rows = run_with_resources(settings, lambda res: suppression.list_suppressions(res.pool))
    now = system_clock()
    print(f"{'TARGET':48} {'EXPIRES':20} {'SOURCE':8} COMMENT")
    for row in rows:
        expires = row.expires_at.strftime("%Y-%m-%d %H:%M") if row.expires_at else "never"
        if row.expires_at is not None and row.expires_at <= now:
            expires += " (expired)"
        print(f"{row.target:48} {expires:20} {row.source:8} {row.comment}")
    return 0


def _suppress_remove(args: argparse.Namespace) -> int:
    settings = settings_or_exit()

    try:
        removed = run_with_resources(
            settings, lambda res: suppression.remove_suppression(res.pool, args.target)
        )
    except ValueError as exc:
        return _fail(f"invalid target {args.target!r}: {exc}", 2)
    if not removed:
        return _fail(f"{args.target} is not suppressed")
    print(f"removed {args.target}")
    return 0
