"""The suppression list: rua the operator silenced, each with a comment and an expiry.

Targets are written the way delivery rows name their rua (`app.tlsrpt.record`
normalisation: `mailto:<address>` with an A-label domain, or the normalised https URI),
so a suppression matches by plain equality in SQL. A bare address means its `mailto:`.
A due delivery whose rua is suppressed (and not expired) ends as 'suppressed', unsent.
"""

from __future__ import annotations

from datetime import datetime

from app.clock import Clock
from app.db.pool import Pool
from app.delivery import suppression_store as store
from app.delivery.suppression_store import SuppressionRow as SuppressionRow
from app.tlsrpt.record import RecordSyntaxError, parse_record

MAX_COMMENT = 500


def normalise_target(text: str) -> str:
    """The rua form of an address or URI, or ValueError with the reason."""
    value = text.strip()
    if not value:
        raise ValueError("empty target")
    if "@" in value and ":" not in value.split("@", 1)[0]:
        value = "mailto:" + value
    if any(c in value for c in ";, \t"):
        raise ValueError("one address or URI only (no ',', ';' or spaces)")
    try:
        record = parse_record(f"v=TLSRPTv1; rua={value}")
    except RecordSyntaxError as exc:
        raise ValueError(str(exc)) from None
    if len(record.rua) != 1:
        raise ValueError("one address or URI only")
    uri = record.rua[0]
    if uri.problem is not None:
        raise ValueError(uri.problem)
    return uri.uri


async def add_suppression(
    pool: Pool, clock: Clock, target: str, *, comment: str, expires_at: datetime | None
) -> SuppressionRow:
    """Add (or update) a suppression; ValueError for a target or comment that is invalid."""
    normalised = normalise_target(target)
    if len(comment) > MAX_COMMENT:
        raise ValueError(f"comment longer than {MAX_COMMENT} characters")
    if expires_at is not None and expires_at.tzinfo is None:
        raise ValueError("expires_at needs a time zone")
    async with pool.connection() as conn, conn.transaction():
        return await store.upsert_suppression(
            conn, target=normalised, comment=comment, expires_at=expires_at, now=clock()
        )


async def active_suppressions(pool: Pool, rua: tuple[str, ...], now: datetime) -> dict[str, str]:
    """Of `rua`, those suppressed at `now`: rua -> the suppression in words."""
    async with pool.connection() as conn:
        rows = await store.list_suppressions(conn)
    wanted = set(rua)
    return {
        r.target: (r.comment or f"by {r.source}")
        + (f" (until {r.expires_at:%Y-%m-%d %H:%M}Z)" if r.expires_at else "")
        for r in rows
        if r.target in wanted and (r.expires_at is None or r.expires_at > now)
    }


async def list_suppressions(pool: Pool) -> list[SuppressionRow]:
    async with pool.connection() as conn:
        return await store.list_suppressions(conn)


async def remove_suppression(pool: Pool, target: str) -> bool:
    """True when the target was on the list; ValueError for an invalid target."""
    normalised = normalise_target(target)
    async with pool.connection() as conn, conn.transaction():
        return await store.delete_suppression(conn, normalised)


async def remove_suppression_by_id(pool: Pool, suppression_id: int) -> bool:
    async with pool.connection() as conn, conn.transaction():
        return await store.delete_suppression_by_id(conn, suppression_id)
