"""A bounded on-disk queue of batches that could not be delivered yet.

Records are appended to segment files (`<seq>.spool`: a 4-byte length, a CRC-32 and the
payload) and fsynced before `append` returns; a segment's read position lives beside it
in `<seq>.ack`. Records come back in the order they were written; a segment is deleted
once all its records are acknowledged. A crash mid-append leaves a torn record at the end
of the last segment, which opening the spool cuts off. The spool never holds more than
`max_bytes` on disk; `append` raises SpoolFullError beyond that, and the caller says so
loudly. A record acknowledged late (crash between delivery and ack) is delivered again,
which is why batches carry an id the sink records once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
_SUFFIX = ".spool"
_ACK = ".ack"
DEFAULT_SEGMENT_BYTES = 4 * 1024 * 1024


class SpoolFullError(Exception):
    """Appending would exceed the spool's size limit."""


class SpoolInUseError(Exception):
    """Another process has this spool directory open."""


class Spool:
    """Append-only, fsynced, size-bounded FIFO of byte records in one directory."""

    def __init__(
        self, directory: Path, max_bytes: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(1, min(segment_bytes, max_bytes // 4))
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # One process per spool: two writers would interleave records and acks.
        self._lock_fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolInUseError(f"spool {directory} is in use by another process") from None
        # seq -> size on disk; the head segment is read from `_head_offset`.
        self._segments: dict[int, int] = {}
        self._head_offset = 0
        self._write_fd: int | None = None
        self.pending = 0
        self._open()

    @property
    def size_bytes(self) -> int:
        return sum(self._segments.values())

    def append(self, payload: bytes) -> None:
        """Write one record durably, or raise SpoolFullError."""
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        if self.size_bytes + len(record) > self.max_bytes:
            raise SpoolFullError(
                f"spool {self.directory} holds {self.size_bytes} bytes; "
                f"a record of {len(record)} would pass the limit of {self.max_bytes}"
            )
        seq = max(self._segments) if self._segments else 0
        if self._write_fd is None or self._segments[seq] + len(record) > self.segment_bytes:
            if self._write_fd is not None:
                os.close(self._write_fd)
            seq += 1
            self._write_fd = os.open(
                self._segment(seq), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600
            )
            self._segments[seq] = 0
            self._sync_directory()
        os.write(self._write_fd, record)
        os.fsync(self._write_fd)
        self._segments[seq] += len(record)
        self.pending += 1

    def peek(self) -> bytes | None:
        """The oldest unacknowledged record, or None when the spool is empty."""
        if not self.pending:
            return None
        seq = min(self._segments)
        with open(self._segment(seq), "rb") as f:
            f.seek(self._head_offset)
            length, _ = _HEADER.unpack(f.read(_HEADER.size))
            return f.read(length)

    def ack(self) -> None:
        """Mark the oldest record as delivered."""
        seq = min(self._segments)
        with open(self._segment(seq), "rb") as f:
            f.seek(self._head_offset)
            length, _ = _HEADER.unpack(f.read(_HEADER.size))
        self._head_offset += _HEADER.size + length
        self.pending -= 1
        if self._head_offset >= self._segments[seq]:
            self._drop_segment(seq)
        else:
            self._write_ack(seq, self._head_offset)

    def close(self) -> None:
        if self._write_fd is not None:
            os.close(self._write_fd)
            self._write_fd = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _open(self) -> None:
        seqs = sorted(
            int(p.name.removesuffix(_SUFFIX))
            for p in self.directory.glob("*" + _SUFFIX)
            if p.name.removesuffix(_SUFFIX).isdigit()
        )
        for seq in seqs:
            offset = self._read_ack(seq)
            records, end = self._scan(seq, offset)
            size = self._segment(seq).stat().st_size
            if end < size:
                log.error(
                    "collector_spool_torn_record",
                    extra={"fields": {"segment": str(self._segment(seq)), "cut_at": end}},
                )
                os.truncate(self._segment(seq), end)
            if records == 0:
                self._drop_segment(seq, known=False)
                continue
            if not self._segments:
                self._head_offset = offset
            self._segments[seq] = end
            self.pending += records

    def _scan(self, seq: int, offset: int) -> tuple[int, int]:
        """Count whole, intact records from `offset`; return (records, end offset)."""
        records = 0
        with open(self._segment(seq), "rb") as f:
            data = f.read()
        pos = offset
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            payload = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            pos += _HEADER.size + length
            records += 1
        return records, pos

    def _segment(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}{_SUFFIX}"

    def _ack_path(self, seq: int) -> Path:
        return self.directory / f"{seq:016d}{_ACK}"

    def _read_ack(self, seq: int) -> int:
        try:
            return int(self._ack_path(seq).read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _write_ack(self, seq: int, offset: int) -> None:
        tmp = self._ack_path(seq).with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"%d\n" % offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._ack_path(seq))

    def _drop_segment(self, seq: int, known: bool = True) -> None:
        if known:
            del self._segments[seq]
            if not self._segments and self._write_fd is not None:
                os.close(self._write_fd)
                self._write_fd = None
        self._segment(seq).unlink(missing_ok=True)
        self._ack_path(seq).unlink(missing_ok=True)
        self._sync_directory()
        self._head_offset = self._read_ack(min(self._segments)) if self._segments else 0

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
