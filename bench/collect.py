"""Postfix collector benchmark: libtlsrpt datagrams over a Unix socket into PostgreSQL.

    python bench/collect.py [--server-url URL] [--count 1000000] [--rate 5000 --seconds 60]
                            [--senders N] [--sender python] [--collector-nice -10]
                            [--qlen 10,512]

Runs `tlsrpt collect --database` as its own process on a fresh database (created on
`--server-url`, dropped afterwards) and sender processes writing datagrams in libtlsrpt's
byte format over 1,000 recipient domains with 5 % failures. The sender is C
(`libtlsrpt_sender.c`: one sendto per datagram, as libtlsrpt in Postfix), compiled on the
fly, or Python when no compiler is found (or `--sender python`):

(a) blocking sender, `--count` datagrams: datagrams/s from the first send until the
    collector reports every result committed;
(b) non-blocking sender (MSG_DONTWAIT, as Postfix sends) at `--rate` for `--seconds`:
    datagrams the socket refused (EAGAIN: lost at the sender), and latency to commit,
    once per `--qlen` value of net.unix.max_dgram_qlen (default 10 and 512; set and
    restored when run as root, else the host's value only).

Afterwards the database total must equal what the socket accepted. Set `--skip-blocking`
or `--skip-nonblocking` to run one part.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402
from tests.collector.datagrams import (  # noqa: E402
    DatagramSpec,
    FailureSpec,
    Name,
    PolicySpec,
    encode,
)

DOMAINS = 1000
NICE = [0]  # the collector's nice value (--collector-nice), as the systemd unit sets it
FAILURE_SHARE = 0.05
FAILURE_CODES = [202, 203, 204, 201, 302]
QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")


def build_datagrams(seed: int = 8460) -> tuple[list[bytes], list[bytes]]:
    """Per recipient domain one success datagram and a few failure variants."""
    rng = random.Random(seed)
    successes, failures = [], []
    for d in range(DOMAINS):
        domain = f"d{d}.bench.example"
        name = Name(domain, domain)
        mx = Name(f"mx.{domain}", f"mx.{domain}")
        sts = ["version: STSv1", "mode: enforce", f"mx: mx.{domain}", "max_age: 86400"]
        pr = f"v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"

        successes.append(encode(DatagramSpec(name, pr, [PolicySpec(2, name, sts, [mx])])))
        for code in rng.sample(FAILURE_CODES, 3):
            ip = f"198.51.100.{rng.randrange(1, 250)}"
            detail = FailureSpec(code, s="192.0.2.25", n=mx, h=f"mx.{domain}", r=ip)
            policy = PolicySpec(2, name, sts, [mx], [detail], final=1)
            failures.append(encode(DatagramSpec(name, pr, [policy])))
    return successes, failures


def make_picks(seed: int, total: int) -> list[int]:
    """Sending order as indexes into successes + failures (see `table`)."""
    rng = random.Random(seed)
    return [
        DOMAINS + rng.randrange(3 * DOMAINS)
        if rng.random() < FAILURE_SHARE
        else rng.randrange(DOMAINS)
        for _ in range(total)
    ]


def table() -> list[bytes]:
    successes, failures = build_datagrams()
    return successes + failures


def sender(args: argparse.Namespace) -> None:
    """The Python sender, in its own process: sends, then prints a JSON line."""
    datagrams = table()
    total = args.count if args.rate == 0 else int(args.rate * args.seconds)
    picks = [datagrams[i] for i in make_picks(args.seed, total)]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    path = args.socket
    sent = dropped = 0
    failed = 0
    started = time.time()
    if args.rate == 0:
        sendto = sock.sendto
        for data in picks:
            sendto(data, path)
        sent = total
    else:
        sock.setblocking(False)
        interval = 1.0 / args.rate
        begin = time.perf_counter()
        for i, data in enumerate(picks):
            delay = begin + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                sock.sendto(data, path)
                sent += 1
            except BlockingIOError:
                dropped += 1  # what Postfix loses: the receiver's queue was full
            except OSError:
                failed += 1
    finished = time.time()
    print(
        json.dumps(
            {
                "sent": sent,
                "dropped": dropped,
                "failed": failed,
                "started": started,
                "finished": finished,
            }
        )
    )


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def db_sessions(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(success_count + failure_count), 0) FROM policy_counts"
        ).fetchone()
    return int(row[0]) if row else 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sender_command(
    sender_bin: Path | None, workdir: Path, sock: Path, seed: int, args: dict[str, float]
) -> list[str]:
    total = int(args["count"]) if not args["rate"] else int(args["rate"] * args["seconds"])
    if sender_bin is None:
        return [
            sys.executable,
            __file__,
            "sender",
            "--socket",
            str(sock),
            "--seed",
            str(seed),
            "--count",
            str(total),
            "--rate",
            str(args["rate"]),
            "--seconds",
            str(args["seconds"]),
        ]
    datagrams = workdir / "datagrams.bin"
    if not datagrams.exists():
        datagrams.write_bytes(b"".join(len(d).to_bytes(4, "big") + d for d in table()))
    picks = workdir / f"picks-{seed}.bin"
    picks.write_bytes(
        array.array("H", make_picks(seed, total)).tobytes()
        if sys.byteorder == "big"
        else _big_endian(make_picks(seed, total))
    )
    return [str(sender_bin), str(sock), str(datagrams), str(picks), str(args["rate"])]


def _big_endian(values: list[int]) -> bytes:
    a = array.array("H", values)
    a.byteswap()
    return a.tobytes()


def compile_sender(workdir: Path) -> Path | None:
    """The C sender (like Postfix: one sendto per datagram), if a C compiler is here."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    out = workdir / "libtlsrpt_sender"
    subprocess.run(
        [compiler, "-O2", "-o", str(out), str(ROOT / "bench" / "libtlsrpt_sender.c")], check=True
    )
    return out


def run_case(
    label: str,
    url: str,
    workdir: Path,
    processes: int,
    sender_bin: Path | None,
    sender_args: dict[str, float],
) -> dict[str, float]:
    sock = workdir / f"{label}.sock"
    port = free_port()
    env = dict(
        os.environ,
        TLSRPT_DATABASE_URL=url,
        TLSRPT_DATA_DIR=str(workdir / "data"),
        TLSRPT_LOG_LEVEL="WARNING",
    )
    nice = ["nice", "-n", str(NICE[0])] if NICE[0] else []
    collector = subprocess.Popen(
        [
            *nice,
            sys.executable,
            "-m",
            "app",
            "collect",
            "--socket",
            str(sock),
            "--database",
            "--spool-dir",
            str(workdir / f"{label}-spool"),
            "--metrics",
            f"127.0.0.1:{port}",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        for _ in range(400):
            if sock.exists():
                break
            time.sleep(0.05)
        time.sleep(0.3)  # let the metrics server come up
        before = db_sessions(url)
        # Several sender processes, as Postfix has several smtp processes.
        senders = [
            subprocess.Popen(
                sender_command(sender_bin, workdir, sock, i, sender_args),
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(processes)
        ]
        results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in senders]
        result = {
            "sent": sum(r["sent"] for r in results),
            "dropped": sum(r["dropped"] for r in results),
            "started": min(r["started"] for r in results),
            "finished": max(r["finished"] for r in results),
        }
        target = result["sent"]
        deadline = time.time() + 300
        while metric(port, "tlsrpt_collector_results_forwarded_total") < target:
            if time.time() > deadline:
                raise TimeoutError(f"{label}: results not committed in time")
            time.sleep(0.01)
        committed = time.time()
        received = metric(port, "tlsrpt_collector_datagrams_received_total")
        cpu = _cpu_seconds(collector.pid)
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(60)
    stored = db_sessions(url) - before
    assert stored == result["sent"], f"{label}: stored {stored} != accepted {result['sent']}"
    seconds = committed - result["started"]
    return {
        "sent": result["sent"],
        "dropped": result["dropped"],
        "received": received,
        "stored": stored,
        "seconds": seconds,
        "rate": result["sent"] / seconds,
        "send_seconds": result["finished"] - result["started"],
        "commit_lag": committed - result["finished"],
        "collector_cpu": cpu,
    }


def _cpu_seconds(pid: int) -> float:
    """CPU time of the collector and its reader child."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        pids += [int(c) for c in children]
    total = 0.0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def queue_lengths(wanted: str) -> Iterator[int]:
    """Set net.unix.max_dgram_qlen to each wanted value in turn (sockets created
    meanwhile get it) and restore it afterwards; without the right to write it (not
    root), yield the current value once, so the bench reports what this host has."""
    current = int(QLEN.read_text())
    values = [int(v) for v in wanted.split(",") if v.strip()]
    if not os.access(QLEN, os.W_OK):
        print(f"# can not set net.unix.max_dgram_qlen (not root): measuring {current} only")
        yield current
        return
    try:
        for value in values:
            QLEN.write_text(f"{value}\n")
            yield value
    finally:
        QLEN.write_text(f"{current}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    s = sub.add_parser("sender")
    s.add_argument("--socket", required=True)
    s.add_argument("--count", type=int, default=1_000_000)
    s.add_argument("--rate", type=float, default=0)
    s.add_argument("--seconds", type=float, default=60)
    s.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--server-url",
        default=os.environ.get(
            "TLSRPT_BENCH_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="use an embedded PostgreSQL (pgserver) instead of --server-url",
    )
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--senders", type=int, default=1, help="sender processes")
    parser.add_argument(
        "--sender",
        choices=["auto", "python"],
        default="auto",
        help="auto: the C sender when a compiler is found, else Python",
    )
    parser.add_argument(
        "--qlen",
        default="10,512",
        help="net.unix.max_dgram_qlen values for the non-blocking case (default 10,512: "
        "the kernel's default and systemd's); set and restored when run as root",
    )
    parser.add_argument("--skip-blocking", action="store_true")
    parser.add_argument("--skip-nonblocking", action="store_true")
    parser.add_argument(
        "--collector-nice",
        type=int,
        default=0,
        help="run the collector at this nice value (the unit uses -10)",
    )
    args = parser.parse_args()
    NICE[0] = args.collector_nice
    if args.role == "sender":
        sender(args)
        return

    embedded = None
    if args.embedded:
        from app.db.embedded import start_embedded

        embedded = start_embedded(Path(tempfile.mkdtemp(prefix="tlsrpt-bench-pg-")))
        args.server_url = embedded.server.get_uri("postgres")
    name = f"tlsrpt_bench_collector_{os.getpid()}"
    with psycopg.connect(args.server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(args.server_url)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo("", **info)
    try:
        upgrade(url)
        with tempfile.TemporaryDirectory(prefix="tlsrpt-bench-collect-") as tmp:
            workdir = Path(tmp)
            print(
                f"# {datetime.now(UTC):%Y-%m-%d %H:%M}Z, {os.cpu_count()} cores, "
                f"load average {Path('/proc/loadavg').read_text().split()[0]}, "
                f"net.unix.max_dgram_qlen="
                f"{Path('/proc/sys/net/unix/max_dgram_qlen').read_text().strip()}, "
                f"collector nice {args.collector_nice}"
            )
            sender_bin = None if args.sender == "python" else compile_sender(workdir)
            kind = "C" if sender_bin else "Python"
            if not args.skip_blocking:
                per_sender = {"count": args.count // args.senders, "rate": 0, "seconds": 0}
                r = run_case("blocking", url, workdir, args.senders, sender_bin, per_sender)
                print(
                    f"blocking, {args.senders} {kind} sender(s): {r['sent']:,.0f} datagrams, "
                    f"{DOMAINS} domains, {FAILURE_SHARE:.0%} failures: {r['rate']:,.0f} "
                    f"datagrams/s socket to committed aggregates ({r['seconds']:.1f} s; "
                    f"sending took {r['send_seconds']:.1f} s, last commit "
                    f"{r['commit_lag']:.2f} s after; collector CPU {r['collector_cpu']:.1f} s "
                    f"= {r['collector_cpu'] / r['sent'] * 1e6:.1f} us/datagram); stored "
                    f"{r['stored']:,.0f}"
                )
            if not args.skip_nonblocking:
                per_sender = {"count": 0, "rate": args.rate / args.senders, "seconds": args.seconds}
                drops = {}
                for qlen in queue_lengths(args.qlen):
                    label = f"nonblocking-{qlen}"
                    r = run_case(label, url, workdir, args.senders, sender_bin, per_sender)
                    drops[qlen] = r["dropped"]
                    print(
                        f"non-blocking, {args.senders} {kind} sender(s), "
                        f"net.unix.max_dgram_qlen={qlen}: {args.rate:,.0f}/s "
                        f"for {args.seconds:.0f} s: {r['sent'] + r['dropped']:,.0f} sent, "
                        f"{r['dropped']:,.0f} dropped (EAGAIN), all committed "
                        f"{r['commit_lag']:.2f} s after the last send; collector CPU "
                        f"{r['collector_cpu']:.1f} s; stored {r['stored']:,.0f}",
                        flush=True,
                    )
                print("drops by queue length: " + ", ".join(
                    f"{q}: {d:,.0f}" for q, d in drops.items()
                ))  # fmt: skip
    finally:
        with psycopg.connect(args.server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
