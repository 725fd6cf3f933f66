"""Bounded gzip inflation: real members, corrupt input and a 10 GiB bomb."""

from __future__ import annotations

import gzip
import struct
import time
import tracemalloc
import zlib

import pytest

from app.tlsrpt.inflate import InflatedTooLargeError, InflateError, inflate_gzip

MIB = 1024 * 1024


def zero_bomb(gib: int) -> bytes:
    """A gzip stream of `gib` GiB of zeros, built without producing the zeros."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    # After a full flush the compressor forgets the past: every MiB encodes the same.
    again = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert block == again
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    crc = zlib.crc32(b"")  # the trailer is never reached; its CRC does not matter
    tail = compressor.flush(zlib.Z_FINISH) + struct.pack("<II", crc, (gib << 30) & 0xFFFFFFFF)
    return header + block * (gib * 1024) + tail


def test_round_trip_and_concatenated_members() -> None:
    assert inflate_gzip(gzip.compress(b"{}"), 1024) == b"{}"
    both = gzip.compress(b'{"a":') + gzip.compress(b"1}")
    assert inflate_gzip(both, 1024) == b'{"a":1}'
    assert inflate_gzip(gzip.compress(b"x") + bytes(8), 1024) == b"x"


def test_exactly_the_limit_is_accepted_one_more_is_not() -> None:
    data = gzip.compress(bytes(5000))
    assert len(inflate_gzip(data, 5000)) == 5000
    with pytest.raises(InflatedTooLargeError):
        inflate_gzip(data, 4999)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{}", "not gzip data"),
        (gzip.compress(b"hello world" * 100, mtime=0)[:-30], "truncated gzip data"),
        (gzip.compress(b"x", mtime=0) + b"junk", "trailing bytes"),
        (b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 20, "corrupt gzip data"),
    ],
)
def test_not_gzip(data: bytes, reason: str) -> None:
    with pytest.raises(InflateError, match=reason):
        inflate_gzip(data, MIB)


def test_corrupt_checksum_is_refused() -> None:
    data = bytearray(gzip.compress(b"hello"))
    data[-8] ^= 0xFF
    with pytest.raises(InflateError, match="corrupt"):
        inflate_gzip(bytes(data), MIB)


def test_ten_gib_of_zeros_refused_fast_with_bounded_memory() -> None:
    bomb = zero_bomb(10)
    assert len(bomb) < 11 * MIB
    limit = 8 * MIB
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(InflatedTooLargeError):
            inflate_gzip(bomb, limit)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    # The output buffer (the cap plus one chunk) and zlib's window, nothing like 10 GiB.
    assert peak < 2 * limit + MIB
