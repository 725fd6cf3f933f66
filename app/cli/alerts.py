"""`tlsrpt alerts`: list the alerts (the default), run one evaluation round now
(`evaluate`, for cron and tests; the scheduler runs them on its own), and send a test
notification to every configured webhook and mail address (`test`)."""

from __future__ import annotations

import argparse
import json
import sys
from urllib.parse import urlsplit

from app.alerts import gauges
from app.alerts import service as alerts
from app.cli.runtime import announce_configuration, run_with_resources, settings_or_exit
from app.resources import Resources
from app.scheduler.service import instance_name


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("alerts", help="list alerts, evaluate them now, send a test")
    p.set_defaults(func=_list, open_only=False, kind=None, limit=50, json=False)
    asub = p.add_subparsers(dest="alerts_command", metavar="ACTION")
    ls = asub.add_parser("list", help="list alerts, newest first (the default action)")
    ls.add_argument("--open", dest="open_only", action="store_true", help="only unresolved")
    ls.add_argument("--kind", default=None, help="only this kind (e.g. outgoing_spike)")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=_list)
    ev = asub.add_parser("evaluate", help="run one evaluation round now and send what is due")
    ev.set_defaults(func=_evaluate)
    t = asub.add_parser("test", help="send a test notification to every configured target")
    t.set_defaults(func=_test)


def _list(args: argparse.Namespace) -> int:
    settings = settings_or_exit()

    async def work(res: Resources) -> int:
        rows = await alerts.list_alerts(
            res.pool, open_only=args.open_only, kind=args.kind, limit=args.limit
        )
        for r in rows:
            if args.json:
                print(
                    json.dumps(
                        {
                            "id": r.id,
                            "kind": r.kind,
                            "subject": r.subject,
                            "summary": r.summary,
                            "raised_at": r.raised_at.isoformat(),
                            "resolved_at": r.resolved_at and r.resolved_at.isoformat(),
                            "details": r.details,
                        }
                    )
                )
                continue
            state = "open" if r.resolved_at is None else f"resolved {r.resolved_at:%Y-%m-%d %H:%M}"
            print(f"{r.id:>6}  {r.raised_at:%Y-%m-%d %H:%M}Z  {r.kind:<18} {state:<24} {r.summary}")
        if not rows and not args.json:
            print("no alerts")
        return 0

    return run_with_resources(settings, work)


def _evaluate(args: argparse.Namespace) -> int:
    settings = settings_or_exit()

    async def work(res: Resources) -> int:
        senders = announce_configuration(res)
        result = await alerts.run_round(
            res.pool,
            senders,
            res.clock,
            settings,
            owner=instance_name(),
            dkim=alerts.DkimWatch(senders.dkim_key, res.resolver),
        )
        await gauges.refresh(res.pool, res.clock, settings)
        raised = sum(result.raised.values())
        resolved = sum(result.resolved.values())
        print(
            f"raised {raised}, resolved {resolved}, notifications queued "
            f"{result.notifications_queued}, sent {result.notifications_sent}"
        )
        for kind in result.failed_conditions:
            print(f"tlsrpt: condition {kind} could not be evaluated (see the log)", file=sys.stderr)
        return 1 if result.failed_conditions else 0

    return run_with_resources(settings, work)


def _shown(target: str) -> str:
    """A webhook URL without its path (Slack's and Mattermost's carry their secret there)."""
    parts = urlsplit(target)
    if parts.scheme != "https":
        return target
    return f"https://{parts.netloc}/…" if parts.path not in ("", "/") else target


def _test(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    if not alerts.targets(settings.alerts):
        print(
            "tlsrpt: no target: set TLSRPT_ALERTS__WEBHOOK_URLS or TLSRPT_ALERTS__MAIL_TO",
            file=sys.stderr,
        )
        return 2

    async def work(res: Resources) -> int:
        senders = announce_configuration(res)
        _, rows = await alerts.send_test(
            res.pool, senders, res.clock, settings.alerts, owner=instance_name()
        )
        failed = 0
        for n in rows:
            outcome = n.state if n.last_error is None else f"{n.state}: {n.last_error}"
            print(f"{n.channel} {_shown(n.target)}: {outcome}")
            failed += n.state != "sent"
        return 1 if failed else 0

    return run_with_resources(settings, work)
