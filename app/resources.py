"""What one process opens once. Only the entry points (`app.main`, `app.cli`) build it;
services never import it: they take the pool, clock, resolver, senders and settings
they use as parameters."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.clock import Clock, system_clock
from app.config import Settings
from app.db.pool import Pool
from app.delivery.https import AddressResolver
from app.delivery.mail import BounceTags
from app.delivery.senders import Senders, check_dkim_key, open_senders
from app.delivery.signing import DkimKeyError
from app.dns.resolver import DnsResolver, TxtResolver
from app.dnscheck.service import CheckResolver
from app.inbound.group_commit import ReportCommitter
from app.ingest.service import IngestCommitter
from app.tokens.service import Authenticator


@dataclass
class Resources:
    settings: Settings
    pool: Pool
    # DNS for `_smtp._tls` lookups and DKIM keys; tests pass a fake.
    resolver: TxtResolver
    clock: Clock = system_clock
    # Revisions the code expects; /readyz compares them with the database's.
    expected_heads: frozenset[str] = frozenset()
    # Resolves rua hosts for HTTPS delivery (SPEC §5); needed only to open the senders.
    address_resolver: AddressResolver | None = None
    # SMTP relay, HTTPS poster, DKIM key: opened by `open_senders` on first use (a bad
    # DKIM key then stops the scheduler's start); tests pass senders aimed at loopback.
    senders: Senders | None = None
    # The DNS check's resolver (MX, TLSA with the AD bit); None: one on the settings,
    # made on first use. Tests pass one aimed at a loopback DNS server.
    dns_check_resolver: CheckResolver | None = None
    authenticator: Authenticator = field(init=False)
    committer: IngestCommitter = field(init=False)
    inbound_committer: ReportCommitter = field(init=False)
    _tags: tuple[BounceTags | None] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.authenticator = Authenticator(
            self.pool, cache_seconds=self.settings.auth_cache_seconds
        )
        self.committer = IngestCommitter(self.pool, self.clock)
        self.inbound_committer = ReportCommitter(self.pool, self.clock)

    def bounce_tags(self) -> BounceTags | None:
        """The tags that tell bounces about our report mail from forged ones: from the DKIM
        key (report mail is only sent with one), None when there is no usable key."""
        if self.senders is not None:
            return self.senders.tags
        if self._tags is None:
            try:
                key = check_dkim_key(self.settings)
            except DkimKeyError:
                key = None  # the scheduler's start says why; no mail is sent with it
            self._tags = (None if key is None else key.tags,)
        return self._tags[0]

    def check_resolver(self) -> CheckResolver:
        """The resolver of the DNS check (`app.dnscheck`)."""
        if self.dns_check_resolver is None:
            self.dns_check_resolver = DnsResolver(self.settings.dns)
        return self.dns_check_resolver

    def open_senders(self) -> Senders:
        """The process's senders, opened on first use; raises DkimKeyError for a key
        that is configured but unusable."""
        if self.senders is None:
            if self.address_resolver is None:
                raise RuntimeError("no address resolver: the senders can not be opened")
            self.senders = open_senders(self.settings, self.address_resolver)
        return self.senders

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
    dns = DnsResolver(settings.dns)
    return Resources(
        settings=settings,
        pool=pool,
        resolver=dns,
        address_resolver=dns,
        dns_check_resolver=dns,
        expected_heads=expected_heads(),
    )
