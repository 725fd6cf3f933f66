"""Building the RFC 8460 §4.4 aggregate report of one policy domain for one UTC day.

Input is the day's counters (`PolicyAggregate`, already aggregated in the database); output
is the exact JSON bytes to send, their gzip, the report-id and the §5.1 file name. The
same counters always give the same bytes: keys in the RFC's order, policies and failure
details sorted, gzip without a timestamp. That makes a preview exactly what is sent and a
rebuild harmless. Pure: no I/O, no clock (the day comes from the data, never "today").
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson

from app.tlsrpt.model import PolicyAggregate
from app.tlsrpt.names import normalise_domain
from app.tlsrpt.wire import format_policy

# RFC 5322 §3.2.3 atext: what may stand inside `<...>` of a Subject's Report-ID (§5.3).
_MSG_ID_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+\Z")


@dataclass(frozen=True, slots=True)
class Reporter:
    """Who sends the reports: RFC 8460 §4.4 `organization-name` and `contact-info`.

    `submitter` is the domain of `contact-info` as an A-label (§5.1, §5.3).
    """

    organization_name: str
    contact_info: str
    submitter: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "submitter", submitter_domain(self.contact_info))


@dataclass(frozen=True, slots=True)
class BuiltReport:
    """One report ready to store and deliver."""

    report_id: str
    day: date
    policy_domain: str
    json: bytes
    gzip: bytes
    filename: str


def submitter_domain(contact_info: str) -> str:
    """The domain of an email address or URI, as a lower-case A-label."""
    value = contact_info.strip()
    parts = urlsplit(value)
    if parts.scheme and parts.scheme.lower() != "mailto" and parts.hostname:
        return normalise_domain(parts.hostname)
    address = value.split(":", 1)[1] if parts.scheme.lower() == "mailto" else value
    address = address.split("?", 1)[0]
    if "@" not in address:
        raise ValueError(f"no domain in contact-info {contact_info!r}")
    return normalise_domain(address.rpartition("@")[2].rstrip(">"))


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """First and last second of a UTC day: the §4.4 `date-range` of its report."""
    start = datetime.combine(day, time(0, 0, 0), tzinfo=UTC)
    return start, start + timedelta(seconds=86399)


def format_report_id(day: date, policy_domain: str, submitter: str) -> str:
    """A report-id unique per (day, policy domain, submitter) and usable in a Subject.

    RFC 8460 §5.3 puts it inside `<...>`: dot-atom text, exactly one `@`, no spaces.
    Deterministic, so a preview shows the id that will be sent.
    """
    # A-label domains hold only letters, digits, "-", "_" and ".", all atext.
    report_id = f"{day:%Y%m%d}.{policy_domain}@{submitter}"
    check_report_id(report_id)
    return report_id


def check_report_id(report_id: str) -> None:
    """Raise ValueError unless report_id can stand inside `<...>` (RFC 8460 §5.3)."""
    left, at, right = report_id.partition("@")
    if not (at and _is_dot_atom(left) and _is_dot_atom(right)):
        raise ValueError(f"report-id {report_id!r} is not left@right in dot-atom text")


def _is_dot_atom(text: str) -> bool:
    return bool(_MSG_ID_ATOM.match(text)) and all(text.split("."))


def format_filename(submitter: str, policy_domain: str, day: date, report_id: str) -> str:
    """RFC 8460 §5.1: `<submitter>!<policy-domain>!<begin>!<end>!<id>.json.gz`.

    Domains in A-labels; `<id>` letters and digits only (a digest of the report-id).
    """
    start, end = day_bounds(day)
    unique = hashlib.blake2b(report_id.encode(), digest_size=8).hexdigest()
    return (
        f"{normalise_domain(submitter)}!{normalise_domain(policy_domain)}!"
        f"{int(start.timestamp())}!{int(end.timestamp())}!{unique}.json.gz"
    )


def build_document(
    reporter: Reporter,
    day: date,
    policy_domain: str,
    policies: Sequence[PolicyAggregate],
    report_id: str,
) -> dict[str, Any]:
    """The report as JSON-ready dicts, keys in the order RFC 8460 §4.4 lists them.

    Each `policies` entry comes from `wire.format_policy`, the same code that shows an
    operator the day's results, so both always agree.
    """
    if not policies:
        raise ValueError("a report needs at least one policy")
    entries = []
    for counts in sorted(policies, key=_policy_order):
        if counts.policy.policy_domain != policy_domain:
            raise ValueError(
                f"policy for {counts.policy.policy_domain!r} in the report of {policy_domain!r}"
            )
        entries.append(format_policy(counts))
    return {
        "organization-name": reporter.organization_name,
        "date-range": {
            "start-datetime": f"{day.isoformat()}T00:00:00Z",
            "end-datetime": f"{day.isoformat()}T23:59:59Z",
        },
        "contact-info": reporter.contact_info,
        "report-id": report_id,
        "policies": entries,
    }


def _policy_order(counts: PolicyAggregate) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    policy = counts.policy
    return (policy.policy_type.value, policy.policy_string, policy.mx_host)


def encode_document(document: dict[str, Any]) -> bytes:
    """The JSON bytes of a report: UTF-8, compact, keys in the given order."""
    return orjson.dumps(document)


def compress(data: bytes) -> bytes:
    """gzip for `application/tlsrpt+gzip` (RFC 8460 §5.3); mtime 0 keeps it reproducible."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def build_report(
    reporter: Reporter,
    day: date,
    policy_domain: str,
    policies: Sequence[PolicyAggregate],
    *,
    report_id: str | None = None,
) -> BuiltReport:
    """Everything stored and sent for one (policy domain, day): JSON, gzip, id, name."""
    policy_domain = normalise_domain(policy_domain)
    submitter = reporter.submitter
    if report_id is None:
        report_id = format_report_id(day, policy_domain, submitter)
    data = encode_document(build_document(reporter, day, policy_domain, policies, report_id))
    return BuiltReport(
        report_id=report_id,
        day=day,
        policy_domain=policy_domain,
        json=data,
        gzip=compress(data),
        filename=format_filename(submitter, policy_domain, day, report_id),
    )
