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
from typing import NamedTuple

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

    def add(self, row: _Standing) -> None:
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


class _Standing(NamedTuple):
    """A customer's period so far, as its row, its flags and the totals need it."""

    currency: str
    estimated_minor: int
    invoiced_minor: int
    provider_cost_minor: int | None
    margin_minor: int | None
    below_floor: bool
    over_budget: bool

    @property
    def flagged(self) -> bool:
        return self.below_floor or self.over_budget


@dataclass(frozen=True, slots=True)
class _Sources:
    """What a customer's figures are composed from."""

    rated: dict[str, MonthFigures]
    names: dict[str, str]
    invoiced: dict[str, int]
    budgets: dict[str, tuple[str, int]]  # customer → (currency, limit in minor units)
    floor: Decimal

    def standing(self, customer_id: str) -> _Standing:
        """Light enough for every customer on each view (no figures object built)."""
        result = self.rated.get(customer_id)
        budget = self.budgets.get(customer_id)
        cost: int | None
        margin: int | None
        if result is None:  # nothing rated: nothing spent, in its budget's currency
            currency, spent, cost, margin = (budget[0] if budget else "USD"), 0, 0, 0
        else:
            currency, spent = result.currency, result.subtotal_minor
            cost, margin = result.provider_cost_minor, result.margin_minor
        return _Standing(
            currency,
            spent,
            self.invoiced.get(customer_id, 0),
            cost,
            margin,
            below_floor(spent, margin, self.floor),
            # Compared only in the budget's own currency.
            budget is not None and budget[0] == currency and spent > budget[1],
        )

    def figures(self, customer_id: str) -> CustomerFigures:
        standing = self.standing(customer_id)
        budget = self.budgets.get(customer_id)
        return CustomerFigures(
            customer_id=customer_id,
            name=self.names.get(customer_id, ""),
            currency=standing.currency,
            estimated_minor=standing.estimated_minor,
            invoiced_minor=standing.invoiced_minor,
            provider_cost_minor=standing.provider_cost_minor,
            margin_minor=standing.margin_minor,
            budget_minor=budget[1] if budget else None,
            below_floor=standing.below_floor,
            over_budget=standing.over_budget,
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
    sources = _Sources(
        rated=rated,
        names=customer_names(session, caller),
        invoiced=invoicing.subtotals_by_customer(
            session, caller.tenant_id, period.label, InvoiceStatus.FINALIZED
        ),
        budgets=budgets.limits_of_tenant(session, caller.tenant_id),
        floor=invoicing.tenant(session, caller.tenant_id).margin_floor_percent,
    )
    totals: dict[str, Totals] = {}
    flagged = []
    ordered = sorted(sources.names.keys() | rated.keys())
    for customer_id in ordered:
        standing = sources.standing(customer_id)
        totals.setdefault(standing.currency, Totals(standing.currency)).add(standing)
        if standing.flagged:
            flagged.append(customer_id)
    unattributed = UsageSelection(
        unattributed=True, start=period.start, end=period.end, group_by=("trace_id",)
    )
    traces = {a.dimensions["trace_id"] for a in query_usage(session, caller, unattributed)}
    attention = set(flagged)
    return Overview(
        period=period,
        margin_floor_percent=sources.floor,
        totals=sorted(totals.values(), key=lambda t: t.currency),
        usage=sorted((meter, from_micros(micros)) for meter, micros in usage.items()),
        unattributed_traces=len(traces),
        order=flagged + [c for c in ordered if c not in attention],
        trend=points,
        sources=sources,
    )
