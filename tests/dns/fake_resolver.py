"""A resolver that answers from a dict at once: the fake of `TxtResolver` for tests."""

from __future__ import annotations

from app.dns.resolver import TxtAnswer


class FakeResolver:
    """Names map to TXT answers, or to an exception to raise (a temporary failure).

    Unknown names have no records. `queries` lists every name asked, in order.
    """

    def __init__(self, zone: dict[str, TxtAnswer | Exception] | None = None) -> None:
        self.zone: dict[str, TxtAnswer | Exception] = dict(zone or {})
        self.queries: list[str] = []

    def publish(self, domain: str, *records: str) -> None:
        """Publish TXT records at `_smtp._tls.<domain>`."""
        self.zone[f"_smtp._tls.{domain}."] = [(r.encode(),) for r in records]

    def fail(self, domain: str, error: Exception) -> None:
        self.zone[f"_smtp._tls.{domain}."] = error

    async def resolve_txt(self, name: str) -> TxtAnswer:
        self.queries.append(name)
        value = self.zone.get(name, [])
        if isinstance(value, Exception):
            raise value
        return value
