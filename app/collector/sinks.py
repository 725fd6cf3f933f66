"""Where batches go: the local database, or a remote service's `POST /v1/tallies`.

A sink either records a whole batch (and returns), is unreachable for now
(`SinkUnavailableError`: the collector spools and retries), or refuses the batch for
good (`BatchRefusedError`: a closed day or a body the service will never take; retrying
would block the spool forever, so the collector logs it loudly, counts it and moves on).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import httpx
import orjson
import psycopg

from app.clock import Clock
from app.collector.batch import Batch, format_batch
from app.config import Settings
from app.ingest import service as ingest

log = logging.getLogger(__name__)


class SinkUnavailableError(Exception):
    """The sink can not take batches now; try again later."""


class BatchRefusedError(Exception):
    """The sink will never take this batch (for example its day is closed)."""


class Sink(Protocol):
    async def deliver(self, batch: Batch) -> None:
        """Record the whole batch once, or raise one of the two errors above."""

    async def aclose(self) -> None: ...


class DatabaseSink:
    """Records batches in the local database through the ingest service, by the same
    rules as `POST /v1/tallies`."""

    def __init__(self, committer: ingest.IngestCommitter, clock: Clock, settings: Settings) -> None:
        self._committer = committer
        self._clock = clock
        self._settings = settings

    async def deliver(self, batch: Batch) -> None:
        try:
            recorded = await ingest.record_tally(
                self._committer, self._clock, self._settings, batch.tally, batch_id=batch.batch_id
            )
        except ingest.IngestRefusedError as exc:
            raise BatchRefusedError(str(exc)) from None
        except (psycopg.OperationalError, OSError) as exc:
            # Includes PoolTimeout: no connection to be had right now.
            raise SinkUnavailableError(f"{type(exc).__name__}: {exc}") from None
        if not recorded:
            log.info("collector_batch_repeated", extra={"fields": {"batch_id": batch.batch_id}})

    async def aclose(self) -> None:
        """The committer belongs to the caller."""


class ApiSink:
    """POSTs batches to a remote service's `/v1/tallies` with an ingest token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
            },
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    async def deliver(self, batch: Batch) -> None:
        body = orjson.dumps(format_batch(batch))
        try:
            response = await self._client.post("/v1/tallies", content=body)
        except httpx.HTTPError as exc:
            raise SinkUnavailableError(f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        reason = f"HTTP {status}: {_error_message(response)}"
        # 409: the day is closed. 400/413/422: this body will never be taken. Anything
        # else (401/403 a bad token, 404 an old server, 408/429/5xx) may get better:
        # keep the batch and try again rather than lose it.
        if status in (400, 409, 413, 422):
            raise BatchRefusedError(reason)
        raise SinkUnavailableError(reason)

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def read_token_file(path: Path) -> str:
    """The bearer token from a file (its first word; newlines and spaces ignored)."""
    lines = path.read_text().split()
    token = lines[0] if lines else ""
    if not token:
        raise ValueError(f"{path} holds no token")
    return token
