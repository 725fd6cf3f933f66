"""Bounded gzip inflation of received reports (RFC 8460 §5.2).

Reports arrive gzip-compressed from strangers, so the inflated size is counted while
inflating: zlib hands out at most `CHUNK` bytes per step, and the moment the running
total passes the cap the work stops. A gzip bomb (gigabytes of zeros in a few
megabytes) therefore costs at most the cap in memory and the time to inflate the cap,
never the size it claims. Concatenated gzip members (RFC 1952 §2.2) are read in turn.
"""

from __future__ import annotations

import zlib

GZIP_MAGIC = b"\x1f\x8b"
# Inflate this much per step: small enough to stop soon after the cap, large enough
# that the Python loop costs nothing next to zlib itself.
CHUNK = 256 * 1024
# gzip wrapper only (RFC 1952); a raw or zlib stream is not a TLSRPT report.
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class InflateError(Exception):
    """The body is not a valid gzip stream; `reason` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InflatedTooLargeError(Exception):
    """Inflating would produce more than `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the report inflates to more than {limit} bytes")
        self.limit = limit


def is_gzip(data: bytes) -> bool:
    return data[:2] == GZIP_MAGIC


def inflate_gzip(data: bytes, limit: int) -> bytes:
    """Inflate a gzip body, refusing as soon as the output passes `limit` bytes."""
    if not is_gzip(data):
        raise InflateError("not gzip data (no gzip header)")
    view = memoryview(data)
    out = bytearray()
    start = 0
    while True:
        stream = zlib.decompressobj(_GZIP_WBITS)
        fed = start
        while not stream.eof:
            # Input goes in slices too: zlib copies the unconsumed rest of whatever it
            # is given, and a whole bomb's rest on every step would cost its size again.
            feed: bytes | memoryview = stream.unconsumed_tail
            if not feed and fed < len(data):
                feed = view[fed : fed + CHUNK]
                fed += len(feed)
            try:
                piece = stream.decompress(feed, CHUNK)
            except zlib.error as exc:
                raise InflateError(f"corrupt gzip data: {exc}") from None
            out += piece
            if len(out) > limit:
                raise InflatedTooLargeError(limit)
            if not feed and not piece:
                raise InflateError("truncated gzip data")
        start = fed - len(stream.unused_data)
        if start == len(data):
            return bytes(out)
        # RFC 1952 §2.2: members may follow each other; anything else is garbage,
        # except zero padding some writers leave (gzip(1) ignores it too).
        if not is_gzip(view[start : start + 2].tobytes()):
            if data.count(0, start) != len(data) - start:
                raise InflateError("trailing bytes after the gzip data")
            return bytes(out)
