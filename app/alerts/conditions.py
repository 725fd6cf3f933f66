"""The alert conditions: what is wrong now, read from both directions.

Each evaluator returns the conditions of its kind that hold at `now`; the service raises
those not open yet and resolves the open ones that no longer hold. A subject names what
the condition is about (a policy domain, a rua, a day; '' for the whole service). An
evaluator may also answer None, "no verdict now": that kind's open alerts stay as they
are. The database conditions are `CONDITIONS`; `DkimWatch` (dkim_mismatch) asks DNS, so
its owner (the scheduler, `tlsrpt alerts evaluate`) makes one with the signing key and
the resolver and hands it to the round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from app.config import AlertSettings
from app.db.pool import Pool
from app.delivery import trouble
from app.delivery.signing import DkimKey
from app.dns.resolver import TxtResolver
from app.dnscheck.dkim import check_published_key
from app.dnscheck.model import Status
from app.inbound import failures
from app.ingest import hours

INCOMING_FAILURES = "incoming_failures"
OUTGOING_SPIKE = "outgoing_spike"
DELIVERY_FAILED = "delivery_failed"
DAY_UNDELIVERED = "day_undelivered"
# The DKIM key report mail is signed with is not the one DNS publishes (`DkimWatch`).
DKIM_MISMATCH = "dkim_mismatch"
SILENCE = "silence"
# `tlsrpt alerts test`: stored like an alert, resolved at once.
TEST = "test"


@dataclass(frozen=True, slots=True)
class Condition:
    subject: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


# None: no verdict now (DNS can not answer, or not due): the open alerts stay as they are.
Evaluator = Callable[[Pool, datetime, AlertSettings], Awaitable[list[Condition] | None]]
# DNS is asked about the DKIM key at most this often (the scheduler polls every 30 s).
DKIM_CHECK_INTERVAL = timedelta(hours=1)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _listed(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


async def incoming_failures(pool: Pool, now: datetime, s: AlertSettings) -> list[Condition]:
    """Reports others sent us show failed sessions for one of our policy domains."""
    since = now - timedelta(hours=s.incoming_hours)
    found = []
    for d in await failures.domain_failures(pool, since, s.incoming_min_failures):
        total = d.success_count + d.failure_count
        share = _share(d.failure_count, total)
        if share < s.incoming_min_share:
            continue
        summary = (
            f"{d.failure_count} of {total} sessions to {d.policy_domain} failed"
            f" ({_listed(d.result_types)}) according to {_listed(d.organizations)}"
        )
        if d.mx_hosts:
            summary += f"; MX: {_listed(d.mx_hosts)}"
        found.append(
            Condition(
                d.policy_domain,
                summary,
                {
                    "policy_domain": d.policy_domain,
                    "failed_sessions": d.failure_count,
                    "successful_sessions": d.success_count,
                    "failure_share": round(share, 4),
                    "result_types": d.result_types,
                    "receiving_mx_hosts": d.mx_hosts[:50],
                    "organizations": d.organizations[:50],
                    "report_ids": d.report_ids[:50],
                },
            )
        )
    return found


def is_spike(
    recent_ok: int, recent_failed: int, base_ok: int, base_failed: int, s: AlertSettings
) -> bool:
    """A last hour with enough sessions whose failure rate is high and well above the
    domain's own baseline (pure)."""
    total = recent_ok + recent_failed
    if total < s.spike_min_sessions:
        return False
    rate = _share(recent_failed, total)
    return rate >= s.spike_min_rate and rate >= s.spike_factor * _share(
        base_failed, base_ok + base_failed
    )


async def outgoing_spike(pool: Pool, now: datetime, s: AlertSettings) -> list[Condition]:
    """A policy domain whose failure rate in the last hour is far above its baseline:
    a remote certificate or policy broke today, hours before its report goes out."""
    found = []
    rows = await hours.domain_hours(
        pool, now, baseline_hours=s.spike_baseline_hours, min_failures=1
    )
    for h in rows:
        if not is_spike(
            h.recent_success, h.recent_failure, h.baseline_success, h.baseline_failure, s
        ):
            continue
        total = h.recent_success + h.recent_failure
        base_total = h.baseline_success + h.baseline_failure
        rate = _share(h.recent_failure, total)
        base = _share(h.baseline_failure, base_total)
        found.append(
            Condition(
                h.policy_domain,
                f"{h.recent_failure} of {total} sessions to {h.policy_domain} failed in the"
                f" last hour ({rate:.0%}; before: {base:.0%} of {base_total})",
                {
                    "policy_domain": h.policy_domain,
                    "failed_sessions": h.recent_failure,
                    "sessions": total,
                    "failure_rate": round(rate, 4),
                    "baseline_failure_rate": round(base, 4),
                    "baseline_sessions": base_total,
                },
            )
        )
    return found


async def delivery_failed(pool: Pool, now: datetime, s: AlertSettings) -> list[Condition]:
    """A rua whose report could not be delivered (permanently, or after 24 hours)."""
    since = now - timedelta(hours=s.delivery_hours)
    return [
        Condition(
            f.rua,
            f"reports to {f.rua} fail: {f.last_error or 'no reason recorded'}",
            {
                "rua": f.rua,
                "kind": f.kind,
                "failed_at": f.failed_at.isoformat(),
                "last_error": f.last_error,
                "policy_domain": f.policy_domain,
                "day": f.day.isoformat(),
            },
        )
        for f in await trouble.failed_ruas(pool, since)
    ]


async def day_undelivered(pool: Pool, now: datetime, s: AlertSettings) -> list[Condition]:
    """A day whose reports were not all delivered within 24 hours of being built."""
    lookback = timedelta(hours=s.delivery_hours)
    return [
        Condition(
            d.day.isoformat(),
            f"{d.undelivered} of {d.total} report deliveries of {d.day.isoformat()} are not"
            " delivered 24 hours after the reports were built",
            {"day": d.day.isoformat(), "undelivered": d.undelivered, "deliveries": d.total},
        )
        for d in await trouble.undelivered_days(pool, now, lookback)
    ]


async def silence(pool: Pool, now: datetime, s: AlertSettings) -> list[Condition]:
    """No result for `silence_minutes` while results usually arrive: the feed broke."""
    last = await hours.last_result_at(pool, now)
    if last is None or now - last < timedelta(minutes=s.silence_minutes):
        return []
    # The 24 hours up to and with the hour of the last result.
    active = await hours.active_hours(pool, last - timedelta(hours=23), last + timedelta(hours=1))
    if active < s.silence_min_active_hours:
        return []
    return [
        Condition(
            "",
            f"no results ingested since {last.isoformat()} ({(now - last) // timedelta(minutes=1)}"
            f" minutes); results arrived in {active} of the 24 hours before",
            {"last_result_at": last.isoformat(), "active_hours": active},
        )
    ]


class DkimWatch:
    """dkim_mismatch: DNS does not publish the key report mail is signed with (missing,
    revoked, broken or another key: receivers' DKIM checks then fail, RFC 8460 §3).

    Asks DNS at most once per `interval` (by the `now` of the round, the injected clock);
    between checks, and when DNS can not answer, it gives no verdict. Without a key (mail
    reports disabled, said at start-up and by the doctor) nothing is ever raised.
    """

    def __init__(
        self,
        key: DkimKey | None,
        resolver: TxtResolver,
        interval: timedelta = DKIM_CHECK_INTERVAL,
    ) -> None:
        self._key = key
        self._resolver = resolver
        self._interval = interval
        self._next_at: datetime | None = None

    async def __call__(self, pool: Pool, now: datetime, s: AlertSettings) -> list[Condition] | None:
        if self._key is None:
            return []
        if self._next_at is not None and now < self._next_at:
            return None
        self._next_at = now + self._interval
        finding = await check_published_key(self._resolver, self._key)
        if finding.status is Status.UNKNOWN:
            return None
        if finding.status is Status.OK:
            return []
        return [
            Condition(
                finding.subject,
                f"{finding.subject}: {finding.message}",
                {
                    "dkim_name": finding.subject,
                    "selector": self._key.selector,
                    "domain": self._key.domain,
                    "reason": finding.message,
                    "record_to_publish": finding.suggestion,
                },
            )
        ]


# Evaluated every round, in this order (a kind missing here is never resolved);
# DKIM_MISMATCH is added by `alerts.service.run_round` when it is given a `DkimWatch`.
CONDITIONS: dict[str, Evaluator] = {
    INCOMING_FAILURES: incoming_failures,
    OUTGOING_SPIKE: outgoing_spike,
    DELIVERY_FAILED: delivery_failed,
    DAY_UNDELIVERED: day_undelivered,
    SILENCE: silence,
}
