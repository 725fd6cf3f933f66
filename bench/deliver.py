"""Delivery benchmark: one day of 10,000 reports, half by mail, half by HTTPS.

    python bench/deliver.py [--database-url URL] [--reports 10000] [--concurrency 64]
                            [--signing-processes 1]

Results for 10,000 policy domains are stored for yesterday; each domain publishes one rua
(even: `mailto:` to an aiosmtpd sink, odd: `https:` to a uvicorn receiver with a test
certificate), both in a separate process on 127.0.0.1. `build_day` builds the reports
with a send window of zero (timed apart), then `deliver_due` sends them: every mail is
built, DKIM-signed (RSA 2048) and relayed; every POST resolves its host, passes the SSRF
guard and opens its own TLS connection. Afterwards the sinks' counts must show each rua
exactly once and the database every delivery 'sent'. TXT and A lookups use in-process
fakes: the benchmark measures delivery, not DNS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.delivery.certs import make_dkim_key_pair, make_test_ca  # noqa: E402
from tests.delivery.sinks import HttpsReceiver, SmtpHandler, https_receiver, smtp_sink  # noqa: E402


async def serve_sinks(directory: Path) -> None:
    """Child process: run both sinks until SIGTERM, then print what each rua received."""
    ca = make_test_ca(directory)
    smtp, https = SmtpHandler(), HttpsReceiver()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with (
        smtp_sink(smtp) as smtp_port,
        https_receiver(https, str(ca.cert_file), str(ca.key_file)) as https_port,
    ):
        print(json.dumps({"smtp": smtp_port, "https": https_port}), flush=True)
        await stop.wait()
    received = Counter(f"mailto:{m.rcpt_tos[0]}" for m in smtp.messages)
    received.update(f"https://rua.test:{https_port}{p.path}" for p in https.posts)
    (directory / "received.json").write_text(json.dumps(received))


async def benchmark(args: argparse.Namespace, database_url: str, work: Path) -> int:
    from pydantic import SecretStr

    from app.config import (
        DeliverySettings,
        DkimSettings,
        HttpsSettings,
        MailSettings,
        ReportSettings,
        SchedulerSettings,
        Settings,
        SmtpSecurity,
        SmtpSettings,
    )
    from app.db.pool import open_pool
    from app.delivery.service import deliver_due
    from app.ingest.service import record_tally
    from app.report.service import build_day
    from app.resources import Resources
    from app.tlsrpt.model import FailureDetail, Policy, PolicyType, ResultType
    from app.tlsrpt.tally import Tally
    from tests.delivery.env import FakeAddressResolver
    from tests.dns.fake_resolver import FakeResolver

    sinks = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--sinks",
        str(work),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert sinks.stdout is not None
    ports = json.loads(await asyncio.wait_for(sinks.stdout.readline(), timeout=60))
    pem, _ = make_dkim_key_pair()
    key_file = work / "dkim.pem"
    key_file.write_bytes(pem)
    settings = Settings(
        database_url=SecretStr(database_url),
        data_dir=work / "data",
        report=ReportSettings(organization_name="Bench", contact_info="tlsrpt@sender.example"),
        smtp=SmtpSettings(host="127.0.0.1", port=ports["smtp"], security=SmtpSecurity.NONE),
        mail=MailSettings.model_validate({"from": "reports@sender.example"}),
        dkim=DkimSettings(selector="sel", private_key_file=key_file),
        https=HttpsSettings.model_validate(
            {"allowed_networks": ["127.0.0.0/8"], "ca_file": str(work / "ca.pem")}
        ),
        delivery=DeliverySettings(
            concurrency=args.concurrency, signing_processes=args.signing_processes
        ),
        scheduler=SchedulerSettings(send_window_seconds=0),
    )
    pool = await open_pool(database_url, settings.database)
    dns = FakeResolver()
    addresses = FakeAddressResolver({"rua.test": ["127.0.0.1"]})
    resources = Resources(settings=settings, pool=pool, resolver=dns, address_resolver=addresses)
    senders = resources.open_senders()
    day = datetime.now(UTC).date() - timedelta(days=1)
    expected = []
    tally = Tally()
    detail = FailureDetail(ResultType.CERTIFICATE_EXPIRED, receiving_mx_hostname="mx.bench")
    for n in range(args.reports):
        domain = f"d{n}.bench.example"
        mail = args.kinds == "mailto" or (args.kinds == "both" and n % 2 == 0)
        rua = f"mailto:tlsrpt@{domain}" if mail else f"https://rua.test:{ports['https']}/{domain}"
        expected.append(rua)
        dns.publish(domain, f"v=TLSRPTv1; rua={rua}")
        policy = Policy(
            PolicyType.STS, domain, ("version: STSv1", "mode: enforce"), (f"mx.{domain}",)
        )
        for _ in range(3):
            tally.add_session(day, policy, None)
        tally.add_session(day, policy, detail)
    await record_tally(resources.committer, resources.clock, settings, tally)

    started = time.perf_counter()
    summary = await build_day(pool, dns, resources.clock, settings.report, day)
    built = time.perf_counter() - started
    print(f"build_day: {summary.built} reports in {built:.1f} s ({summary.built / built:.0f}/s)")

    started, cpu = time.perf_counter(), time.process_time()
    attempted = 0
    while n := await deliver_due(
        pool, senders, resources.clock, settings.delivery, sending=True, owner="bench", limit=2**31
    ):
        attempted += n
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"delivery: {attempted} attempts in {elapsed:.1f} s: {attempted / elapsed:.0f} reports/s "
        f"(concurrency {args.concurrency}, signing processes {args.signing_processes}; "
        f"CPU of this process {cpu:.1f} s, load average {os.getloadavg()[0]:.1f})"
    )
    # The delivering service is this process (the sinks run in a child of their own).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the delivering process: {peak:.0f} MB")

    async with pool.connection() as conn:
        cur = await conn.execute("SELECT state, count(*) FROM deliveries GROUP BY state")
        states: dict[str, int] = dict(await cur.fetchall())
    await resources.close()  # waits for the signing processes to exit
    signing = resource.getrusage(resource.RUSAGE_CHILDREN)
    signing_cpu = signing.ru_utime + signing.ru_stime
    sinks.send_signal(signal.SIGTERM)
    await asyncio.wait_for(sinks.communicate(), timeout=60)
    counts = json.loads((work / "received.json").read_text())
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        f"CPU of the DKIM signing processes: {signing_cpu:.1f} s; of the sinks (SMTP and "
        f"HTTPS receivers, not part of the service): "
        f"{children.ru_utime + children.ru_stime - signing_cpu:.1f} s"
    )
    once = all(counts.get(rua) == 1 for rua in expected) and len(counts) == len(expected)
    print(f"deliveries by state: {states}")
    print(f"each rua received exactly once at the sinks: {once} ({sum(counts.values())} received)")
    ok = once and states == {"sent": args.reports} and elapsed <= 60
    print("PASS" if ok else "FAIL", "(target: every report exactly once, at most 60 s)")
    return 0 if ok else 1


def create_database(server_url: str) -> str:
    import psycopg
    from psycopg import sql

    from app.db.migrate import upgrade

    name = f"tlsrpt_bench_delivery_{os.getpid()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    upgrade(url)
    return name


def drop_database(server_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("TLSRPT_DATABASE_URL"))
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--signing-processes", type=int, default=1)
    parser.add_argument("--kinds", choices=["both", "mailto", "https"], default="both")
    parser.add_argument("--sinks", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sinks:
        asyncio.run(serve_sinks(args.sinks))
        return 0
    import psycopg

    with tempfile.TemporaryDirectory(prefix="tlsrpt-bench-") as tmp:
        work = Path(tmp)
        server = args.database_url
        embedded = None
        if server is None:
            import pgserver

            embedded = pgserver.get_server(  # type: ignore[attr-defined]
                work / "pgdata", cleanup_mode="delete"
            )
            server = embedded.get_uri("postgres")
        name = create_database(server)
        info = psycopg.conninfo.conninfo_to_dict(server)
        info["dbname"] = name
        try:
            return asyncio.run(
                benchmark(args, psycopg.conninfo.make_conninfo(**info), work)  # type: ignore[arg-type]
            )
        finally:
            drop_database(server, name)
            if embedded is not None:
                embedded.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
