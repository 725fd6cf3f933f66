"""The pages in a real browser (headless Debian chromium via Playwright) on a seeded
database: sign in, every page renders its data, the chart has one point per day, suppress
a rua and see it in the API, retry a failed delivery, a form without its CSRF token is
refused, a `read` token changes nothing, sign out. Every test also asserts that no page
logged a console error or requested anything outside the service's origin.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from app.resources import Resources
from tests.api.pages.browser import CHROMIUM, Watched, serve, watched_context
from tests.api.pages.seed import Seeded, seed
from tests.conftest import bearer
from tests.dnscheck.zone_server import ZoneData

# The README's screenshot. The suite takes it on every run; it writes it over the committed
# one only when asked (TLSRPT_UPDATE_SCREENSHOT=1), so a test run leaves the tree clean.
SCREENSHOT = Path(__file__).parents[3] / "docs" / "ui-overview.png"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        await launched.close()


@pytest.fixture
async def site(
    resources: Resources, client: httpx.AsyncClient
) -> AsyncIterator[tuple[str, Seeded]]:
    seeded = await seed(resources, client)
    async with serve(resources) as origin:
        yield origin, seeded


@pytest.fixture
async def watched(browser: Browser, site: tuple[str, Seeded]) -> AsyncIterator[Watched]:
    async with watched_context(browser, site[0], viewport={"width": 1200, "height": 900}) as w:
        yield w
        w.assert_clean()


async def sign_in(page: Page, token: str) -> None:
    await page.goto("/ui/")
    await expect(page).to_have_url(re.compile(r"/ui/signin$"))
    await page.get_by_label("API token").fill(token)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()


async def test_every_page_renders_its_data(
    watched: Watched, site: tuple[str, Seeded], tmp_path: Path
) -> None:
    _, seeded = site
    page = await watched.context.new_page()
    await sign_in(page, seeded.admin)
    await expect(page.get_by_test_id(f"sessions-{seeded.yesterday}")).to_have_text("1 057")
    await expect(page.get_by_test_id("incoming-reports")).to_have_text("4")
    update = os.environ.get("TLSRPT_UPDATE_SCREENSHOT") == "1"
    shot = SCREENSHOT if update else tmp_path / SCREENSHOT.name
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")

    await page.get_by_role("link", name="Outgoing", exact=True).click()
    await page.get_by_role("link", name=str(seeded.yesterday)).click()
    await expect(page.get_by_role("link", name="example.net")).to_be_visible()
    await page.get_by_label("failing only").check()
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("link", name="example.net")).to_have_count(0)
    await page.get_by_role("link", name="failing.example").click()
    await expect(page.locator("#report-json")).to_contain_text("seeded-1")
    await expect(page.get_by_role("cell", name="Not Found")).to_be_visible()

    await page.get_by_role("link", name="Incoming", exact=True).click()
    await expect(page.get_by_role("cell", name="Microsoft", exact=True).first).to_be_visible()
    await page.get_by_role("link", name="our.example").first.click()
    chart = page.locator("svg.linechart")
    for series in ("successful", "failed"):
        points = chart.locator(f'g[data-series="{series}"] circle.point')
        await expect(points).to_have_count(30)
    days = await chart.locator('g[data-series="failed"] circle.point').evaluate_all(
        "nodes => nodes.map(n => n.dataset.day)"
    )
    assert len(set(days)) == 30 and days[-1] == str(seeded.today)
    await expect(page.get_by_role("cell", name="certificate-expired")).to_be_visible()

    for name, text in [
        ("Deliveries", seeded.failed_rua),
        ("Suppressions", "None."),
        ("Configuration", "TLSRPT_SMTP__HOST"),
        ("DNS", "tlsrpt dns-check"),
    ]:
        await page.get_by_role("link", name=name, exact=True).click()
        await expect(page.locator("main")).to_contain_text(text)


async def test_pages_fit_a_phone_and_work_by_keyboard(
    browser: Browser, site: tuple[str, Seeded]
) -> None:
    origin, seeded = site
    async with watched_context(browser, origin, viewport={"width": 360, "height": 740}) as w:
        page = await w.context.new_page()
        await sign_in(page, seeded.read)
        for path in ("/ui/", f"/ui/outgoing/{seeded.yesterday}", "/ui/deliveries"):
            await page.goto(path)
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, path
        await page.goto("/ui/")
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        w.assert_clean()


async def test_suppress_and_retry_from_the_pages(
    watched: Watched, site: tuple[str, Seeded], client: httpx.AsyncClient
) -> None:
    _, seeded = site
    page = await watched.context.new_page()
    await sign_in(page, seeded.admin)
    await page.goto("/ui/deliveries?state=failed")
    row = page.locator(f'tr[data-delivery="{seeded.failed_delivery}"]')
    await row.get_by_role("button", name="Suppress rua").click()
    await expect(page.get_by_role("cell", name=seeded.failed_rua)).to_be_visible()
    listed = (await client.get("/v1/suppressions", headers=bearer(seeded.admin))).json()
    assert [s["target"] for s in listed["suppressions"]] == [seeded.failed_rua]

    await page.goto("/ui/deliveries?state=failed")
    await (
        page.locator(f'tr[data-delivery="{seeded.failed_delivery}"]')
        .get_by_role("button", name="Retry now")
        .click()
    )
    await expect(page.get_by_role("status")).to_contain_text("due now")
    pending = (
        await client.get("/v1/deliveries?state=pending", headers=bearer(seeded.admin))
    ).json()
    assert seeded.failed_delivery in [d["id"] for d in pending["deliveries"]]

    await page.goto("/ui/suppressions")
    await page.get_by_role("button", name="Remove").click()
    await expect(page.get_by_role("cell", name="None.")).to_be_visible()


async def test_a_form_without_its_csrf_token_is_refused(
    watched: Watched, site: tuple[str, Seeded], client: httpx.AsyncClient
) -> None:
    _, seeded = site
    page = await watched.context.new_page()
    await sign_in(page, seeded.admin)
    await page.goto("/ui/suppressions")
    await page.locator('form[action="/ui/suppressions"] input[name="csrf"]').evaluate(
        "input => input.remove()"
    )
    await page.get_by_label("Address or URI").fill("dropped@example.com")
    await page.get_by_role("button", name="Suppress").click()
    await expect(page.get_by_role("alert")).to_contain_text("CSRF")
    # The browser logs the refusal itself; that one error is the expected outcome.
    assert watched.console_errors == [
        "Failed to load resource: the server responded with a status of 403 (Forbidden)"
    ]
    watched.console_errors.clear()
    listed = (await client.get("/v1/suppressions", headers=bearer(seeded.admin))).json()
    assert listed["suppressions"] == []


async def test_a_read_token_changes_nothing(
    watched: Watched, site: tuple[str, Seeded], client: httpx.AsyncClient
) -> None:
    _, seeded = site
    page = await watched.context.new_page()
    await sign_in(page, seeded.read)
    await page.goto("/ui/deliveries?state=failed")
    await expect(page.get_by_role("cell", name=seeded.failed_rua)).to_be_visible()
    await expect(page.get_by_role("button", name="Retry now")).to_have_count(0)
    await page.goto("/ui/suppressions")
    await expect(page.get_by_label("Address or URI")).to_have_count(0)
    csrf = await page.locator('input[name="csrf"]').first.get_attribute("value")
    answer = await page.request.post(
        f"/ui/deliveries/{seeded.failed_delivery}/retry", form={"csrf": csrf or ""}
    )
    assert answer.status == 403
    answer = await page.request.post(
        "/ui/suppressions", form={"csrf": csrf or "", "target": "x@example.com"}
    )
    assert answer.status == 403
    failed = (await client.get("/v1/deliveries?state=failed", headers=bearer(seeded.read))).json()
    assert [d["id"] for d in failed["deliveries"]] == [seeded.failed_delivery]
    listed = (await client.get("/v1/suppressions", headers=bearer(seeded.admin))).json()
    assert listed["suppressions"] == []


async def test_sign_out(watched: Watched, site: tuple[str, Seeded]) -> None:
    _, seeded = site
    page = await watched.context.new_page()
    await sign_in(page, seeded.read)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.go_back()
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.goto("/ui/deliveries")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_docs_render_offline(watched: Watched) -> None:
    # ReDoc's "by Redocly" logo lives on its CDN: the docs' CSP refuses it, so nothing is
    # requested from outside (the fixture asserts that), and the refusal is the one error
    # the pages may log, whenever the browser gets to it (it can come after the last step).
    watched.tolerated.append("https://cdn.redoc.ly/")
    page = await watched.context.new_page()
    await page.goto("/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("TLSRPT service")
    await page.goto("/redoc")
    await expect(page.get_by_role("heading", name="TLSRPT service").first).to_be_visible()


async def test_dns_check_shows_a_fail_with_the_record_to_copy(
    browser: Browser, site: tuple[str, Seeded], checked: ZoneData
) -> None:
    """On a phone-sized screen, by keyboard: check a domain, see the FAIL and the record
    to publish, copy it; then the sending side (another DKIM key is published)."""
    origin, seeded = site
    async with watched_context(
        browser,
        origin,
        viewport={"width": 360, "height": 740},
        permissions=["clipboard-read", "clipboard-write"],
    ) as w:
        page = await w.context.new_page()
        await sign_in(page, seeded.read)
        await page.get_by_role("link", name="DNS", exact=True).click()
        await page.get_by_label("Domains").fill("bad.test")
        await page.get_by_label("Domains").press("Enter")
        await expect(page).to_have_url(re.compile(r"/ui/dns\?domain=bad.test"))
        # The copy button's script runs at load; a locator sees the DOM before that.
        await page.wait_for_load_state("load")
        fail = page.locator("li.finding", has_text="no rua is usable")
        await expect(fail.locator(".status")).to_have_text("FAIL")
        record = '_smtp._tls.bad.test. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test"'
        await expect(fail.locator("pre code")).to_have_text(record)
        await expect(fail.get_by_role("button", name="Copy record")).to_be_visible()
        copy = fail.locator("button.copy")
        await copy.focus()
        await page.keyboard.press("Enter")
        await expect(copy).to_have_text("Copied")
        assert await page.evaluate("navigator.clipboard.readText()") == record
        # Widths once the stylesheet applies: a locator sees the DOM before it has loaded.
        await page.wait_for_load_state("load")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360

        await page.get_by_label("Check the sending side").check()
        await page.get_by_role("button", name="Check", exact=True).click()
        sending = page.get_by_role("region", name="Sending side")
        dkim = sending.locator("li.finding", has_text="does not match")
        await expect(dkim.locator(".status")).to_have_text("FAIL")
        await expect(dkim.locator("pre code")).to_contain_text("sel._domainkey.sender.example.")
        await page.wait_for_load_state("load")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 360
        w.assert_clean()
