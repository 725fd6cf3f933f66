"""A test sender that writes datagrams byte for byte as libtlsrpt does (shared/LIBTLSRPT.md).

Each spec carries the raw text the MTA would send and, beside it, the normalised value a
receiver must count it under, so expectations are computed here, independently of the
parser under test. `random_datagram` covers every policy type and result code, optional
keys absent and present, and unusual characters (quotes, backslashes, control
characters, non-ASCII, IDN names in any case with a trailing dot).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

POLICY_TYPES = {1: "tlsa", 2: "sts", 9: "no-policy-found"}
RESULT_CODES = {
    201: "starttls-not-supported",
    202: "certificate-host-mismatch",
    203: "certificate-not-trusted",
    204: "certificate-expired",
    205: "validation-failure",
    301: "sts-policy-fetch-error",
    302: "sts-policy-invalid",
    303: "sts-webpki-invalid",
    304: "tlsa-invalid",
    305: "dnssec-invalid",
    306: "dane-required",
}


@dataclass(frozen=True)
class Name:
    """A name as sent, and as it must be counted."""

    raw: str
    canonical: str


@dataclass
class FailureSpec:
    code: int
    s: str | None = None  # sending-mta-ip (raw)
    s_canonical: str | None = None
    n: Name | None = None  # receiving-mx-hostname
    h: str | None = None  # receiving-mx-helo
    r: str | None = None  # receiving-ip (raw)
    r_canonical: str | None = None
    a: str | None = None  # additional-information
    f: str | None = None  # failure-reason-code

    def key(self) -> tuple[str | None, ...]:
        return (
            RESULT_CODES[self.code],
            self.s_canonical,
            self.n.canonical if self.n else None,
            canonical_text(self.h),
            self.r_canonical,
            canonical_text(self.a),
            canonical_text(self.f),
        )


def canonical_text(raw: str | None) -> str | None:
    """Free text as counted: control characters read as spaces, blank as absent."""
    if raw is None:
        return None
    text = "".join(" " if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in raw)
    return text if text.strip() else None


@dataclass
class PolicySpec:
    policy_type: int
    domain: Name | None = None
    strings: list[str] = field(default_factory=list)
    mx: list[Name] = field(default_factory=list)
    failures: list[FailureSpec] = field(default_factory=list)
    final: int = 0


@dataclass
class DatagramSpec:
    d: Name
    pr: str = ""
    policies: list[PolicySpec] = field(default_factory=list)


def _escape(text: str) -> str:
    # libtlsrpt's escape table: quote, backslash and control characters are escaped, every
    # other byte (UTF-8 included) is copied as it is.
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def _attr(name: str, value: str) -> str:
    return f'"{name}": "{_escape(value)}"'


def encode(spec: DatagramSpec) -> bytes:
    """The datagram exactly as libtlsrpt writes it: keys in order, empty ones left out."""
    parts = ['{"dpv": "1"', "," + _attr("d", spec.d.raw), "," + _attr("pr", spec.pr)]
    policies = []
    for p in spec.policies:
        text = f'{{"policy-type":{p.policy_type}'
        if p.domain is not None:
            text += "," + _attr("policy-domain", p.domain.raw)
        if p.strings:
            text += ',"policy-string":[' + ",".join(f'"{_escape(s)}"' for s in p.strings) + "]"
        if p.mx:
            text += ',"mx-host":[' + ",".join(f'"{_escape(m.raw)}"' for m in p.mx) + "]"
        if p.failures:
            details = []
            for fd in p.failures:
                item = f'{{"c":{fd.code}'
                for key, value in (
                    ("s", fd.s),
                    ("n", fd.n.raw if fd.n else None),
                    ("h", fd.h),
                    ("r", fd.r),
                    ("a", fd.a),
                    ("f", fd.f),
                ):
                    if value is not None:
                        item += "," + _attr(key, value)
                details.append(item + "}")
            text += ',"failure-details":[' + ",".join(details) + "]"
        text += f',"t":{len(p.failures)},"f":{p.final}}}'
        policies.append(text)
    parts.append(',"policies":[' + ",".join(policies) + "]}")
    return "".join(parts).encode()


PolicyKey = tuple[str, str, tuple[str, ...], tuple[str, ...]]


@dataclass
class Expected:
    """What a receiver must have counted: per policy total/failures, per detail sessions."""

    sessions: Counter[PolicyKey] = field(default_factory=Counter)
    failures: Counter[PolicyKey] = field(default_factory=Counter)
    details: Counter[tuple[PolicyKey, tuple[str | None, ...]]] = field(default_factory=Counter)

    def add(self, spec: DatagramSpec, times: int = 1) -> None:
        for p in spec.policies:
            key = policy_key(spec, p)
            self.sessions[key] += times
            self.failures[key] += p.final * times
            for fd in p.failures:
                self.details[(key, fd.key())] += times


def policy_key(spec: DatagramSpec, p: PolicySpec) -> PolicyKey:
    domain = p.domain.canonical if p.domain else spec.d.canonical
    strings = tuple(sorted(p.strings)) if p.policy_type == 1 else tuple(p.strings)
    # mx patterns belong to MTA-STS policies only; on other types they are dropped.
    mx = tuple(m.canonical for m in p.mx) if p.policy_type == 2 else ()
    return (POLICY_TYPES[p.policy_type], domain, strings, mx)


# Names in several spellings that must all count as the same canonical name.
_DOMAINS = [
    Name("example.org", "example.org"),
    Name("Example.ORG.", "example.org"),
    Name("bücher.example", "xn--bcher-kva.example"),
    Name("BÜCHER.example.", "xn--bcher-kva.example"),
    Name("mail_relay.example.net", "mail_relay.example.net"),
    Name("xn--bcher-kva.example", "xn--bcher-kva.example"),
]
_MX = [
    Name("mx1.example.org", "mx1.example.org"),
    Name("MX2.Example.org.", "mx2.example.org"),
    Name("*.example.org", "*.example.org"),
    Name("*.Bücher.example", "*.xn--bcher-kva.example"),
]
_IPS = [
    ("192.0.2.11", "192.0.2.11"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("::ffff:198.51.100.21", "198.51.100.21"),
    ("2001:db8::25", "2001:db8::25"),
]
_TEXT = [
    "plain text",
    'quote " and backslash \\ inside',
    "new\nline\ttab\x01ctl",
    "non-ASCII: é, ß, 中文, 😀",
    '{"looks": ["like", "json"]}',
    "   leading and trailing spaces   ",
]
_STS = ["version: STSv1", "mode: enforce", "mx: mx1.example.org", "max_age: 86400"]
_TLSA = ["3 1 1 ABCDEF0123", "2 0 1 0011AA", "3 0 1 ffee"]


def random_failure(rng: random.Random, code: int | None = None) -> FailureSpec:
    ip_s = rng.choice(_IPS) if rng.random() < 0.7 else None
    ip_r = rng.choice(_IPS) if rng.random() < 0.7 else None
    return FailureSpec(
        code=code if code is not None else rng.choice(list(RESULT_CODES)),
        s=ip_s[0] if ip_s else None,
        s_canonical=ip_s[1] if ip_s else None,
        n=rng.choice(_MX[:2]) if rng.random() < 0.6 else None,
        h=rng.choice(["mx1.example.org", "[192.0.2.1]", "Mx1.Example.Org"])
        if rng.random() < 0.5
        else None,
        r=ip_r[0] if ip_r else None,
        r_canonical=ip_r[1] if ip_r else None,
        a=rng.choice(_TEXT) if rng.random() < 0.5 else None,
        f=rng.choice(["X509_V_ERR_CERT_HAS_EXPIRED", "timeout", 'é\\"'])
        if rng.random() < 0.4
        else None,
    )


def random_policy(rng: random.Random, policy_type: int | None = None) -> PolicySpec:
    ptype = policy_type if policy_type is not None else rng.choice(list(POLICY_TYPES))
    strings = []
    mx: list[Name] = []
    if ptype == 2:
        strings = list(_STS)
        mx = rng.sample(_MX, rng.randint(0, 2))
    elif ptype == 1:
        strings = rng.sample(_TLSA, rng.randint(1, 3))
    elif rng.random() < 0.1:
        # The library checks no meaning: mx patterns may come with any type.
        mx = [rng.choice(_MX)]
    failures = [random_failure(rng) for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))]
    # A success may carry failure details and a failure may carry none (LIBTLSRPT.md).
    final = 1 if failures and rng.random() < 0.8 else int(rng.random() < 0.1)
    return PolicySpec(
        policy_type=ptype,
        domain=rng.choice(_DOMAINS) if rng.random() < 0.6 else None,
        strings=strings,
        mx=mx,
        failures=failures,
        final=final,
    )


def random_datagram(rng: random.Random) -> DatagramSpec:
    return DatagramSpec(
        d=rng.choice(_DOMAINS),
        pr=rng.choice(["", "v=TLSRPTv1; rua=mailto:tlsrpt@example.org", 'v=TLSRPTv1;rua=x"y']),
        policies=[random_policy(rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))],
    )


def covering_datagrams() -> list[DatagramSpec]:
    """At least one datagram per policy type and per result code, every key present."""
    rng = random.Random(8460)
    specs = []
    for ptype in POLICY_TYPES:
        for code in RESULT_CODES:
            policy = random_policy(rng, ptype)
            full = FailureSpec(
                code=code,
                s="192.0.2.1",
                s_canonical="192.0.2.1",
                n=_MX[1],
                h="helo.example",
                r="2001:DB8::2",
                r_canonical="2001:db8::2",
                a=_TEXT[code % len(_TEXT)],
                f="reason-" + str(code),
            )
            policy.failures = [full, FailureSpec(code=code)]
            policy.final = 1
            policy.domain = _DOMAINS[code % len(_DOMAINS)]
            specs.append(DatagramSpec(d=_DOMAINS[ptype % len(_DOMAINS)], policies=[policy]))
        specs.append(DatagramSpec(d=_DOMAINS[0], policies=[PolicySpec(policy_type=ptype, final=0)]))
    return specs
