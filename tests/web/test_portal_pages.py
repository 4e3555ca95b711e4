"""The customer portal in Debian's Chromium, against a running `agentmeter serve` on
SQLite and PostgreSQL, set up over REST and OTLP by `portal_scenario` (figures worked there).

What a customer sees is checked against the builder's API, never against the portal's own
code: the estimate against `GET /api/v1/customers/{id}/estimate`, the chart and the CSV
against `GET /api/v1/usage`, the invoice against `GET /api/v1/invoices/{id}`. Screenshots of
every page (and at phone width) land in tests/output/screenshots.
"""

from __future__ import annotations

import csv
import json
import re
from decimal import Decimal
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.web.conftest import BrowserPage
from tests.web.portal_scenario import (
    BRAND_COLOR,
    CUSTOMER,
    EXPECTED_ESTIMATE,
    EXPECTED_ESTIMATE_TOTAL,
    EXPECTED_INVOICE_SUBTOTAL,
    XSS_BRAND,
    XSS_NAME,
    XSS_STEP,
    Portal,
)

BRAND_RGB = "rgb(170, 51, 0)"
assert BRAND_COLOR == "#aa3300"


def dollars(amount: str) -> str:
    """The API's "4.20" as an en-US page shows it: "$4.20"."""
    value = Decimal(amount)
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def table_rows(page: Page, selector: str) -> list[list[str]]:
    rows = page.locator(f"{selector} tbody tr")
    return [
        [cell.strip() for cell in rows.nth(n).locator("th, td").all_inner_texts()]
        for n in range(rows.count())
    ]


def no_xss_ran(page: Page) -> None:
    assert page.evaluate("() => window.__xss") is None


def chart_totals(page: Page) -> dict[str, Decimal]:
    figure = page.locator("figure.chart")
    expect(figure).to_have_attribute("data-chart-state", "rendered")
    sums = page.evaluate(
        """() => window.Chart.getChart(document.querySelector('figure.chart canvas'))
              .data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + b, 0)])"""
    )
    return {label: Decimal(str(total)) for label, total in sums}


def test_customer_sees_its_own_figures_under_the_brand(
    portal: Portal, desktop: BrowserPage, phone: BrowserPage
) -> None:
    page = desktop.page
    link = portal.link()
    pages_html: list[str] = []

    # Opening the link sets an HttpOnly cookie and lands on a URL without the token.
    page.goto(link["url"])
    assert re.fullmatch(rf"{re.escape(portal.server.api_url)}/portal/", page.url)
    (cookie,) = [c for c in page.context.cookies() if c["value"] == link["token"]]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/portal"

    # --- Current period: the brand, the estimate as the API gives it, budget, credit -----
    expect(page.locator(".brand-name")).to_have_text(XSS_BRAND)
    assert page.title().endswith(XSS_BRAND)
    border = page.locator(".site-header").evaluate("e => getComputedStyle(e).borderTopColor")
    assert border == BRAND_RGB
    expect(page.locator(".customer-name")).to_have_text(XSS_NAME)
    estimate = portal.ok("GET", f"/api/v1/customers/{CUSTOMER}/estimate")
    shown = table_rows(page, "table.estimate")
    assert [tuple(row) for row in shown] == EXPECTED_ESTIMATE
    assert [(r[0], r[3]) for r in shown] == [
        (line["component"], dollars(line["amount"])) for line in estimate["lines"]
    ]
    subtotal = page.locator("table.estimate .subtotal")
    expect(subtotal).to_have_text(EXPECTED_ESTIMATE_TOTAL)
    assert dollars(estimate["subtotal"]) == EXPECTED_ESTIMATE_TOTAL
    expect(page.locator("#budget-title + p")).to_have_text("$58.05 of $100.00 used (58.05%)")
    assert page.locator("#budget-progress").get_attribute("value") == "5805"
    balance = portal.ok("GET", f"/api/v1/customers/{CUSTOMER}/credits/balance")["balances"]
    expect(page.locator(".credit-balance")).to_have_text(dollars(balance[0]["balance"]))
    no_xss_ran(page)
    desktop.shot("current")
    pages_html.append(page.content())

    # --- Usage: the chart's totals and the CSV equal the usage API -----------------------
    page.get_by_role("link", name="Usage").click()
    period = portal.period
    window = {"customer_id": CUSTOMER, "start": period.start.isoformat(),
              "end": period.end.isoformat()}  # fmt: skip
    by_meter = portal.ok("GET", "/api/v1/usage", params=window)["rows"]
    assert chart_totals(page) == {r["meter"]: Decimal(r["quantity"]) for r in by_meter}
    assert chart_totals(page)["input_tokens"] == 1_400_000
    step_table = page.locator(".breakdown-step table")
    expect(step_table).to_contain_text(XSS_STEP)
    page.locator("details.chart-table summary").click()
    expect(page.locator("table.daily tfoot")).to_contain_text("1,400,000")
    no_xss_ran(page)
    desktop.shot("usage")
    pages_html.append(page.content())

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    csv_path = download.value.path()
    with Path(csv_path).open(newline="") as file:
        downloaded = list(csv.DictReader(file))
    api_rows = portal.ok(
        "GET",
        "/api/v1/usage",
        params={**window, "group_by": "model,step,tool,source", "interval": "day"},
    )["rows"]
    assert len(api_rows) == 5  # 2 calls × 2 meters + 1 tool call
    columns = ("day", "meter", "model", "step", "tool", "source", "quantity")
    assert sorted(downloaded, key=json.dumps) == sorted(
        ({c: r[c] for c in columns} for r in api_rows), key=json.dumps
    )

    # Switching the chart to models swaps the section in place (htmx) and keeps the URL.
    page.locator("select[name=by]").select_option("model")
    expect(page.locator("figure.chart figcaption")).to_have_text("Daily input_tokens by model")
    expect(page).to_have_url(re.compile(r"by=model"))
    by_model = portal.ok(
        "GET", "/api/v1/usage", params={**window, "group_by": "model", "meter": "input_tokens"}
    )["rows"]
    assert chart_totals(page) == {r["model"]: Decimal(r["quantity"]) for r in by_model}
    desktop.shot("usage-by-model")

    # --- Invoices: list, detail, printable, downloads -----------------------------------
    page.get_by_role("link", name="Invoices").click()
    invoice = portal.ok("GET", f"/api/v1/invoices/{portal.invoice_id}")
    (row,) = table_rows(page, "table.invoices")
    assert row[0] == invoice["number"]
    assert row[2] == "FINALIZED"  # shown in capitals by the stylesheet
    assert row[3] == "UNPAID"  # until Stripe reports a payment
    assert row[4] == dollars(invoice["total"])
    desktop.shot("invoices")
    pages_html.append(page.content())

    page.get_by_role("link", name=invoice["number"]).click()
    lines = table_rows(page, "table.invoice-lines")
    assert [(r[0], r[3]) for r in lines] == [
        (line["description"], dollars(line["amount"])) for line in invoice["lines"]
    ]
    expect(page.locator("table.invoice-lines tfoot")).to_contain_text(EXPECTED_INVOICE_SUBTOTAL)
    expect(page.locator(".invoice-total")).to_have_text(dollars(invoice["total"]))
    expect(page.locator(".invoice-meta .payment-unpaid")).to_have_text("unpaid", ignore_case=True)
    no_xss_ran(page)
    desktop.shot("invoice")
    pages_html.append(page.content())

    with page.expect_download() as download:
        page.get_by_role("link", name="Download JSON").click()
    exported = json.loads(Path(download.value.path()).read_text())
    assert exported == portal.ok("GET", f"/api/v1/invoices/{portal.invoice_id}/export.json")
    assert not {"stripe_sync_status", "stripe_error", "stripe_invoice_id"} & set(exported)

    page.get_by_role("link", name="Printable invoice").click()
    expect(page.locator("body")).to_have_class("portal portal-invoice-print")
    expect(page.locator(".invoice-total")).to_have_text(dollars(invoice["total"]))
    desktop.shot("invoice-print")
    pages_html.append(page.content())

    # --- Nothing internal anywhere -----------------------------------------------------
    costs = [
        dollars(str(Decimal(line[key]) / 100))
        for line in invoice["lines"]
        for key in ("provider_cost_minor", "margin_minor")
        if line["meter"] in ("input_tokens", "output_tokens")
    ]
    assert len(costs) == 4  # input and output tokens have a known provider cost
    internal = {
        *costs,
        invoice["price_book_id"],
        *(line["component_id"] for line in invoice["lines"]),
    }
    visible = {dollars(line["amount"]) for line in invoice["lines"]} | {dollars(invoice["total"])}
    assert not internal & visible, "pick figures where cost and margin differ from amounts"
    # The Stripe copy's sync state is the builder's concern, never the customer's.
    assert invoice["stripe_sync_status"] == "not_connected"
    for html in pages_html:
        assert not re.search(r"provider|margin|\bcost\b|stripe|not.connected", html, re.IGNORECASE)
        assert not [value for value in internal if value in html]
        assert "agentmeter" not in html.lower()  # the builder's brand only
        assert "Globex" not in html
    assert desktop.problems == []

    # --- Phone width --------------------------------------------------------------------
    phone.page.goto(portal.link()["url"])
    expect(phone.page.locator("table.estimate .subtotal")).to_have_text(EXPECTED_ESTIMATE_TOTAL)
    width = phone.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, "no sideways scrolling of the page at phone width"
    box = phone.page.locator("table.estimate .subtotal").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390, "the total is on screen"
    phone.shot("current")
    phone.page.goto(f"{portal.server.api_url}/portal/usage")
    chart_totals(phone.page)
    phone.shot("usage")
    phone.page.goto(f"{portal.server.api_url}/portal/invoices/{portal.invoice_id}")
    phone.shot("invoice")
    assert phone.problems == []

    # --- Signing out goes through the CSRF-checked form ----------------------------------
    page.goto(f"{portal.server.api_url}/portal/")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("h1")).to_have_text("Signed out")
    desktop.shot("signed-out")
    page.goto(f"{portal.server.api_url}/portal/")
    expect(page.locator("h1")).to_have_text("Link not valid")
