"""What the HTTP benchmarks share: a fresh database, `tlsrpt serve` as a real process, a
token, and the server's CPU and memory.

A fresh database is created on `--database-url` (dropped afterwards), else the embedded
PostgreSQL is started in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_database(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@dataclass
class Env:
    """The environment of the `tlsrpt` commands run against one fresh database."""

    vars: dict[str, str]
    database_url: str
    work: Path
    # The source tree whose `app` is run (another checkout measures a baseline).
    root: Path = ROOT

    def tlsrpt(self, *argv: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "app", *argv],
            cwd=self.root,
            env=self.vars,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def token(self, scope: str, name: str) -> str:
        return self.tlsrpt("token", "create", "--scope", scope, "--name", name).split()[-1]


@contextlib.contextmanager
def fresh_database(admin_url: str | None, work: Path, tag: str, root: Path = ROOT) -> Iterator[Env]:
    """A migrated database of its own for one benchmark run (migrated by `root`'s code)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSRPT_")}
    env.update({"TLSRPT_DATA_DIR": str(work), "TLSRPT_LOG_LEVEL": "WARNING"})
    name = f"tlsrpt_bench_{tag}_{os.getpid()}"
    embedded = None
    if admin_url:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = with_database(admin_url, name)
    else:
        sys.path.insert(0, str(ROOT))
        from app.db.embedded import start_embedded

        embedded = start_embedded(work)
        url = embedded.url
    env["TLSRPT_DATABASE_URL"] = url
    try:
        result = Env(env, url, work, root)
        result.tlsrpt("migrate")
        yield result
    finally:
        if admin_url:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        if embedded is not None:
            embedded.stop()


@contextlib.contextmanager
def serve(env: Env, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`tlsrpt serve` on a free loopback port, up and accepting connections."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), *extra],
        cwd=env.root,
        env=env.vars,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield server, port
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


class ProcessSampler(threading.Thread):
    """Peak RSS (all processes and the largest one) and CPU of a process and its
    children, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.peak_one = 0
        self.stop = threading.Event()

    def cpu(self) -> float:
        total = 0.0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
        return total

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                rss = [p.memory_info().rss for p in procs]
                self.peak = max(self.peak, sum(rss))
                self.peak_one = max(self.peak_one, max(rss))
            except psutil.Error:
                return
            time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_cpu(url: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend connected to the database of `url` (the
    server's pool; a backend started later counts from zero)."""
    with psycopg.connect(url) as conn:
        pids = [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()").fetchall()]  # fmt: skip
    found = {}
    for pid in pids:
        try:
            found[pid] = cpu_seconds(pid)
        except OSError:  # ended meanwhile, or another host's server
            pass
    return found


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
