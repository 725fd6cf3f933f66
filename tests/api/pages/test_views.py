"""The web pages without a browser: sessions, CSRF, security headers, data on each page."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import date
from pathlib import Path

import httpx
import orjson

from app.api.pages.charts import daily_chart
from app.api.pages.render import CSP
from app.api.pages.session import COOKIE
from app.config import DkimSettings, ReportSettings
from app.inbound import views as inbound_views
from app.ingest import service as ingest
from app.ingest import views as ingest_views
from app.main import create_app
from app.resources import Resources
from app.tokens.service import Scope, create_token
from tests.api.pages.seed import received_report, result_item, seed
from tests.clock import FakeClock
from tests.conftest import bearer
from tests.delivery.conftest import dkim_pair  # noqa: F401  (fixture)


async def signed_in(client: httpx.AsyncClient, token: str) -> str:
    """Sign in; returns the CSRF token of the session's forms."""
    form = await client.get("/ui/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = await client.post("/ui/signin", data={"csrf": csrf.group(1), "token": token})
    assert answer.status_code == 303, answer.text
    page = await client.get("/ui/")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def test_root_redirects_and_pages_need_a_session(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).headers["location"] == "/ui/"
    answer = await client.get("/ui/outgoing")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/ui/signin"


async def test_signin_sets_a_strict_cookie_without_the_token(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    seeded = await seed(resources, client)
    form = await client.get("/ui/signin")
    assert form.headers["content-security-policy"] == CSP
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = await client.post("/ui/signin", data={"csrf": csrf.group(1), "token": seeded.read})
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert seeded.read not in cookie
    page = await client.get("/ui/")
    assert page.status_code == 200
    assert seeded.read not in page.text and "read only" in page.text
    assert "'unsafe-inline'" not in page.headers["content-security-policy"]


async def test_wrong_token_and_missing_csrf_are_refused(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    seeded = await seed(resources, client)
    form = await client.get("/ui/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    wrong = await client.post("/ui/signin", data={"csrf": csrf.group(1), "token": "tlsrpt_nope"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
    no_csrf = await client.post("/ui/signin", data={"token": seeded.admin})
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text
    await signed_in(client, seeded.admin)
    refused = await client.post(f"/ui/deliveries/{seeded.failed_delivery}/retry", data={})
    assert refused.status_code == 403
    as_json = await client.post(
        "/ui/suppressions", json={"target": "x@example.com"}, headers={"Origin": "http://evil"}
    )
    assert as_json.status_code == 403


async def test_session_expires_on_the_clock(
    client: httpx.AsyncClient, resources: Resources, clock: FakeClock
) -> None:
    seeded = await seed(resources, client)
    await signed_in(client, seeded.read)
    clock.advance(hours=resources.settings.ui.session_hours + 0.01)
    assert (await client.get("/ui/")).status_code == 303


async def test_a_forged_cookie_is_not_a_session(client: httpx.AsyncClient) -> None:
    client.cookies.set(COOKIE, "eyJ4IjoiYSIsImUiOjk5OTk5OTk5OTk5LCJkIjoiMDAifQ.forged", path="/ui")
    assert (await client.get("/ui/")).status_code == 303


async def test_every_page_shows_its_data(client: httpx.AsyncClient, resources: Resources) -> None:
    seeded = await seed(resources, client)
    await signed_in(client, seeded.read)
    y = seeded.yesterday
    expected = {
        "/ui/": ["1 057", "failing.example", "Deliveries"],
        "/ui/outgoing": [str(y), "950", "10.1 %"],
        f"/ui/outgoing/{y}": ["example.com", "failing.example", "example.net"],
        f"/ui/outgoing/{y}?failing=true&order=failures": ["example.com"],
        f"/ui/outgoing/{y}/example.com": ["certificate-expired", "mx.example.com", "100"],
        f"/ui/outgoing/{y}/failing.example": ["seeded-1", "HTTP 404", "Not Found"],
        "/ui/deliveries?state=failed": [seeded.failed_rua],
        "/ui/incoming": ["Google", "Microsoft", "our.example"],
        "/ui/incoming/domains/our.example": ["certificate-expired", "mx.our.example"],
        "/ui/suppressions": ["None."],
        "/ui/config": ["TLSRPT_SMTP__HOST", "(unset)"],
        "/ui/dns": ["tlsrpt dns-check"],
    }
    for path, needles in expected.items():
        page = await client.get(path)
        assert page.status_code == 200, path
        for needle in needles:
            assert needle in page.text, (path, needle)
    filtered = await client.get(f"/ui/outgoing/{y}?failing=true")
    assert "example.net" not in filtered.text
    settings_page = await client.get("/ui/config")
    assert resources.settings.database_url is not None
    assert resources.settings.database_url.get_secret_value() not in settings_page.text
    assert "(set, hidden)" in settings_page.text


async def test_received_report_page_and_raw_download(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    seeded = await seed(resources, client)
    await signed_in(client, seeded.read)
    listing = (await client.get("/v1/inbound/reports", headers=bearer(seeded.read))).json()
    pk = listing["reports"][0]["id"]
    page = await client.get(f"/ui/incoming/reports/{pk}")
    assert "DKIM" in page.text and "none (not received by mail)" in page.text
    raw = await client.get(f"/ui/incoming/reports/{pk}/raw")
    assert raw.headers["content-disposition"].startswith("attachment")
    assert b'"organization-name"' in raw.content


async def test_docs_load_their_assets_from_the_service(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc"):
        html = (await client.get(path)).text
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
        assert assets, path
        for asset in assets:
            assert asset.startswith("/"), asset
            assert (await client.get(asset)).status_code == 200, asset
        assert "cdn.jsdelivr" not in html and "fonts.googleapis" not in html


def test_chart_has_one_point_per_day() -> None:
    days = [date(2026, 11, d) for d in range(1, 31)]
    chart = daily_chart("t", days, {"ok": ("ok", list(range(30))), "bad": ("bad", [0] * 30)})
    assert [len(s.points) for s in chart.series] == [30, 30]
    assert chart.series[0].points[-1].y < chart.series[0].points[0].y
    assert chart.y_max == 29


async def test_domain_totals_count_reports_about_several_domains(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    token = await create_token(resources.pool, "rua", [Scope.INBOUND], clock=resources.clock)
    day = resources.clock().date()
    two = orjson.loads(received_report(day, "Multi", 1))
    second = orjson.loads(received_report(day, "Multi", 4))["policies"][0]
    second["policy"]["policy-domain"] = "b.example"
    second["failure-details"] = []
    second["summary"]["total-failure-session-count"] = 0
    two["policies"].append(second)
    for body in (orjson.dumps(two), received_report(day, "Single", 2)):
        answer = await client.post(
            f"/v1/tlsrpt/{token}", content=body, headers={"Content-Type": "application/tlsrpt+json"}
        )
        assert answer.status_code == 201, answer.text
    totals = await inbound_views.by_policy_domain(resources.pool, day)
    assert totals == [
        inbound_views.Totals("our.example", 2, 101 + 102, 1 + 2),
        inbound_views.Totals("b.example", 1, 104, 0),
    ]
    failing = await inbound_views.by_policy_domain(resources.pool, day, failing_only=True)
    assert [t.name for t in failing] == ["our.example"]


async def test_a_closed_days_totals_are_stored_when_it_closes(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    seeded = await seed(resources, client)
    pool, y = resources.pool, seeded.yesterday
    before = await ingest_views.day_totals(pool, y, seeded.today)
    assert [(t.day, t.domains, t.successful, t.failed) for t in before] == [
        (seeded.today, 3, 950, 107),
        (y, 3, 950, 107),
    ]
    assert await ingest.close_day(pool, resources.clock, y)
    async with pool.connection() as conn:
        # Only the stored totals can answer for the day now.
        await conn.execute("DELETE FROM policy_counts WHERE day = %(day)s", {"day": y})
    assert await ingest_views.day_totals(pool, y, seeded.today) == before


async def test_a_days_domains_page_by_name_and_by_failures(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    seeded = await seed(resources, client)
    ingest_token = await create_token(resources.pool, "many", [Scope.INGEST], clock=resources.clock)
    y = seeded.yesterday
    many = [
        result_item(y, f"m{i:03}.example", "success" if i % 3 else "certificate-expired", i + 1)
        for i in range(150)
    ]
    answer = await client.post("/v1/results", json={"results": many}, headers=bearer(ingest_token))
    assert answer.status_code == 200, answer.text
    await signed_in(client, seeded.read)
    seen: list[str] = []
    path: str | None = f"/ui/outgoing/{y}"
    while path is not None:
        page = await client.get(path)
        seen += re.findall(rf'href="/ui/outgoing/{y}/([^"]+)"', page.text)
        found = re.search(r'rel="next" href="([^"]+)"', page.text)
        path = f"/ui/outgoing/{y}" + found.group(1).replace("&amp;", "&") if found else None
    expected = sorted(
        [f"m{i:03}.example" for i in range(150)] + ["example.com", "example.net", "failing.example"]
    )
    assert seen == expected
    worst = await client.get(f"/ui/outgoing/{y}?order=failures&failing=true")
    failing = re.findall(rf'href="/ui/outgoing/{y}/([^"]+)"', worst.text)
    assert failing[:2] == ["m147.example", "m144.example"]
    assert "example.net" not in failing and "m001.example" not in failing


async def test_configuration_shows_the_dkim_key_fingerprint(
    resources: Resources,
    tmp_path: Path,
    dkim_pair: tuple[bytes, bytes],  # noqa: F811
) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(dkim_pair[0])
    settings = resources.settings.model_copy(
        update={
            "dkim": DkimSettings(selector="sel", private_key_file=key_file),
            "report": ReportSettings(contact_info="tlsrpt@sender.example"),
            "send_reports": False,
        }
    )
    dkim_resources = Resources(
        settings=settings, pool=resources.pool, resolver=resources.resolver, clock=resources.clock
    )
    token = await create_token(resources.pool, "cfg", [Scope.READ], clock=resources.clock)
    app = create_app(settings, dkim_resources)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await signed_in(client, token)
        page = (await client.get("/ui/config")).text
    public = re.search(rb"p=([A-Za-z0-9+/=]+)", dkim_pair[1])
    assert public is not None
    digest = hashlib.sha256(base64.b64decode(public.group(1))).digest()
    assert "SHA256:" + base64.b64encode(digest).decode() in page
    assert "off (TLSRPT_SEND_REPORTS=false)" in page
    assert "PRIVATE KEY" not in page


async def test_the_cookie_is_secure_behind_a_tls_proxy(resources: Resources) -> None:
    settings = resources.settings.model_copy(
        update={"ui": resources.settings.ui.model_copy(update={"secure_cookie": True})}
    )
    app = create_app(
        settings,
        Resources(
            settings=settings,
            pool=resources.pool,
            resolver=resources.resolver,
            clock=resources.clock,
        ),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        form = await client.get("/ui/signin")
    assert "Secure" in form.headers["set-cookie"]


async def test_a_cookie_copied_before_sign_out_is_refused_after(
    client: httpx.AsyncClient, resources: Resources
) -> None:
    seeded = await seed(resources, client)
    csrf = await signed_in(client, seeded.read)
    copied = client.cookies.get(COOKIE)
    assert copied is not None
    answer = await client.post("/ui/signout", data={"csrf": csrf})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/signin"
    client.cookies.set(COOKIE, copied, path="/ui")
    assert (await client.get("/ui/")).status_code == 303
    client.cookies.clear()
    await signed_in(client, seeded.read)
    assert (await client.get("/ui/")).status_code == 200
