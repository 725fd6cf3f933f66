"""Issue 18's table, rerun: each way a demanding operator tried to break the service, and
what the service did. One line per row, as the issue's table has them.

    python bench/hardening.py [--database-url URL] [--rounds 3] [--load-seconds 4]
                              [--outage-seconds 5] [--skip-schemathesis]

- **SIGKILL under load**: `tlsrpt serve` killed with SIGKILL `--rounds` times while 4
  keep-alive clients post batches of 50 one-session results; then the sessions the 200s
  acknowledged, the sessions sent, and what the database holds (lost = acknowledged but
  not stored; double = stored beyond what was sent).
- **PostgreSQL stopped**: a cluster of this run's own (initdb, on a free loopback port) is
  stopped fast for `--outage-seconds` under the same load, then started: every status
  the clients got, whether each refusal was a 503 with `Retry-After`, the slowest
  request, `/readyz` during and after, and nothing lost.
- **schemathesis**: `deploy/ci/schemathesis.sh` (every check, fixed seed), its exit status.
- **Hostile bodies**: a gzip bomb (1 GiB of zeros, ~1 MB on the wire), a 40 MB body,
  200,000-deep JSON, invalid UTF-8, a 23-digit count; the statuses and the server's peak
  RSS meanwhile.
- **rua and SSRF refusals**: CRLF in `mailto:` and `https:` rua through the record
  parser; loopback, link-local, RFC 1918, CGNAT, NAT64, 6to4 and mapped IPv4 addresses
  through the HTTPS delivery's address check (decisions only: no connection is opened).
- **Revocation**: two `tlsrpt serve` instances on one database, a token used on both,
  revoked with `tlsrpt token revoke`, then the next request on each.
- **Received reports from the wild**: every sample of `../shared/samples` posted to
  `POST /v1/tlsrpt/{token}` (JSON) or `.../mail` (whole messages); status and warnings.

The collector's queue row is `bench/collect.py` (drops at `max_dgram_qlen` 10 and 512).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from harness import ROOT, Env, ProcessSampler, fresh_database, load_average
from harness import serve as serve_process

from app.delivery.https import parse_https_rua, refusal_reason
from app.tlsrpt.record import RecordError, parse_record
from tests.faults.cluster import private_cluster

SAMPLES = ROOT.parent / "shared" / "samples"
BATCH = 50


def _batch(domain: str) -> dict[str, object]:
    return {
        "results": [
            {
                "policy": {"policy-type": "no-policy-found", "policy-domain": f"{i}.{domain}"},
                "result-type": "success",
            }
            for i in range(BATCH)
        ]
    }


@dataclass
class Load:
    """Clients posting batches of one-session results until stopped; what they got back."""

    port: int
    token: str
    clients: int = 4
    acknowledged: int = 0
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    refusals_without_retry_after: int = 0
    slowest: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _client(self, n: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        body = json.dumps(_batch(f"c{n}.example")).encode()
        base = f"http://127.0.0.1:{self.port}"
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post(
                        "/v1/results", content=body, headers={"Content-Type": "application/json"}
                    )
                except httpx.TransportError:
                    with self.lock:
                        self.sent += BATCH
                        self.statuses[0] += 1  # no answer: not acknowledged
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.sent += BATCH
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        self.acknowledged += int(response.json()["sessions"])
                    elif "retry-after" not in response.headers:
                        self.refusals_without_retry_after += 1

    @contextmanager
    def running(self) -> Iterator[Load]:
        threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True)
            for n in range(self.clients)
        ]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=60)


def quiet(env: Env) -> None:
    """The servers' own warnings (connection retries during the outage) stay off stdout."""
    env.vars["TLSRPT_LOG_LEVEL"] = "ERROR"


def stored(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT coalesce(sum(success_count), 0) FROM policy_counts").fetchone()
    assert row is not None
    return int(row[0])


def accounting(load: Load, database_url: str) -> str:
    held = stored(database_url)
    lost = max(0, load.acknowledged - held)
    double = max(0, held - load.sent)
    return (
        f"{load.acknowledged:,} acknowledged, {load.sent:,} sent, {held:,} stored: "
        f"{lost} lost, {double} double"
    )


def sigkill_row(admin_url: str | None, work: Path, rounds: int, seconds: float) -> str:
    with fresh_database(admin_url, work / "kill", "kill") as env:
        quiet(env)
        token = env.token("ingest", "load")
        total = Load(0, token)
        for _ in range(rounds):
            with serve_process(env, "--no-scheduler") as (server, port):
                load = Load(port, token)
                with load.running():
                    time.sleep(seconds)
                    server.kill()
                    server.wait(timeout=30)
                    deadline = time.monotonic() + 30
                    while load.statuses[0] < load.clients and time.monotonic() < deadline:
                        time.sleep(0.01)
            total.acknowledged += load.acknowledged
            total.sent += load.sent
            total.statuses.update(load.statuses)
        return f"serve SIGKILLed {rounds}x under ingest load: " + accounting(
            total, env.database_url
        )


def wait_ready(base: str, deadline: float) -> float:
    """Seconds until `/readyz` answers 200 (polled every 0.1 s)."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        if httpx.get(f"{base}/readyz", timeout=10).status_code == 200:
            break
        time.sleep(0.1)
    return time.monotonic() - started


def outage_row(work: Path, seconds: float, outage: float) -> str:
    with private_cluster() as cluster, fresh_database(cluster.url, work / "out", "out") as env:
        quiet(env)
        token = env.token("ingest", "load")
        with serve_process(env, "--no-scheduler") as (_, port):
            base = f"http://127.0.0.1:{port}"
            load = Load(port, token)
            with load.running():
                time.sleep(seconds / 2)
                cluster.stop()
                time.sleep(outage / 2)
                ready_during = httpx.get(f"{base}/readyz", timeout=10).status_code
                time.sleep(outage / 2)
                cluster.start()
                started = time.monotonic()
                ready_after = wait_ready(base, started + 60)
                time.sleep(seconds / 2)
        statuses = ", ".join(
            f"{n:,} x {s or 'no answer'}" for s, n in sorted(load.statuses.items())
        )
        return (
            f"PostgreSQL stopped (fast) for {outage:g} s under load: {statuses}; "
            f"refusals without Retry-After: {load.refusals_without_retry_after}; "
            f"slowest request {load.slowest:.2f} s; /readyz {ready_during} during, "
            f"200 again {ready_after:.1f} s after PostgreSQL was back; "
            + accounting(load, env.database_url)
        )


def schemathesis_row() -> str:
    done = subprocess.run(
        ["bash", "deploy/ci/schemathesis.sh"], cwd=ROOT, capture_output=True, text=True
    )
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    summary = [line for line in lines if "passed" in line or "failed" in line or "error" in line]
    tail = summary[-1].strip() if summary else (lines[-1].strip() if lines else "")
    return f"schemathesis (deploy/ci/schemathesis.sh): exit {done.returncode}; {tail}"


def _gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(size >> 20)]
    parts.append(compressor.flush())
    return b"".join(parts)


def bodies_row(env: Env) -> str:
    ingest = env.token("ingest", "bodies")
    inbound = env.token("inbound", "bodies-in")
    one = {"policy": {"policy-type": "no-policy-found", "policy-domain": "example.org"}}
    cases: list[tuple[str, str, bytes, str]] = [
        (
            "gzip bomb 1 GiB",
            f"/v1/tlsrpt/{inbound}",
            _gzip_bomb(1 << 30),
            "application/tlsrpt+gzip",
        ),
        ("40 MB body", "/v1/results", b" " * (40 << 20), "application/json"),
        ("200k-deep JSON", "/v1/results", b"[" * 200_000 + b"]" * 200_000, "application/json"),
        ("invalid UTF-8", "/v1/results", b'{"results": ["\xff\xfe"]}', "application/json"),
        (
            "23-digit count",
            "/v1/results",
            json.dumps({"results": [{**one, "result-type": "success", "count": 10**22}]}).encode(),
            "application/json",
        ),
    ]
    results = []
    with serve_process(env, "--no-scheduler") as (server, port):
        sampler = ProcessSampler(server.pid)
        sampler.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for name, path, body, content_type in cases:
                token = inbound if path.startswith("/v1/tlsrpt") else ingest
                response = client.post(
                    path,
                    content=body,
                    headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
                )
                results.append(f"{name} {response.status_code}")
        sampler.stop.set()
        sampler.join()
    return f"hostile bodies: {', '.join(results)}; server peak RSS {sampler.peak / 2**20:.0f} MB"


def refusals_row() -> str:
    ruas = [
        "mailto:tlsrpt@example.org%0D%0ABcc:victim@example.net",
        "mailto:tlsrpt@example.org\r\nBcc: victim@example.net",
        "https://reports.example.org/%0D%0AX-Injected:1",
        "https://reports.example.org/\r\nX-Injected: 1",
    ]
    outcomes = []
    for rua in ruas:
        try:
            [uri] = parse_record(f"v=TLSRPTv1; rua={rua}").rua
        except RecordError:
            outcomes.append("record refused")
            continue
        if uri.problem is not None:
            outcomes.append("rua marked unusable")
        elif "\r" in parse_https_rua(uri.uri).target or "\n" in parse_https_rua(uri.uri).target:
            outcomes.append("RAW CR/LF IN THE REQUEST")
        else:
            outcomes.append("sent percent-encoded (no raw CR/LF)")
    addresses = [
        "127.0.0.1",
        "::1",
        "169.254.169.254",
        "fe80::1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
        "::ffff:10.0.0.1",
        "fc00::1",
        "0.0.0.0",
    ]
    refused = [a for a in addresses if refusal_reason(ipaddress.ip_address(a), []) is not None]
    return (
        f"CRLF in rua ({len(ruas)}): {', '.join(outcomes)}; "
        f"SSRF targets: {len(refused)} of {len(addresses)} refused by the HTTPS delivery's "
        "address check (decisions only, no connection opened)"
    )


def revocation_row(env: Env) -> str:
    token = env.tlsrpt("token", "create", "--scope", "read", "--name", "twice").split()[-1]
    with (
        serve_process(env, "--no-scheduler") as (_, one),
        serve_process(env, "--no-scheduler") as (_, two),
    ):
        headers = {"Authorization": f"Bearer {token}"}
        clients = [
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10)
            for port in (one, two)
        ]
        try:
            before = [c.get("/v1/alerts").status_code for c in clients]
            env.tlsrpt("token", "revoke", "twice")
            revoked_at = time.monotonic()
            after = []
            for c in clients:
                status = c.get("/v1/alerts").status_code
                after.append(f"{status} after {1000 * (time.monotonic() - revoked_at):.0f} ms")
        finally:
            for c in clients:
                c.close()
    return (
        f"revocation with two instances: before {before}, the next request on each: "
        + "; ".join(after)
    )


def samples_row(env: Env) -> str:
    inbound = env.token("inbound", "samples")
    lines = []
    with serve_process(env, "--no-scheduler") as (_, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for path in sorted(SAMPLES.glob("*/*")):
                if path.suffix == ".eml":
                    url, content_type = f"/v1/tlsrpt/{inbound}/mail", "message/rfc822"
                else:
                    url, content_type = f"/v1/tlsrpt/{inbound}", "application/tlsrpt+json"
                response = client.post(
                    url, content=path.read_bytes(), headers={"Content-Type": content_type}
                )
                warnings = 0
                if response.headers.get("content-type", "").startswith("application/json"):
                    body = response.json()
                    warnings = len(body.get("warnings") or [])
                lines.append(f"{path.name} {response.status_code} ({warnings} warnings)")
    ok = sum(1 for line in lines if " 201 " in line or " 200 " in line)
    return f"samples stored {ok} of {len(lines)}: " + "; ".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an admin URL; default: embedded PostgreSQL")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-seconds", type=float, default=4.0)
    parser.add_argument("--outage-seconds", type=float, default=5.0)
    parser.add_argument("--skip-schemathesis", action="store_true")
    args = parser.parse_args()
    print(load_average(), flush=True)
    with tempfile.TemporaryDirectory(prefix="tlsrpt-hardening-") as tmp:
        work = Path(tmp)
        print(sigkill_row(args.database_url, work, args.rounds, args.load_seconds), flush=True)
        print(outage_row(work, args.load_seconds, args.outage_seconds), flush=True)
        if not args.skip_schemathesis:
            print(schemathesis_row(), flush=True)
        with fresh_database(args.database_url, work / "misc", "misc") as env:
            quiet(env)
            print(bodies_row(env), flush=True)
            print(refusals_row(), flush=True)
            print(revocation_row(env), flush=True)
            print(samples_row(env), flush=True)
    print(load_average(), flush=True)


if __name__ == "__main__":
    main()
