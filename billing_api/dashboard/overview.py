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

import logging
from collections.abc import Sequence
from dataclasses import dataclass
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
logger = logging.getLogger(__name__)


def _percent_hundredths(part: int, whole: int) -> int:
    """`part` as percent of `whole` (not 0) in hundredths of a percent, rounded half to
    even, in integers: exact, and cheap enough for every customer on each view."""
    quotient, remainder = divmod(abs(part) * 10_000, abs(whole))
    if 2 * remainder > abs(whole) or (2 * remainder == abs(whole) and quotient % 2):
        quotient += 1
    return -quotient if (part < 0) != (whole < 0) else quotient


def margin_percent(revenue_minor: int, margin_minor: int | None) -> Decimal | None:
    """Margin as percent of revenue, two places; None when unknown or nothing was charged."""
    if margin_minor is None or revenue_minor == 0:
        return None
    return Decimal(_percent_hundredths(margin_minor, revenue_minor)).scaleb(-2)


def below_floor(revenue_minor: int, margin_minor: int | None, floor: Decimal) -> bool:
    """The margin percent is known and under `floor` (0: no floor)."""
    if margin_minor is None or revenue_minor == 0 or floor <= 0:
        return False
    return _percent_hundredths(margin_minor, revenue_minor) < floor * 100


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

    def add(self, estimated: int, invoiced: int, cost: int | None, margin: int | None) -> None:
        self.estimated_minor += estimated
        self.invoiced_minor += invoiced
        self.provider_cost_minor = _plus(self.provider_cost_minor, cost)
        self.margin_minor = _plus(self.margin_minor, margin)

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
class _Sources:
    """What a customer's figures are composed from."""

    rated: dict[str, MonthFigures]
    names: dict[str, str]
    invoiced: dict[str, int]
    budgets: dict[str, tuple[str, int]]  # customer → (currency, limit in minor units)
    floor: Decimal

    def currency(self, customer_id: str) -> str:
        """The rated currency, else the budget's, else USD."""
        result = self.rated.get(customer_id)
        budget = self.budgets.get(customer_id)
        return result.currency if result else (budget[0] if budget else "USD")

    def over_budget(self, customer_id: str, spent: int, currency: str) -> bool:
        """Over its budget, compared only in the budget's own currency."""
        budget = self.budgets.get(customer_id)
        return budget is not None and budget[0] == currency and spent > budget[1]

    def figures(self, customer_id: str) -> CustomerFigures:
        result = self.rated.get(customer_id)
        budget = self.budgets.get(customer_id)
        spent = result.subtotal_minor if result else 0
        currency = self.currency(customer_id)
        margin = result.margin_minor if result else 0
        return CustomerFigures(
            customer_id=customer_id,
            name=self.names.get(customer_id, ""),
            currency=currency,
            estimated_minor=spent,
            invoiced_minor=self.invoiced.get(customer_id, 0),
            provider_cost_minor=result.provider_cost_minor if result else 0,
            margin_minor=margin,
            budget_minor=budget[1] if budget else None,
            below_floor=below_floor(spent, margin, self.floor),
            over_budget=self.over_budget(customer_id, spent, currency),
        )


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything the overview page shows; the customers a page at a time."""

    period: Period
    margin_floor_percent: Decimal
    totals: list[Totals]
    usage: list[tuple[str, Decimal]]  # meter, quantity this period, every customer
    unattributed_traces: int
    # Every customer (registered, or with usage): those needing attention first, by id.
    order: list[str]
    trend: list[TrendPoint]
    sources: _Sources

    def customers(self, offset: int = 0, size: int | None = None) -> list[CustomerFigures]:
        """The figures of `size` customers (default: all) from `offset` in `order`."""
        end = None if size is None else offset + size
        return [self.sources.figures(customer_id) for customer_id in self.order[offset:end]]


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
        try:
            with read_only(engine) as connection, Session(connection) as session:
                catch_up(session, tenant_id, _trend_periods(now))
        except Exception:  # one tenant's failure (logged) leaves the others caught up
            logger.exception("dashboard figures of tenant %s not caught up", tenant_id)


def _points(session: Session, tenant_id: str, periods: Sequence[Period]) -> list[TrendPoint]:
    labels = [p.label for p in periods]
    months = month_totals(session, tenant_id, labels)
    return [
        TrendPoint(
            label,
            {c: t.revenue_minor for c, t in months[label].items()},
            {c: t.provider_cost_minor for c, t in months[label].items()},
            {c: t.margin_minor for c, t in months[label].items()},
        )
        for label in labels
    ]


def trend(session: Session, caller: Caller, now: datetime) -> list[TrendPoint]:
    """The last `TREND_PERIODS` periods, oldest first, each rated with today's terms (for a
    closed period that is what its draft would say; its invoices may differ by review).
    Staff only: cost and margin."""
    caller.require_staff()
    periods = _trend_periods(now)
    with caught_up(session, caller.tenant_id, periods) as cached:
        return _points(cached, caller.tenant_id, periods)


def overview(session: Session, caller: Caller, now: datetime) -> Overview:
    """This period's figures for the caller's tenant, and the trend (staff only: cost and
    margin)."""
    caller.require_staff()
    periods = _trend_periods(now)
    period = periods[-1]
    with caught_up(session, caller.tenant_id, periods) as cached:
        rated = customer_months(cached, caller.tenant_id, period.label)
        usage = month_usage(cached, caller.tenant_id, period.label)
        points = _points(cached, caller.tenant_id, periods)
    floor = invoicing.tenant(session, caller.tenant_id).margin_floor_percent
    sources = _Sources(
        rated=rated,
        names=customer_names(session, caller),
        invoiced=invoicing.subtotals_by_customer(
            session, caller.tenant_id, period.label, InvoiceStatus.FINALIZED
        ),
        budgets=budgets.limits_of_tenant(session, caller.tenant_id),
        floor=floor,
    )
    # Totals and flags of every customer, without building each one's figures: a customer
    # with nothing rated adds nothing (but its currency) and needs no attention.
    totals: dict[str, Totals] = {}
    flagged = []
    ordered = sorted(sources.names.keys() | rated.keys())
    for customer_id in ordered:
        currency = sources.currency(customer_id)
        total = totals.setdefault(currency, Totals(currency))
        result = rated.get(customer_id)
        if result is None:
            continue
        spent, margin = result.subtotal_minor, result.margin_minor
        total.add(spent, sources.invoiced.get(customer_id, 0), result.provider_cost_minor, margin)
        if below_floor(spent, margin, floor) or sources.over_budget(customer_id, spent, currency):
            flagged.append(customer_id)
    for customer_id, amount in sources.invoiced.items():
        if customer_id not in rated:  # invoiced this period, nothing rated now
            totals[sources.currency(customer_id)].add(0, amount, 0, 0)
    unattributed = UsageSelection(
        unattributed=True, start=period.start, end=period.end, group_by=("trace_id",)
    )
    traces = {a.dimensions["trace_id"] for a in query_usage(session, caller, unattributed)}
    attention = set(flagged)
    return Overview(
        period=period,
        margin_floor_percent=floor,
        totals=sorted(totals.values(), key=lambda t: t.currency),
        usage=sorted((meter, from_micros(micros)) for meter, micros in usage.items()),
        unattributed_traces=len(traces),
        order=flagged + [c for c in ordered if c not in attention],
        trend=points,
        sources=sources,
    )
