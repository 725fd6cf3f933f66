"""The `_smtp._tls` TXT record of RFC 8460 §3: selection, parsing and formatting.

A domain that wants reports publishes `v=TLSRPTv1; rua=mailto:...,https://...`. This
module picks the one TLSRPT record out of a TXT answer (`select_record`), parses it
strictly by the §3 grammar (`parse_record`), tells which report URIs this service can use
(`mailto:` and `https:` only) and writes valid records (`format_record`, for the DNS
check). Record text is hostile input: every rejection raises `RecordSyntaxError` naming
the problem, and a URI this service can not use is kept with the reason, not dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

from app.tlsrpt.names import normalise_domain, normalise_ip

VERSION = "v=TLSRPTv1"
MAX_TXT_STRING = 255  # RFC 1035 §3.3: one character-string holds at most 255 octets

# RFC 8460 §3: field-delim = *WSP ";" *WSP, and WSP is space or tab only.
_WSP = " \t"
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+\Z")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
# RFC 3986 characters, minus "," and "!" which RFC 8460 §3 says MUST be encoded, minus
# ";" (the field delimiter). Characters above U+007F are let through so that IRIs with
# internationalised domain names reach IDNA conversion instead of a syntax error.
_URI_BODY = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@$&'()*+=]|%[0-9A-Fa-f]{2}|[^\x00-\x7f])*\Z")
# RFC 5322 atext without "!", "%" and "?": those need encoding inside a URI, and no
# report address uses them, so the normalised `mailto:` text needs no decoding.
# An authority whose host is an IP literal: [userinfo@] "[" ... "]" [":" port].
_IP_LITERAL_AUTHORITY = re.compile(r"(?:[^@\[\]]*@)?\[[^\[\]]*\](?::[0-9]*)?")
_LOCAL_PART = re.compile(r"(?!\.)(?!.*\.\.)[A-Za-z0-9#$&'*+/=^_`{|}~.-]{1,64}(?<!\.)\Z")


class RecordError(Exception):
    """A domain does not take reports; the subclass says why."""


class NoRecordError(RecordError):
    """No TXT record at all, or none that is a TLSRPT record (RFC 8460 §3)."""


class MultipleRecordsError(RecordError):
    """More than one TLSRPT record: treated as no record (RFC 8460 §3)."""


class RecordSyntaxError(RecordError):
    """The TLSRPT record breaks the RFC 8460 §3 grammar: treated as no record."""


@dataclass(frozen=True, slots=True)
class ReportUri:
    """One destination from a `rua=` field.

    `uri` is the normalised text (domains as lower-case A-labels, mailto query dropped,
    one address per URI); a usable `mailto:` URI is `mailto:` + the plain address, with
    no percent-escapes left. `kind` is `mailto`, `https` or the unusable scheme;
    `problem` says why this service can not send there (None when usable).
    """

    uri: str
    kind: str
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class TlsrptRecord:
    """A parsed TLSRPT record: every rua destination in record order, and extensions."""

    rua: tuple[ReportUri, ...]
    extensions: tuple[tuple[str, str], ...] = ()

    @property
    def usable_rua(self) -> tuple[ReportUri, ...]:
        """The destinations reports go to, without duplicates, in record order."""
        seen: dict[str, ReportUri] = {}
        for item in self.rua:
            if item.usable and item.uri not in seen:
                seen[item.uri] = item
        return tuple(seen.values())


def is_tlsrpt(text: str) -> bool:
    """True when a TXT record is meant as a TLSRPT record (RFC 8460 §3).

    It must start with `v=TLSRPTv1` exactly, followed by a delimiter or the end:
    `v=TLSRPTv10` is another record, not a broken TLSRPT record.
    """
    if not text.startswith(VERSION):
        return False
    rest = text[len(VERSION) :].lstrip(_WSP)
    return rest == "" or rest.startswith(";") or rest != text[len(VERSION) :]


def select_record(txt_records: Iterable[Sequence[bytes]]) -> TlsrptRecord:
    """Pick and parse the one TLSRPT record of a TXT answer.

    Each TXT record is a sequence of character-strings, joined with no separator (RFC
    8460 §3). Records that are not TLSRPT records are ignored; none left raises
    NoRecordError, more than one MultipleRecordsError.
    """
    candidates: list[bytes] = []
    for strings in txt_records:
        joined = b"".join(strings)
        if is_tlsrpt(joined.decode("latin-1")):
            candidates.append(joined)
    if not candidates:
        raise NoRecordError("no TXT record starting with v=TLSRPTv1")
    if len(candidates) > 1:
        raise MultipleRecordsError(f"{len(candidates)} TLSRPT records; exactly one is allowed")
    try:
        text = candidates[0].decode("utf-8")
    except UnicodeDecodeError:
        raise RecordSyntaxError("record is not valid UTF-8") from None
    return parse_record(text)


def parse_record(text: str) -> TlsrptRecord:
    """Parse one TLSRPT record (RFC 8460 §3 grammar); raise RecordSyntaxError."""
    if not is_tlsrpt(text):
        raise RecordSyntaxError("record does not start with v=TLSRPTv1")
    # tlsrpt-record = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
    parts = text[len(VERSION) :].split(";")
    if parts[0].strip(_WSP):
        raise RecordSyntaxError(f"expected ';' after {VERSION}, found {parts[0].strip()!r}")
    fields = [part.strip(_WSP) for part in parts[1:]]
    if fields and fields[-1] == "":
        fields.pop()  # the optional trailing delimiter
    if not fields:
        raise RecordSyntaxError("record has no fields; rua= is required")
    rua: list[ReportUri] = []
    extensions: list[tuple[str, str]] = []
    seen_rua = False
    for index, field in enumerate(fields, start=1):
        name, sep, value = field.partition("=")
        if not sep:
            raise RecordSyntaxError(f"field {index} {_show(field)} is not name=value")
        if name == "rua":
            seen_rua = True
            rua.extend(_parse_rua(value))
            continue
        # RFC 8460 §3 tlsrpt-extension: unknown keys are kept and ignored, but must be
        # well-formed, or the record is not valid.
        if not _EXT_NAME.match(name):
            raise RecordSyntaxError(f"field {index}: invalid field name {_show(name)}")
        if not _EXT_VALUE.match(value):
            raise RecordSyntaxError(f"field {index}: invalid value for {name!r}")
        extensions.append((name, value))
    if not seen_rua:
        raise RecordSyntaxError("record has no rua= field")
    return TlsrptRecord(rua=tuple(rua), extensions=tuple(extensions))


def _parse_rua(value: str) -> list[ReportUri]:
    # tlsrpt-rua = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
    result: list[ReportUri] = []
    for position, raw in enumerate(value.split(","), start=1):
        uri = raw.strip(_WSP)
        if not uri:
            raise RecordSyntaxError(f"rua URI {position} is empty")
        scheme_match = _SCHEME.match(uri)
        if not scheme_match:
            raise RecordSyntaxError(f"rua URI {_show(uri)} has no scheme")
        if not _URI_BODY.match(uri, scheme_match.end()):
            raise RecordSyntaxError(f"rua URI {_show(uri)} contains invalid characters")
        scheme = scheme_match.group(1).lower()
        body = uri[scheme_match.end() :]
        _check_delimiters(uri, body)
        if scheme == "mailto":
            result.extend(_parse_mailto(body, uri))
        elif scheme == "https":
            result.append(_parse_https(uri))
        else:
            # RFC 8460 §3: only "mailto" and "https" are defined.
            result.append(ReportUri(uri, scheme, f"scheme {scheme!r} is not mailto or https"))
    return result


def _check_delimiters(uri: str, body: str) -> None:
    """RFC 3986 §3.2.2, §3.5: "[" and "]" only around an IP literal host, "#" once (the
    fragment); a URI breaking that is not a URI, so the record is invalid (RFC 8460 §3
    imports URI from RFC 3986). RFC 6068 §2: a mailto address holds no bare brackets."""
    if body.count("#") > 1:
        raise RecordSyntaxError(f"rua URI {_show(uri)} has more than one '#'")
    authority = ""
    if body.startswith("//"):
        authority = body[2:].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    rest = body[2 + len(authority) :] if authority else body
    host_literal = _IP_LITERAL_AUTHORITY.fullmatch(authority)
    if ("[" in authority or "]" in authority) and not host_literal:
        raise RecordSyntaxError(f"rua URI {_show(uri)}: '[' and ']' only around an IP host")
    if "[" in rest or "]" in rest:
        raise RecordSyntaxError(f"rua URI {_show(uri)}: '[' and ']' outside the host")


def _parse_mailto(body: str, original: str) -> list[ReportUri]:
    # RFC 6068: mailto:addr-spec *("," addr-spec) ["?" hfields]; the query (subject,
    # body, ...) has no meaning for reports and is ignored.
    to = body.partition("?")[0]
    try:
        decoded = unquote_to_bytes(to).decode("utf-8")
    except UnicodeDecodeError:
        return [ReportUri(original, "mailto", "address is not valid UTF-8")]
    if not decoded:
        return [ReportUri(original, "mailto", "mailto URI without an address")]
    result = []
    for address in decoded.split(","):
        local, at, domain = address.strip().rpartition("@")
        if not at or not _LOCAL_PART.match(local):
            result.append(ReportUri(original, "mailto", f"invalid address {_show(address)}"))
            continue
        try:
            domain = normalise_domain(domain)
        except ValueError as exc:
            result.append(ReportUri(original, "mailto", f"invalid address domain: {exc}"))
            continue
        result.append(ReportUri(f"mailto:{local}@{domain}", "mailto"))
    return result


def _parse_https(uri: str) -> ReportUri:
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        return ReportUri(uri, "https", f"invalid https URI: {exc}")
    host = parts.hostname or ""
    if not host:
        return ReportUri(uri, "https", "https URI without a host")
    if port == 0:
        return ReportUri(uri, "https", "https URI with port 0 (no server listens there)")
    if parts.username is not None or parts.password is not None:
        return ReportUri(uri, "https", "https URI with credentials")
    try:
        if host.startswith("[") or ":" in host:
            host = "[" + normalise_ip(host.strip("[]")) + "]"
        elif host.replace(".", "").isdigit():
            host = normalise_ip(host)
        else:
            host = normalise_domain(unquote_to_bytes(host).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        return ReportUri(uri, "https", f"invalid https host: {exc}")
    netloc = host if port is None or port == 443 else f"{host}:{port}"
    path = quote(parts.path or "/", safe="/%:@-._~$&'()*+=")
    query = "?" + quote(parts.query, safe="/%:@-._~$&'()*+=?") if parts.query else ""
    return ReportUri(f"https://{netloc}{path}{query}", "https")


def format_record(rua: Sequence[str], extensions: Sequence[tuple[str, str]] = ()) -> str:
    """Write a valid TLSRPT record for the given destinations (RFC 8460 §3).

    Each URI must be usable (`mailto:` or `https:`); "," and "!" inside it are encoded
    as §3 requires. Raises ValueError naming the URI or extension that is not valid.
    """
    if not rua:
        raise ValueError("at least one rua URI is required")
    written: list[str] = []
    for uri in rua:
        encoded = uri.strip().replace(",", "%2C").replace("!", "%21")
        try:
            parsed = _parse_rua(encoded)
        except RecordSyntaxError as exc:
            raise ValueError(str(exc)) from None
        for item in parsed:
            if item.problem:
                raise ValueError(f"rua URI {uri!r}: {item.problem}")
            written.append(item.uri.replace(",", "%2C").replace("!", "%21"))
    fields = [VERSION, "rua=" + ",".join(dict.fromkeys(written))]
    for name, value in extensions:
        if name == "rua" or not _EXT_NAME.match(name) or not _EXT_VALUE.match(value):
            raise ValueError(f"invalid extension {name!r}={value!r}")
        fields.append(f"{name}={value}")
    text = "; ".join(fields)
    parse_record(text)  # a record we write must be one we accept
    return text


def split_txt_strings(text: str) -> list[str]:
    """Cut a record into TXT character-strings of at most 255 octets (RFC 1035 §3.3).

    RFC 8460 §3 joins them again with no separator, so any cut point is correct.
    """
    data = text.encode("ascii")
    return [
        data[i : i + MAX_TXT_STRING].decode("ascii") for i in range(0, len(data), MAX_TXT_STRING)
    ] or [""]


def _show(value: str, limit: int = 80) -> str:
    """Quote hostile text for an error message, cut to a readable length."""
    return repr(value if len(value) <= limit else value[:limit] + "...")
