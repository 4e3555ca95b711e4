"""The dashboard's long lists a page at a time (issue 13): the customers list searched in
SQL and paged, the billing page's drafts and finalized invoices paged apart, every row on
exactly one page when the Next links are walked, the search kept across pages with `%` and
`_` taken literally, bad page numbers refused with a page that says why, and the customer
to move or attribute usage to typed in (no select of every customer) and checked."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import BillingException, Budget, Customer, Invoice, to_unix_nano
from billing_api.invoicing.repository import new_id
from billing_api.invoicing.states import (
    ExceptionKind,
    ExceptionStatus,
    InvoiceStatus,
    Severity,
)
from billing_api.periods import Period, period_containing, previous_periods
from billing_api.pricing import service as pricing
from billing_api.pricing.components import ChargeModel, Component
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api import callers
from tests.web.conftest import BrowserPage, LiveApp
from tests.web.dashboard_helpers import Staff, browser_client, csrf, make_staff, sign_in

PERIOD = previous_periods(period_containing(utcnow()), 1)[0]


def _customers(engine: Engine, tenant_id: str, rows: Sequence[tuple[str, str, str | None]]) -> None:
    with Session(engine) as session, session.begin():
        for id_, name, email in rows:
            session.add(Customer(tenant_id=tenant_id, id=id_, name=name, email=email))


def _numbered(count: int, prefix: str = "c") -> list[tuple[str, str, str | None]]:
    return [(f"{prefix}{n:03d}", f"Customer {n}", f"ap{n}@{prefix}.test") for n in range(count)]


def _invoices(
    engine: Engine, tenant_id: str, period: Period, customer_ids: Sequence[str], status: str
) -> list[str]:
    """An invoice of each customer for `period` (as a run drafts them; finalized ones
    numbered); their ids."""
    invoices = [
        Invoice(
            id=new_id(),
            tenant_id=tenant_id,
            customer_id=customer_id,
            period=period.label,
            period_start=period.start,
            period_end=period.end,
            status=status,
            number=None if status == InvoiceStatus.DRAFT else f"{status}-{customer_id}",
            currency="USD",
            subtotal_minor=100 * n,
            total_minor=100 * n,
        )
        for n, customer_id in enumerate(customer_ids)
    ]
    ids = [i.id for i in invoices]
    with Session(engine) as session, session.begin():
        session.add_all(invoices)
    return ids


def _walk(page: Page, rows: str, noun: str) -> list[str]:
    """Every row's `data-*` key over all pages, following the Next links from here."""
    seen: list[str] = []
    attribute = rows.rsplit("[", 1)[1].rstrip("]")
    nav = page.locator(f'nav.pager[aria-label="Pages of {noun}"]')
    while True:
        seen += [r.get_attribute(attribute) or "" for r in page.locator(rows).all()]
        following = nav.get_by_role("link", name=f"Next page of {noun}")
        if not following.count():
            return seen
        following.click()


@pytest.fixture
def staff(live_app: LiveApp) -> Staff:
    return make_staff(live_app.engine)


def test_customers_list_pages_through_every_customer_once(
    live_app: LiveApp, staff: Staff, desktop: BrowserPage, phone: BrowserPage
) -> None:
    _customers(live_app.engine, staff.tenant.tenant_id, _numbered(123))
    page = desktop.page
    sign_in(page, live_app.url, staff.viewer)
    page.get_by_role("link", name="Customers", exact=True).click()
    nav = page.locator('nav.pager[aria-label="Pages of customers"]')
    expect(nav.locator(".pager-count")).to_have_text("1–50 of 123 customers (page 1 of 3)")
    expect(page.locator("table.customers-list caption")).to_have_text("123 customers")
    expect(page.locator("tbody tr[data-customer]")).to_have_count(50)
    # On the first page "Previous" is shown but is no link.
    expect(nav.get_by_role("link", name="Previous page of customers")).to_have_count(0)
    expect(nav.locator('[aria-disabled="true"]')).to_have_text("Previous page of customers")
    desktop.shot("customers-first")

    seen = _walk(page, "tbody tr[data-customer]", "customers")
    assert seen == [f"c{n:03d}" for n in range(123)]  # each once, in id order
    assert page.url.endswith("/dashboard/customers?page=3")
    expect(nav.locator(".pager-count")).to_have_text("101–123 of 123 customers (page 3 of 3)")
    expect(nav.get_by_role("link", name="Next page of customers")).to_have_count(0)
    nav.get_by_role("link", name="Previous page of customers").click()
    assert page.url.endswith("/dashboard/customers?page=2")
    expect(page.locator("tbody tr[data-customer]").first).to_have_attribute("data-customer", "c050")
    nav.get_by_role("link", name="Previous page of customers").click()
    assert page.url.endswith("/dashboard/customers")  # page 1 has no page parameter
    assert desktop.problems == []

    # At phone width the page does not scroll sideways; the table scrolls within itself.
    sign_in(phone.page, live_app.url, staff.viewer)
    phone.page.goto(f"{live_app.url}/dashboard/customers?page=2")
    following = phone.page.locator("nav.pager").get_by_role("link", name="Next page of customers")
    box = following.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390, box
    assert phone.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    phone.shot("customers-page-2")
    assert phone.problems == []


def test_customers_search_runs_across_pages_and_wildcards_match_literally(
    live_app: LiveApp, staff: Staff, desktop: BrowserPage
) -> None:
    _customers(
        live_app.engine,
        staff.tenant.tenant_id,
        [
            *((f"w{n:03d}", f"Widget Works {n}", None) for n in range(60)),
            ("pct", "100% Off Ltd", None),
            ("p100", "100 Off Ltd", None),
            ("snake_case", "Snake", None),
            ("snakexcase", "Snake X", None),
            ("mixed", "Mixed", "Ops@Example.TEST"),
        ],
    )
    page = desktop.page
    sign_in(page, live_app.url, staff.viewer)
    page.goto(f"{live_app.url}/dashboard/customers")
    search = page.get_by_role("searchbox", name="Search")

    def searched(text: str) -> list[str]:
        search.fill(text)
        page.get_by_role("button", name="Search").click()
        expect(search).to_have_value(text)
        return [
            r.get_attribute("data-customer") or ""
            for r in page.locator("tbody tr[data-customer]").all()
        ]

    # Any case; the search stays in the Previous / Next links.
    assert searched("widget WORKS") == [f"w{n:03d}" for n in range(50)]
    expect(page.locator("table.customers-list caption")).to_have_text(
        "60 customers matching “widget WORKS”"
    )
    nav = page.locator("nav.pager")
    expect(nav.locator(".pager-count")).to_have_text("1–50 of 60 customers (page 1 of 2)")
    nav.get_by_role("link", name="Next page of customers").click()
    assert re.search(r"\?q=widget\+WORKS&page=2$", page.url), page.url
    expect(search).to_have_value("widget WORKS")
    rows = page.locator("tbody tr[data-customer]")
    expect(rows).to_have_count(10)
    assert [r.get_attribute("data-customer") for r in rows.all()] == [
        f"w{n:03d}" for n in range(50, 60)
    ]
    desktop.shot("search-page-2")

    assert searched("%") == ["pct"]
    assert searched("100%") == ["pct"]
    assert searched("_") == ["snake_case"]
    assert searched("snake_") == ["snake_case"]
    assert searched("ops@example.test") == ["mixed"]
    assert searched("  Snake ") == ["snake_case", "snakexcase"]  # trimmed
    assert searched("nobody") == []
    expect(page.locator("tbody")).to_have_text("No customers match.")
    expect(nav).to_have_count(0)
    page.get_by_role("link", name="Show all").click()
    expect(page.locator("tbody tr[data-customer]")).to_have_count(50)
    assert desktop.problems == []


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        pytest.param(
            "page=abc",
            422,
            "page: a page number is a whole number from 1, not 'abc'",
            id="not a number",
        ),
        pytest.param("page=-1", 422, "not '-1'", id="negative"),
        pytest.param("page=0", 422, "not '0'", id="zero"),
        pytest.param("page=1.5", 422, "not '1.5'", id="fraction"),
        pytest.param("page=%D9%A3", 422, "not '٣'", id="non-ASCII digit"),
        pytest.param("page=" + "9" * 5000, 422, "a page number is a whole number", id="huge"),
        pytest.param("q=a%00b", 422, "a search cannot contain a NUL character", id="NUL"),
        pytest.param(
            "page=4",
            404,
            "there is no page 4 of these customers: 123 fill 3 pages",
            id="past the end",
        ),
        pytest.param(
            "q=zzz&page=2",
            404,
            "there is no page 2 of these customers: 0 fill 1 page",
            id="past the end of no match",
        ),
    ],
)
def test_bad_page_numbers_are_refused_with_a_reason(
    live_app: LiveApp, staff: Staff, desktop: BrowserPage, query: str, status: int, message: str
) -> None:
    _customers(live_app.engine, staff.tenant.tenant_id, _numbered(123))
    page = desktop.page
    sign_in(page, live_app.url, staff.viewer)
    response = page.goto(f"{live_app.url}/dashboard/customers?{query}")
    assert response is not None and response.status == status
    expect(page.locator(f"body.error-{status} .error-page")).to_contain_text(message)


def test_an_empty_page_number_is_the_first_page(
    live_app: LiveApp, staff: Staff, desktop: BrowserPage
) -> None:
    _customers(live_app.engine, staff.tenant.tenant_id, _numbered(3))
    page = desktop.page
    sign_in(page, live_app.url, staff.viewer)
    response = page.goto(f"{live_app.url}/dashboard/customers?q=&page=")
    assert response is not None and response.status == 200
    expect(page.locator(".pager-count")).to_have_text("1–3 of 3 customers")
    expect(page.locator("nav.pager").get_by_role("link")).to_have_count(0)  # one page


def test_billing_page_pages_drafts_and_closed_invoices_apart(
    live_app: LiveApp, staff: Staff, desktop: BrowserPage, phone: BrowserPage
) -> None:
    tenant_id = staff.tenant.tenant_id
    _customers(live_app.engine, tenant_id, _numbered(175))
    drafted = [f"c{n:03d}" for n in range(120)]
    draft_ids = _invoices(live_app.engine, tenant_id, PERIOD, drafted, InvoiceStatus.DRAFT)
    closed = [f"c{n:03d}" for n in range(120, 175)]
    _invoices(live_app.engine, tenant_id, PERIOD, closed[:50], InvoiceStatus.FINALIZED)
    _invoices(live_app.engine, tenant_id, PERIOD, closed[50:], InvoiceStatus.VOID)
    with Session(live_app.engine) as session, session.begin():  # c070's draft: 2 open, 1 not
        for n, status in enumerate((ExceptionStatus.OPEN, ExceptionStatus.OPEN,
                                    ExceptionStatus.WAIVED)):  # fmt: skip
            session.add(
                BillingException(
                    id=new_id(),
                    tenant_id=tenant_id,
                    scope=f"invoice:{draft_ids[70]}",
                    invoice_id=draft_ids[70],
                    period=PERIOD.label,
                    customer_id="c070",
                    type=ExceptionKind.USAGE_SPIKE,
                    severity=Severity.WARNING,
                    status=status,
                    fingerprint=str(n),
                    message="spike",
                    evidence={},
                )
            )
    page = desktop.page
    sign_in(page, live_app.url, staff.billing)
    page.goto(f"{live_app.url}/dashboard/billing?period={PERIOD.label}")
    drafts_nav = page.locator('nav.pager[aria-label="Pages of drafts"]')
    closed_nav = page.locator('nav.pager[aria-label="Pages of invoices"]')
    expect(drafts_nav.locator(".pager-count")).to_have_text("1–50 of 120 drafts (page 1 of 3)")
    expect(closed_nav.locator(".pager-count")).to_have_text("1–50 of 55 invoices (page 1 of 2)")
    queue = page.locator("table.review-queue tbody tr")
    expect(queue).to_have_count(50)
    expect(page.locator("tr.flagged")).to_have_count(0)  # c070 is on page 2

    # Paging the finalized and void list keeps the period and the drafts' page.
    closed_nav.get_by_role("link", name="Next page of invoices").click()
    assert page.url.endswith(f"?period={PERIOD.label}&closed_page=2"), page.url
    expect(closed_nav.locator(".pager-count")).to_have_text("51–55 of 55 invoices (page 2 of 2)")
    expect(page.locator("section[aria-labelledby=others-title] tbody tr")).to_have_count(5)
    expect(page.locator("section[aria-labelledby=others-title] tbody")).to_contain_text("void")

    links = "table.review-queue tbody th a"
    seen: list[str] = []
    while True:
        seen += page.locator(links).all_inner_texts()
        expect(page.locator("section[aria-labelledby=others-title] tbody tr")).to_have_count(5)
        following = drafts_nav.get_by_role("link", name="Next page of drafts")
        if not following.count():
            break
        following.click()
        if page.url.endswith("&page=2"):
            flagged = page.locator("tr.flagged")
            expect(flagged).to_have_count(1)
            expect(flagged).to_contain_text("c070")
            expect(flagged).to_contain_text("2 open")
            desktop.shot("billing-drafts-page-2")
    assert seen == drafted  # every draft once, by customer id
    assert page.url.endswith(f"?period={PERIOD.label}&closed_page=2&page=3"), page.url
    assert desktop.problems == []

    sign_in(phone.page, live_app.url, staff.billing)
    phone.page.goto(f"{live_app.url}/dashboard/billing?period={PERIOD.label}&page=2")
    expect(phone.page.locator("tr.flagged")).to_have_count(1)
    assert phone.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    phone.shot("billing-page-2")
    assert phone.problems == []

    with browser_client(page, live_app.url) as client:
        for query, expected in (("page=x", 422), ("closed_page=3", 404), ("page=4", 404)):
            answer = client.get(f"/dashboard/billing?period={PERIOD.label}&{query}")
            assert answer.status_code == expected, (query, answer.text)
            assert f'class="error error-{expected}"' in answer.text


def test_usage_moves_to_a_typed_customer_id_checked_on_the_server(
    live_app: LiveApp, staff: Staff, desktop: BrowserPage
) -> None:
    tenant_id = staff.tenant.tenant_id
    _customers(live_app.engine, tenant_id, _numbered(60))
    with Session(live_app.engine) as session, session.begin():
        for id_, kind, evidence in (
            ("exc-ghost", ExceptionKind.UNREGISTERED_CUSTOMER, {"customer_id": "ghost"}),
            ("exc-loose", ExceptionKind.UNATTRIBUTED_USAGE, {"trace_ids": ["t1"]}),
        ):
            session.add(
                BillingException(
                    id=id_,
                    tenant_id=tenant_id,
                    scope=f"run:{PERIOD.label}",
                    invoice_id=None,
                    period=PERIOD.label,
                    customer_id=evidence.get("customer_id", ""),
                    type=kind,
                    severity=Severity.BLOCKING,
                    fingerprint=evidence.get("customer_id", id_),
                    message=f"{kind} in a run",
                    evidence=evidence,
                )
            )
    page = desktop.page
    sign_in(page, live_app.url, staff.billing)
    page.goto(f"{live_app.url}/dashboard/billing?period={PERIOD.label}")
    exception = page.locator('.run-exception[data-exception="unregistered_customer"]')
    expect(exception.locator("select, option")).to_have_count(0)  # no list of every customer
    field = exception.get_by_label("Or move the usage to customer id")

    field.fill("c00%")  # not an id, though it would match c000 as a LIKE pattern
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        exception.get_by_role("button", name="Move usage").click()
    assert posted.value.status == 422
    field = page.locator(".run-exception").get_by_label("Or move the usage to customer id")
    expect(field).to_have_value("c00%")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#err-customer-exc-ghost")).to_have_text(
        "no customer 'c00%' is registered (the Customers page lists them)"
    )
    desktop.shot("move-refused")
    with browser_client(page, live_app.url) as client:
        empty = client.post(
            "/dashboard/billing/exceptions/exc-ghost/map",
            data={**csrf(client), "to_customer_id": "  "},
        )
        assert empty.status_code == 422
        assert "enter the id of a registered customer" in empty.text
        nul = client.post(
            "/dashboard/billing/exceptions/exc-ghost/map",
            data={**csrf(client), "to_customer_id": "c042\x00"},
        )
        assert nul.status_code == 422
        assert "no customer &#39;c042\\x00&#39; is registered" in nul.text
    with Session(live_app.engine) as session:
        still = session.get(BillingException, "exc-ghost")
        assert still is not None and still.status == ExceptionStatus.OPEN
        loose_still = session.get(BillingException, "exc-loose")
        assert loose_still is not None and loose_still.status == ExceptionStatus.OPEN

    # Attributing customer-less usage checks the typed id the same way.
    loose = page.locator('.run-exception[data-exception="unattributed_usage"]')
    expect(loose.locator("select, option")).to_have_count(0)
    loose.get_by_label("Attribute to customer id").fill("nobody")
    loose.get_by_role("button", name="Attribute usage").click()
    expect(page.locator("#err-customer-exc-loose")).to_have_text(
        "no customer 'nobody' is registered (the Customers page lists them)"
    )
    expect(page.locator("body.dashboard-billing")).to_be_visible()

    field = page.locator(".run-exception").get_by_label("Or move the usage to customer id")
    field.fill(" c042 ")
    field.press("Enter")
    expect(page.locator(".run-exception")).to_have_count(1)
    expect(page.locator(".run-exception")).to_have_attribute("data-exception", "unattributed_usage")
    assert page.url.endswith(f"/dashboard/billing?period={PERIOD.label}#unattributed")
    with Session(live_app.engine) as session:
        settled = session.get(BillingException, "exc-ghost")
        assert settled is not None and settled.status == ExceptionStatus.RESOLVED
        assert settled.note == "customer id 'ghost' mapped to 'c042'"
        assert session.scalars(select(Customer.id).where(Customer.id == "ghost")).all() == []
    # The browser reports the refused post's status; nothing else.
    assert [p for p in desktop.problems if "status of 422" not in p] == []


def test_overview_pages_customers_flagged_first(
    live_app: LiveApp, staff: Staff, desktop: BrowserPage
) -> None:
    """The overview's table: every customer once over its pages, those needing attention
    first; the totals count every customer, not the page."""
    tenant_id = staff.tenant.tenant_id
    _customers(live_app.engine, tenant_id, _numbered(73))
    admin = callers.staff(tenant_id)
    with Session(live_app.engine) as session, session.begin():
        book = pricing.create_price_book(session, admin, "list", "USD")
        per_million = Component(name="input", meter="input_tokens", charge=ChargeModel.PER_UNIT,
                                unit_price=Decimal("10"), per_units=1_000_000)  # fmt: skip
        pricing.create_version(session, admin, book.id, PERIOD.start, [per_million])
        session.add(Budget(tenant_id=tenant_id, customer_id="c070", currency="USD",
                           limit_minor=1, thresholds=[100]))  # fmt: skip
    records = [
        UsageRecord(
            trace_id=f"{n:032x}",
            span_id=f"{n:016x}",
            meter="input_tokens",
            quantity=1_000_000,
            customer_id=customer_id,
            time_unix_nano=to_unix_nano(utcnow()),
        )
        for n, customer_id in enumerate(["c070", "c001"], start=1)
    ]
    SqlUsageSink(live_app.engine).write(tenant_id, UsageBatch(records))
    page = desktop.page
    sign_in(page, live_app.url, staff.billing)
    nav = page.locator('nav.pager[aria-label="Pages of customers"]')
    expect(nav.locator(".pager-count")).to_have_text("1–50 of 73 customers (page 1 of 2)")
    expect(page.locator('[data-total="estimated"]')).to_have_text("$20.00")
    first = page.locator("table.customers-figures tbody tr").first
    expect(first).to_have_attribute("data-customer", "c070")  # over budget: first
    expect(first).to_have_class("flagged")
    seen = _walk(page, "table.customers-figures tbody tr[data-customer]", "customers")
    assert seen == ["c070", *(f"c{n:03d}" for n in range(73) if n != 70)]
    expect(page.locator('[data-total="estimated"]')).to_have_text("$20.00")  # every page
    desktop.shot("overview-page-2")
    assert desktop.problems == []
