"""DKIM verdicts with dkimpy and a fake resolver serving a test key."""

from __future__ import annotations

from pathlib import Path

from app.dns.resolver import TemporaryDnsError
from app.inbound.dkimcheck import DkimVerdict, KeyLookupError, verify_dkim
from app.inbound.keys import resolver_key_lookup
from tests.dns.fake_resolver import FakeResolver
from tests.inbound.mailkit import KEY_NAME, SIGNING_DOMAIN, MailFactory, SigningKey

SAMPLES = Path(__file__).parent.parent / "samples"
REPORT = (SAMPLES / "json/google_foo-bar-io_2025-05-22.json").read_bytes()


class FakeDns:
    """Serves TXT records from a dict and remembers what was asked."""

    def __init__(self, records: dict[str, bytes]) -> None:
        self.records = records
        self.asked: list[str] = []

    async def __call__(self, name: str) -> bytes | None:
        self.asked.append(name)
        return self.records.get(name)


def serving(records: dict[str, bytes]) -> FakeDns:
    return FakeDns(records)


async def test_signed_mail_passes(signing_key: SigningKey, report_mail: MailFactory) -> None:
    raw = signing_key.sign(report_mail(REPORT))
    lookup = serving({KEY_NAME: signing_key.record})
    result = await verify_dkim(raw, lookup)
    assert (result.verdict, result.domain, result.reason) == (
        DkimVerdict.PASS,
        SIGNING_DOMAIN,
        None,
    )
    assert lookup.asked == [KEY_NAME]


async def test_mail_altered_after_signing_fails(
    signing_key: SigningKey, report_mail: MailFactory
) -> None:
    raw = signing_key.sign(report_mail(REPORT))
    altered = raw.replace(b"TLS-Report-Domain: example.com", b"TLS-Report-Domain: evil.example")
    result = await verify_dkim(altered, serving({KEY_NAME: signing_key.record}))
    assert result.verdict is DkimVerdict.FAIL and result.domain == SIGNING_DOMAIN
    body_altered = raw.replace(b"aggregate TLS report", b"aggregate TLS rep0rt")
    result = await verify_dkim(body_altered, serving({KEY_NAME: signing_key.record}))
    assert result.verdict is DkimVerdict.FAIL
    assert result.reason is not None and "body hash mismatch" in result.reason


async def test_no_key_and_temporary_failure(
    signing_key: SigningKey, report_mail: MailFactory
) -> None:
    raw = signing_key.sign(report_mail(REPORT))
    result = await verify_dkim(raw, serving({}))
    assert (result.verdict, result.reason) == (
        DkimVerdict.FAIL,
        "no key published for the signature",
    )

    async def broken(name: str) -> bytes | None:
        raise KeyLookupError("SERVFAIL")

    assert (await verify_dkim(raw, broken)).verdict is DkimVerdict.TEMPERROR


async def test_unsigned_mail_is_none(report_mail: MailFactory) -> None:
    result = await verify_dkim(report_mail(REPORT), serving({}))
    assert (result.verdict, result.domain) == (DkimVerdict.NONE, None)


async def test_real_google_mail_without_its_key_fails_cleanly() -> None:
    raw = (SAMPLES / "eml/google_cardinalhealth-ca_2024-09-03.eml").read_bytes()
    lookup = serving({})
    result = await verify_dkim(raw, lookup)
    assert (result.verdict, result.domain) == (DkimVerdict.FAIL, "google.com")
    assert lookup.asked == ["20230601._domainkey.google.com"]


async def test_any_passing_signature_wins(
    signing_key: SigningKey, report_mail: MailFactory
) -> None:
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=other.example; s=x; h=from; bh=AA==; b=AA==\r\n"
    raw = broken + signing_key.sign(report_mail(REPORT))
    result = await verify_dkim(raw, serving({KEY_NAME: signing_key.record}))
    assert (result.verdict, result.domain) == (DkimVerdict.PASS, SIGNING_DOMAIN)


async def test_keys_through_the_service_resolver(
    signing_key: SigningKey, report_mail: MailFactory
) -> None:
    raw = signing_key.sign(report_mail(REPORT))
    # A 2048-bit key does not fit one TXT string: the strings of the record are joined.
    record = signing_key.record
    split = FakeResolver({KEY_NAME: [(record[:200], record[200:])]})
    assert (await verify_dkim(raw, resolver_key_lookup(split))).verdict is DkimVerdict.PASS
    assert split.queries == [KEY_NAME]
    failing = FakeResolver({KEY_NAME: TemporaryDnsError("SERVFAIL")})
    result = await verify_dkim(raw, resolver_key_lookup(failing))
    assert (result.verdict, result.reason) == (
        DkimVerdict.TEMPERROR,
        "key lookup failed temporarily",
    )
    assert (await verify_dkim(raw, resolver_key_lookup(FakeResolver()))).verdict is DkimVerdict.FAIL
