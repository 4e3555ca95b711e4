"""What a customer sees of its own account, read through the same services as the REST
API: the estimate from rating, usage from the usage domain, invoices (and their exports)
from invoicing, budget and credit from theirs. Nothing here queries the store itself, so
the portal cannot disagree with the API or an invoice.

Every function takes a `Caller`; its customer scope picks the customer (staff may name
one). The values returned carry no provider cost, margin or internal price id: they are
the customer's view whoever asks.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from sqlalchemy.orm import Session

from agentmeter.clock import as_utc
from agentmeter.tables import Invoice
from billing_api.auth import Caller
from billing_api.budgets.service import BudgetStatus, budget_progress
from billing_api.credits.service import balance
from billing_api.customers.service import get_customer
from billing_api.errors import NotFoundError, UnprocessableError
from billing_api.invoicing import repository as invoices
from billing_api.invoicing import service as invoicing
from billing_api.invoicing.service import ISSUED
from billing_api.invoicing.views import InvoiceDocument
from billing_api.periods import Period, period_containing, previous_periods
from billing_api.rating.service import estimate_period
from billing_api.stripe.states import PaymentStatus
from billing_api.usage.service import UsageAmount, UsageSelection, query_usage

# Breakdown tables of the usage page, in this order.
BREAKDOWNS = ("step", "model", "tool", "source")


class UsageRange(StrEnum):
    """The periods the usage page switches between."""

    THIS_PERIOD = "this_period"
    LAST_PERIOD = "last_period"
    LAST_30_DAYS = "last_30_days"
    LAST_90_DAYS = "last_90_days"
    LAST_12_MONTHS = "last_12_months"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


class SeriesBy(StrEnum):
    """What one series of the daily chart is: a meter, or a model (of one meter)."""

    METER = "meter"
    MODEL = "model"


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """A line of an invoice or of the running estimate (which reads as the invoice will)."""

    description: str
    meter: str | None
    quantity: Decimal
    unit_price: Decimal | None
    per_units: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class CurrentPeriod:
    """The customer's current period so far."""

    customer_id: str
    customer_name: str
    period: Period
    currency: str
    lines: list[ChargeLine]
    subtotal_minor: int
    budget: BudgetStatus | None
    credit_balance_minor: int


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """A quantity of one meter under one value of a dimension (or one day)."""

    meter: str
    key: str
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class DailySeries:
    """The daily chart: one value per day of `days` for each series, zeros included."""

    days: list[date]
    series: dict[str, list[Decimal]]

    def total(self, label: str) -> Decimal:
        return sum(self.series[label], Decimal(0))


@dataclass(frozen=True, slots=True)
class InvoiceView:
    """An issued invoice as its customer sees it: whether it is paid, but not where its
    Stripe copy stands (`stripe_sync_status`, `stripe_error` are the builder's concern)."""

    id: str
    number: str | None
    status: str
    payment_status: PaymentStatus
    period: Period
    currency: str
    subtotal_minor: int
    credits_minor: int
    total_minor: int
    finalized_at: datetime | None
    lines: list[ChargeLine]


def customer_name(session: Session, caller: Caller) -> str:
    """The name of the caller's customer, for the page header."""
    return get_customer(session, caller, caller.customer()).name


def current_period(session: Session, caller: Caller, now: datetime) -> CurrentPeriod:
    """Usage and estimated charges of the current period so far, budget and credit."""
    customer = get_customer(session, caller, caller.customer())
    rated = estimate_period(session, caller.tenant_id, customer.id, now)
    credit = balance(session, caller, customer.id, now)
    return CurrentPeriod(
        customer_id=customer.id,
        customer_name=customer.name,
        period=rated.period,
        currency=rated.currency,
        lines=[
            ChargeLine(
                description=line.component_name,
                meter=line.meter,
                quantity=line.quantity,
                unit_price=line.unit_price,
                per_units=line.per_units,
                amount_minor=line.amount_minor,
            )
            for line in rated.lines
        ],
        subtotal_minor=rated.subtotal_minor,
        budget=budget_progress(session, caller, rated),
        credit_balance_minor=credit.get(rated.currency, 0),
    )


def usage_window(session: Session, caller: Caller, which: UsageRange, now: datetime) -> Period:
    """The half-open UTC interval a usage range covers at `now` (whole days)."""
    billing_day = get_customer(session, caller, caller.customer()).billing_day
    this = period_containing(now, billing_day)
    if which is UsageRange.THIS_PERIOD:
        return this
    if which is UsageRange.LAST_PERIOD:
        return previous_periods(this, 1, billing_day)[0]
    tomorrow = datetime.combine(as_utc(now).date() + timedelta(days=1), datetime.min.time(), UTC)
    days = {UsageRange.LAST_30_DAYS: 30, UsageRange.LAST_90_DAYS: 90}.get(which, 365)
    return Period(tomorrow - timedelta(days=days), tomorrow)


def _usage(
    session: Session,
    caller: Caller,
    window: Period,
    group_by: tuple[str, ...] = (),
    *,
    by_day: bool = False,
    meter: str | None = None,
) -> list[UsageAmount]:
    selection = UsageSelection(
        customer_id=caller.customer(),
        start=window.start,
        end=window.end,
        group_by=group_by,
        by_day=by_day,
        meter=meter,
    )
    return query_usage(session, caller, selection)


def usage_rows(session: Session, caller: Caller, window: Period) -> list[UsageAmount]:
    """The customer's usage per day, meter and dimension: the rows of
    `GET /api/v1/usage?customer_id=…&group_by=model,step,tool,source&interval=day`."""
    return _usage(session, caller, window, BREAKDOWNS, by_day=True)


def usage_breakdowns(
    session: Session, caller: Caller, window: Period
) -> dict[str, list[UsageTotal]]:
    """Total per meter and value of each of `BREAKDOWNS` over the window, from one query
    grouped by all four (few rows, unlike `usage_rows`, which adds the day)."""
    amounts = _usage(session, caller, window, BREAKDOWNS)
    breakdowns = {}
    for dimension in BREAKDOWNS:
        totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        for amount in amounts:
            totals[amount.meter, amount.dimensions[dimension]] += amount.quantity
        breakdowns[dimension] = [UsageTotal(m, key, q) for (m, key), q in sorted(totals.items())]
    return breakdowns


def daily_usage(
    session: Session, caller: Caller, window: Period, by: SeriesBy, meter: str | None
) -> DailySeries:
    """One series per meter (`by` meter) or per model of `meter` (`by` model), per day."""
    group_by: tuple[str, ...] = ()
    if by is SeriesBy.MODEL:
        if meter is None:
            raise UnprocessableError("series by model need a meter (e.g. meter=input_tokens)")
        group_by = ("model",)
    else:
        meter = None
    amounts = _usage(session, caller, window, group_by, by_day=True, meter=meter)
    first = window.start.date()
    days = [first + timedelta(days=n) for n in range((window.end.date() - first).days)]
    index = {day: n for n, day in enumerate(days)}
    series: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * len(days))
    for amount in amounts:
        label = (amount.dimensions["model"] or "(none)") if by is SeriesBy.MODEL else amount.meter
        series[label][index[amount.day]] += amount.quantity  # type: ignore[index]
    return DailySeries(days=days, series=dict(sorted(series.items())))


def _view(session: Session, invoice: Invoice) -> InvoiceView:
    return InvoiceView(
        id=invoice.id,
        number=invoice.number,
        status=invoice.status,
        payment_status=PaymentStatus(invoice.payment_status),
        period=Period(invoice.period_start, invoice.period_end),
        currency=invoice.currency,
        subtotal_minor=invoice.subtotal_minor,
        credits_minor=invoice.credits_minor,
        total_minor=invoice.total_minor,
        finalized_at=invoice.finalized_at,
        lines=[
            ChargeLine(
                description=line.description,
                meter=line.meter,
                quantity=line.quantity,
                unit_price=line.unit_price,
                per_units=line.per_units,
                amount_minor=line.amount_minor,
            )
            for line in invoices.lines(session, invoice.id)
        ],
    )


def list_invoices(session: Session, caller: Caller) -> list[InvoiceView]:
    """The customer's issued invoices, newest period first."""
    found = invoices.list_invoices(session, caller.tenant_id, customer_id=caller.customer())
    visible = [i for i in found if i.status in ISSUED]
    return [_view(session, i) for i in sorted(visible, key=lambda i: i.period_start, reverse=True)]


def _invoice(session: Session, caller: Caller, invoice_id: str) -> Invoice:
    invoice = invoices.get_invoice(session, caller.tenant_id, invoice_id)
    if invoice is None or invoice.customer_id != caller.customer() or invoice.status not in ISSUED:
        raise NotFoundError(f"no invoice {invoice_id!r}")
    return invoice


def get_invoice(session: Session, caller: Caller, invoice_id: str) -> InvoiceView:
    """One of the customer's issued invoices; any other id is not found."""
    return _view(session, _invoice(session, caller, invoice_id))


def export_invoice(session: Session, caller: Caller, invoice_id: str, kind: str) -> InvoiceDocument:
    """The invoice as the REST export gives it: `kind` "csv" or "json"."""
    return invoicing.export_invoice(session, caller, invoice_id, "csv" if kind == "csv" else "json")
