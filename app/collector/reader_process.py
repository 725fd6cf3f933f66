"""Reading the socket in a child process, so nothing in the collector can hold it up.

The kernel queues only `net.unix.max_dgram_qlen` datagrams (10 on some hosts: 2 ms at
5,000/s). A reader thread shares the interpreter lock with parsing, delivery and, inside
`serve`, the API; when the thread holding it is preempted on a busy CPU the reader waits
too. The child (`python -m app.collector.reader_process SOCKET_FD PIPE_FD`) does nothing
but `recv`, stamp the time of receipt, and write frames (`>dI`: time, length; then the
bytes) to a pipe enlarged to 1 MiB, which the parent reads in a thread at leisure: the
parent may pause for a good fraction of a second without a datagram being dropped.

The child ignores SIGTERM and SIGINT (the service's process group gets them) and ends
when the parent shuts the socket down (`refuse_new`) and the queue is empty, or when the
parent is gone (its pipe breaks).
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.collector.listener import MAX_DATAGRAM, DayQueue, refuse_new, shut_down

log = logging.getLogger(__name__)

FRAME = struct.Struct(">dI")
PIPE_BYTES = 1024 * 1024
# Frames gathered into one write: at most this many, held at most this long.
MAX_FRAMES_PER_WRITE = 1024
WRITE_DELAY_SECONDS = 0.01


def child_main(sock_fd: int, pipe_fd: int) -> None:
    """The child's loop (see the module docstring)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=sock_fd)
    sock.setblocking(False)
    recv = sock.recv
    now = time.time
    clock = time.monotonic
    pack = FRAME.pack
    poller = select.poll()
    poller.register(sock_fd, select.POLLIN | select.POLLRDHUP)
    # A pipe whose reader is gone reports POLLERR: the parent died, so must we.
    poller.register(pipe_fd, 0)
    frames: list[bytes] = []
    write_at = 0.0
    shut = False
    while True:
        try:
            data = recv(MAX_DATAGRAM)
        except BlockingIOError:
            # The queue is empty. Frames wait up to WRITE_DELAY_SECONDS for company, so
            # a trickle of datagrams costs the parent one wake-up per delay, not each.
            if shut:
                _write_all(pipe_fd, b"".join(frames))
                return
            if frames and clock() >= write_at:
                _write_all(pipe_fd, b"".join(frames))
                frames = []
            timeout = max(0.0, write_at - clock()) * 1000 if frames else None
            for fd, events in poller.poll(timeout):
                if fd == pipe_fd and events & (select.POLLERR | select.POLLHUP):
                    return
                if fd == sock_fd and events & select.POLLRDHUP:
                    shut = True  # shut down: read what is queued, then end
            continue
        if not data and shut_down(sock):
            shut = True
            continue
        if not frames:
            write_at = clock() + WRITE_DELAY_SECONDS
        frames += (pack(now(), len(data)), data)
        if len(frames) >= 2 * MAX_FRAMES_PER_WRITE:
            _write_all(pipe_fd, b"".join(frames))
            frames = []


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class ProcessReader(DayQueue):
    """Reads a bound socket through a child process (same interface as DatagramReader)."""

    def __init__(self, sock: socket.socket, path: Path | None) -> None:
        super().__init__()
        self._sock = sock
        self._path = path
        self._child: subprocess.Popen[bytes] | None = None
        self._pipe = -1
        self._thread = threading.Thread(target=self._run, name="libtlsrpt-pipe", daemon=True)

    def start(self) -> None:
        read_end, write_end = os.pipe()
        try:
            fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            log.warning("collector_pipe_size_unchanged")  # /proc/sys/fs/pipe-max-size
        fd = self._sock.fileno()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        # Our own interpreter and module, fixed arguments: no untrusted input.
        self._child = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "app.collector.reader_process", str(fd), str(write_end)],
            pass_fds=(fd, write_end),
            stdin=subprocess.DEVNULL,
            env=env,
        )
        os.close(write_end)
        self._pipe = read_end
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Refuse new datagrams; the child reads what is queued, then the pipe ends."""
        refuse_new(self._sock, self._path)
        if self._child is not None:
            try:
                self._child.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("collector_reader_stuck", extra={"fields": {"pid": self._child.pid}})
                self._child.kill()
                self._child.wait()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._sock.close()
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1

    def _run(self) -> None:
        unpack = FRAME.unpack_from
        header = FRAME.size
        append = self._queue.append
        day_start = day_end = 0.0
        pending = b""
        while True:
            chunk = os.read(self._pipe, PIPE_BYTES)
            if not chunk:
                if pending:
                    log.error("collector_pipe_torn", extra={"fields": {"bytes": len(pending)}})
                return
            buf = pending + chunk if pending else chunk
            pos = 0
            end = len(buf)
            while pos + header <= end:
                now, length = unpack(buf, pos)
                stop = pos + header + length
                if stop > end:
                    break
                if not day_start <= now < day_end:
                    day_start, day_end = self._mark_day(now)
                append(buf[pos + header : stop])
                self.received += 1
                pos = stop
            pending = buf[pos:]


if __name__ == "__main__":
    child_main(int(sys.argv[1]), int(sys.argv[2]))
