"""The dashboard's portal, branding and Stripe actions against a real `agentmeter serve` on
both backends, over the portal scenario (`portal_scenario`): a portal link created on a
customer's page opens the portal in a browser that never signed in; the brand is set
through the same checks as `PUT /api/v1/branding`, refusals beside the field, markup shown
as text; the Stripe section says whether the server has Stripe and whether an account is
connected; invoice pages show their Stripe state and retry a sync as the API does. Viewers
see none of the buttons and their forged posts are refused with nothing written."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from agentmeter.tables import PortalSession, StripeJob, Tenant
from tests.web.conftest import screenshot
from tests.web.dashboard_helpers import Staff, browser_client, csrf, make_staff, sign_in
from tests.web.portal_scenario import CUSTOMER, XSS_BRAND, Portal

XSS = '"><script>window.__xss="brand"</script><img src=x onerror="window.__xss=1">Brand'


@pytest.fixture
def staff(portal: Portal, engine: Engine) -> Staff:
    """An admin, a billing and a viewer user of the scenario's tenant."""
    return make_staff(engine, tenant=portal.server.tenant)


def _portal_sessions(engine: Engine, tenant_id: str) -> list[PortalSession]:
    with Session(engine) as session:
        rows = session.scalars(select(PortalSession).where(PortalSession.tenant_id == tenant_id))
        return list(rows)


def _brand_name(engine: Engine, tenant_id: str) -> str | None:
    with Session(engine) as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        return tenant.brand_name


def _viewer_client(browser: Browser, url: str, email: str) -> tuple[Page, httpx.Client]:
    viewer = browser.new_context().new_page()
    sign_in(viewer, url, email)
    return viewer, browser_client(viewer, url)


def test_portal_link_created_in_the_dashboard_opens_the_portal(
    portal: Portal,
    staff: Staff,
    engine: Engine,
    browser: Browser,
    page: Page,
    request: pytest.FixtureRequest,
) -> None:
    url, tenant_id = portal.server.api_url, portal.server.tenant.tenant_id
    before = len(_portal_sessions(engine, tenant_id))
    sign_in(page, url, staff.billing)
    page.goto(f"{url}/dashboard/customers/{CUSTOMER}")
    page.get_by_label("Link valid for").select_option(label="1 hour")
    page.get_by_role("button", name="Create portal link").click()
    link = page.locator("#portal-link").get_attribute("href")
    assert link and link.startswith(f"{url}/portal/open?token=")
    screenshot(page, request, "portal-link")
    rows = _portal_sessions(engine, tenant_id)
    assert len(rows) == before + 1
    (row,) = [r for r in rows if r.created_by == staff.billing]
    assert (row.customer_id, row.revoked_at) == (CUSTOMER, None)
    assert 3590 <= (row.expires_at - row.created_at).total_seconds() <= 3600
    page.goto(f"{url}/dashboard/customers/{CUSTOMER}")
    expect(page.locator("#portal-link")).to_have_count(0)  # the link is shown once

    customer = browser.new_context().new_page()  # no dashboard session, no portal cookie
    try:
        customer.goto(link)
        expect(customer.locator("body.portal")).to_be_visible()
        expect(customer.locator(".brand-name")).to_have_text(XSS_BRAND)
        assert customer.evaluate("() => window.__xss") is None
        screenshot(customer, request, "portal-opened")
    finally:
        customer.context.close()

    # A viewer sees no button, and a forged post is refused with no session written.
    viewer, client = _viewer_client(browser, url, staff.viewer)
    try:
        viewer.goto(f"{url}/dashboard/customers/{CUSTOMER}")
        expect(viewer.locator("body.dashboard-customer")).to_be_visible()
        expect(viewer.get_by_role("button", name="Create portal link")).to_have_count(0)
        forged = client.post(f"/dashboard/customers/{CUSTOMER}/portal-sessions", data=csrf(client))
        assert forged.status_code == 403
        assert "token=" not in forged.text
        # Without the CSRF field the page layer refuses before any role is checked.
        assert client.post(f"/dashboard/customers/{CUSTOMER}/portal-sessions").status_code == 403
    finally:
        client.close()
        viewer.context.close()
    assert len(_portal_sessions(engine, tenant_id)) == before + 1

    # Out-of-range input is refused next to the field, nothing written.
    with browser_client(page, url) as billing:
        refused = billing.post(
            f"/dashboard/customers/{CUSTOMER}/portal-sessions",
            data={**csrf(billing), "hours": "9999"},
        )
        assert refused.status_code == 422
        assert 'id="err-hours"' in refused.text
    assert len(_portal_sessions(engine, tenant_id)) == before + 1


def test_branding_checked_beside_the_field_and_shown_as_text(
    portal: Portal,
    staff: Staff,
    engine: Engine,
    browser: Browser,
    page: Page,
    request: pytest.FixtureRequest,
) -> None:
    url, tenant_id = portal.server.api_url, portal.server.tenant.tenant_id
    sign_in(page, url, staff.admin)
    page.goto(f"{url}/dashboard/settings#branding")
    form = page.locator("#branding")
    expect(form.get_by_label("Brand name")).to_have_value(XSS_BRAND)  # as the API set it

    form.get_by_label("Brand name").fill(XSS)
    form.get_by_label("Primary colour (#rrggbb)").fill("red")
    form.get_by_label("Logo URL (https)").fill("http://cdn.example.com/logo.png")
    form.get_by_label("Sites that may embed the portal").fill("'self'\nhttp://embed.example")
    form.get_by_role("button", name="Save branding").click()
    expect(page.locator("#err-brand-primary_color")).to_be_visible()
    expect(page.locator("#err-brand-logo_url")).to_contain_text("https://")
    expect(page.locator("#err-brand-frame_ancestors")).to_contain_text("http://embed.example")
    expect(page.locator("#err-brand-name")).to_have_count(0)
    expect(page.get_by_label("Primary colour (#rrggbb)")).to_have_attribute(
        "aria-describedby", "err-brand-primary_color"
    )
    expect(page.get_by_label("Brand name")).to_have_value(XSS)  # kept as typed, as text
    screenshot(page, request, "branding-errors")
    assert _brand_name(engine, tenant_id) == XSS_BRAND  # nothing written

    page.get_by_label("Primary colour (#rrggbb)").fill("#0A7B34")
    page.get_by_label("Logo URL (https)").fill("https://cdn.example.com/logo.png")
    page.get_by_label("Sites that may embed the portal").fill("'self'\nhttps://embed.example")
    page.get_by_label("Support e-mail").fill("")
    page.get_by_role("button", name="Save branding").click()
    expect(page.get_by_label("Brand name")).to_have_value(XSS)
    assert page.evaluate("() => window.__xss") is None
    brand = portal.ok("GET", "/api/v1/branding")  # what the API reads back
    assert brand["name"] == XSS
    assert brand["primary_color"] == "#0a7b34"
    assert brand["logo_url"] == "https://cdn.example.com/logo.png"
    assert brand["frame_ancestors"] == ["'self'", "https://embed.example"]
    assert brand["support_email"] is None  # emptied in the form: cleared, as PUT does
    assert brand["support_url"] == "https://acme-agents.example/support"  # kept as shown

    customer = browser.new_context().new_page()
    try:
        customer.goto(portal.link()["url"])
        expect(customer.locator(".brand-name")).to_have_text(XSS)
        assert customer.evaluate("() => window.__xss") is None
    finally:
        customer.context.close()

    # A viewer cannot even see settings, and a forged post changes nothing.
    viewer, client = _viewer_client(browser, url, staff.viewer)
    try:
        viewer.goto(f"{url}/dashboard/settings")
        expect(viewer.locator("body.error-403")).to_be_visible()
        forged = client.post(
            "/dashboard/settings/branding", data={**csrf(client), "name": "Hijacked"}
        )
        assert forged.status_code == 403
    finally:
        client.close()
        viewer.context.close()
    assert _brand_name(engine, tenant_id) == XSS


def test_stripe_section_without_a_key(
    portal: Portal, staff: Staff, page: Page, request: pytest.FixtureRequest
) -> None:
    url = portal.server.api_url
    sign_in(page, url, staff.admin)
    page.goto(f"{url}/dashboard/settings#stripe")
    expect(page.locator("#stripe-connection")).to_have_text("not_connected")
    expect(page.locator("#stripe-configured")).to_contain_text("not configured")
    expect(page.get_by_role("button", name="Connect Stripe account")).to_have_count(0)
    expect(page.get_by_role("button", name="Disconnect Stripe")).to_have_count(0)
    screenshot(page, request, "stripe")
    api = portal.ok("GET", "/api/v1/stripe/account")
    assert (api["stripe_enabled"], api["connected"]) == (False, False)

    # Forged anyway: the same refusals as the API, nothing connected.
    with browser_client(page, url) as client:
        connect = client.post(
            "/dashboard/settings/stripe", data={**csrf(client), "account_id": "acct_123"}
        )
        assert (
            connect.status_code
            == portal.api(
                "PUT", "/api/v1/stripe/account", json={"account_id": "acct_123"}
            ).status_code
            == 409
        )
        assert "AGENTMETER_STRIPE_API_KEY" in connect.text
        bad = client.post("/dashboard/settings/stripe", data={**csrf(client), "account_id": "x"})
        assert bad.status_code == 422 and 'id="err-stripe-account_id"' in bad.text
        disconnect = client.post("/dashboard/settings/stripe/disconnect", data=csrf(client))
        assert disconnect.status_code == 404
    assert portal.ok("GET", "/api/v1/stripe/account")["connected"] is False


def test_invoice_pages_show_stripe_state_and_retry(
    portal: Portal,
    staff: Staff,
    engine: Engine,
    browser: Browser,
    page: Page,
    request: pytest.FixtureRequest,
) -> None:
    url, invoice_id = portal.server.api_url, portal.invoice_id
    api = portal.ok("GET", f"/api/v1/invoices/{invoice_id}/stripe-sync")
    assert (api["stripe_sync_status"], api["payment_status"]) == ("not_connected", "unpaid")
    sign_in(page, url, staff.billing)
    page.goto(f"{url}/dashboard/billing?period={portal.last_period.label}")
    row = page.locator(f'tr:has(a[href="/dashboard/invoices/{invoice_id}"])')
    expect(row.locator("[data-stripe-sync]")).to_have_attribute("data-stripe-sync", "not_connected")
    expect(row.locator("[data-payment]")).to_have_attribute("data-payment", "unpaid")
    row.get_by_role("link").click()
    expect(page.locator("#stripe-sync-status")).to_have_text(api["stripe_sync_status"])
    expect(page.locator("#payment-status")).to_have_text(api["payment_status"])
    expect(page.locator("#stripe-error")).to_have_text("none")
    screenshot(page, request, "invoice-stripe")

    # Retrying goes through the API's service: refused the same way without an account.
    page.get_by_role("button", name="Retry Stripe sync").click()
    expect(page.locator("body.error-409")).to_be_visible()
    expect(page.locator("main")).to_contain_text("no Stripe account is connected")
    assert portal.api("POST", f"/api/v1/invoices/{invoice_id}/stripe-sync").status_code == 409

    viewer, client = _viewer_client(browser, url, staff.viewer)
    try:
        viewer.goto(f"{url}/dashboard/invoices/{invoice_id}")
        expect(viewer.locator("#stripe-sync-status")).to_have_text("not_connected")
        expect(viewer.get_by_role("button", name="Retry Stripe sync")).to_have_count(0)
        forged = client.post(f"/dashboard/invoices/{invoice_id}/stripe-sync", data=csrf(client))
        assert forged.status_code == 403
    finally:
        client.close()
        viewer.context.close()
    with Session(engine) as session:
        jobs = session.scalar(
            select(func.count()).select_from(StripeJob).where(StripeJob.invoice_id == invoice_id)
        )
    assert jobs == 0
