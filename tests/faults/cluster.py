"""A PostgreSQL cluster of the test's own, which it may stop and start: `initdb` and
`pg_ctl` from the machine's PostgreSQL binaries, in a temporary directory, on a free
loopback port, never the shared server. As root the cluster runs as `postgres`
(PostgreSQL refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_serve_embedded import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail(f"{name} not found under /usr/lib/postgresql/*/bin (postgresql package)")
    return found[-1]


@dataclass
class Cluster:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = list(args)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data}"
        log = str(self.data / "server.log")
        pg_ctl = _bin("pg_ctl")
        self._run(pg_ctl, "-D", str(self.data / "db"), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: sessions are ended (AdminShutdown), as an operator's restart."""
        self._run(_bin("pg_ctl"), "-D", str(self.data / "db"), "-m", "fast", "-w", "stop")


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="tlsrpt-cluster-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(root, free_port())
    try:
        cluster._run(_bin("initdb"), "-D", str(root / "db"), "-A", "trust", "-U", "postgres")
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(root, ignore_errors=True)
