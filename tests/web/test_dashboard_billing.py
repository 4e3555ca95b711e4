"""Billing in the browser over the demo data: a run started from the page finishes while
htmx polls its progress; an invoice's exceptions are resolved or waived, a line adjusted and
one added, the invoice finalized and credited — each action shows its audit entry (with the
signed-in user as actor), and a viewer's forged finalize is refused."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import Customer
from billing_api.audit import log as audit_log
from billing_api.invoicing import repository
from billing_api.periods import period_containing
from tests.web.conftest import LiveApp, screenshot
from tests.web.dashboard_helpers import browser_client, csrf, sign_in
from tests.web.test_dashboard_pages import demo  # noqa: F401  (a fixture)


def _drafted(page: Page, url: str, period: str, request: pytest.FixtureRequest) -> None:
    page.goto(f"{url}/dashboard/billing?period={period}")
    page.get_by_role("button", name=f"Start billing run for {period}").click()
    expect(page.locator("body.dashboard-billing #run-progress")).to_be_visible()
    # htmx swaps the progress block until the run is no longer running.
    expect(page.locator("#run-progress")).to_have_attribute(
        "data-status", "completed", timeout=60_000
    )
    screenshot(page, request, "run")
    page.get_by_role("link", name=f"Review the drafts of {period}").click()


def test_run_review_finalize_and_credit(
    live_app: LiveApp,
    demo: str,  # noqa: F811
    page: Page,
    request: pytest.FixtureRequest,
) -> None:
    period = period_containing(utcnow()).label
    sign_in(page, live_app.url, "billing@demo.test")
    _drafted(page, live_app.url, period, request)
    screenshot(page, request, "billing")
    queue = page.locator("table.review-queue")
    expect(queue.get_by_role("row")).to_have_count(5)  # header, 3 customers, unregistered-co
    # The id nobody registered: registering it from the run's exception settles it.
    unregistered = page.locator('.run-exception[data-exception="unregistered_customer"]')
    unregistered.get_by_label("Name for unregistered-co").fill("Unregistered & Co <i>")
    unregistered.get_by_role("button", name="Register").click()
    expect(unregistered).to_have_count(0)
    with Session(live_app.engine) as session:
        customer = session.get(Customer, (demo, "unregistered-co"))
        assert customer is not None and customer.name == "Unregistered & Co <i>"
    queue.get_by_role("link", name="acme", exact=True).click()
    expect(page.locator("body.dashboard-invoice")).to_be_visible()

    # Finalizing is refused while a blocking exception is open.
    page.get_by_role("button", name="Finalize").click()
    expect(page.locator("body.error-409")).to_be_visible()
    page.go_back()
    page.reload()

    open_exceptions = page.locator('.exception[data-status="open"]')
    count = open_exceptions.count()
    assert count >= 1
    first = open_exceptions.first
    kind = first.get_attribute("data-exception")
    first.get_by_label(f"Note on {kind}").fill("priced separately <b>bold</b>")
    first.get_by_role("button", name=f"Resolve {kind}").click()
    expect(page.locator('#audit li[data-action="resolved"]')).to_contain_text("billing@demo.test")
    expect(page.locator("#audit")).to_contain_text("priced separately <b>bold</b>")
    while page.locator('.exception[data-status="open"]').count():
        remaining = page.locator('.exception[data-status="open"]').first
        kind = remaining.get_attribute("data-exception")
        remaining.get_by_label(f"Note on {kind}").fill("accepted")
        remaining.get_by_role("button", name=f"Waive {kind}").click()
        expect(page.locator('#audit li[data-action="waived"]').first).to_be_visible()

    page.locator('tr[data-line="platform"] summary').click()
    page.get_by_label("New amount of platform").fill("19.00")
    page.get_by_label("Reason for platform").fill("loyalty")
    page.get_by_role("button", name="Save platform").click()
    expect(page.locator('#audit li[data-action="adjust_line"]')).to_contain_text("loyalty")
    add = page.locator("form.add-line")
    add.get_by_label("Description").fill("Onboarding")
    add.get_by_label("Unit price").fill("100")
    add.get_by_label("Reason").fill("setup")
    add.get_by_role("button", name="Add line").click()
    expect(page.locator('#audit li[data-action="add_line"]')).to_be_visible()
    screenshot(page, request, "invoice-review")
    shown_total = page.locator('[data-total="invoice"]').inner_text()

    # A viewer's forged finalize is refused by the server.
    viewer = page.context.browser.new_context().new_page()  # type: ignore[union-attr]
    try:
        sign_in(viewer, live_app.url, "viewer@demo.test")
        invoice_id = page.url.split("/dashboard/invoices/")[1].split("#")[0]
        with browser_client(viewer, live_app.url) as client:
            forged = client.post(f"/dashboard/invoices/{invoice_id}/finalize", data=csrf(client))
            assert forged.status_code == 403
    finally:
        viewer.context.close()

    # The period has not ended: finalizing now is refused with the API's message, and
    # ticking the box without a reason is refused too; with both it goes through, audited.
    expect(page.locator("#early-hint")).to_contain_text("Finalizing now needs a reason")
    page.get_by_role("button", name="Finalize").click()
    expect(page.locator("body.error-409")).to_be_visible()
    expect(page.locator(".error-page")).to_contain_text(
        "finalize it then, or now with before_period_end and a reason"
    )
    page.go_back()
    page.get_by_label("Finalize before the period ends").check()
    page.get_by_role("button", name="Finalize").click()
    expect(page.locator("body.error-422")).to_be_visible()
    expect(page.locator(".error-page")).to_contain_text(
        "finalizing before the period ends needs a reason"
    )
    page.go_back()
    page.reload()
    with Session(live_app.engine) as session:
        still = repository.get_invoice(session, demo, invoice_id)
        assert still is not None and still.status == "draft" and still.number is None
    page.get_by_label("Finalize before the period ends").check()
    page.get_by_label("Reason for finalizing early").fill("customer <b>churns</b> today")
    page.get_by_role("button", name="Finalize").click()
    expect(page.locator("#invoice-status")).to_have_text("finalized")
    expect(page.locator('#audit li[data-action="finalize"]')).to_contain_text(
        "customer <b>churns</b> today"
    )
    expect(page.locator("#early-hint")).to_have_count(0)
    with Session(live_app.engine) as session:
        invoice = repository.get_invoice(session, demo, invoice_id)
        assert invoice is not None and invoice.status == "finalized" and invoice.number
        audit = audit_log.trail(session, demo, invoice_id)
        assert {"adjust_line", "add_line", "finalize"} <= {a.action for a in audit}
        assert all(a.actor == "billing@demo.test" for a in audit)
    assert page.locator('[data-total="invoice"]').inner_text() == shown_total

    page.get_by_label("Credit amount (empty: in full)").fill("5")
    page.get_by_label("Credit reason").fill("outage")
    page.get_by_role("button", name="Issue credit note").click()
    expect(page.get_by_role("heading", name="Credit notes")).to_be_visible()
    expect(page.locator('#audit li[data-action="credit_note"]')).to_contain_text("outage")
    screenshot(page, request, "invoice-finalized")
