"""Receiving reports for the operator's domains: read, verify, store once, summarise.

Every way in (HTTPS POST, a whole mail over HTTP, LMTP) ends in `_store`: the report is
read and validated before any I/O, the DKIM keys of a mail are fetched before the
transaction opens, and the report with its policies and failure details is written in
one statement, with the other reports that arrive meanwhile (group commit). The same
(organization, report-id) received again, by any route, is acknowledged as a duplicate
and stored once (RFC 8460 gives no other identity).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import Message
from enum import StrEnum
from typing import Any, TypeVar

from app.clock import Clock
from app.config import InboundSettings, RetentionSettings
from app.db.pool import Pool
from app.dns.resolver import TxtResolver
from app.inbound import store
from app.inbound.dkimcheck import DkimResult, verify_dkim
from app.inbound.group_commit import ReportCommitter
from app.inbound.keys import resolver_key_lookup
from app.inbound.mail import FoundReport, find_report_in
from app.inbound.store import ReportFilter as ReportFilter
from app.tlsrpt.inflate import InflatedTooLargeError, inflate_gzip, is_gzip
from app.tlsrpt.received import Limits, ReceivedReport
from app.tlsrpt.received_json import parse_report
from app.tlsrpt.text import display

log = logging.getLogger(__name__)

# The summary lists at most this many sending IPs per (day, organization).
MAX_SUMMARY_IPS = 50
# Bodies up to this size are read on the event loop (a typical report: about a
# millisecond); larger ones on a worker thread.
IN_PLACE_BYTES = 64 * 1024

T = TypeVar("T")


class Via(StrEnum):
    HTTPS = "https"
    MAIL = "mail"
    LMTP = "lmtp"
    IMAP = "imap"


@dataclass(frozen=True, slots=True)
class Receipt:
    report_pk: int
    duplicate: bool
    report: ReceivedReport
    dkim: DkimResult | None = None


def read_report_body(data: bytes, settings: InboundSettings) -> tuple[bytes, ReceivedReport]:
    """The JSON and the report of a gzip or JSON body (the bytes decide, not the label)."""
    if is_gzip(data):
        data = inflate_gzip(data, settings.max_inflated_bytes)
    elif len(data) > settings.max_inflated_bytes:
        raise InflatedTooLargeError(settings.max_inflated_bytes)
    limits = Limits(settings.max_policies, settings.max_failure_details)
    return data, parse_report(data, limits)


async def receive_report(
    committer: ReportCommitter, settings: InboundSettings, body: bytes
) -> Receipt:
    """A report POSTed to the rua endpoint (RFC 8460 §5.4)."""
    data, report = await off_loop_if_large(len(body), read_report_body, body, settings)
    return await _store(committer, report, data, Via.HTTPS)


async def receive_mail(
    committer: ReportCommitter,
    resolver: TxtResolver,
    settings: InboundSettings,
    raw: bytes,
    message: Message,
    via: Via = Via.MAIL,
) -> Receipt:
    """A whole report mail (RFC 8460 §5.3), `raw` as parsed into `message` by
    `mail.parse_mail`; raise NoReportError when it holds none."""
    found = await off_loop_if_large(len(raw), find_report_in, message)
    data, report = await off_loop_if_large(len(found.data), read_report_body, found.data, settings)
    # DNS before the transaction: no transaction waits on a key lookup.
    dkim = await verify_dkim(raw, resolver_key_lookup(resolver))
    return await _store(committer, report, data, via, found, dkim)


async def off_loop_if_large(size: int, work: Callable[..., T], *args: Any) -> T:
    """Run CPU work on a thread when the input is large, so other requests keep moving
    while a big report inflates and parses; small inputs are cheaper run in place."""
    if size > IN_PLACE_BYTES:
        return await asyncio.to_thread(work, *args)
    return work(*args)


async def _store(
    committer: ReportCommitter,
    report: ReceivedReport,
    data: bytes,
    via: Via,
    found: FoundReport | None = None,
    dkim: DkimResult | None = None,
) -> Receipt:
    row = _report_row(report, data, via, found, dkim)
    policies, failures = _policy_rows(report)
    # Committed with whatever other reports arrive meanwhile (one transaction for all).
    report_pk, inserted = await committer.insert(store.NewReport(row, policies, failures))
    log.info(
        "inbound_report_received",
        extra={
            "fields": {
                "organization": display(report.organization_name),
                "report_id": display(report.report_id),
                "day": report.day.isoformat(),
                "policies": len(report.policies),
                "via": via.value,
                "duplicate": not inserted,
                # Lenient reading: what was flagged is stored with the report and answered.
                "warnings": [display(str(w)) for w in report.warnings[:5]],
                "warning_count": len(report.warnings),
                "dkim": None if dkim is None else dkim.verdict.value,
                "id": report_pk,
            }
        },
    )
    return Receipt(report_pk, not inserted, report, dkim)


def _report_row(
    report: ReceivedReport,
    data: bytes,
    via: Via,
    found: FoundReport | None,
    dkim: DkimResult | None,
) -> dict[str, Any]:
    meta = found.meta if found else None
    return {
        "organization_name": report.organization_name,
        "report_id": report.report_id,
        "contact_info": report.contact_info,
        "start_at": report.start_at,
        "end_at": report.end_at,
        "day": report.day,
        "policy_count": len(report.policies),
        "success_count": sum(p.successful_sessions for p in report.policies),
        "failure_count": sum(p.failed_sessions for p in report.policies),
        "has_failures": report.has_failures,
        "received_via": via.value,
        "report_json": data,
        "extra": report.extra,
        "warnings": [{"field": w.path or None, "reason": w.reason} for w in report.warnings],
        "mail_from": meta.from_ if meta else None,
        "mail_subject": meta.subject if meta else None,
        "mail_message_id": meta.message_id if meta else None,
        "mail_report_domain": meta.report_domain if meta else None,
        "mail_submitter": meta.report_submitter if meta else None,
        "mail_filename": found.filename if found else None,
        "dkim_verdict": dkim.verdict.value if dkim else None,
        "dkim_domain": dkim.domain if dkim else None,
        "dkim_reason": dkim.reason if dkim else None,
    }


def _policy_rows(report: ReceivedReport) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    policies: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for position, p in enumerate(report.policies):
        policies.append(
            {
                "position": position,
                "policy_type": p.policy_type.value,
                "policy_domain": p.policy_domain,
                "policy_string": p.policy_string,
                "mx_host": p.mx_host,
                "success_count": p.successful_sessions,
                "failure_count": p.failed_sessions,
                "extra": p.extra or None,
            }
        )
        for index, f in enumerate(p.failures):
            failures.append(
                {
                    "policy_position": position,
                    "position": index,
                    "result_type": f.result_type,
                    "sending_mta_ip": f.sending_mta_ip,
                    "receiving_mx_hostname": f.receiving_mx_hostname,
                    "receiving_mx_helo": f.receiving_mx_helo,
                    "receiving_ip": f.receiving_ip,
                    "additional_information": f.additional_information,
                    "failure_reason_code": f.failure_reason_code,
                    "failed_session_count": f.failed_session_count,
                    "extra": f.extra or None,
                }
            )
    return policies, failures


async def purge_expired(pool: Pool, clock: Clock, settings: RetentionSettings) -> int:
    """Retention: delete reports received more than `inbound_days` ago. By receipt, not
    by the day a report covers: a late report about an old day is still kept a while."""
    cutoff = clock() - timedelta(days=settings.inbound_days)
    async with pool.connection() as conn, conn.transaction():
        deleted = await store.delete_reports_received_before(conn, cutoff)
    log.info(
        "inbound_retention_purged",
        extra={"fields": {"reports": deleted, "received_before": cutoff.isoformat()}},
    )
    return deleted


# Reading


async def list_reports(pool: Pool, where: ReportFilter) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        return await store.list_reports(conn, where)


async def get_report(pool: Pool, report_pk: int) -> dict[str, Any] | None:
    async with pool.connection() as conn:
        return await store.get_report(conn, report_pk)


@dataclass
class MxSummary:
    mx_host: str | None
    receiving_ips: set[str] = field(default_factory=set)
    failed_sessions: int = 0
    result_types: set[str] = field(default_factory=set)


@dataclass
class SenderDay:
    """One sending organization's reports about a domain for one UTC day."""

    day: date
    organization: str
    reports: int
    successful_sessions: int
    failed_sessions: int
    failure_types: dict[str, int] = field(default_factory=dict)
    mx_hosts: dict[str | None, MxSummary] = field(default_factory=dict)
    sending_ips: set[str] = field(default_factory=set)

    def mx_by_failures(self) -> list[MxSummary]:
        """MX hosts, the most failed first."""
        return sorted(self.mx_hosts.values(), key=lambda m: (-m.failed_sessions, m.mx_host or ""))


async def summarize(pool: Pool, domain: str, from_day: date, to_day: date) -> list[SenderDay]:
    """Per day and sending organization: sessions, failure types, MX hosts and IPs."""
    async with pool.connection() as conn:
        sessions = await store.list_summary_sessions(conn, domain, from_day, to_day)
        failures = await store.list_summary_failures(conn, domain, from_day, to_day)
    days = {(d, o): SenderDay(d, o, n, ok, bad) for d, o, n, ok, bad in sessions}
    failure_types: dict[tuple[date, str], dict[str, int]] = defaultdict(dict)
    for day, org, result_type, mx_host, receiving_ip, sending_ip, count in failures:
        entry = days[(day, org)]
        types = failure_types[(day, org)]
        types[result_type] = types.get(result_type, 0) + count
        mx = entry.mx_hosts.setdefault(mx_host, MxSummary(mx_host))
        mx.failed_sessions += count
        mx.result_types.add(result_type)
        if receiving_ip:
            mx.receiving_ips.add(receiving_ip)
        if sending_ip and len(entry.sending_ips) < MAX_SUMMARY_IPS:
            entry.sending_ips.add(sending_ip)
    for key, types in failure_types.items():
        days[key].failure_types = dict(sorted(types.items(), key=lambda kv: (-kv[1], kv[0])))
    return list(days.values())
