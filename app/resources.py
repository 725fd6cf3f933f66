"""Resources opened once per process and handed to services explicitly.

The API and the worker share them; tests build them with fakes for the clock (and, in
the areas that need them, the resolver and senders). Areas add their own fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from app.config import Settings
from app.db.pool import Pool
from app.dns.resolver import DnsResolver, TxtResolver
from app.inbound.group_commit import ReportCommitter
from app.ingest.group_commit import GroupCommitter
from app.tokens.service import Authenticator

if TYPE_CHECKING:
    from app.delivery.senders import Senders


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Resources:
    settings: Settings
    pool: Pool
    clock: Callable[[], datetime] = utc_now
    # Revisions the code expects; /readyz compares them with the database's.
    expected_heads: frozenset[str] = frozenset()
    authenticator: Authenticator = field(init=False)
    committer: GroupCommitter = field(init=False)
    inbound_committer: ReportCommitter = field(init=False)
    # DNS for `_smtp._tls` lookups; None builds the real one from settings.dns. Tests pass
    # a fake resolver.
    resolver: TxtResolver = None  # type: ignore[assignment]
    # SMTP relay, HTTPS poster, DKIM key: opened on first use (app.delivery.service
    # .senders_of); tests pass senders aimed at loopback servers.
    senders: Senders | None = None

    def __post_init__(self) -> None:
        self.authenticator = Authenticator(self.pool)
        self.committer = GroupCommitter(self.pool)
        self.inbound_committer = ReportCommitter(self.pool)
        if self.resolver is None:
            self.resolver = DnsResolver(self.settings.dns)

    async def close(self) -> None:
        if self.senders is not None:
            await self.senders.aclose()
        await self.committer.close()
        await self.inbound_committer.close()
        await self.pool.close()


async def open_resources(settings: Settings, database_url: str) -> Resources:
    """Open the pool and everything else a process needs."""
    from app.db.migrate import expected_heads
    from app.db.pool import open_pool

    pool = await open_pool(database_url, settings.database)
    return Resources(settings=settings, pool=pool, expected_heads=expected_heads())
