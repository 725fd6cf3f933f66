"""`tlsrpt dkim-key generate` and the check of the published DKIM key and From alignment."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.cli import main
from app.config import DkimSettings, MailSettings, ReportSettings, Settings
from app.delivery.signing import load_dkim_key
from app.dns.resolver import TemporaryDnsError
from app.dnscheck.dkim import (
    check_published_key,
    check_sending,
    generate_key,
    parse_dkim_tags,
    public_key_der,
)
from app.dnscheck.model import Status
from tests.dns.fake_resolver import FakeResolver

NAME = "tlsrpt1._domainkey.sender.test."


def record_value(line: str) -> str:
    """The TXT value of a zone-file line: its strings joined."""
    strings = line.split(" IN TXT ", 1)[1]
    return "".join(part for part in strings.split('"')[1::2])


def test_generate_writes_a_private_key_0600_and_prints_its_record(tmp_path: Path) -> None:
    out = tmp_path / "dkim.pem"
    line = generate_key("Sender.Test", "TLSRPT1", out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert line.startswith(f"{NAME} IN TXT ")
    tags = parse_dkim_tags(record_value(line))
    assert (tags["v"], tags["k"], tags["s"]) == ("DKIM1", "rsa", "tlsrpt")
    assert base64.b64decode(tags["p"]) == public_key_der(out.read_bytes())
    assert all(len(s) <= 255 for s in line.split('"')[1::2])
    key = load_dkim_key("sender.test", "tlsrpt1", out)  # the signer takes it
    assert key is not None


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "dkim.pem"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        generate_key("sender.test", "s", out)
    assert out.read_bytes() == b"precious"
    with pytest.raises(ValueError, match="selector"):
        generate_key("sender.test", "bad selector", tmp_path / "other.pem")
    assert not (tmp_path / "other.pem").exists()


def test_cli_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.pem"
    assert (
        main(
            [
                "dkim-key",
                "generate",
                "--domain",
                "bücher.test",
                "--selector",
                "s1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert printed.out.startswith('s1._domainkey.xn--bcher-kva.test. IN TXT "v=DKIM1;')
    assert "TLSRPT_DKIM__SELECTOR=s1" in printed.err
    assert (
        main(["dkim-key", "generate", "--domain", "x.test", "--selector", "s1", "--out", str(out)])
        == 1
    )
    assert "never overwritten" in capsys.readouterr().err


@pytest.fixture
def key_file(tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "dkim.pem"
    return out, record_value(generate_key("sender.test", "tlsrpt1", out))


def dns_with(*records: str) -> FakeResolver:
    return FakeResolver({NAME: [(r.encode(),) for r in records]})


async def test_published_key_is_compared_with_the_configured_one(
    key_file: tuple[Path, str], tmp_path: Path
) -> None:
    path, published = key_file
    key = load_dkim_key("sender.test", "tlsrpt1", path)
    assert key is not None
    ok = await check_published_key(dns_with(published), key)
    assert (ok.status, ok.subject) == (Status.OK, NAME.rstrip("."))
    other = record_value(generate_key("sender.test", "tlsrpt1", tmp_path / "other.pem"))
    cases = {
        "does not match the configured private key": dns_with(other),
        "no DKIM key is published": dns_with("v=spf1 -all"),
        "revoked": dns_with("v=DKIM1; k=rsa; p="),
        "excludes tlsrpt": dns_with(published.replace("s=tlsrpt", "s=email")),
        "2 DKIM key records": dns_with(published, other),
        "broken": dns_with("v=DKIM1; p=!!notbase64"),
    }
    for words, resolver in cases.items():
        finding = await check_published_key(resolver, key)
        assert finding.status is Status.FAIL, words
        assert words in finding.message
        assert finding.suggestion is not None and record_value(finding.suggestion) == published
    flaky = FakeResolver({NAME: TemporaryDnsError("timed out")})
    assert (await check_published_key(flaky, key)).status is Status.UNKNOWN


def settings_with(key: Path | None, from_: str | None = None) -> Settings:
    return Settings(
        database_url=SecretStr("postgresql://unused/"),
        report=ReportSettings(contact_info="tlsrpt@sender.test"),
        dkim=DkimSettings(selector="tlsrpt1" if key else None, private_key_file=key),
        mail=MailSettings(**{"from": from_}),
    )


async def test_sending_side(key_file: tuple[Path, str]) -> None:
    path, published = key_file
    good = await check_sending(settings_with(path), dns_with(published))
    assert [f.status for f in good] == [Status.OK, Status.OK]
    none = await check_sending(settings_with(None), dns_with(published))
    assert none[0].status is Status.FAIL and "dkim-key generate" in none[0].message
    sub = await check_sending(settings_with(path, "reports@mail.sender.test"), dns_with(published))
    assert sub[1].status is Status.WARN and "relaxed" in sub[1].message
    other = await check_sending(settings_with(path, "r@elsewhere.test"), dns_with(published))
    assert other[1].status is Status.FAIL and "does not align" in other[1].message
    path.write_bytes(b"not a key")
    broken = await check_sending(settings_with(path), dns_with(published))
    assert broken[0].status is Status.FAIL and "not a PEM RSA private key" in broken[0].message
