"""HTTP surface of budgets: a customer's spend limit and where the period stands."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agentmeter.clock import utcnow
from billing_api.auth import AdminCaller
from billing_api.budgets import service
from billing_api.budgets.schemas import BudgetSet, BudgetStatusOut
from billing_api.deps import DbSession, WriteSession

router = APIRouter(prefix="/api/v1/customers/{customer_id}/budget", tags=["budgets"])


@router.put("")
def put_budget(
    customer_id: str, body: BudgetSet, session: DbSession, caller: AdminCaller
) -> BudgetStatusOut:
    """Set or replace the spend limit per billing period, in the customer's billing
    currency, with alert thresholds in percent (1-1000, ascending)."""
    status = service.put_budget(
        session,
        caller,
        customer_id,
        currency=body.currency,
        limit_minor=body.limit_minor,
        thresholds=body.thresholds,
        now=utcnow(),
    )
    return BudgetStatusOut.of(status)


@router.get("")
def get_budget(customer_id: str, session: WriteSession, caller: AdminCaller) -> BudgetStatusOut:
    """Spend so far this period (charges before credits) against the limit; check
    `within_limit` / `remaining` before expensive work. Newly crossed thresholds alert."""
    return BudgetStatusOut.of(service.evaluate_budget(session, caller, customer_id, utcnow()))


@router.delete("", status_code=204)
def delete_budget(customer_id: str, session: DbSession, caller: AdminCaller) -> Response:
    service.delete_budget(session, caller, customer_id)
    return Response(status_code=204)
