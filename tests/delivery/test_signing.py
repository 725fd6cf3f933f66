"""DKIM signing with OpenSSL's RSA: the same bytes as dkimpy's own, verifiable in RFC 8460
mode, and used only for keys loaded at start-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.delivery import signing
from app.delivery.mail import ReportMail, build_report_message
from app.delivery.signing import DkimKey, load_dkim_key, openssl_signs, sign_message
from tests.delivery.certs import make_dkim_key_pair

MAIL = ReportMail(
    report_id="2024-05-01T00:00:00Z_example.com@sender.example",
    policy_domain="example.com",
    submitter="sender.example",
    day=date(2024, 5, 1),
    filename="sender.example!example.com!1714521600!1714607999.json.gz",
    report_gzip=b"\x1f\x8b" + bytes(range(256)) * 4,
    from_address="tlsrpt@sender.example",
    to_address="reports@example.com",
)
NOW = datetime(2024, 5, 2, 1, 30, tzinfo=UTC)


@pytest.fixture
def message() -> bytes:
    return build_report_message(MAIL, now=NOW, message_id="<tlsrpt.1.abc@sender.example>")


@pytest.fixture
def loaded_key(tmp_path: Path, dkim_pair: tuple[bytes, bytes]) -> DkimKey:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(dkim_pair[0])
    key = load_dkim_key("sender.example", "sel", key_file)
    assert key is not None
    return key


@pytest.fixture
def fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """dkimpy stamps `t=` from time.time(): fix it so two signatures can be compared."""
    monkeypatch.setattr(time, "time", lambda: 1714613400.0)


def pure_dkimpy(monkeypatch: pytest.MonkeyPatch, sign: Callable[[], bytes]) -> bytes:
    """What dkimpy alone computes: its own RSA primitive back in place for one call."""
    with monkeypatch.context() as m:
        m.setattr(dkim, "RSASSA_PKCS1_v1_5_sign", signing.DKIMPY_RSA_SIGN)
        return sign()


@pytest.mark.usefixtures("fixed_time")
def test_openssl_signature_is_byte_identical_to_dkimpys(
    loaded_key: DkimKey,
    message: bytes,
    monkeypatch: pytest.MonkeyPatch,
    dkim_dns: Callable[..., bytes | None],
) -> None:
    assert openssl_signs(loaded_key)
    signed = sign_message(message, loaded_key)
    assert signed == pure_dkimpy(monkeypatch, lambda: sign_message(message, loaded_key))
    assert dkim.verify(signed, dnsfunc=dkim_dns, tlsrpt="strict")
    assert not dkim.verify(signed.replace(b"example.com", b"example.org"), dnsfunc=dkim_dns)


@pytest.mark.usefixtures("fixed_time")
def test_rsa_sha1_is_byte_identical_too(
    loaded_key: DkimKey, message: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sign() -> bytes:
        return bytes(
            dkim.sign(
                message,
                b"sel",
                b"sender.example",
                loaded_key.private_key,
                signature_algorithm=b"rsa-sha1",
                include_headers=[b"from", b"subject"],
            )
        )

    assert sign() == pure_dkimpy(monkeypatch, sign)


@pytest.mark.usefixtures("fixed_time", "loaded_key")
def test_keys_not_loaded_at_start_up_are_signed_by_dkimpy(
    message: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem, record = make_dkim_key_pair()
    other = DkimKey(domain="sender.example", selector="sel", private_key=pem)
    assert not openssl_signs(other)
    signed = sign_message(message, other)
    assert signed == pure_dkimpy(monkeypatch, lambda: sign_message(message, other))
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record, tlsrpt="strict")


def test_a_key_openssl_reads_but_is_not_rsa_is_refused(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key_file = tmp_path / "ec.pem"
    key_file.write_bytes(pem)
    with pytest.raises(signing.DkimKeyError, match="not a PEM RSA private key"):
        load_dkim_key("sender.example", "sel", key_file)
