"""The pricing editor over the demo data: a new book and a version drafted in the form,
field errors next to their fields, a what-if preview that writes nothing and whose figures
are what the API's estimate says once the version is published; a viewer is refused on the
server, even with a forged request."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import PriceBook, PriceVersion
from agentmeter.tenants import issue_keys
from billing_api.periods import period_containing, previous_periods
from tests.web.conftest import LiveApp, screenshot
from tests.web.dashboard_helpers import browser_client, csrf, sign_in
from tests.web.test_dashboard_pages import demo  # noqa: F401  (a fixture)


def _versions(live_app: LiveApp) -> int:
    with Session(live_app.engine) as session:
        return session.scalar(select(func.count()).select_from(PriceVersion)) or 0


def _fill_row(page: Page, row: int, **fields: str) -> None:
    editor = page.locator(f'fieldset[data-row="{row}"]')
    for name, value in fields.items():
        control = editor.locator(f'[name="c-{row}-{name}"]')
        if name == "charge":
            control.select_option(value)
        else:
            control.fill(value)


def test_draft_preview_publish_matches_the_api(
    live_app: LiveApp,
    demo: str,  # noqa: F811
    page: Page,
    request: pytest.FixtureRequest,
) -> None:
    current = period_containing(utcnow())
    closed = previous_periods(current, 1)[0]
    sign_in(page, live_app.url, "billing@demo.test")
    page.get_by_role("link", name="Pricing").click()
    screenshot(page, request, "books")
    form = page.locator("form.new-book")
    form.get_by_label("Name").fill("Premium")
    form.get_by_label("Currency").fill("XYZ")
    form.get_by_role("button", name="Create price book").click()
    expect(page.locator("#err-currency")).to_be_visible()
    form.get_by_label("Currency").fill("USD")
    form.get_by_role("button", name="Create price book").click()
    expect(page.locator("body.dashboard-price-book")).to_be_visible()
    book_url = page.url
    with Session(live_app.engine) as session:
        book_id = session.scalars(select(PriceBook.id).where(PriceBook.name == "Premium")).one()

    # Globex moves to the new book; the others stay on Standard.
    page.goto(f"{live_app.url}/dashboard/customers/globex")
    page.locator("select[name=price_book_id]").select_option(label="Premium (USD)")
    page.get_by_role("button", name="Assign").click()
    page.goto(book_url)

    versions_before = _versions(live_app)
    page.get_by_label("Effective from").fill(closed.start.date().isoformat())
    _fill_row(page, 0, name="tokens in", charge="per_unit", meter="input_tokens",
              unit_price="abc", per_units="1000000")  # fmt: skip
    _fill_row(page, 1, name="tokens out", charge="graduated", meter="output_tokens",
              tiers="100000 30\n* 25", per_units="1000000")  # fmt: skip
    page.get_by_role("button", name="More rows").click()
    _fill_row(page, 2, name="platform", charge="flat_fee", amount="99", meter="input_tokens")
    _fill_row(page, 3, name="searches", charge="cost_plus", meter="web_searches", markup="0.5")
    page.get_by_role("button", name="Preview what-if").click()
    # Each problem sits next to its field; nothing was written.
    expect(page.locator("#err-c-0-unit_price")).to_contain_text("not a decimal number")
    expect(page.locator("#err-c-2-meter")).to_contain_text("does not take meter")
    expect(page.locator('[name="c-0-unit_price"]')).to_have_attribute("aria-invalid", "true")
    screenshot(page, request, "editor-errors")
    _fill_row(page, 0, unit_price="12")
    _fill_row(page, 2, meter="")
    page.get_by_role("button", name="Preview what-if").click()
    expect(page.locator("#what-if")).to_be_visible()
    screenshot(page, request, "what-if")
    assert _versions(live_app) == versions_before

    def after_minor(customer: str, period: str) -> int:
        cell = page.locator(
            f'tr[data-customer="{customer}"][data-period="{period}"] [data-after-minor]'
        )
        return int(cell.get_attribute("data-after-minor") or "")

    previewed = {c: after_minor(c, current.label) for c in ("acme", "globex", "initech")}
    assert after_minor("globex", closed.label) >= 9900
    expect(
        page.locator(f'tr[data-customer="globex"][data-period="{current.label}"]')
    ).to_have_class("changed")
    expect(
        page.locator(f'tr[data-customer="acme"][data-period="{current.label}"]')
    ).not_to_have_class("changed")

    page.get_by_role("button", name="Publish version").click()
    expect(page.locator('.version[data-version="1"]')).to_contain_text("tokens out")
    assert _versions(live_app) == versions_before + 1
    keys = issue_keys(live_app.engine, demo)
    headers = {"authorization": f"Bearer {keys.admin_key}"}
    with httpx.Client(base_url=live_app.url, headers=headers, timeout=30) as api:
        for customer, minor in previewed.items():
            estimate = api.get(f"/api/v1/customers/{customer}/estimate")
            assert estimate.status_code == 200, estimate.text
            assert estimate.json()["subtotal_minor"] == minor, customer
            if customer == "globex":
                assert estimate.json()["price_book_id"] == book_id


def test_viewer_cannot_change_prices_even_forged(
    live_app: LiveApp,
    demo: str,  # noqa: F811
    page: Page,
    request: pytest.FixtureRequest,
) -> None:
    sign_in(page, live_app.url, "viewer@demo.test")
    page.get_by_role("link", name="Pricing").click()
    expect(page.get_by_role("button", name="Create price book")).to_have_count(0)
    page.get_by_role("link", name="Standard").click()
    expect(page.get_by_role("button", name="Publish version")).to_have_count(0)
    screenshot(page, request, "viewer-book")
    with Session(live_app.engine) as session:
        book_id = session.scalars(select(PriceBook.id).where(PriceBook.name == "Standard")).one()
    versions_before = _versions(live_app)
    draft = {"effective_from": "2026-01-02", "c-0-name": "x", "c-0-charge": "flat_fee",
             "c-0-amount": "1", "intent": "publish"}  # fmt: skip
    with browser_client(page, live_app.url) as client:
        for path, data in (
            (f"/dashboard/pricing/books/{book_id}/versions", draft),
            (f"/dashboard/pricing/books/{book_id}/versions", {**draft, "intent": "preview"}),
            ("/dashboard/pricing/books", {"name": "Forged", "currency": "USD"}),
            ("/dashboard/customers/acme/price-book", {"price_book_id": ""}),
        ):
            refused = client.post(path, data={**csrf(client), **data})
            assert refused.status_code == 403, (path, refused.text)
            assert "may not do this" in refused.text
    assert _versions(live_app) == versions_before
    with Session(live_app.engine) as session:
        assert session.scalar(select(func.count()).select_from(PriceBook)) == 1
