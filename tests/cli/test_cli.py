"""The `tlsrpt` command as an operator runs it: a subprocess with TLSRPT_* variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tlsrpt(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    full_env.update(env or {})
    full_env.setdefault("TLSRPT_LOG_LEVEL", "WARNING")
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_invalid_configuration_stops_with_one_line_per_problem() -> None:
    done = tlsrpt(
        "migrate",
        env={
            "TLSRPT_INGEST__MAX_BATCH_ITEMS": "lots",
            "TLSRPT_REPORT__CONTACT_INFO": "not an address",
            "TLSRPT_DATABASE__POOL_MIN_SIZE": "0",
        },
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0] == "tlsrpt: invalid configuration:"
    problems = lines[1:]
    assert len(problems) == 3, problems
    assert any(p.strip().startswith("TLSRPT_INGEST__MAX_BATCH_ITEMS:") for p in problems)
    assert any(p.strip().startswith("TLSRPT_REPORT__CONTACT_INFO:") for p in problems)
    assert any(p.strip().startswith("TLSRPT_DATABASE__POOL_MIN_SIZE:") for p in problems)
    assert "Traceback" not in done.stderr


def test_secrets_are_not_echoed_in_configuration_errors() -> None:
    done = tlsrpt("migrate", env={"TLSRPT_SMTP__PORT": "s3cret-value"})
    assert done.returncode == 2
    assert "s3cret-value" not in done.stderr


def test_token_create_list_revoke(database_url: str) -> None:
    env = {"TLSRPT_DATABASE_URL": database_url}
    created = tlsrpt(
        "token", "create", "--scope", "ingest", "--scope", "read", "--name", "mta1", env=env
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("tlsrpt_") and len(token) > 40
    again = tlsrpt("token", "create", "--scope", "ingest", "--name", "mta1", env=env)
    assert again.returncode == 1 and "exists" in again.stderr
    listed = tlsrpt("token", "list", env=env)
    assert "mta1" in listed.stdout and "ingest,read" in listed.stdout
    assert token not in listed.stdout
    assert tlsrpt("token", "revoke", "mta1", env=env).returncode == 0
    assert "revoked" in tlsrpt("token", "list", env=env).stdout
    assert tlsrpt("token", "revoke", "mta1", env=env).returncode == 1


def test_export_openapi_writes_the_spec(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    assert tlsrpt("export-openapi", "-o", str(out)).returncode == 0
    assert (ROOT / "openapi" / "openapi.json").read_text() == out.read_text()


def test_unreachable_database_is_one_line_not_a_traceback() -> None:
    done = tlsrpt("migrate", env={"TLSRPT_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"})
    assert done.returncode == 1
    assert "tlsrpt: database unavailable:" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.endswith("\n")
