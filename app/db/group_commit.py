"""Group commit: concurrent requests share one transaction (and its WAL flush).

Under load most of a small write's cost is per transaction: locks, round trips, the
flush at commit. Callers hand an item to `GroupCommitQueue.submit` and wait; a few
writer tasks take whatever is waiting (up to a size budget) and write it together in
`write_group`, which must settle every item's future: a result after the commit, or an
exception for an item that is refused alone. An exception escaping `write_group` fails
every item of the group still unsettled. Areas subclass it (ingest, inbound).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class Pending(Generic[T, R]):
    item: T
    done: asyncio.Future[R]

    def settle(self, result: R) -> None:
        if not self.done.done():  # a request cancelled by its client has no one waiting
            self.done.set_result(result)

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


class GroupCommitQueue(ABC, Generic[T, R]):
    def __init__(self, *, writers: int, budget: int) -> None:
        self._writers = writers
        # A group stops growing at this total `size`; one large item may exceed it alone.
        self._budget = budget
        self._queue: asyncio.Queue[Pending[T, R]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    @abstractmethod
    def size(self, item: T) -> int:
        """An item's share of the group budget (rows it will write)."""

    @abstractmethod
    async def write_group(self, group: list[Pending[T, R]]) -> None:
        """Write the group in as few transactions as correctness allows; settle each item."""

    async def submit(self, item: T) -> R:
        """Return the item's result once it is committed (or raise its refusal)."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run()) for _ in range(self._writers)]
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(Pending(item, done))
        return await done

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            total = self.size(group[0].item)
            while total < self._budget and not self._queue.empty():
                pending = self._queue.get_nowait()
                group.append(pending)
                total += self.size(pending.item)
            try:
                await self.write_group(group)
            except Exception as exc:
                for pending in group:
                    pending.fail(exc)
