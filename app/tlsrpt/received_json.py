"""Reading the JSON of reports that others send us (RFC 8460 §4.4): lenient receiving.

`parse_report` turns the JSON of a received report into a `ReceivedReport`. A report is
refused only when it can not be read as one: not a JSON object, or without what
identifies it and the day it covers (`organization-name`, `report-id`, `date-range`)
or without a `policies` array; and, whatever it says, when it is too large or nested
too deep (bombs). Everything else is read leniently and flagged in
`ReceivedReport.warnings` (path and reason, up to `MAX_WARNINGS`): a missing or null
`contact-info`, a malformed optional failure-detail field (stored as absent), a policy
or failure detail whose type, domain or counts can not be read (not counted), an
unknown `result-type` (kept as written), unknown keys (kept verbatim). The stored JSON
keeps everything the sender wrote. Known deviations are read without a warning:
`mx-host` as one string (RFC 8460 Appendix B as printed), a TLSA `policy-string` sent
as one JSON-encoded string (Microsoft), date-times without a zone (read as UTC),
`end-datetime` at the next midnight (Mail.ru), blank optional strings (read as absent),
failure-detail counts that add up to more than the failure total (RFC 8460 §4: they are
not exclusive). A body that is not a report is refused with every reason found (up to
`MAX_ERRORS`), each naming the JSON path.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from app.tlsrpt.model import PolicyType
from app.tlsrpt.names import (
    MAX_DOMAIN_CHARS,
    normalise_domain,
    normalise_ip,
    normalise_mx_pattern,
)
from app.tlsrpt.received import (
    KNOWN_RESULT_TYPES,
    InvalidReportError,
    Limits,
    ReceivedFailure,
    ReceivedPolicy,
    ReceivedReport,
    ReportProblem,
    ReportTooLargeError,
)
from app.tlsrpt.text import display
from app.tlsrpt.wire import DETAIL_FIELDS, DETAIL_IP_FIELDS

MAX_ERRORS = 20
# Warnings listed per report (stored and answered); the rest are counted.
MAX_WARNINGS = 50
# The reader walks the known fields by their shape; values of unknown keys, kept
# verbatim, may nest this deep.
MAX_DEPTH = 8
MAX_COUNT = 2**63 - 1
# Identity strings (organization, report-id) and single values are bounded for storage.
MAX_NAME_CHARS = 1024
MAX_VALUE_CHARS = 8192

_POLICY_TYPES = {t.value: t for t in PolicyType}
_LEFT_OUT = "this policy is not counted (the stored JSON keeps it)"
_DETAIL_LEFT_OUT = "this failure detail is not counted (the stored JSON keeps it)"
_REPORT_KEYS = frozenset(
    {"organization-name", "contact-info", "report-id", "date-range", "policies"}
)
_RANGE_KEYS = frozenset({"start-datetime", "end-datetime"})
_ENTRY_KEYS = frozenset({"policy", "summary", "failure-details"})
_POLICY_KEYS = frozenset({"policy-type", "policy-domain", "policy-string", "mx-host"})
_SUMMARY_KEYS = frozenset({"total-successful-session-count", "total-failure-session-count"})
_DETAIL_KEYS = frozenset({"result-type", "failed-session-count", *(k for k, _ in DETAIL_FIELDS)})
# Reports repeat the same few addresses: parse each once.
_ip = functools.lru_cache(maxsize=65536)(normalise_ip)


def parse_report(data: bytes, limits: Limits | None = None) -> ReceivedReport:
    """Parse the (inflated) JSON of a received report; raise InvalidReportError."""
    limits = limits or Limits()
    # Counting brackets over-estimates (brackets inside strings count too) but bounds
    # the objects the decoder can build before one is built.
    if data.count(b"{") + data.count(b"[") > limits.max_containers:
        raise ReportTooLargeError(
            f"more than {limits.max_containers} JSON objects and arrays in the report"
        )
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = f"not valid JSON: {display(str(exc))}"
        raise InvalidReportError([ReportProblem("", reason)]) from None
    # NUL can only arrive as the escape `\u0000` (raw control bytes are not JSON), so
    # only a body holding that text needs its strings looked at.
    if b"\\u0000" in data:
        _check_no_nul(doc)
    return _Reader(limits).report(doc)


def _depth(value: Any) -> int:
    """How deeply `value` nests JSON containers, walked level by level."""
    level = [value] if isinstance(value, (dict, list)) else []
    depth = 0
    while level and depth <= MAX_DEPTH:
        depth += 1
        below: list[Any] = []
        for container in level:
            values = container.values() if isinstance(container, dict) else container
            below.extend(v for v in values if isinstance(v, (dict, list)))
        level = below
    return depth


def _check_no_nul(doc: Any) -> None:
    """Refuse NUL characters in keys and strings: PostgreSQL text can not hold them."""
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidReportError([ReportProblem("", "a string contains a NUL character")])
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


class _Stop(Exception):
    """Enough problems collected; the report is refused with those."""


class _Reader:
    """Walks a report: `fail` for what makes it unreadable (refused), `warn` for what is
    flagged and left out of the rows while the report is stored (its JSON keeps all)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.problems: list[ReportProblem] = []
        self.warnings: list[ReportProblem] = []
        self.unlisted_warnings = 0
        self.details = 0

    def fail(self, path: str, reason: str) -> None:
        self.problems.append(ReportProblem(path, reason))
        if len(self.problems) >= MAX_ERRORS:
            raise _Stop

    def warn(self, path: str, reason: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(ReportProblem(path, reason))
        else:
            self.unlisted_warnings += 1

    def report(self, doc: Any) -> ReceivedReport:
        try:
            result = self._report(doc)
        except _Stop:
            result = None
        if self.problems or result is None:
            raise InvalidReportError(self.problems)
        if self.unlisted_warnings:
            self.warnings.append(
                ReportProblem("", f"{self.unlisted_warnings} more warnings not listed")
            )
        return replace(result, warnings=tuple(self.warnings))

    # RFC 8460 §4.4 report fields. What identifies a report (organization-name,
    # report-id), the day it covers (date-range) and its `policies` array must be
    # readable; everything else is read leniently.

    def _report(self, doc: Any) -> ReceivedReport | None:
        if not isinstance(doc, dict):
            self.fail("", "a report is a JSON object")
            return None
        organization = self.required_text(doc, "organization-name", "", MAX_NAME_CHARS)
        report_id = self.required_text(doc, "report-id", "", MAX_NAME_CHARS)
        contact = self.optional_text(doc, "contact-info", "", MAX_NAME_CHARS)
        if contact is None and not doc.get("contact-info"):
            self.warn("contact-info", "missing or blank; stored as absent")
        start_at = end_at = None
        date_range = self.object(doc, "date-range", "")
        extra = self.unknown_keys(doc, _REPORT_KEYS, "", "")
        if date_range is not None:
            start_at = self.datetime(date_range, "start-datetime", "date-range")
            end_at = self.datetime(date_range, "end-datetime", "date-range")
            # A range may end at the next midnight (Mail.ru) or at 23:59:59Z (Google):
            # both say "this day"; a range that ends before it starts is flagged.
            if start_at and end_at and end_at < start_at:
                self.warn("date-range", "end-datetime is before start-datetime")
            extra |= self.unknown_keys(date_range, _RANGE_KEYS, "date-range", "date-range.")
        policies = self.policies(doc)
        if self.problems:
            return None
        assert organization and report_id and start_at and end_at
        return ReceivedReport(
            organization, contact, report_id, start_at, end_at, tuple(policies), extra
        )

    def policies(self, doc: dict[str, Any]) -> list[ReceivedPolicy]:
        entries = doc.get("policies")
        if not isinstance(entries, list):
            self.fail("policies", "missing" if entries is None else "must be an array")
            return []
        if not entries:
            self.warn("policies", "empty: the report counts no sessions")
        if len(entries) > self.limits.max_policies:
            raise ReportTooLargeError(
                f"{len(entries)} policies (at most {self.limits.max_policies} are accepted)"
            )
        result = []
        for index, entry in enumerate(entries):
            policy = self.plain_policy(entry, index) or self.policy(entry, f"policies[{index}]")
            if policy is not None:
                result.append(policy)
        return result

    def plain_policy(self, entry: Any, index: int) -> ReceivedPolicy | None:
        """The common entry, read in one go: only RFC 8460 keys, every value of its
        type and within its limits, nothing to flag. None for anything else, which
        `policy` then reads field by field (and flags); both read a plain entry alike."""
        if type(entry) is not dict or not _ENTRY_KEYS.issuperset(entry):
            return None
        body = entry.get("policy")
        summary = entry.get("summary")
        if (
            type(body) is not dict or type(summary) is not dict
            or not _POLICY_KEYS.issuperset(body) or not _SUMMARY_KEYS.issuperset(summary)
        ):  # fmt: skip
            return None
        policy_type = _POLICY_TYPES.get(body.get("policy-type"))  # type: ignore[arg-type]
        domain = body.get("policy-domain")
        successes = summary.get("total-successful-session-count")
        failed = summary.get("total-failure-session-count")
        if (
            policy_type is None or type(domain) is not str or len(domain) > MAX_DOMAIN_CHARS
            or type(successes) is not int or not 0 <= successes <= MAX_COUNT
            or type(failed) is not int or not 0 <= failed <= MAX_COUNT
        ):  # fmt: skip
            return None
        strings = _plain_texts(body.get("policy-string", []))
        mx_hosts = _plain_texts(body.get("mx-host", []))
        if strings is None or mx_hosts is None or (
            # Microsoft's JSON-encoded TLSA records: `policy` reads those.
            policy_type is PolicyType.TLSA and len(strings) == 1 and strings[0][:1] == "["
        ):  # fmt: skip
            return None
        try:
            domain = normalise_domain(domain.strip())
        except ValueError:
            return None
        failures: tuple[ReceivedFailure, ...] = ()
        if "failure-details" in entry:
            failures = tuple(self.failures(entry, f"policies[{index}]"))
        return ReceivedPolicy(
            policy_type, domain, strings, tuple(_mx_pattern(h) for h in mx_hosts),
            successes, failed, failures,
        )  # fmt: skip

    def policy(self, entry: Any, path: str) -> ReceivedPolicy | None:
        """One policy entry, or None (flagged) when its type, domain or counts can not be
        read: such an entry is not counted, and the stored JSON keeps it."""
        if not isinstance(entry, dict):
            self.warn(path, f"must be an object; {_LEFT_OUT}")
            return None
        body = self.object(entry, "policy", path, warn=True)
        summary = self.object(entry, "summary", path, warn=True)
        where = f"{path}.policy"
        policy_type = domain = successes = failed = None
        strings: list[str] = []
        mx_hosts: list[str] = []
        if body is not None:
            policy_type = self.policy_type(body, where)
            domain = self.optional_text(body, "policy-domain", where, MAX_DOMAIN_CHARS)
            if domain is None:
                self.warn(f"{where}.policy-domain", f"missing; {_LEFT_OUT}")
            else:
                try:
                    domain = normalise_domain(domain)
                except ValueError as exc:
                    self.warn(f"{where}.policy-domain", f"{exc}; {_LEFT_OUT}")
                    domain = None
            strings = self.text_list(body, "policy-string", where)
            # Microsoft sends the TLSA records as one JSON-encoded array string.
            if policy_type is PolicyType.TLSA and len(strings) == 1 and strings[0][:1] == "[":
                strings = _json_string_list(strings[0]) or strings
            mx_hosts = [_mx_pattern(h) for h in self.text_list(body, "mx-host", where)]
        if summary is not None:
            where = f"{path}.summary"
            successes = self.count(summary, "total-successful-session-count", where, 0, _LEFT_OUT)
            failed = self.count(summary, "total-failure-session-count", where, 0, _LEFT_OUT)
        failures = self.failures(entry, path)
        if (
            body is None or summary is None or policy_type is None or domain is None
            or successes is None or failed is None
        ):  # fmt: skip
            return None
        extra = self.unknown_keys(entry, _ENTRY_KEYS, path, "")
        extra |= self.unknown_keys(body, _POLICY_KEYS, f"{path}.policy", "policy.")
        extra |= self.unknown_keys(summary, _SUMMARY_KEYS, f"{path}.summary", "summary.")
        return ReceivedPolicy(
            policy_type, domain, tuple(strings), tuple(mx_hosts), successes, failed,
            tuple(failures), extra,
        )  # fmt: skip

    def policy_type(self, body: dict[str, Any], where: str) -> PolicyType | None:
        value = body.get("policy-type")
        if value is None:
            self.warn(f"{where}.policy-type", f"missing; {_LEFT_OUT}")
            return None
        found = _POLICY_TYPES.get(value) if isinstance(value, str) else None
        if found is None:
            self.warn(
                f"{where}.policy-type",
                f"unknown policy-type '{display(str(value), 64)}' "
                f"(expected sts, tlsa or no-policy-found); {_LEFT_OUT}",
            )
        return found

    def failures(self, entry: dict[str, Any], path: str) -> list[ReceivedFailure]:
        items = entry.get("failure-details")
        if items is None:
            return []
        if not isinstance(items, list):
            self.warn(f"{path}.failure-details", "must be an array; not read")
            return []
        self.details += len(items)
        if self.details > self.limits.max_failure_details:
            raise ReportTooLargeError(
                f"more than {self.limits.max_failure_details} failure details in the report"
            )
        result = []
        for index, item in enumerate(items):
            failure = self.failure(item, f"{path}.failure-details[{index}]")
            if failure is not None:
                result.append(failure)
        return result

    def failure(self, item: Any, where: str) -> ReceivedFailure | None:
        if not isinstance(item, dict):
            self.warn(where, f"must be an object; {_DETAIL_LEFT_OUT}")
            return None
        result_type = self.optional_text(item, "result-type", where, 128)
        if result_type is None:
            self.warn(f"{where}.result-type", f"missing; {_DETAIL_LEFT_OUT}")
        elif result_type not in KNOWN_RESULT_TYPES:
            self.warn(
                f"{where}.result-type",
                f"'{display(result_type, 64)}' is not an RFC 8460 result type; kept as written",
            )
        count = self.count(item, "failed-session-count", where, None, _DETAIL_LEFT_OUT)
        values: dict[str, str | None] = {}
        for key, name in DETAIL_FIELDS:
            value = self.optional_text(item, key, where)
            if value is not None and key in DETAIL_IP_FIELDS:
                try:
                    value = _ip(value)
                except ValueError:
                    self.warn(
                        f"{where}.{key}",
                        f"'{display(value, 64)}' is not an IP address; stored as absent",
                    )
                    value = None
            values[name] = value
        if result_type is None or count is None:
            return None
        extra = self.unknown_keys(item, _DETAIL_KEYS, where, "")
        return ReceivedFailure(result_type, count, **values, extra=extra)

    # JSON value readers: each records a problem and returns None when it can not read

    def unknown_keys(
        self, doc: dict[str, Any], known: frozenset[str], path: str, prefix: str
    ) -> dict[str, Any]:
        """Unknown keys of `doc`, kept verbatim (as `prefix` + key) when not too deep."""
        if known.issuperset(doc):  # the common case, without building a set
            return {}
        unknown = doc.keys() - known
        kept = {}
        for key in sorted(unknown):
            if _depth(doc[key]) > MAX_DEPTH:
                self.warn(_join(path, display(key, 64)), f"nested deeper than {MAX_DEPTH} levels")
            else:
                self.warn(_join(path, display(key, 64)), "not an RFC 8460 field; kept as written")
                kept[prefix + key] = doc[key]
        return kept

    def object(
        self, doc: dict[str, Any], key: str, path: str, *, warn: bool = False
    ) -> dict[str, Any] | None:
        value = doc.get(key)
        if not isinstance(value, dict):
            reason = "missing" if value is None else "must be an object"
            if warn:
                self.warn(_join(path, key), f"{reason}; {_LEFT_OUT}")
            else:
                self.fail(_join(path, key), reason)
            return None
        return value

    def required_text(self, doc: dict[str, Any], key: str, path: str, limit: int) -> str | None:
        value = doc.get(key)
        if value is None:
            self.fail(_join(path, key), "missing")
        elif not isinstance(value, str):
            self.fail(_join(path, key), "must be a string")
        elif not value.strip():
            self.fail(_join(path, key), "must not be blank")
        elif len(value) > limit:
            self.fail(_join(path, key), f"longer than {limit} characters")
        else:
            return value.strip()
        return None

    def optional_text(
        self, doc: dict[str, Any], key: str, path: str, limit: int = MAX_VALUE_CHARS
    ) -> str | None:
        """A string value, None when absent, blank or unreadable (the last flagged)."""
        value = doc.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.warn(_join(path, key), "must be a string; stored as absent")
            return None
        if len(value) > limit:
            self.warn(_join(path, key), f"longer than {limit} characters; stored as absent")
            return None
        # Real senders write "" for fields they do not know: absent, not a value.
        return value.strip() or None

    def text_list(self, doc: dict[str, Any], key: str, path: str) -> list[str]:
        value = doc.get(key)
        if value is None:
            return []
        # RFC 8460 Appendix B prints `mx-host` as a string (erratum 6241: an array).
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            self.warn(_join(path, key), "must be an array of strings; stored as absent")
            return []
        texts = []
        for index, item in enumerate(items):
            if not isinstance(item, str):
                self.warn(f"{_join(path, key)}[{index}]", "must be a string; left out")
            elif len(item) > MAX_VALUE_CHARS:
                self.warn(
                    f"{_join(path, key)}[{index}]",
                    f"longer than {MAX_VALUE_CHARS} characters; left out",
                )
            elif text := item.strip():
                texts.append(text)
        return texts

    def count(
        self, doc: dict[str, Any], key: str, path: str, missing: int | None, left_out: str
    ) -> int | None:
        """A count; a missing one reads as `missing`, a malformed one as None (flagged,
        with `left_out` saying what is then not counted)."""
        value = doc.get(key)
        where = _join(path, key)
        if value is None:
            self.warn(
                where, f"missing; {left_out}" if missing is None else f"missing; read as {missing}"
            )
            return missing
        if isinstance(value, bool) or not isinstance(value, int):
            self.warn(where, f"must be an integer; {left_out}")
        elif not 0 <= value <= MAX_COUNT:
            self.warn(where, f"must be between 0 and 2^63-1; {left_out}")
        else:
            return value
        return None

    def datetime(self, doc: dict[str, Any], key: str, path: str) -> datetime | None:
        text = self.required_text(doc, key, path, 64)
        if text is None:
            return None
        try:
            # RFC 8460 §4.4: RFC 3339 date-time. fromisoformat reads it and the common
            # deviations (no zone, a space for `T`, fractions).
            value = datetime.fromisoformat(text)
        except ValueError:
            self.fail(_join(path, key), f"'{display(text, 64)}' is not an RFC 3339 date-time")
            return None
        # A date-time without a zone is read as UTC, the zone every report uses.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _plain_texts(value: Any) -> tuple[str, ...] | None:
    """A list of strings within the limit, stripped, blanks left out (as `text_list`
    reads them); None when anything in it would be flagged."""
    if type(value) is not list:
        return None
    texts = []
    for item in value:
        if type(item) is not str or len(item) > MAX_VALUE_CHARS:
            return None
        if text := item.strip():
            texts.append(text)
    return tuple(texts)


# Reports repeat the same few MX hosts: read each once.
@functools.lru_cache(maxsize=65536)
def _mx_pattern(text: str) -> str:
    # `mx-host` only informs the reader: a pattern that is not a valid one is kept as
    # written (lower-cased) rather than refusing the sender's whole report.
    try:
        return normalise_mx_pattern(text)
    except ValueError:
        return text.lower().rstrip(".")


def _json_string_list(text: str) -> list[str] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
