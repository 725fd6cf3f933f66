"""`tlsrpt collect`: receive Postfix's libtlsrpt datagrams and forward their counts.

Into the local database (`--database`, `TLSRPT_DATABASE_URL`) or to a central service's
`POST /v1/tallies` (`--api URL --token-file F`), so one service can serve many MTA hosts.
SIGTERM and SIGINT stop it after everything read is delivered or spooled. `tlsrpt serve
--libtlsrpt-socket PATH` runs the same collector inside the service (`serve_hooks`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from app.cli.runtime import settings_or_exit
from app.clock import system_clock
from app.collector.listener import NotASocketError, SocketInUseError
from app.collector.metrics import StatsCollector
from app.collector.service import Collector, CollectorOptions
from app.collector.sinks import ApiSink, DatabaseSink, Sink, read_token_file
from app.collector.spool import SpoolInUseError
from app.config import Settings
from app.ingest.service import IngestCommitter
from app.resources import Resources

if TYPE_CHECKING:
    from app.main import Hook

log = logging.getLogger(__name__)

_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "collect",
        help="receive Postfix libtlsrpt datagrams (smtp_tlsrpt_socket_name) and forward them",
        description="Bind the Unix datagram socket Postfix 3.10+ sends TLSRPT results to, "
        "count them per UTC day, and record the counts in the database or post them to a "
        "central service. Batches that can not be delivered wait in an on-disk spool.",
    )
    p.add_argument("--socket", required=True, type=Path, help="socket path to bind")
    _socket_permissions(p, "--")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--database", action="store_true", help="record into TLSRPT_DATABASE_URL")
    target.add_argument("--api", metavar="URL", help="base URL of a central tlsrpt service")
    p.add_argument("--token-file", type=Path, help="file holding an `ingest` token (with --api)")
    p.add_argument(
        "--spool-dir",
        type=Path,
        help="where undeliverable batches wait (default: $TLSRPT_DATA_DIR/collector-spool)",
    )
    p.add_argument(
        "--spool-max-bytes",
        type=_size,
        default=1024**3,
        help="spool size limit, e.g. 512M (default 1G); beyond it results are lost, loudly",
    )
    p.add_argument(
        "--metrics", metavar="HOST:PORT", help="serve Prometheus metrics on this address"
    )
    p.add_argument(
        "--flush-seconds", type=float, default=1.0, help="deliver every S seconds (default 1)"
    )
    p.add_argument(
        "--flush-datagrams",
        type=int,
        default=100_000,
        help="or as soon as N datagrams are waiting (default 100000)",
    )
    p.set_defaults(func=collect)


def _socket_permissions(p: argparse.ArgumentParser, prefix: str) -> None:
    p.add_argument(f"{prefix}owner", help="user owning the socket (name or uid)")
    p.add_argument(f"{prefix}group", help="group of the socket, e.g. postfix (name or gid)")
    p.add_argument(
        f"{prefix}mode",
        type=_mode,
        default=0o660,
        help="socket permissions in octal (default 0660)",
    )


def _mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode like 0660") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not a permission mode")
    return mode


def _size(text: str) -> int:
    value = text.strip().lower().removesuffix("b")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    number = value[: -1 if unit else None]
    if not number.isdigit() or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1073741824 or 1G")
    return int(number) * _SIZE_UNITS[unit]


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--metrics {text!r}: expected HOST:PORT")
    return host, int(port)


def collect(args: argparse.Namespace) -> int:
    settings = settings_or_exit()
    if args.api and args.token_file is None:
        print("tlsrpt collect: --api needs --token-file", file=sys.stderr)
        return 2
    if args.database and settings.database_url is None:
        print(
            "tlsrpt collect: --database needs TLSRPT_DATABASE_URL; with the embedded "
            "database run the collector inside the service: tlsrpt serve --libtlsrpt-socket",
            file=sys.stderr,
        )
        return 2
    try:
        metrics = _address(args.metrics) if args.metrics else None
        token = read_token_file(args.token_file) if args.api else ""
    except (OSError, ValueError) as exc:
        print(f"tlsrpt collect: {exc}", file=sys.stderr)
        return 2
    options = CollectorOptions(
        socket_path=args.socket,
        spool_dir=args.spool_dir or settings.data_dir / "collector-spool",
        owner=args.owner,
        group=args.group,
        mode=args.mode,
        spool_max_bytes=args.spool_max_bytes,
        flush_seconds=args.flush_seconds,
        flush_datagrams=args.flush_datagrams,
    )
    return asyncio.run(_run(options, settings, args.api, token, metrics))


async def _run(
    options: CollectorOptions,
    settings: Settings,
    api: str | None,
    token: str,
    metrics: tuple[str, int] | None,
) -> int:
    from app.db.pool import open_pool

    pool = None
    committer = None
    sink: Sink
    if api:
        sink = ApiSink(api, token, timeout=settings.https.timeout_seconds)
    else:
        assert settings.database_url is not None
        # Not waiting: the socket is bound and batches spool while PostgreSQL starts.
        pool = await open_pool(
            settings.database_url.get_secret_value(), settings.database, wait=False
        )
        committer = IngestCommitter(pool, system_clock)
        sink = DatabaseSink(committer, system_clock, settings)
    collector = Collector(options, sink, clock=system_clock)
    server: Any = None
    try:
        try:
            await collector.start()
        except (SocketInUseError, NotASocketError, SpoolInUseError, OSError, KeyError) as exc:
            print(f"tlsrpt collect: {exc}", file=sys.stderr)
            return 1
        if metrics is not None:
            registry = CollectorRegistry()
            registry.register(StatsCollector(collector.stats))
            server, _ = start_http_server(metrics[1], metrics[0], registry)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("collector_stopping")
        await collector.stop()
    finally:
        if server is not None:
            server.shutdown()
        await sink.aclose()
        if committer is not None:
            await committer.close()
        if pool is not None:
            await pool.close()
    return 0


def register_serve_options(p: argparse.ArgumentParser) -> None:
    """`tlsrpt serve` options that run the collector inside the service."""
    p.add_argument(
        "--libtlsrpt-socket",
        type=Path,
        metavar="PATH",
        help="also receive Postfix libtlsrpt datagrams on this socket (see tlsrpt collect)",
    )
    _socket_permissions(p, "--libtlsrpt-socket-")


def serve_hooks(args: argparse.Namespace, settings: Settings) -> list[Hook]:
    """Lifespan hooks for `create_app(on_start=...)`: the collector, into the database."""
    if args.libtlsrpt_socket is None:
        return []
    options = CollectorOptions(
        socket_path=args.libtlsrpt_socket,
        spool_dir=settings.data_dir / "collector-spool",
        owner=args.libtlsrpt_socket_owner,
        group=args.libtlsrpt_socket_group,
        mode=args.libtlsrpt_socket_mode,
    )

    async def start(resources: Resources) -> Any:
        collector = Collector(
            options,
            DatabaseSink(resources.committer, resources.clock, resources.settings),
            clock=resources.clock,
        )
        await collector.start()
        exposed = StatsCollector(collector.stats)
        REGISTRY.register(exposed)

        async def stop() -> None:
            await collector.stop()
            REGISTRY.unregister(exposed)

        return stop

    return [start]
