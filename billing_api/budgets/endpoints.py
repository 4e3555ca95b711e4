"""HTTP surface of budgets: a customer's spend limit and where the period stands."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agentmeter.clock import utcnow
from agentmeter.money import format_minor
from billing_api.auth import TenantId
from billing_api.budgets import service
from billing_api.budgets.schemas import BudgetSet, BudgetStatusOut
from billing_api.deps import DbSession, WriteSession

router = APIRouter(prefix="/api/v1/customers/{customer_id}/budget", tags=["budgets"])


@router.put("")
def put_budget(
    customer_id: str, body: BudgetSet, session: DbSession, tenant_id: TenantId
) -> BudgetStatusOut:
    """Set or replace the spend limit per billing period, in the customer's billing
    currency, with alert thresholds in percent (1-1000, ascending)."""
    return _out(service.put_budget(session, tenant_id, customer_id, body, utcnow()))


@router.get("")
def get_budget(customer_id: str, session: WriteSession, tenant_id: TenantId) -> BudgetStatusOut:
    """Spend so far this period (charges before credits) against the limit; check
    `within_limit` / `remaining` before expensive work. Newly crossed thresholds alert."""
    return _out(service.evaluate_budget(session, tenant_id, customer_id, utcnow()))


@router.delete("", status_code=204)
def delete_budget(customer_id: str, session: DbSession, tenant_id: TenantId) -> Response:
    service.delete_budget(session, tenant_id, customer_id)
    return Response(status_code=204)


def _out(status: service.BudgetStatus) -> BudgetStatusOut:
    currency = status.currency
    return BudgetStatusOut(
        customer_id=status.customer_id,
        currency=currency,
        limit=format_minor(status.limit_minor, currency),
        limit_minor=status.limit_minor,
        spent=format_minor(status.spent_minor, currency),
        spent_minor=status.spent_minor,
        remaining=format_minor(status.remaining_minor, currency),
        remaining_minor=status.remaining_minor,
        period_start=status.period.start,
        period_end=status.period.end,
        within_limit=status.within_limit,
        percent_used=str(status.percent_used),
        thresholds=status.thresholds,
        thresholds_crossed=status.crossed,
    )
