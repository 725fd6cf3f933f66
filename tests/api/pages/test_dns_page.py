"""The DNS page without a browser, against a loopback DNS server: findings with their
status and reason, records to publish with a copy button, the sending side (DKIM key,
From alignment), bad input refused with the name and reason; and the overview pointing
at the page while a dkim_mismatch alert is open."""

from __future__ import annotations

import html
import re

import httpx

from app.alerts import service as alerts
from app.alerts.conditions import DKIM_MISMATCH, Condition
from app.api.pages.render import CSP
from app.dnscheck.dkim import format_dkim_record, public_key_der
from app.resources import Resources
from app.tokens.service import Scope
from tests.api.pages.test_views import signed_in
from tests.conftest import MakeToken
from tests.dnscheck.zone_server import ZoneData


def items(text: str) -> list[str]:
    """Each finding of a page as text: status, subject, reason."""
    found = re.findall(r'<li class="finding">(.*?)</li>', text, re.S)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", f)).split()) for f in found]


async def test_findings_records_to_publish_and_the_sending_side(
    client: httpx.AsyncClient,
    make_token: MakeToken,
    checked: ZoneData,
    dkim_pair: tuple[bytes, bytes],
) -> None:
    await signed_in(client, await make_token(Scope.READ))
    form = await client.get("/ui/dns")
    assert form.status_code == 200 and form.headers["content-security-policy"] == CSP
    assert 'name="probe"' in form.text and 'name="sending"' in form.text
    assert checked.queries == []  # an empty form asks nothing

    page = await client.get(
        "/ui/dns", params={"domain": "good.test, bad.test", "sending": "true", "probe": "true"}
    )
    assert page.status_code == 200
    found = items(page.text)
    assert "OK good.test : 1 MX host(s): mx.good.test." in found
    assert [f for f in found if f.startswith("FAIL _smtp._tls.good.test")] == []
    assert any(f.startswith("WARN _mta-sts.good.test : neither MTA-STS nor DANE") for f in found)
    assert (
        "WARN _smtp._tls.bad.test : rua ftp://nope is ignored: scheme 'ftp' is not mailto or https."
        in found
    )
    [bad_record] = [f for f in found if f.startswith("FAIL _smtp._tls.bad.test")]
    assert "no rua is usable" in bad_record
    own = '_smtp._tls.bad.test. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"'
    assert bad_record.endswith(f"{own} Copy record")  # the record to publish
    # Each record to publish has a copy button naming the element that holds it.
    records = dict(re.findall(r'<code id="([^"]+)">([^<]*)</code>', page.text))
    assert len(records) == 2 and html.unescape(records["d2-tlsrpt-2"]) == own
    for element_id in records:
        assert page.text.count(f'data-copy="{element_id}"') == 1
    assert "WARN mx.good.test : not probed: the host has no public address." in found
    # The sending side, once: DNS publishes another key; the From domain aligns.
    [dkim] = [f for f in found if f.startswith("FAIL sel._domainkey.sender.example")]
    assert "does not match the configured private key" in dkim
    ours = format_dkim_record("sel", "sender.example", public_key_der(dkim_pair[0]))
    assert html.unescape(records["sending-1"]) == ours
    assert any(f.startswith("OK TLSRPT_MAIL__FROM") for f in found)
    assert page.text.count('id="sending-side"') == 1

    unknown = await client.get("/ui/dns", params={"domain": "servfail.test"})
    assert "COULD NOT CHECK servfail.test" in " | ".join(items(unknown.text))


async def test_bad_input_is_refused_with_the_name_and_why(
    client: httpx.AsyncClient, make_token: MakeToken, checked: ZoneData
) -> None:
    answer = await client.get("/ui/dns", params={"domain": "good.test"})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/signin"
    await signed_in(client, await make_token(Scope.READ))
    bad = await client.get("/ui/dns", params={"domain": "good.test a..b"})
    assert bad.status_code == 422
    assert "&#39;a..b&#39; is not a domain: invalid label" in bad.text
    many = await client.get("/ui/dns", params={"domain": " ".join(f"d{n}.test" for n in range(21))})
    assert many.status_code == 422 and "At most 20 domains at once; 21 were given." in many.text
    assert checked.queries == []  # nothing was looked up


async def test_overview_points_at_the_page_while_dkim_does_not_match(
    client: httpx.AsyncClient, make_token: MakeToken, resources: Resources
) -> None:
    await signed_in(client, await make_token(Scope.READ))
    assert "/ui/dns?sending=true" not in (await client.get("/ui/")).text
    await alerts.apply_conditions(
        resources.pool,
        resources.clock(),
        DKIM_MISMATCH,
        [Condition("sel._domainkey.sender.example", "another key is published")],
    )
    overview = await client.get("/ui/")
    assert '<a href="/ui/dns?sending=true">DNS does not publish the DKIM key' in overview.text
    nav = re.search(r'<nav aria-label="Main">.*?</nav>', overview.text, re.S)
    assert nav is not None and 'href="/ui/dns"' in nav.group(0)
