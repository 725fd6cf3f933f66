"""The collector pipeline over a real Unix datagram socket, with an in-memory sink."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import stat
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from app.clock import system_clock
from app.collector.listener import (
    DatagramReader,
    NotASocketError,
    SocketInUseError,
    bind_socket,
)
from app.collector.reader_process import ProcessReader
from app.collector.service import Collector, CollectorOptions
from tests.collector.datagrams import Expected, encode, random_datagram
from tests.collector.memory import MemorySink, clean, counted, send_all
from tests.wait import until, until_blocking

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def options(tmp_path: Path, **overrides: object) -> CollectorOptions:
    values: dict[str, object] = {
        "socket_path": tmp_path / "tlsrpt.sock",
        "spool_dir": tmp_path / "spool",
        "flush_seconds": 0.05,
        "poll_seconds": 0.01,
        "retry_initial_seconds": 0.01,
        "retry_max_seconds": 0.05,
        "reader_process": False,
    }
    values.update(overrides)
    return CollectorOptions(**values)  # type: ignore[arg-type]


def generated(n: int, seed: int = 1) -> tuple[list[bytes], Expected]:
    rng = random.Random(seed)
    expected = Expected()
    datagrams = []
    for _ in range(n):
        spec = random_datagram(rng)
        expected.add(spec)
        datagrams.append(encode(spec))
    return datagrams, clean(expected)


async def test_datagrams_sent_over_the_socket_are_counted_exactly(tmp_path: Path) -> None:
    sink = MemorySink()
    collector = Collector(options(tmp_path), sink, clock=lambda: NOW)
    await collector.start()
    datagrams, expected = generated(3000)
    await asyncio.to_thread(send_all, tmp_path / "tlsrpt.sock", datagrams)
    await collector.stop()

    assert counted(sink.batches) == expected
    assert {b.day for b in sink.batches} == {date(2025, 6, 1)}
    stats = collector.stats()
    assert stats.datagrams_received == 3000
    assert stats.results_forwarded == sum(expected.sessions.values())
    assert stats.batches_spooled == 0
    assert not (tmp_path / "tlsrpt.sock").exists()


async def test_invalid_datagrams_are_counted_by_kind_and_skipped(tmp_path: Path) -> None:
    sink = MemorySink()
    collector = Collector(options(tmp_path), sink, clock=lambda: NOW)
    await collector.start()
    datagrams, expected = generated(500, seed=2)
    bad = {
        "bad_json": b'{"d": "a.example", "policies": [',
        "unknown_code": b'{"d":"a.example","policies":[{"policy-type":2,'
        b'"failure-details":[{"c":999}],"t":1,"f":1}]}',
        "invalid_ip": b'{"d":"a.example","policies":[{"policy-type":2,'
        b'"failure-details":[{"c":201,"s":"300.1.1.1"}],"t":1,"f":1}]}',
        "unknown_policy_type": b'{"d":"a.example","policies":[{"policy-type":7,"f":0}]}',
    }
    mixed = list(datagrams)
    for i, data in enumerate(bad.values()):
        for j in range(3):
            mixed.insert(i * 100 + j * 7, data)
    await asyncio.to_thread(send_all, tmp_path / "tlsrpt.sock", mixed)
    await collector.stop()

    assert counted(sink.batches) == expected
    assert dict(collector.stats().invalid) == {kind: 3 for kind in bad}
    assert collector.stats().datagrams_received == 512


async def test_results_are_counted_on_the_utc_day_they_were_received(tmp_path: Path) -> None:
    now = [datetime(2025, 6, 1, 23, 59, 59, 999000, tzinfo=UTC)]
    sink = MemorySink()
    collector = Collector(options(tmp_path), sink, clock=lambda: now[0])
    await collector.start()
    before, expected_before = generated(200, seed=3)
    after, expected_after = generated(300, seed=4)
    path = tmp_path / "tlsrpt.sock"
    await asyncio.to_thread(send_all, path, before)
    # The reader stamps each datagram as it reads it: only then may the day end.
    await until(lambda: collector.stats().datagrams_received == len(before))
    now[0] += timedelta(milliseconds=2)
    await asyncio.to_thread(send_all, path, after)
    await collector.stop()

    by_day = {
        day: counted([b for b in sink.batches if b.day == day])
        for day in {b.day for b in sink.batches}
    }
    assert by_day == {date(2025, 6, 1): expected_before, date(2025, 6, 2): expected_after}


async def test_sink_down_spools_then_delivers_everything_in_order(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.down = True
    collector = Collector(options(tmp_path), sink, clock=lambda: NOW)
    await collector.start()
    path = tmp_path / "tlsrpt.sock"
    expected = Expected()

    def spooled(batches: int) -> Callable[[], bool]:
        return lambda: collector.stats().batches_spooled >= batches

    for round_ in range(5):
        datagrams, part = generated(100, seed=10 + round_)
        expected.sessions += part.sessions
        expected.failures += part.failures
        expected.details += part.details
        await asyncio.to_thread(send_all, path, datagrams)
        # Each round ends in at least one more spooled batch before the next is sent.
        await until(spooled(round_ + 1))
    stats = collector.stats()
    assert stats.batches_spooled >= 2
    assert stats.spool_batches == stats.batches_spooled
    assert stats.batches_failed >= 1
    assert sink.batches == []
    spooled_ids = _spooled_ids(tmp_path / "spool")

    sink.down = False
    await until(lambda: collector.stats().spool_batches == 0)
    await collector.stop()

    assert counted(sink.batches) == clean(expected)
    ids = [b.batch_id for b in sink.batches]
    assert len(ids) == len(set(ids))
    assert ids[: len(spooled_ids)] == spooled_ids
    assert collector.stats().spool_bytes == 0
    assert [p.name for p in (tmp_path / "spool").iterdir()] == [".lock"]


def _spooled_ids(directory: Path) -> list[str]:
    """Batch ids in the spool files, read without touching them."""
    ids = []
    for path in sorted(directory.glob("*.spool")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            length = int.from_bytes(data[pos : pos + 4], "big")
            ids.append(orjson.loads(data[pos + 8 : pos + 8 + length])["batch-id"])
            pos += 8 + length
    return ids


async def test_spool_left_by_a_previous_run_is_delivered_first(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.down = True
    first = Collector(options(tmp_path), sink, clock=lambda: NOW)
    await first.start()
    old, expected_old = generated(300, seed=20)
    await asyncio.to_thread(send_all, tmp_path / "tlsrpt.sock", old)
    await first.stop()
    assert first.stats().spool_batches >= 1

    sink.down = False
    second = Collector(options(tmp_path), sink, clock=lambda: NOW)
    await second.start()
    new, expected_new = generated(200, seed=21)
    await asyncio.to_thread(send_all, tmp_path / "tlsrpt.sock", new)
    await second.stop()

    total = Expected(
        sessions=expected_old.sessions + expected_new.sessions,
        failures=expected_old.failures + expected_new.failures,
        details=expected_old.details + expected_new.details,
    )
    assert counted(sink.batches) == clean(total)
    assert counted(sink.batches[:1]).sessions.total() <= expected_old.sessions.total()
    assert second.stats().spool_batches == 0


async def test_full_spool_is_counted_and_the_rest_kept(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.down = True
    collector = Collector(options(tmp_path, spool_max_bytes=4096), sink, clock=lambda: NOW)
    await collector.start()
    datagrams, expected = generated(2000, seed=30)
    await asyncio.to_thread(send_all, tmp_path / "tlsrpt.sock", datagrams)
    await collector.stop()
    stats = collector.stats()
    assert stats.results_dropped_spool_full > 0
    assert stats.results_spooled + stats.results_dropped_spool_full == sum(
        expected.sessions.values()
    )
    assert stats.spool_bytes <= 4096


def test_a_stale_socket_file_is_replaced_and_permissions_applied(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    old = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old.bind(str(path))
    old.close()  # the file stays, nobody listens: stale
    sock = bind_socket(path, group=str(os.getgid()), mode=0o620)
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o620
        assert st.st_gid == os.getgid()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"x", str(path))
        assert sock.recv(10) == b"x"
    finally:
        sock.close()


def test_a_socket_in_use_or_a_regular_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    live = bind_socket(path)
    try:
        with pytest.raises(SocketInUseError):
            bind_socket(path)
    finally:
        live.close()
    other = tmp_path / "file"
    other.write_text("keep me")
    with pytest.raises(NotASocketError):
        bind_socket(other)
    assert other.read_text() == "keep me"


def test_stopping_reads_what_is_still_queued_and_refuses_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "q.sock"
    sock = bind_socket(path)
    gate = threading.Event()

    def held_clock() -> float:
        # Holds the reader after its first datagram, so the rest is queued at stop.
        gate.wait()
        return NOW.timestamp()

    reader = DatagramReader(sock, path, held_clock)
    queued = [b"datagram %d" % i for i in range(8)]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        for data in queued:
            sender.sendto(data, str(path))
        reader.start()
        stopper = threading.Thread(target=reader.stop)
        stopper.start()
        until_blocking(lambda: not path.exists())
        with pytest.raises(OSError):
            sender.sendto(b"too late", str(path))
        gate.set()
        stopper.join(10)
    assert reader.take() == [(NOW.date(), queued)]
    assert not path.exists()


def test_the_reader_splits_datagrams_at_utc_midnight(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    times = iter([86400 * 20000 - 0.001, 86400 * 20000 - 0.0005, 86400 * 20000, 86400 * 20001])
    reader = DatagramReader(bind_socket(path), path, lambda: next(times))
    reader.start()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        for data in (b"a", b"b", b"c", b"d"):
            sender.sendto(data, str(path))
    reader.stop()
    assert reader.take() == [
        (date(2024, 10, 3), [b"a", b"b"]),
        (date(2024, 10, 4), [b"c"]),
        (date(2024, 10, 5), [b"d"]),
    ]


def test_the_reader_process_delivers_everything_queued_at_stop(tmp_path: Path) -> None:
    path = tmp_path / "p.sock"
    reader = ProcessReader(bind_socket(path), path)
    reader.start()
    first = [b"first %d" % i for i in range(500)]
    send_all(path, first)
    until_blocking(lambda: reader.received == len(first))
    child = reader._child
    assert child is not None
    os.kill(child.pid, signal.SIGSTOP)  # the child stops reading: the socket queue fills
    queued = [b"queued %d" % i for i in range(8)]
    send_all(path, queued)
    stopper = threading.Thread(target=reader.stop)
    stopper.start()
    until_blocking(lambda: not path.exists())
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender, pytest.raises(OSError):
        sender.sendto(b"too late", str(path))
    os.kill(child.pid, signal.SIGCONT)
    stopper.join(10)
    assert child.returncode == 0
    today = datetime.now(UTC).date()
    chunks = reader.take()
    assert {day for day, _ in chunks} <= {today, today - timedelta(days=1)}
    assert [data for _, chunk in chunks for data in chunk] == first + queued
    assert reader.received == 508


async def test_the_production_reader_reads_through_the_child_process(tmp_path: Path) -> None:
    sink = MemorySink()
    collector = Collector(options(tmp_path, reader_process=True), sink, clock=system_clock)
    await collector.start()
    assert isinstance(collector._reader, ProcessReader)
    datagrams, expected = generated(2000, seed=80)
    await asyncio.to_thread(send_all, tmp_path / "tlsrpt.sock", [*datagrams, b"", b"{"])
    await collector.stop()
    assert counted(sink.batches) == expected
    assert collector.stats().datagrams_received == 2002
    assert dict(collector.stats().invalid) == {"bad_json": 2}


@pytest.mark.parametrize(("queue", "warned"), [("10\n", True), ("512\n", False)])
async def test_start_warns_with_the_fix_when_the_kernel_queue_is_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, queue: str, warned: bool
) -> None:
    qlen = tmp_path / "max_dgram_qlen"
    qlen.write_text(queue)
    collector = Collector(options(tmp_path, queue_length_path=qlen), MemorySink(), system_clock)
    with caplog.at_level(logging.INFO, logger="app.collector"):
        await collector.start()
        await collector.stop()
    short = [r for r in caplog.records if r.getMessage() == "collector_queue_short"]
    started = [r for r in caplog.records if r.getMessage() == "collector_started"]
    assert started[0].fields["max_dgram_qlen"] == int(queue)  # type: ignore[attr-defined]
    if not warned:
        assert short == []
        return
    (record,) = short
    assert record.levelno == logging.WARNING
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["max_dgram_qlen"] == 10 and fields["wanted"] == 512
    assert fields["fix"].startswith("sysctl -w net.unix.max_dgram_qlen=512 and ")
