"""The overview's figures: this period's revenue, provider cost and margin per customer
and in total, the trend over the last periods, and what needs attention.

Composed from the services the REST API uses — rating (`rate_period`, through the rated
months it keeps exact in `billing_api.rating.cache`), invoices, budgets, usage — nothing is
priced or summed here that those do not already compute:
- estimated revenue is the rated subtotal of the period so far (what a draft would say);
- invoiced revenue is what finalized invoices of the period say;
- a customer stands out when its margin is below the tenant's margin floor, or its spend
  this period is over its budget (compared only in the budget's own currency);
- totals are per currency, never added across currencies.
The overview uses calendar-month periods (billing day 1) for every customer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.db import read_only
from billing_api.auth import Caller
from billing_api.budgets import repository as budgets
from billing_api.customers.service import customer_names
from billing_api.invoicing import repository as invoicing
from billing_api.invoicing.states import InvoiceStatus
from billing_api.periods import Period, period_containing, previous_periods
from billing_api.rating.cache import (
    MonthFigures,
    catch_up,
    caught_up,
    customer_months,
    month_totals,
    month_usage,
    tenants_with_changes,
)
from billing_api.usage.service import UsageSelection, query_usage
from otel_processor.usage import from_micros

TREND_PERIODS = 6


def margin_percent(revenue_minor: int, margin_minor: int | None) -> Decimal | None:
    """Margin as percent of revenue, two places; None when unknown or nothing was charged."""
    if margin_minor is None or revenue_minor == 0:
        return None
    return (Decimal(margin_minor * 100) / Decimal(revenue_minor)).quantize(Decimal("0.01"))


@dataclass(frozen=True, slots=True)
class CustomerFigures:
    """One customer's period so far."""

    customer_id: str
    name: str
    currency: str
    estimated_minor: int
    invoiced_minor: int
    provider_cost_minor: int | None
    margin_minor: int | None
    budget_minor: int | None
    below_floor: bool
    over_budget: bool

    @property
    def margin_percent(self) -> Decimal | None:
        return margin_percent(self.estimated_minor, self.margin_minor)

    @property
    def flagged(self) -> bool:
        return self.below_floor or self.over_budget


@dataclass(slots=True)
class Totals:
    """Sums of one currency (cost and margin unknown as soon as one part is)."""

    currency: str
    estimated_minor: int = 0
    invoiced_minor: int = 0
    provider_cost_minor: int | None = 0
    margin_minor: int | None = 0

    def add(self, row: CustomerFigures) -> None:
        self.estimated_minor += row.estimated_minor
        self.invoiced_minor += row.invoiced_minor
        self.provider_cost_minor = _plus(self.provider_cost_minor, row.provider_cost_minor)
        self.margin_minor = _plus(self.margin_minor, row.margin_minor)

    @property
    def margin_percent(self) -> Decimal | None:
        return margin_percent(self.estimated_minor, self.margin_minor)


def _plus(total: int | None, part: int | None) -> int | None:
    return None if total is None or part is None else total + part


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One period of the trend, per currency: revenue, cost, margin (minor units)."""

    period: str
    revenue_minor: dict[str, int]
    provider_cost_minor: dict[str, int]
    margin_minor: dict[str, int]


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the overview page shows."""

    period: Period
    margin_floor_percent: Decimal
    customers: list[CustomerFigures]
    totals: list[Totals]
    usage: list[tuple[str, Decimal]]  # meter, quantity this period, every customer
    unattributed_traces: int
    trend: list[TrendPoint] = field(default_factory=list)


def _below_floor(rated: MonthFigures, floor: Decimal) -> bool:
    percent = margin_percent(rated.subtotal_minor, rated.margin_minor)
    return percent is not None and floor > 0 and percent < floor


def customer_figures(
    session: Session, caller: Caller, period: Period, rated: dict[str, MonthFigures]
) -> list[CustomerFigures]:
    """Per customer (registered, or with usage), the period's figures, flagged first."""
    tenant = invoicing.tenant(session, caller.tenant_id)
    names = customer_names(session, caller)
    invoiced: dict[str, int] = defaultdict(int)
    for invoice in invoicing.list_invoices(
        session, caller.tenant_id, period=period.label, status=InvoiceStatus.FINALIZED
    ):
        invoiced[invoice.customer_id] += invoice.subtotal_minor
    limits = budgets.of_tenant(session, caller.tenant_id)
    rows = []
    for customer_id in sorted(set(names) | set(rated)):
        result = rated.get(customer_id)
        budget = limits.get(customer_id)
        spent = result.subtotal_minor if result else 0
        currency = result.currency if result else (budget.currency if budget else "USD")
        over = budget is not None and budget.currency == currency and spent > budget.limit_minor
        rows.append(
            CustomerFigures(
                customer_id=customer_id,
                name=names.get(customer_id, ""),
                currency=currency,
                estimated_minor=spent,
                invoiced_minor=invoiced[customer_id],
                provider_cost_minor=result.provider_cost_minor if result else 0,
                margin_minor=result.margin_minor if result else 0,
                budget_minor=budget.limit_minor if budget else None,
                below_floor=result is not None
                and _below_floor(result, tenant.margin_floor_percent),
                over_budget=over,
            )
        )
    return sorted(rows, key=lambda r: (not r.flagged, r.customer_id))


def _trend_periods(now: datetime) -> list[Period]:
    current = period_containing(now)
    return [*reversed(previous_periods(current, TREND_PERIODS - 1)), current]


def refresh_figures(engine: Engine, now: datetime) -> None:
    """Bring the rated months the overview reads up to date for every tenant with changes:
    a background job, so the next view answers from the cache and the change rows of a
    tenant nobody looks at do not pile up."""
    with read_only(engine) as connection, Session(connection) as session:
        tenants = tenants_with_changes(session)
    for tenant_id in tenants:
        with read_only(engine) as connection, Session(connection) as session:
            catch_up(session, tenant_id, _trend_periods(now))


def trend(session: Session, caller: Caller, now: datetime) -> list[TrendPoint]:
    """The last `TREND_PERIODS` periods, oldest first, each rated with today's terms (for a
    closed period that is what its draft would say; its invoices may differ by review).
    Staff only: cost and margin."""
    caller.require_staff()
    periods = _trend_periods(now)
    labels = [p.label for p in periods]
    with caught_up(session, caller.tenant_id, periods) as cached:
        months = month_totals(cached, caller.tenant_id, labels)
    return [
        TrendPoint(
            label,
            {c: t.revenue_minor for c, t in months[label].items()},
            {c: t.provider_cost_minor for c, t in months[label].items()},
            {c: t.margin_minor for c, t in months[label].items()},
        )
        for label in labels
    ]


def overview(session: Session, caller: Caller, now: datetime) -> Overview:
    """This period's figures for the caller's tenant (staff only: cost and margin)."""
    caller.require_staff()
    period = period_containing(now)
    with caught_up(session, caller.tenant_id, [period]) as cached:
        rated = customer_months(cached, caller.tenant_id, period.label)
        usage = month_usage(cached, caller.tenant_id, period.label)
    rows = customer_figures(session, caller, period, rated)
    totals: dict[str, Totals] = {}
    for row in rows:
        totals.setdefault(row.currency, Totals(row.currency)).add(row)
    unattributed = UsageSelection(
        unattributed=True, start=period.start, end=period.end, group_by=("trace_id",)
    )
    traces = {a.dimensions["trace_id"] for a in query_usage(session, caller, unattributed)}
    return Overview(
        period=period,
        margin_floor_percent=invoicing.tenant(session, caller.tenant_id).margin_floor_percent,
        customers=rows,
        totals=sorted(totals.values(), key=lambda t: t.currency),
        usage=sorted((meter, from_micros(micros)) for meter, micros in usage.items()),
        unattributed_traces=len(traces),
    )
