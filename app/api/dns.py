"""`GET /v1/dns/check` (scope `read`): the DNS check of `tlsrpt dns-check` over HTTP.

The answer is the check's result model (`DnsCheckResult`): per domain its MX hosts with
TLSA and per-host TLSRPT records, its `_smtp._tls` record and rua, MTA-STS, and with
`sending` the DKIM key; every finding `ok`, `warn`, `fail` or `unknown` (could not check)
with a one-sentence reason and, where something should be published, the zone-file line.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from app.api.auth import get_resources, require_scope
from app.api.errors import ApiError, responses
from app.dnscheck.model import DnsCheckResult
from app.dnscheck.service import check_domains
from app.tlsrpt.names import normalise_domain
from app.tlsrpt.wire import DOMAIN_SCHEMA, MAX_DOMAIN_NAME
from app.tokens.service import Scope

router = APIRouter(tags=["dns check"], dependencies=[Depends(require_scope(Scope.READ))])

MAX_DOMAINS = 20


def invalid_domains(domains: list[str]) -> list[tuple[int, str]]:
    """(index, reason) of each name that is not a domain: the API and the DNS page
    refuse the request with them."""
    invalid = []
    for index, name in enumerate(domains):
        try:
            normalise_domain(name)
        except ValueError as exc:
            invalid.append((index, str(exc)))
    return invalid


@router.get(
    "/v1/dns/check",
    response_model=DnsCheckResult,
    responses=responses(401, 403, 422),
    summary="Check the DNS of domains you receive mail for (MX, TLSA, TLSRPT, MTA-STS)",
    description="The same check as `tlsrpt dns-check`: a DNS failure is `unknown` (could "
    "not check), never reported as missing. `probe` connects to each MX host on port 25 "
    "(STARTTLS, certificate, TLSA match); hosts with no public address are not probed.",
)
async def dns_check(
    request: Request,
    domain: Annotated[
        list[
            Annotated[
                str,
                Field(min_length=1, max_length=MAX_DOMAIN_NAME, json_schema_extra=DOMAIN_SCHEMA),
            ]
        ],
        Query(
            description="Domain to check (IDNA accepted); repeat for several.",
            min_length=1,
            max_length=MAX_DOMAINS,
        ),
    ],
    probe: Annotated[bool, Query(description="Also probe each MX host's STARTTLS.")] = False,
    sending: Annotated[
        bool, Query(description="Also check the DKIM key published and the From alignment.")
    ] = False,
) -> DnsCheckResult:
    resources = get_resources(request)
    details = [
        {"index": index, "field": "domain", "reason": reason}
        for index, reason in invalid_domains(domain)
    ]
    if details:
        raise ApiError(422, "invalid_domain", "a domain is not valid", details)
    return await check_domains(
        domain,
        resolver=resources.check_resolver(),
        settings=resources.settings,
        clock=resources.clock,
        probe=probe,
        sending=sending,
    )
