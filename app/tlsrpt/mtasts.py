"""MTA-STS (RFC 8461), pure: the `_mta-sts` TXT record, the policy file, MX matching.

The DNS check reads a domain's MTA-STS set-up with these: `select_sts_record` picks the
one `v=STSv1` record out of a TXT answer (§3.1), `parse_policy` reads the policy file
fetched from `https://mta-sts.<domain>/.well-known/mta-sts.txt` (§3.2), and
`mx_matches` says whether an MX host is allowed by a policy's `mx` pattern (§4.1). Both
texts come from someone else's DNS and web server: every rejection raises
`StsSyntaxError` naming the problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

STS_VERSION = "STSv1"
# RFC 8461 §3.3: "a maximum size of 64 KiB" for the policy body.
MAX_POLICY_BYTES = 64 * 1024
# RFC 8461 §3.2: max_age is at most 31557600 seconds (about one year).
MAX_AGE_LIMIT = 31_557_600
MODES = ("enforce", "testing", "none")

# RFC 8461 §3.1: sts-id = 1*32(ALPHA / DIGIT)
_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
# RFC 8461 §3.1: sts-ext-name = (ALPHA / DIGIT) 0*31(ALPHA / DIGIT / "_" / "-" / ".")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+\Z")
# RFC 8461 §3.2: sts-policy-field-name = 1*32(ALPHA / DIGIT / "_" / "-" / ".")
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")
# RFC 8461 §3.2: sts-policy-mx-value = ["*."] Domain
_MX_PATTERN = re.compile(
    r"(\*\.)?([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9-]+\Z"
)


class StsSyntaxError(ValueError):
    """A record or policy that breaks RFC 8461's grammar; the message says where."""


@dataclass(frozen=True, slots=True)
class StsRecord:
    """The `_mta-sts.<domain>` TXT record (RFC 8461 §3.1)."""

    id: str
    text: str


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A parsed policy file (RFC 8461 §3.2)."""

    mode: str
    max_age: int
    mx: tuple[str, ...]


def select_sts_record(txt_records: Iterable[Sequence[bytes]]) -> StsRecord | None:
    """The one `v=STSv1` record of a TXT answer; None when there is none.

    RFC 8461 §3.1: records not starting with `v=STSv1;` are ignored, and more than one
    STS record means the domain has no usable policy (StsSyntaxError).
    """
    candidates = []
    for strings in txt_records:
        text = b"".join(strings).decode("latin-1")
        if re.match(r"v=STSv1[ \t]*(;|\Z)", text):
            candidates.append(text)
    if not candidates:
        return None
    if len(candidates) > 1:
        raise StsSyntaxError(f"{len(candidates)} v=STSv1 records; exactly one is allowed")
    return parse_sts_record(candidates[0])


def parse_sts_record(text: str) -> StsRecord:
    """Parse `v=STSv1; id=...;` (RFC 8461 §3.1 grammar)."""
    fields = [part.strip(" \t") for part in text.split(";")]
    if fields and fields[-1] == "":
        fields.pop()
    if not fields or fields[0] != "v=STSv1":
        raise StsSyntaxError("record does not start with v=STSv1")
    record_id: str | None = None
    for field in fields[1:]:
        name, sep, value = field.partition("=")
        if not sep:
            raise StsSyntaxError(f"field {field[:40]!r} is not name=value")
        if name == "id":
            if not _ID.match(value):
                raise StsSyntaxError(f"id {value[:40]!r} is not 1 to 32 letters and digits")
            record_id = record_id or value
        elif not _EXT_NAME.match(name) or not _EXT_VALUE.match(value):
            raise StsSyntaxError(f"invalid extension field {field[:40]!r}")
    if record_id is None:
        raise StsSyntaxError("record has no id= field")
    return StsRecord(id=record_id, text=text)


def parse_policy(body: bytes) -> StsPolicy:
    """Parse a policy file (RFC 8461 §3.2): `key: value` lines, CRLF or LF.

    `version: STSv1`, `mode` and `max_age` are required, `mx` too unless the mode is
    `none`; unknown fields are ignored, and of a repeated field the first counts (mx
    excepted: each line adds a pattern).
    """
    if len(body) > MAX_POLICY_BYTES:
        raise StsSyntaxError(f"policy is larger than {MAX_POLICY_BYTES} bytes (RFC 8461 §3.3)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise StsSyntaxError("policy is not UTF-8 text") from None
    fields: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip(" \t")
        if not sep or not _FIELD_NAME.match(name):
            raise StsSyntaxError(f"line {number} is not 'name: value'")
        if name == "mx":
            if not _MX_PATTERN.match(value):
                raise StsSyntaxError(f"line {number}: mx {value[:60]!r} is not a host pattern")
            mx.append(value.lower().rstrip("."))
        else:
            fields.setdefault(name, value)
    if fields.get("version") != STS_VERSION:
        raise StsSyntaxError(f"version is {fields.get('version')!r}, not {STS_VERSION!r}")
    mode = fields.get("mode")
    if mode not in MODES:
        raise StsSyntaxError(f"mode is {mode!r}, not one of {', '.join(MODES)}")
    max_age_text = fields.get("max_age", "")
    # RFC 8461 §3.2: sts-policy-max-age-value = 1*10(DIGIT)
    if not re.fullmatch(r"[0-9]{1,10}", max_age_text):
        raise StsSyntaxError(f"max_age {max_age_text[:20]!r} is not a number of seconds")
    max_age = int(max_age_text)
    if max_age > MAX_AGE_LIMIT:
        raise StsSyntaxError(f"max_age {max_age} is above the limit of {MAX_AGE_LIMIT}")
    if not mx and mode != "none":
        raise StsSyntaxError("policy has no mx: line")
    return StsPolicy(mode=mode, max_age=max_age, mx=tuple(mx))


def mx_matches(host: str, pattern: str) -> bool:
    """Whether MX `host` is allowed by `pattern` (RFC 8461 §4.1).

    A pattern is a host name, or `*.` and a domain, where `*` stands for exactly one
    leftmost label: `*.example.com` matches `mx.example.com`, not `a.mx.example.com` nor
    `example.com`.
    """
    host = host.lower().rstrip(".")
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern
