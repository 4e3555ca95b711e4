"""The dashboard's read pages over the demo data: overview, customers, a customer; every
figure shown is the one the rating service computes, customers needing attention stand out,
credit grants go through the credits service, and nothing a user typed runs as markup."""

from __future__ import annotations

from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.command.demo import DEMO_CUSTOMERS, seed_demo
from agentmeter.tables import Budget, Customer, Tenant
from agentmeter.tenants import find_tenant
from billing_api.credits import service as credits
from billing_api.dashboard.accounts import create_user
from billing_api.periods import period_containing
from billing_api.rating.service import estimate, rate_period
from billing_api.web.formatting import LocaleFormat
from tests.billing_api.callers import staff
from tests.web.conftest import LiveApp, screenshot
from tests.web.dashboard_helpers import PASSWORD, browser_client, csrf, sign_in

XSS = '<script>document.title="pwned"</script><img src=x onerror="document.title=1">'


@pytest.fixture
def demo(live_app: LiveApp) -> str:
    """The demo tenant (seeded as `serve --demo` does) with a billing and a viewer user."""
    seed_demo(live_app.engine)
    tenant_id = find_tenant(live_app.engine, "Demo Builder")
    assert tenant_id
    with Session(live_app.engine) as session, session.begin():
        create_user(session, tenant_id, "billing@demo.test", PASSWORD, "billing")
        create_user(session, tenant_id, "viewer@demo.test", PASSWORD, "viewer")
    return tenant_id


def test_overview_shows_the_rated_figures_and_flags(
    live_app: LiveApp, demo: str, page: Page, request: pytest.FixtureRequest
) -> None:
    fmt = LocaleFormat()
    with Session(live_app.engine) as session, session.begin():
        tenant = session.get(Tenant, demo)
        assert tenant
        tenant.margin_floor_percent = Decimal(99)  # every customer with a margin is below it
        session.add(Budget(tenant_id=demo, customer_id="acme", currency="USD", limit_minor=1,
                           thresholds=[100]))  # fmt: skip
    with Session(live_app.engine) as session:
        rated = rate_period(session, demo, period_containing(utcnow()))
    sign_in(page, live_app.url, "billing@demo.test")
    expect(page.locator("figure.chart")).to_have_attribute("data-chart-state", "rendered")
    screenshot(page, request, "overview")
    total = sum(r.subtotal_minor for r in rated.values())
    expect(page.locator('[data-total="estimated"]')).to_have_text(fmt.money(total, "USD"))
    acme = page.locator('tr[data-customer="acme"]')
    expect(acme).to_have_class("flagged")
    expect(acme).to_contain_text("over budget")
    expect(acme).to_contain_text(fmt.money(rated["acme"].subtotal_minor, "USD"))
    expect(acme).to_contain_text("below margin floor")
    # Usage of an id nobody registered shows too, and the demo has none unattributed.
    expect(page.locator('tr[data-customer="unregistered-co"]')).to_contain_text("not registered")
    chart_total = page.locator("figure.chart").get_attribute("data-chart-total")
    assert chart_total is not None and Decimal(chart_total) > 0

    page.set_viewport_size({"width": 390, "height": 844})
    screenshot(page, request, "overview-phone")
    # At phone width the table scrolls sideways: a flagged row keeps one line of flags
    # (squeezed to the screen, each flag word wrapped onto a line of its own).
    height = acme.bounding_box()
    assert height is not None and height["height"] < 60, height
    scroller = page.locator("div.table-scroll", has=page.locator("table.customers-figures"))
    assert scroller.evaluate("e => e.scrollWidth > e.clientWidth")


def test_customers_search_and_detail(
    live_app: LiveApp, demo: str, page: Page, request: pytest.FixtureRequest
) -> None:
    sign_in(page, live_app.url, "viewer@demo.test")
    page.get_by_role("link", name="Customers", exact=True).click()
    expect(page.get_by_role("row")).to_have_count(len(DEMO_CUSTOMERS) + 1)
    page.get_by_label("Search").fill("glob")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("row")).to_have_count(2)
    screenshot(page, request, "customers")
    page.get_by_role("link", name="Globex Corp").click()
    expect(page.locator("body.dashboard-customer")).to_be_visible()
    with Session(live_app.engine) as session:
        rated = estimate(session, staff(demo), "globex", utcnow())
    expect(page.locator('[data-total="estimate"]')).to_have_text(
        LocaleFormat().money(rated.subtotal_minor, "USD")
    )
    expect(page.locator("table.usage-step tbody tr")).not_to_have_count(0)
    expect(page.locator("table.usage-tool")).to_contain_text("web_search")
    # A viewer sees no form that changes anything.
    expect(page.get_by_role("button", name="Grant credit")).to_have_count(0)
    expect(page.get_by_role("button", name="Assign")).to_have_count(0)
    screenshot(page, request, "customer")
    with browser_client(page, live_app.url) as client:
        forged = client.post("/dashboard/customers/globex/credits",
                             data={**csrf(client), "amount": "10", "currency": "USD"})  # fmt: skip
        assert forged.status_code == 403
    with Session(live_app.engine) as session:
        assert credits.list_grants(session, staff(demo), "globex") == []


def test_credit_grant_field_errors_then_grant_and_void(
    live_app: LiveApp, demo: str, page: Page, request: pytest.FixtureRequest
) -> None:
    with Session(live_app.engine) as session, session.begin():
        session.add(Customer(tenant_id=demo, id="evil", name=XSS, email="x@evil.test"))
    sign_in(page, live_app.url, "billing@demo.test")
    page.goto(f"{live_app.url}/dashboard/customers/evil")
    expect(page.get_by_role("heading", level=1)).to_have_text(XSS)
    assert page.title() == f"{XSS} · AgentMeter"  # no script ran, the markup is text
    page.get_by_label("Amount").fill("12.345")
    page.get_by_role("button", name="Grant credit").click()
    expect(page.locator("#err-amount")).to_be_visible()
    expect(page.get_by_label("Amount")).to_have_attribute("aria-invalid", "true")
    screenshot(page, request, "grant-refused")
    page.get_by_label("Amount").fill("25.00")
    page.get_by_label("Description", exact=True).fill(XSS)
    page.get_by_role("button", name="Grant credit").click()
    expect(page.locator("#credits")).to_contain_text("$25.00")
    expect(page.locator("#credits")).to_contain_text(XSS)
    with Session(live_app.engine) as session:
        ((grant, left),) = credits.list_grants(session, staff(demo), "evil")
    assert (grant.amount_minor, left, grant.description) == (2500, 2500, XSS)
    page.get_by_label("Reason").fill("test")
    page.get_by_role("button", name="Void").click()
    expect(page.locator("#credits")).to_contain_text("voided")
    with Session(live_app.engine) as session:
        ((grant, left),) = credits.list_grants(session, staff(demo), "evil")
    assert grant.voided_at is not None and left == 0
    assert page.title() == f"{XSS} · AgentMeter"

    budget = page.locator("form.budget-form")
    budget.get_by_label("Limit per period").fill("10.001")
    budget.get_by_label("Alert at (%)").fill("50, eighty")
    budget.get_by_role("button", name="Set budget").click()
    expect(page.locator("#err-limit")).to_be_visible()
    expect(page.locator("#err-thresholds")).to_contain_text("whole percents")
    budget.get_by_label("Limit per period").fill("10")
    budget.get_by_label("Alert at (%)").fill("50, 90")
    budget.get_by_role("button", name="Set budget").click()
    expect(page.locator("#budget")).to_contain_text("$10.00 per period; alerts at 50%, 90%")
