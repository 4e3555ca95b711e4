"""The printable invoice page as a customer sees it, in a real headless Chromium.

Against a running `agentmeter serve` on SQLite and PostgreSQL: a customer and a price book
through the REST API, November 2026 spans through the real OTLP/HTTP endpoint (protobuf
`ExportTraceServiceRequest`), the brand through the billing settings, then a billing run,
a waived exception and finalization, all over REST. The finalized invoice's
`invoice.html` is then opened in Debian's Chromium (Playwright, never its own browser
download) and checked for what a person sees: brand, number, lines, total, the brand
colour, and no provider cost or margin anywhere.

The month (USD, cents, each line rounded once, half up):
- globex: gpt-4o chats of 400 000 / 100 000, 600 000 / 50 000 and 234 567 / 10 000
  input / output tokens, ending Nov 3, Nov 17 and Nov 28 2026.
- Price book "standard" v1: "gpt-4o input" input_tokens at 3.00 per 1 000 000, and
  "platform", a flat fee of 49.00. Output tokens are priced by nothing: a blocking
  unpriced_usage exception, waived before finalizing, and no line on the invoice.
- Lines: input 1 234 567 × 3.00 / 10^6 = 3.703701 → 3.70; platform 49.00.
  Total 3.70 + 49.00 = 52.70.
- The builder's view only: provider cost of the input at gpt-4o's public 2.50 per 10^6 =
  3.0864175 → 3.09, margin 3.70 − 3.09 = 0.61; invoice margin 52.70 − 3.09 = 49.61.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from playwright.sync_api import Browser, Page, expect

from agentmeter.tables import to_unix_nano
from tests.conftest import RunningServer

PERIOD = "2026-11"
CUSTOMER_ID = "globex"
CUSTOMER_NAME = "Globex Corporation"
BRAND_NAME = "Acme Agents"
BRAND_COLOR = "#aa3300"
BRAND_RGB = "rgb(170, 51, 0)"

COMPONENTS: list[dict[str, Any]] = [
    {
        "name": "gpt-4o input",
        "meter": "input_tokens",
        "filters": {"model": "gpt-4o"},
        "charge": "per_unit",
        "unit_price": "3.00",
        "per_units": 1_000_000,
    },
    {"name": "platform", "charge": "flat_fee", "amount": "49.00"},
]

# (trace, span, end, input tokens, output tokens), all of customer globex on gpt-4o.
CALLS: list[tuple[int, int, datetime, int, int]] = [
    (1, 1, datetime(2026, 11, 3, 9, 30, tzinfo=UTC), 400_000, 100_000),
    (1, 2, datetime(2026, 11, 17, 14, 0, tzinfo=UTC), 600_000, 50_000),
    (2, 3, datetime(2026, 11, 28, 23, 15, tzinfo=UTC), 234_567, 10_000),
]

# Hand-worked, as the customer sees them: (description, quantity, unit price, amount).
EXPECTED_LINES = [
    ("gpt-4o input", "1234567", "3.00 / 1,000,000", "3.70"),
    ("platform", "1", "49.00", "49.00"),
]
EXPECTED_TOTAL = "52.70"

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- Sending spans -----------------------------------------------------------------------


def _value(value: str | int) -> AnyValue:
    return AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)


def _span(trace: int, span: int, end: datetime, input_tokens: int, output_tokens: int) -> Span:
    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
        "agentmeter.customer.id": CUSTOMER_ID,
    }
    end_nano = to_unix_nano(end)
    return Span(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span.to_bytes(8, "big"),
        name="chat gpt-4o",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=end_nano - 1_500_000_000,
        end_time_unix_nano=end_nano,
        attributes=[KeyValue(key=k, value=_value(v)) for k, v in attributes.items()],
    )


def send_spans(server: RunningServer) -> None:
    """POST the month's spans to /v1/traces as OTLP protobuf."""
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[KeyValue(key="service.name", value=_value("support-agent"))]
                ),
                scope_spans=[ScopeSpans(spans=[_span(*call) for call in CALLS])],
            )
        ]
    )
    response = httpx.post(
        server.traces_url,
        content=request.SerializeToString(),
        headers={**server.ingest_headers, "content-type": "application/x-protobuf"},
        timeout=30,
    )
    assert response.status_code == 200, response.content
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    assert answer.partial_success.rejected_spans == 0, answer


# --- Talking to the API ------------------------------------------------------------------


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def run_billing(api: httpx.Client) -> None:
    """POST a billing run for November and poll it until it is no longer running."""
    run: dict[str, Any] = ok(api.post("/api/v1/billing-runs", json={"period": PERIOD}), 202)
    deadline = time.monotonic() + 120
    while run["status"] == "running":
        assert time.monotonic() < deadline, f"billing run still running: {run}"
        time.sleep(0.05)
        run = ok(api.get(f"/api/v1/billing-runs/{run['id']}"))
    assert run["status"] == "completed", run
    assert run["drafted"] == 1, run


def finalized_invoice(server: RunningServer) -> dict[str, Any]:
    """Set up the month over REST and OTLP/HTTP; the finalized invoice, builder's view."""
    with httpx.Client(base_url=server.api_url, headers=server.admin_headers, timeout=30) as api:
        customer = {"id": CUSTOMER_ID, "name": CUSTOMER_NAME, "email": "billing@globex.test"}
        ok(api.post("/api/v1/customers", json=customer), 201)
        book = ok(
            api.post("/api/v1/price-books", json={"name": "standard", "currency": "USD"}), 201
        )
        ok(
            api.post(
                f"/api/v1/price-books/{book['id']}/versions",
                json={"effective_from": "2026-01-01T00:00:00Z", "components": COMPONENTS},
            ),
            201,
        )
        send_spans(server)
        brand = {"brand_name": BRAND_NAME, "brand_color": BRAND_COLOR}
        settings = ok(api.patch("/api/v1/billing-settings", json=brand))
        assert (settings["brand_name"], settings["brand_color"]) == (BRAND_NAME, BRAND_COLOR)

        run_billing(api)
        (draft,) = ok(api.get("/api/v1/invoices", params={"period": PERIOD}))
        assert (draft["customer_id"], draft["status"]) == (CUSTOMER_ID, "draft")

        # The unpriced output tokens block finalizing until waived.
        found = ok(api.get("/api/v1/exceptions", params={"invoice_id": draft["id"]}))
        blocking = [e for e in found if e["severity"] == "blocking" and e["status"] == "open"]
        assert {(e["type"], e["evidence"]["meter"]) for e in blocking} == {
            ("unpriced_usage", "output_tokens")
        }, found
        for exception in blocking:
            body = {"status": "waived", "note": "test"}
            waived = ok(api.patch(f"/api/v1/exceptions/{exception['id']}", json=body))
            assert waived["status"] == "waived"

        final: dict[str, Any] = ok(
            api.post(
                f"/api/v1/invoices/{draft['id']}/finalize",
                json={"before_period_end": True, "reason": "test: November is not over"},
            )
        )
        assert final["status"] == "finalized"
        # The builder's view carries cost and margin, so there is something to keep out.
        assert final["provider_cost_minor"] is not None and final["margin_minor"] is not None
        return final


def builder_only_figures(invoice: dict[str, Any]) -> set[str]:
    """Provider costs and margins of the invoice and its lines, as decimal text, less the
    figures the customer is shown anyway (a flat fee costs nothing, so its margin is its
    amount: 49.00) and zeros."""
    minors = [invoice["provider_cost_minor"], invoice["margin_minor"]]
    for line in invoice["lines"]:
        minors += [line["provider_cost_minor"], line["margin_minor"]]
    figures = {f"{minor / 100:.2f}" for minor in minors if minor}
    shown = {invoice["subtotal"], invoice["total"]}
    for line in invoice["lines"]:
        shown |= {line["amount"], line["unit_price"]}
    return figures - shown


# --- The browser -------------------------------------------------------------------------


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh context of the session's Debian Chromium (`tests.conftest.browser`)."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
    finally:
        context.close()


def visible_figure(text: str, figure: str) -> bool:
    """Whether `figure` ("0.61") stands on its own in `text`, not inside "10.615"."""
    return re.search(rf"(?<![\d.]){re.escape(figure)}(?![\d])", text) is not None


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, data[:16]
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# --- Test --------------------------------------------------------------------------------


def test_customer_sees_the_branded_invoice(
    server: RunningServer, page: Page, tmp_path: Path
) -> None:
    invoice = finalized_invoice(server)
    number = invoice["number"]
    year = invoice["finalized_at"][:4]
    assert number == f"INV-{year}-000001"
    hidden = builder_only_figures(invoice)
    assert hidden == {"3.09", "0.61", "49.61"}, invoice  # as worked out by hand

    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.set_extra_http_headers(server.admin_headers)
    url = f"{server.api_url}/api/v1/invoices/{invoice['id']}/invoice.html"
    response = page.goto(url)
    assert response is not None
    assert response.status == 200, response.text()
    assert response.headers["content-type"].startswith("text/html")
    # Nothing but the page itself: no fonts, logos or scripts from elsewhere.
    assert requested == [url]

    expect(page).to_have_title(f"{BRAND_NAME} invoice {number}")

    # The header: brand name in the brand colour, over a border in the brand colour.
    header = page.locator("header")
    heading = header.locator("h1")
    expect(heading).to_have_text(BRAND_NAME)
    expect(heading).to_be_visible()
    expect(heading).to_have_css("color", BRAND_RGB)
    expect(header).to_have_css("border-bottom-color", BRAND_RGB)
    expect(header).to_have_css("border-bottom-style", "solid")
    meta = header.locator(".meta")
    expect(meta).to_contain_text(f"Invoice {number}")
    # As shown: the stylesheet upper-cases the status.
    expect(meta.locator(".status")).to_have_text("FINALIZED", use_inner_text=True)
    expect(meta).to_contain_text(f"Customer: {CUSTOMER_NAME} ({CUSTOMER_ID})")
    expect(meta).to_contain_text("Period: 2026-11-01 to 2026-12-01")
    expect(meta).to_contain_text(f"Issued: {invoice['finalized_at'][:10]}")

    # The lines, in order; the unpriced output tokens are not among them.
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(len(EXPECTED_LINES))
    for index, (description, quantity, unit_price, amount) in enumerate(EXPECTED_LINES):
        cells = rows.nth(index).locator("td")
        expect(cells).to_have_text([description, quantity, unit_price, amount])
        expect(cells.nth(0)).to_be_visible()
    expect(page.locator("table thead")).to_contain_text("Amount (USD)")

    total = page.locator("tfoot tr.total")
    expect(total).to_be_visible()
    expect(total.locator("td")).to_have_text(["Total due", f"{EXPECTED_TOTAL} USD"])
    expect(total.locator("td").nth(1)).to_have_css("border-top-color", BRAND_RGB)
    # Subtotal and total only: no prepaid credit was granted.
    footer_rows = page.locator("tfoot tr")
    expect(footer_rows).to_have_count(2)
    expect(footer_rows.first.locator("td")).to_have_text(["Subtotal", EXPECTED_TOTAL])

    # No provider cost or margin, neither as words nor as figures.
    text = page.inner_text("body")
    assert BRAND_NAME in text and EXPECTED_TOTAL in text, text
    for word in ("margin", "provider", "cost"):
        assert word not in text.lower(), text
    shown = {figure for figure in hidden if visible_figure(text, figure)}
    assert shown == set(), text
    html = page.content()
    assert not any(visible_figure(html, figure) for figure in hidden)

    shot = tmp_path / "invoice.png"
    page.screenshot(path=shot, full_page=True)
    data = shot.read_bytes()
    width, height = png_size(data)
    assert width >= 800 and height >= 300, (width, height)
    assert len(data) > 5_000, len(data)  # a rendered page, not a blank image

    # Printed, the total is still there.
    page.emulate_media(media="print")
    assert page.evaluate("matchMedia('print').matches") is True
    expect(total).to_be_visible()
    expect(total).to_contain_text(f"{EXPECTED_TOTAL} USD")
    expect(heading).to_have_css("color", BRAND_RGB)
    printed = tmp_path / "invoice-print.png"
    page.screenshot(path=printed, full_page=True)
    assert png_size(printed.read_bytes()) >= (1, 1)
