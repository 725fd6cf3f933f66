"""Query and path parameters several routes share, with the constraints the server
enforces stated in the schema: a UTC day as `YYYY-MM-DD` only (not a number of seconds),
a domain as the wire models state it (`app.tlsrpt.wire.Domain`)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, BeforeValidator

from app.tlsrpt.names import normalise_domain
from app.tlsrpt.wire import DOMAIN_SCHEMA, MAX_DOMAIN_NAME

_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


def _iso_day(value: Any) -> Any:
    if isinstance(value, str) and not _ISO_DAY.match(value):
        raise ValueError("a UTC day is written YYYY-MM-DD")
    return value


# pydantic alone would read `0` as 1970-01-01; the schema says `format: date`.
Day = Annotated[dt.date, BeforeValidator(_iso_day)]


def domain_query(description: str, *, alias: str | None = None) -> Any:
    """A domain query parameter: non-empty, at most 254 characters, LDH labels (IDNA
    U-labels are accepted and mapped)."""
    return Query(
        description=f"{description} (IDNA accepted).",
        alias=alias,
        min_length=1,
        max_length=MAX_DOMAIN_NAME,
        json_schema_extra=DOMAIN_SCHEMA,
    )


DomainValue = Annotated[str, AfterValidator(normalise_domain)]

# Row ids are PostgreSQL bigints: a larger number names no row (404), it is refused (422).
MAX_ID = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]
