"""Budgets: a customer's spend limit per billing period, and alerts as it fills up.

Spend is the current period's charges before credits: the rating estimate's subtotal. An
agent can read its budget before starting expensive work (`within_limit`, `remaining`).

A threshold (a percent of the limit, 1 to 1000) is crossed when spend × 100 ≥ threshold ×
limit, computed exactly in minor units. Each crossed threshold is recorded once per
customer and period in `budget_alerts`, and each newly recorded one enqueues a
`budget.threshold_crossed` webhook in the same transaction. Evaluations run on every GET
(and PUT) of a budget and in the background sweep; recording is idempotent and safe under
concurrent evaluations. Alerts stay recorded when a budget is changed or deleted, so a
threshold alerts at most once per period.

Staff read budgets, the billing role sets and deletes them; a customer-scoped caller reads
only its own (spend is what it is charged: no cost or margin in a budget).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.money import format_minor
from agentmeter.tables import Budget
from billing_api.auth import Caller, Role
from billing_api.budgets import repository
from billing_api.customers.service import get_customer
from billing_api.errors import ConflictError, NotFoundError, UnprocessableError
from billing_api.periods import Period
from billing_api.rating.engine import RatedPeriod
from billing_api.rating.service import estimate_period
from billing_api.webhooks.service import enqueue_event

logger = logging.getLogger("agentmeter.budgets")

THRESHOLD_CROSSED = "budget.threshold_crossed"


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A budget against a period's spend."""

    customer_id: str
    currency: str
    limit_minor: int
    spent_minor: int
    period: Period
    thresholds: list[int]
    crossed: list[int]
    newly_alerted: list[int] = field(default_factory=list)

    @property
    def remaining_minor(self) -> int:
        return max(0, self.limit_minor - self.spent_minor)

    @property
    def within_limit(self) -> bool:
        return self.spent_minor <= self.limit_minor

    @property
    def percent_used(self) -> Decimal:
        """Spend as a percent of the limit, truncated to 2 places (never rounds up to a
        threshold that was not reached)."""
        percent = Decimal(self.spent_minor * 100) / Decimal(self.limit_minor)
        return percent.quantize(Decimal("0.01"), rounding=ROUND_DOWN)

    def event_data(self, threshold: int) -> dict[str, object]:
        return {
            "customer_id": self.customer_id,
            "threshold": threshold,
            "currency": self.currency,
            "limit": format_minor(self.limit_minor, self.currency),
            "limit_minor": self.limit_minor,
            "spent": format_minor(self.spent_minor, self.currency),
            "spent_minor": self.spent_minor,
            "percent_used": str(self.percent_used),
            "period_start": self.period.start.isoformat(),
            "period_end": self.period.end.isoformat(),
        }


def crossed_thresholds(spent_minor: int, limit_minor: int, thresholds: list[int]) -> list[int]:
    """The thresholds (percent of `limit_minor`) that `spent_minor` has reached."""
    return [t for t in thresholds if spent_minor * 100 >= t * limit_minor]


def put_budget(
    session: Session,
    caller: Caller,
    customer_id: str,
    *,
    currency: str,
    limit_minor: int,
    thresholds: list[int],
    now: datetime,
) -> BudgetStatus:
    """Set (or replace) the customer's budget, then evaluate it."""
    caller.require(Role.BILLING)
    get_customer(session, caller, customer_id)
    rated = estimate_period(session, caller.tenant_id, customer_id, now)
    if rated.book_id is not None and rated.currency != currency:
        raise UnprocessableError(
            f"customer {customer_id!r} is billed in {rated.currency}; "
            f"set the budget in {rated.currency}, not {currency}"
        )
    budget = repository.upsert(
        session,
        caller.tenant_id,
        customer_id,
        currency=currency,
        limit_minor=limit_minor,
        thresholds=list(thresholds),
        now=now,
    )
    return _evaluate(session, budget, _spent(rated, budget), rated.period, now)


def delete_budget(session: Session, caller: Caller, customer_id: str) -> None:
    """Remove the customer's budget (its recorded alerts stay)."""
    caller.require(Role.BILLING)
    get_customer(session, caller, customer_id)
    if not repository.delete_budget(session, caller.tenant_id, customer_id):
        raise NotFoundError(f"customer {customer_id!r} has no budget")


def get_budget(session: Session, caller: Caller, customer_id: str) -> Budget | None:
    """The customer's budget as set, if any (nothing evaluated)."""
    return repository.get(session, caller.tenant_id, caller.customer(customer_id))


def evaluate_budget(
    session: Session, caller: Caller, customer_id: str, now: datetime
) -> BudgetStatus:
    """The budget against the current period's spend so far; records and alerts the
    thresholds crossed for the first time this period."""
    get_customer(session, caller, customer_id)
    return _evaluate_budget(session, caller.tenant_id, customer_id, now)


def _evaluate_budget(
    session: Session, tenant_id: str, customer_id: str, now: datetime
) -> BudgetStatus:
    budget = repository.get(session, tenant_id, customer_id)
    if budget is None:
        raise NotFoundError(f"customer {customer_id!r} has no budget")
    rated = estimate_period(session, tenant_id, customer_id, now)
    return _evaluate(session, budget, _spent(rated, budget), rated.period, now)


def sweep_budgets(engine: Engine, now: datetime | None = None) -> int:
    """Job boundary for the background loop: evaluate every budget, one transaction per
    customer (a failing one is logged and skipped). Returns the number of new alerts."""
    now = now or utcnow()
    with Session(engine) as session:
        keys = repository.all_budgets(session)
    alerts = 0
    for tenant_id, customer_id in keys:
        try:
            with Session(engine) as session, session.begin():
                status = _evaluate_budget(session, tenant_id, customer_id, now)
                alerts += len(status.newly_alerted)
        except (NotFoundError, ConflictError) as error:
            logger.warning(
                "budget not evaluated: %s",
                error.message,
                extra={"tenant_id": tenant_id, "customer_id": customer_id},
            )
        except Exception:
            logger.exception(
                "budget evaluation failed",
                extra={"tenant_id": tenant_id, "customer_id": customer_id},
            )
    return alerts


def _spent(rated: RatedPeriod, budget: Budget) -> int:
    if rated.currency == budget.currency:
        return rated.subtotal_minor
    if rated.book_id is None:
        return 0  # no price book yet: nothing is charged, in any currency
    raise ConflictError(
        f"the budget is in {budget.currency} but customer {budget.customer_id!r} is now "
        f"billed in {rated.currency}; set the budget again in {rated.currency}"
    )


def _evaluate(
    session: Session, budget: Budget, spent_minor: int, period: Period, now: datetime
) -> BudgetStatus:
    status = _status(budget, spent_minor, period)
    for threshold in status.crossed:
        if repository.record_alert(session, budget, period.start, threshold, spent_minor, now):
            status.newly_alerted.append(threshold)
            enqueue_event(
                session, budget.tenant_id, THRESHOLD_CROSSED, status.event_data(threshold), now=now
            )
    return status


def _status(budget: Budget, spent_minor: int, period: Period) -> BudgetStatus:
    return BudgetStatus(
        customer_id=budget.customer_id,
        currency=budget.currency,
        limit_minor=budget.limit_minor,
        spent_minor=spent_minor,
        period=period,
        thresholds=list(budget.thresholds),
        crossed=crossed_thresholds(spent_minor, budget.limit_minor, budget.thresholds),
    )


def budget_progress(session: Session, caller: Caller, rated: RatedPeriod) -> BudgetStatus | None:
    """The budget of `rated`'s customer against `rated`, its current period's estimate,
    read only (nothing recorded, no alert). None without a budget, or while the budget's
    currency is not the one the customer is billed in."""
    budget = get_budget(session, caller, rated.customer_id)
    if budget is None:
        return None
    try:
        spent = _spent(rated, budget)
    except ConflictError:
        return None
    return _status(budget, spent, rated.period)


def budget_limits(
    session: Session, tenant_id: str, customer_ids: Sequence[str]
) -> dict[tuple[str, str], int]:
    """The budget limits of these customers, by (customer, currency), in minor units: a
    budget compares only with charges in its own currency."""
    return repository.limits_of(session, tenant_id, customer_ids)
