"""Ingest side by side with the peer (sys4 tlsrpt-collectd) on one workload, in one run.

    python bench/peer.py [--database-url URL] [--n 100000] [--domains 1000] [--fail 0.05]
                         [--seed 42] [--clients 4] [--batch 1000] [--workers 1]

The workload is `../shared/peer-sys4/dgram_load.py gen` (N results over DOMAINS recipient
domains, FAIL of them failures with one failure detail, SEED). Ours: `tlsrpt serve` on a
fresh database, every result POSTed once to `/v1/results` in batches of 1,000 over 4
keep-alive connections, timed from the first request to the last 200 (a 200 means
committed); afterwards the database must hold exactly the workload's counters, per policy
domain. The peer: `run_peer.sh install` (pip, into $PEER_WORKDIR, default
/tmp/peer-sys4), its collector on a socket of its own, fed the same workload as
datagrams by `dgram_load.py send --db` (timed until its SQLite file holds them all).
Prints both rates and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    ROOT,
    Env,
    ProcessSampler,
    backend_cpu,
    fresh_database,
    load_average,
    serve,
)
from loadgen import Stats, encode_post, send_each

PEER = ROOT.parent / "shared" / "peer-sys4"


def to_result(line: dict[str, Any]) -> dict[str, Any]:
    """A workload line as a `/v1/results` item."""
    item: dict[str, Any] = {
        "policy": line["policy"],
        "recipient-domain": line["recipient-domain"],
        "result-type": "success",
    }
    for detail in line.get("failure-details", []):  # the workload has at most one
        item.update(detail)
    return item


def expected_counts(lines: list[dict[str, Any]]) -> dict[str, tuple[int, int, int]]:
    """Per policy domain: successful sessions, failed sessions, failure-detail sessions."""
    ok: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    details: Counter[str] = Counter()
    for line in lines:
        domain = line["policy"]["policy-domain"]
        if line["result"] == "failure":
            failed[domain] += 1
        else:
            ok[domain] += 1
        details[domain] += len(line.get("failure-details", []))
    return {d: (ok[d], failed[d], details[d]) for d in ok.keys() | failed.keys()}


def stored_counts(url: str) -> dict[str, tuple[int, int, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            SELECT p.policy_domain, sum(p.success_count), sum(p.failure_count),
                coalesce(sum(f.n), 0)
            FROM policy_counts p LEFT JOIN (
                SELECT day, policy_key, sum(failed_session_count) AS n FROM failure_counts
                GROUP BY 1, 2) f USING (day, policy_key)
            GROUP BY 1
            """
        ).fetchall()
    return {d: (int(a), int(b), int(c)) for d, a, b, c in rows}


def run_ours(
    args: argparse.Namespace, lines: list[dict[str, Any]], work: Path, root: Path = ROOT
) -> tuple[float, bool]:
    label = "ours" if root == ROOT else f"baseline ({root})"
    with fresh_database(args.database_url, work, "peer", root) as env:
        acknowledged, took = _load(args, lines, env, label)
        # Read after the server stopped: its backends flush their statistics on exit.
        exact = stored_counts(env.database_url) == expected_counts(lines)
        print(
            f"{label}: database holds exactly the workload's counters per policy domain: "
            + ("yes" if exact and acknowledged == len(lines) else "NO (MISMATCH)")
        )
        with psycopg.connect(env.database_url) as conn:
            row = conn.execute(
                "SELECT sum(n_tup_ins + n_tup_upd) FROM pg_stat_user_tables"
                " WHERE relname ~ '^(policy|failure|recipient)_counts'"
            ).fetchone()
        print(
            f"{label}: counter rows inserted or updated: {int(row[0] if row else 0):,} "
            "(the database's work: fewer when batches are merged)"
        )
        return acknowledged / took, exact and acknowledged == len(lines)


def _load(
    args: argparse.Namespace, lines: list[dict[str, Any]], env: Env, label: str
) -> tuple[int, float]:
    """Send the workload to a server; returns the sessions acknowledged and the seconds."""
    with serve(env, "--workers", str(args.workers)) as (server, port):
        token = env.token("ingest", "bench")
        requests = []
        for start in range(0, len(lines), args.batch):
            chunk = lines[start : start + args.batch]
            body = orjson.dumps({"results": [to_result(x) for x in chunk]})
            requests.append(
                (encode_post("127.0.0.1", port, "/v1/results", token, body), len(chunk))
            )
        warm = orjson.dumps({"results": [to_result(x) for x in lines[:10]]})
        asyncio.run(
            send_each(
                "127.0.0.1",
                port,
                1,
                [(encode_post("127.0.0.1", port, "/v1/results", token, warm), 10)],
                Stats(),
                lambda n: None,
            )
        )
        with psycopg.connect(env.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM failure_counts")
            conn.execute("DELETE FROM recipient_counts")
            conn.execute("DELETE FROM policy_counts")
            conn.execute("SELECT pg_stat_reset()")
        sampler = ProcessSampler(server.pid)
        sampler.start()
        acknowledged = 0

        def on_ok(sessions: int) -> None:
            nonlocal acknowledged
            acknowledged += sessions

        spy = None
        if args.py_spy:
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(server.pid), "--format", "raw",
                 "--rate", "200", "--output", str(args.py_spy), "--nonblocking"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        stats = Stats()
        db_before = backend_cpu(env.database_url)
        cpu0 = sampler.cpu()
        started = time.perf_counter()
        asyncio.run(send_each("127.0.0.1", port, args.clients, requests, stats, on_ok))
        took = time.perf_counter() - started
        cpu = sampler.cpu() - cpu0
        db_after = backend_cpu(env.database_url)
        db_cpu = sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items())
        sampler.stop.set()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        rate = acknowledged / took
        print(
            f"{label}: {acknowledged:,} results in {took:.2f} s = {rate:,.0f} results/s "
            f"({stats.ok} batches of {args.batch} ok, {stats.failed} failed {stats.statuses}; "
            f"p50 {stats.p(0.5) * 1000:.0f} ms, p99 {stats.p(0.99) * 1000:.0f} ms per batch); "
            f"server {cpu / took:.2f} cores, {cpu * 1e6 / max(acknowledged, 1):.1f} us CPU "
            f"per result, peak RSS {sampler.peak / 2**20:.0f} MB; database backends "
            f"{db_cpu / took:.2f} cores, {db_cpu * 1e6 / max(acknowledged, 1):.1f} us CPU a result"
        )
        return acknowledged, took


def peer_workdir() -> Path:
    return Path(os.environ.get("PEER_WORKDIR", "/tmp/peer-sys4"))


def run_peer(args: argparse.Namespace, workload: Path, work: Path) -> float:
    peer = peer_workdir()
    collectd = peer / "venv" / "bin" / "tlsrpt-collectd"
    if not collectd.exists():
        subprocess.run(
            ["bash", str(PEER / "run_peer.sh"), "install"],
            env={**os.environ, "PEER_WORKDIR": str(peer)},
            check=True,
            capture_output=True,
        )
    run = work / "peer"
    run.mkdir()
    db = run / "collectd.sqlite"
    socket_path = run / "collectd.socket"
    (run / "peer.cfg").write_text(
        "[tlsrpt_collectd]\n"
        f"storage = sqlite://{db}\nsocketname = {socket_path}\n"
        f"logfilename = {run / 'collectd.log'}\npidfilename = {run / 'collectd.pid'}\n"
        "log_level = warn\n"
    )
    proc = subprocess.Popen(
        [str(collectd), "--config_file", str(run / "peer.cfg")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not socket_path.exists():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the peer's collector did not create its socket")
            time.sleep(0.1)

        def send(*extra: str) -> dict[str, Any]:
            out = subprocess.run(
                [sys.executable, str(PEER / "dgram_load.py"), "send", "--socket",
                 str(socket_path), "--db", str(db), *extra],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            return dict(json.loads(out.strip().splitlines()[-1]))

        send("--n", "1000", "--domains", str(args.domains), "--seed", "1")  # warm-up
        result = send("--workload", str(workload), "--wait", "600")
        rate = float(result["persisted_per_s"])
        print(
            f"peer: {result['persisted']:,} of {result['sent']:,} datagrams persisted in "
            f"{result['persist_seconds']:.2f} s = {rate:,.0f} results/s "
            f"({result['dropped_eagain']} dropped; complete: {result['persist_complete']})"
        )
        return rate
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("TLSRPT_DATABASE_URL"))
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--fail", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1, help="tlsrpt serve --workers")
    parser.add_argument("--py-spy", type=Path, help="record the server (collapsed stacks)")
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument(
        "--baseline-root", type=Path, help="also run this checkout's server (before/after)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tlsrpt-bench-peer-") as tmp:
        work = Path(tmp)
        workload = work / "workload.jsonl"
        subprocess.run(
            [sys.executable, str(PEER / "dgram_load.py"), "gen", "--n", str(args.n),
             "--domains", str(args.domains), "--fail-ratio", str(args.fail),
             "--seed", str(args.seed), "--out", str(workload)],
            check=True,
        )  # fmt: skip
        lines = [orjson.loads(x) for x in workload.read_bytes().splitlines() if x.strip()]
        print(
            f"workload: N={args.n} DOMAINS={args.domains} FAIL={args.fail} SEED={args.seed}; "
            + load_average()
        )
        if args.baseline_root:
            before, _ = run_ours(args, lines, work, args.baseline_root.resolve())
        ours, exact = run_ours(args, lines, work)
        if args.skip_peer:
            return 0 if exact else 1
        theirs = run_peer(args, workload, work)
        print(f"ratio ours / peer: {ours / theirs:.2f}x (same run; {load_average()})")
        if args.baseline_root:
            print(f"ratio baseline / peer: {before / theirs:.2f}x; ours / baseline: "
                  f"{ours / before:.2f}x")  # fmt: skip
        return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
