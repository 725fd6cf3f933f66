"""The on-disk spool: order, durability across reopen, torn records, the size bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.collector.spool import Spool, SpoolFullError, SpoolInUseError


def drain(spool: Spool) -> list[bytes]:
    out = []
    while (record := spool.peek()) is not None:
        out.append(record)
        spool.ack()
    return out


def test_records_come_back_in_order_across_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=100)
    records = [f"record {i}".encode() * (i % 5 + 1) for i in range(50)]
    for record in records:
        spool.append(record)
    assert len(list(tmp_path.glob("*.spool"))) > 1
    assert spool.pending == 50
    assert drain(spool) == records
    assert spool.pending == 0
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]


def test_unacknowledged_records_survive_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    for i in range(10):
        spool.append(b"r%d" % i)
    assert spool.peek() == b"r0"
    spool.ack()
    spool.ack()
    spool.ack()
    spool.close()

    again = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=64)
    assert again.pending == 7
    again.append(b"new")
    assert drain(again) == [b"r%d" % i for i in range(3, 10)] + [b"new"]


def test_a_torn_record_at_the_end_is_cut_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"whole one")
    spool.append(b"whole two")
    spool.close()
    (segment,) = tmp_path.glob("*.spool")
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(b"\x00\x00\x01\x00partial")  # header promising 256 bytes, then a crash
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert segment.stat().st_size == size
    assert drain(again) == [b"whole one", b"whole two"]


def test_a_corrupted_record_is_not_delivered(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.append(b"good")
    spool.append(b"flipped")
    spool.close()
    (segment,) = tmp_path.glob("*.spool")
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0xFF
    segment.write_bytes(bytes(data))
    assert drain(Spool(tmp_path, max_bytes=1 << 20)) == [b"good"]


def test_the_size_bound_is_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    spool.append(b"x" * 40)
    spool.append(b"y" * 40)
    with pytest.raises(SpoolFullError):
        spool.append(b"z" * 40)
    assert spool.size_bytes <= 100
    assert drain(spool) == [b"x" * 40, b"y" * 40]
    spool.append(b"z" * 40)
    assert drain(spool) == [b"z" * 40]


def test_one_process_at_a_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1000)
    with pytest.raises(SpoolInUseError):
        Spool(tmp_path, max_bytes=1000)
    spool.close()
    Spool(tmp_path, max_bytes=1000).close()
