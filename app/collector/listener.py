"""The Unix datagram socket libtlsrpt writes to, and the thread that empties it.

libtlsrpt sends without blocking: when the socket's queue is full the MTA drops the
result. On Linux that queue holds `net.unix.max_dgram_qlen` datagrams (often only 10 to
512), whatever SO_RCVBUF says, so the only defence is to read all the time (and a long
enough queue: `check_queue_length` warns at start-up when it is below 512). A dedicated
thread does nothing but `recv` and append the bytes, tagged with the UTC day of receipt,
to a queue that the collector empties every few milliseconds; parsing and sending happen
elsewhere. Stopping unlinks the path and shuts the socket down for reading, so senders
get an error at once, then reads what is still queued: nothing that reached the socket is
left behind.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
import select
import socket
import stat
import threading
from collections import deque
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

# libtlsrpt writes datagrams of at most 65,000 bytes.
MAX_DATAGRAM = 65536
DEFAULT_RECEIVE_BUFFER = 8 * 1024 * 1024


# The kernel's per-socket datagram queue (per network namespace) and the length below
# which a busy host drops results at the sender (systemd's default; bench/collect.py).
QUEUE_LENGTH_PATH = Path("/proc/sys/net/unix/max_dgram_qlen")
MIN_QUEUE_LENGTH = 512


def check_queue_length(path: Path = QUEUE_LENGTH_PATH) -> int | None:
    """Read `net.unix.max_dgram_qlen` (from `path`) and warn, with the fix, when it is
    below MIN_QUEUE_LENGTH. Returns the value; None when it can not be read (not Linux)."""
    try:
        value = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if value < MIN_QUEUE_LENGTH:
        fix = (
            f"sysctl -w net.unix.max_dgram_qlen={MIN_QUEUE_LENGTH} and "
            f"'net.unix.max_dgram_qlen = {MIN_QUEUE_LENGTH}' in /etc/sysctl.d/60-tlsrpt.conf "
            "(in a container: sysctls net.unix.max_dgram_qlen: "
            f"{MIN_QUEUE_LENGTH}), then restart the collector"
        )
        log.warning(
            "collector_queue_short",
            extra={
                "fields": {
                    "max_dgram_qlen": value,
                    "wanted": MIN_QUEUE_LENGTH,
                    "effect": "a busy moment drops results at the MTA (the socket queue is full)",
                    "fix": fix,
                }
            },
        )
    return value


class SocketInUseError(Exception):
    """Another process is receiving on the socket path."""


class NotASocketError(Exception):
    """The socket path exists and is not a socket; it is never replaced."""


def bind_socket(
    path: Path,
    *,
    owner: str | None = None,
    group: str | None = None,
    mode: int = 0o660,
    receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
) -> socket.socket:
    """Bind a non-blocking datagram socket at `path`, replacing a stale socket file."""
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        os.chmod(path, mode)
        if owner is not None or group is not None:
            os.chown(path, _uid(owner), _gid(group))
        _grow_receive_buffer(sock, receive_buffer)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise NotASocketError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        # Nobody bound to it: left behind by a process that did not stop cleanly.
        path.unlink()
        log.info("collector_stale_socket_removed", extra={"fields": {"path": str(path)}})
        return
    finally:
        probe.close()
    raise SocketInUseError(f"{path} is in use by another receiver")


def _uid(owner: str | None) -> int:
    if owner is None:
        return -1
    return int(owner) if owner.isdigit() else pwd.getpwnam(owner).pw_uid


def _gid(group: str | None) -> int:
    if group is None:
        return -1
    return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid


def _grow_receive_buffer(sock: socket.socket, size: int) -> None:
    # SO_RCVBUFFORCE passes net.core.rmem_max when we have CAP_NET_ADMIN; else the kernel
    # caps SO_RCVBUF at rmem_max.
    force = getattr(socket, "SO_RCVBUFFORCE", None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except PermissionError:
            pass
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


Chunk = tuple[date, list[bytes]]
_EPOCH = date(1970, 1, 1)
_DAY_SECONDS = 86400  # POSIX time: every UTC day has exactly 86,400 seconds


def shut_down(sock: socket.socket) -> bool:
    """After an empty or failed read: the socket was shut down for reading."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP)
    return any(events & select.POLLRDHUP for _, events in poller.poll(0))


class DayQueue:
    """Datagrams handed from a reading thread to the collector, by UTC day of receipt.

    The thread appends each datagram to a deque (thread-safe, no lock taken), preceded by
    the UTC `date` whenever the day of receipt changes (`_mark_day`); `take` pops what is
    there and splits it by those markers.
    """

    def __init__(self) -> None:
        self._queue: deque[bytes | date] = deque()
        # Day markers appended by the thread, and seen by `take`: equal means the
        # popped datagrams all belong to `_day`, with no scan for markers.
        self._marks = 0
        self._marks_seen = 0
        self._day = _EPOCH
        self.received = 0

    def take(self) -> list[Chunk]:
        """Every datagram read since the last call, grouped by UTC day of receipt."""
        popleft = self._queue.popleft
        items = [popleft() for _ in range(len(self._queue))]
        if not items:
            return []
        if self._marks == self._marks_seen:
            return [(self._day, items)]  # type: ignore[list-item]
        chunks: list[Chunk] = []
        current: list[bytes] | None = None
        for item in items:
            if isinstance(item, date):
                self._marks_seen += 1
                self._day = item
                current = None
            else:
                if current is None:
                    current = []
                    chunks.append((self._day, current))
                current.append(item)
        return chunks

    def _mark_day(self, now: float) -> tuple[float, float]:
        """Queue the marker of the day `now` falls in; return that day's bounds."""
        number = int(now // _DAY_SECONDS)
        # Counted before it is queued: see `take`.
        self._marks += 1
        self._queue.append(_EPOCH + timedelta(days=number))
        start = float(number * _DAY_SECONDS)
        return start, start + _DAY_SECONDS


class DatagramReader(DayQueue):
    """Reads a bound socket in a thread of this process (`timestamp`: POSIX seconds)."""

    def __init__(
        self, sock: socket.socket, path: Path | None, timestamp: Callable[[], float]
    ) -> None:
        super().__init__()
        self._sock = sock
        self._path = path
        self._timestamp = timestamp
        self._thread = threading.Thread(target=self._run, name="libtlsrpt-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new datagrams, read those already queued, and close the socket."""
        refuse_new(self._sock, self._path)
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()

    def _run(self) -> None:
        # The hot loop: one blocking recv (no poll, no timeout), one clock read, one
        # append per datagram. Shutdown ends it once the queue is empty.
        sock = self._sock
        recv = sock.recv
        stamp = self._timestamp
        append = self._queue.append
        day_start = day_end = 0.0
        sock.setblocking(True)
        while True:
            try:
                data = recv(MAX_DATAGRAM)
            except BlockingIOError:
                # Linux wakes a blocked reader with EAGAIN when the socket is shut down
                # and its queue empty.
                if shut_down(sock):
                    return
                continue
            except OSError as exc:
                log.error("collector_socket_error", extra={"fields": {"error": str(exc)}})
                return
            if not data and shut_down(sock):
                return
            now = stamp()
            if not day_start <= now < day_end:
                day_start, day_end = self._mark_day(now)
            append(data)
            self.received += 1


def refuse_new(sock: socket.socket, path: Path | None) -> None:
    """Unlink the path and shut the socket down for reading: senders get an error at
    once (ENOENT, EPIPE), what is queued stays readable, then reads fail (EAGAIN)."""
    if path is not None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise
