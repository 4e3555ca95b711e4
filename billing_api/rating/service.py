"""Rating a period for one customer or all: terms and aggregates from the repository,
prices from the engine.

A rated period carries provider cost, margin and internal price ids, so `estimate`, the
entry points' way in, answers staff only. `rate_period` and `estimate_period` take a tenant
id: they serve other services and jobs (billing runs, budgets, the portal's own view, which
leaves cost out), never an endpoint directly."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from itertools import pairwise

from sqlalchemy.orm import Session

from billing_api.auth import Caller
from billing_api.errors import NotFoundError
from billing_api.periods import Period, month_period, period_containing
from billing_api.rating.engine import RatedPeriod, rate_customer
from billing_api.rating.repository import aggregate_usage, load_pricing
from billing_api.rating.terms import TenantPricing, UsageGroup


def rate_period(
    session: Session,
    tenant_id: str,
    period: Period,
    customer_ids: Sequence[str] | None = None,
    *,
    pricing: TenantPricing | None = None,
) -> dict[str, RatedPeriod]:
    """Rate `period` for the given customers (default: every registered customer and every
    customer id with usage in the period). Usage is summed by the database once per slice
    of the period where terms change; customers with nothing to bill are left out."""
    pricing = pricing or load_pricing(session, tenant_id, customer_ids)
    edges = [period.start, *pricing.boundaries(period.start, period.end), period.end]
    slices = list(pairwise(edges))
    usage: dict[str, list[list[UsageGroup]]] = defaultdict(lambda: [[] for _ in slices])
    for index, (start, end) in enumerate(slices):
        aggregated = aggregate_usage(
            session, tenant_id, start, end, customer_ids, pricing.filter_dimensions
        )
        for customer_id, group in aggregated:
            if customer_id:  # unattributed usage is reported by invoicing, not rated
                usage[customer_id][index].append(group)
    wanted = set(customer_ids) if customer_ids is not None else pricing.registered | set(usage)
    rated = {}
    for customer_id in sorted(wanted):
        groups = usage.get(customer_id) or [[] for _ in slices]
        result = rate_customer(
            customer_id,
            pricing,
            period,
            [(start, end, g) for (start, end), g in zip(slices, groups, strict=True)],
        )
        if not result.is_empty:
            rated[customer_id] = result
    return rated


def current_period(pricing: TenantPricing, customer_id: str, now: datetime) -> Period:
    """The customer's billing period that contains `now`."""
    return period_containing(now, pricing.billing_days.get(customer_id, 1))


def estimate(
    session: Session, caller: Caller, customer_id: str, now: datetime, month: str | None = None
) -> RatedPeriod:
    """The running total of the customer's current period, or of the period starting in
    `month` ("2026-10") on the customer's billing day (nothing is recorded). Staff only:
    the result holds provider cost and margin."""
    caller.require_staff()
    return estimate_period(session, caller.tenant_id, customer_id, now, month)


def estimate_period(
    session: Session, tenant_id: str, customer_id: str, now: datetime, month: str | None = None
) -> RatedPeriod:
    """`estimate` for a service that already knows its caller may see the customer."""
    pricing = load_pricing(session, tenant_id, [customer_id])
    period = (
        current_period(pricing, customer_id, now)
        if month is None
        else month_period(month, pricing.billing_days.get(customer_id, 1))
    )
    rated = rate_period(session, tenant_id, period, [customer_id], pricing=pricing)
    result = rated.get(customer_id) or rate_customer(customer_id, pricing, period, [])
    has_usage = result.unpriced or any(line.meter for line in result.lines)
    if customer_id not in pricing.registered and not has_usage:
        raise NotFoundError(f"no customer {customer_id!r} and no usage under that id")
    return result
