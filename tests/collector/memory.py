"""A sink that keeps batches in memory, and helpers to compare batches with what was sent."""

from __future__ import annotations

import socket
from pathlib import Path

from app.collector.batch import Batch
from app.collector.sinks import SinkUnavailableError
from tests.collector.datagrams import Expected


class MemorySink:
    """Records batches; `down` makes it unreachable. Duplicate batch ids are recorded once."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.down = False
        self.attempts = 0

    async def deliver(self, batch: Batch) -> None:
        self.attempts += 1
        if self.down:
            raise SinkUnavailableError("memory sink is down")
        self.batches.append(batch)

    async def aclose(self) -> None:
        pass


def counted(batches: list[Batch]) -> Expected:
    """What the batches hold, in the generator's terms."""
    seen = Expected()
    for batch in batches:
        for entry in batch.tally:
            assert entry.day == batch.day
            p = entry.policy
            key = (p.policy_type.value, p.policy_domain, p.policy_string, p.mx_host)
            seen.sessions[key] += entry.success_count + entry.failure_count
            seen.failures[key] += entry.failure_count
            for d, n in entry.details.items():
                detail = (
                    d.result_type.value,
                    d.sending_mta_ip,
                    d.receiving_mx_hostname,
                    d.receiving_mx_helo,
                    d.receiving_ip,
                    d.additional_information,
                    d.failure_reason_code,
                )
                seen.details[(key, detail)] += n
    # Counters compare equal only without zero entries.
    seen.failures = +seen.failures
    return seen


def clean(expected: Expected) -> Expected:
    expected.failures = +expected.failures
    return expected


def send_all(path: Path, datagrams: list[bytes]) -> None:
    """A blocking sender: waits when the receiver's queue is full, loses nothing."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.settimeout(20)  # a receiver that stopped reading fails the test, not hangs it
        for data in datagrams:
            sender.sendto(data, str(path))
