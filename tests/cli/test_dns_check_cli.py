"""`tlsrpt dns-check` from the command line: text, --json and the exit status."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from tests.dnscheck.zone_server import ZoneData, absolute, zone_server

ZONE = {
    ("mail.test", "MX"): ["10 mx.mail.test."],
    ("mx.mail.test", "A"): ["93.184.215.14"],
    ("_smtp._tls.mail.test", "TXT"): ['"v=TLSRPTv1; rua=mailto:tlsrpt@mail.test"'],
    ("bare.test", "MX"): ["10 mx.mail.test."],
}


def test_exit_status_and_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with zone_server(ZoneData(absolute(ZONE))) as port:
        monkeypatch.setenv("TLSRPT_DNS__NAMESERVERS", f"127.0.0.1:{port}")
        monkeypatch.setenv("TLSRPT_DNS__TIMEOUT_SECONDS", "0.5")
        monkeypatch.setenv("TLSRPT_INBOUND__RUA_ADDRESS", "tlsrpt@reports.test")
        assert main(["dns-check", "mail.test"]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"mail.test: warn   (resolver: 127.0.0.1:{port})")
        assert (
            "    ok    _smtp._tls.mail.test: rua mailto:tlsrpt@mail.test: mail.test accepts mail."
            in text
        )
        assert text.endswith("good, with warnings\n")

        assert main(["dns-check", "--json", "bare.test"]) == 1
        body = json.loads(capsys.readouterr().out)
        [finding] = body["domains"][0]["tlsrpt"]["findings"]
        assert finding["status"] == "fail"
        assert finding["suggestion"] == (
            '_smtp._tls.bare.test. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"'
        )

        assert main(["dns-check", "servfail.test"]) == 2
        assert "could not check everything" in capsys.readouterr().out
        assert main(["dns-check", "a..b"]) == 2
        assert "invalid domain" in capsys.readouterr().err
