"""The DNS page: the check of `tlsrpt dns-check` and `GET /v1/dns/check` in the browser.

A GET form (nothing is written, so no CSRF token): one or more domains, and the options
`probe` (STARTTLS to each MX host) and `sending` (the DKIM key published and matching,
From alignment; checked once, not per domain, and also with no domain given). Every
finding shows its status and one-sentence reason; a record to publish is a zone-file
line with a copy button (`static/ui.js`).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.api.auth import get_resources
from app.api.dns import MAX_DOMAINS, invalid_domains
from app.api.pages.render import page
from app.api.pages.session import viewer
from app.dnscheck.dkim import check_sending
from app.dnscheck.model import DnsCheckResult, Finding
from app.dnscheck.service import check_domains

router = APIRouter(include_in_schema=False)
# Domains as typed: separated by spaces, commas or new lines.
_SEPARATORS = re.compile(r"[\s,]+")


def split_domains(text: str) -> list[str]:
    return [name for name in _SEPARATORS.split(text) if name]


@router.get("/ui/dns")
async def dns(
    request: Request,
    domain: Annotated[str, Query(max_length=MAX_DOMAINS * 256)] = "",
    probe: bool = False,
    sending: bool = False,
) -> Response:
    who = await viewer(request)
    resources = get_resources(request)
    names = split_domains(domain)
    problems = []
    if len(names) > MAX_DOMAINS:
        problems.append(f"At most {MAX_DOMAINS} domains at once; {len(names)} were given.")
    for index, reason in invalid_domains(names):
        problems.append(f"{names[index][:80]!r} is not a domain: {reason}.")
    result: DnsCheckResult | None = None
    sent: list[Finding] | None = None
    if not problems:
        resolver = resources.check_resolver()
        if names:
            result = await check_domains(
                names,
                resolver=resolver,
                settings=resources.settings,
                clock=resources.clock,
                probe=probe,
            )
        if sending:
            sent = await check_sending(resources.settings, resolver)
    return page(
        request,
        "dns.html",
        who,
        422 if problems else 200,
        section="dns",
        domains=" ".join(names),
        probe=probe,
        sending=sending,
        problems=problems,
        result=result,
        sending_findings=sent,
    )
