"""`tlsrpt token create --scope inbound` and `tlsrpt inbound summary` as an operator runs them."""

from __future__ import annotations

import os
import smtplib
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg

from tests.cli.test_cli import tlsrpt
from tests.inbound.mailkit import build_report_mail
from tests.inbound.test_read_api import REPORTS
from tests.wait import until_blocking

ROOT = Path(__file__).resolve().parents[2]
JSON = {"Content-Type": "application/tlsrpt+json"}
RFC_SAMPLE = ROOT / "tests/samples/json/rfc8460_appendix-b_verbatim.json"


async def test_inbound_token_and_summary_table(
    client: httpx.AsyncClient, database_url: str
) -> None:
    env = {"TLSRPT_DATABASE_URL": database_url}
    created = tlsrpt("token", "create", "--scope", "inbound", "--name", "rua", env=env)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    for body in REPORTS.values():
        response = await client.post(f"/v1/tlsrpt/{token}", content=body, headers=JSON)
        assert response.status_code == 201, response.text

    done = tlsrpt(
        "inbound", "summary", "Example.com", "--from", "2024-05-01", "--to", "2024-05-02", env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Reports about example.com from 2024-05-01 to 2024-05-02",
        "DAY         ORGANIZATION  REPORTS  OK  FAILED  FAILURE TYPES",
        "2024-05-01  Google Inc.   1        40  0       -",
        "2024-05-01  Microsoft     1        10  11      certificate-expired 7, "
        "starttls-not-supported 3, x-new-kind 1",
        "    MX mx1.example.com (192.0.2.1, 192.0.2.2): 7 failed, certificate-expired",
        "    MX mx2.example.com (192.0.2.3): 3 failed, starttls-not-supported",
        "    MX (MX not reported): 1 failed, x-new-kind",
    ]
    nothing = tlsrpt("inbound", "summary", "nobody.example", "--to", "2024-05-02", env=env)
    assert nothing.stdout.splitlines()[-1] == "no reports received"
    bad = tlsrpt("inbound", "summary", "bad domain!", env=env)
    assert bad.returncode == 2 and "invalid domain" in bad.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_with_lmtp_listener(database_url: str, tmp_path: Path) -> None:
    http_port, lmtp_port = free_port(), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    env = {
        **clean,
        "TLSRPT_DATABASE_URL": database_url,
        "TLSRPT_LOG_LEVEL": "WARNING",
        "TLSRPT_INBOUND__LMTP_RECIPIENTS": "tls-reports@example.com",
    }
    command = [sys.executable, "-m", "app", "serve", "--port", str(http_port)]
    command += ["--lmtp", f"127.0.0.1:{lmtp_port}"]
    raw = build_report_mail(RFC_SAMPLE.read_bytes())
    with (
        (tmp_path / "stderr").open("wb") as stderr,
        subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        ) as process,
    ):

        def connected() -> smtplib.LMTP | None:
            try:
                return smtplib.LMTP("127.0.0.1", lmtp_port, timeout=5)
            except OSError:
                assert process.poll() is None, (tmp_path / "stderr").read_text()
                return None

        try:
            client = until_blocking(connected, "the LMTP listener accepts", every=0.05, timeout=60)
            with client:
                refused = client.sendmail(
                    "a@reporter.example", ["x@example.com", "tls-reports@example.com"], raw
                )
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert refused == {
        "x@example.com": (550, b"5.1.1 <x@example.com> is not a TLSRPT report address here")
    }
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT report_id, received_via FROM inbound_reports").fetchall()
    assert row == [("5065427c-23d3-47ca-b6e0-946ea0e8c4be", "lmtp")]
