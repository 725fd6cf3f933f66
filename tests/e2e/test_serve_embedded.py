"""The README's path on a fresh machine: `tlsrpt serve` on the embedded database,
a token from the CLI, a result posted over HTTP and read back."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.wait import until_blocking

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(server: subprocess.Popen[str], base: str) -> None:
    def ready() -> bool:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    until_blocking(ready, f"{base}/readyz answers 200", every=0.05, timeout=120)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory outside pytest's tmp tree: pgserver (as root) hands it to its own
    unprivileged user and opens up its parents, which pytest's 0700 tree and its
    clean-up of older runs' directories do not expect."""
    path = Path(tempfile.mkdtemp(prefix="tlsrpt-e2e-"))
    try:
        yield path / "data"
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_serve_on_the_embedded_database(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    env["TLSRPT_DATA_DIR"] = str(data_dir)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(server, base)
        created = subprocess.run(
            [
                sys.executable,
                "-m",
                "app",
                "token",
                "create",
                "--scope",
                "ingest",
                "--scope",
                "read",
                "--name",
                "curl",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        token = created.stdout.strip().splitlines()[-1]
        headers = {"Authorization": f"Bearer {token}"}
        item = {
            "policy": {"policy-type": "no-policy-found", "policy-domain": "example.org"},
            "result-type": "success",
            "count": 5,
        }
        response = httpx.post(f"{base}/v1/results", json={"results": [item]}, headers=headers)
        assert response.json() == {"accepted": 1, "sessions": 5}
        day = time.strftime("%Y-%m-%d", time.gmtime())
        read = httpx.get(f"{base}/v1/days/{day}/results", headers=headers).json()
        assert read["policy-domains"][0]["policies"][0]["summary"] == {
            "total-successful-session-count": 5,
            "total-failure-session-count": 0,
        }
        assert httpx.get(f"{base}/docs").status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    # The embedded server stopped with the service: no postgres left on that data dir.
    pid_file = data_dir / "pgdata" / "postmaster.pid"
    assert not pid_file.exists(), output


def test_serve_with_two_worker_processes(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    env["TLSRPT_DATABASE_URL"] = database_url
    env["TLSRPT_LOG_LEVEL"] = "WARNING"
    created = subprocess.run(
        [sys.executable, "-m", "app", "token", "create", "--scope", "ingest", "--name", "w"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = created.stdout.strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(server, base)
        item = {
            "policy": {"policy-type": "no-policy-found", "policy-domain": "example.org"},
            "result-type": "success",
            "count": 1,
        }
        headers = {"Authorization": f"Bearer {token}"}
        # New connections are spread over both processes; all must count.
        for _ in range(20):
            response = httpx.post(f"{base}/v1/results", json={"results": [item]}, headers=headers)
            assert response.status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT sum(success_count) FROM policy_counts").fetchone()
    assert row == (20,)
