"""HTTP surface of rating: the running estimate of a customer's current period."""

from __future__ import annotations

from fastapi import APIRouter

from agentmeter.clock import utcnow
from billing_api.auth import AdminCaller
from billing_api.deps import DbSession
from billing_api.periods import PeriodLabel
from billing_api.rating import service
from billing_api.rating.schemas import EstimateOut

router = APIRouter(prefix="/api/v1/customers", tags=["rating"])


@router.get("/{customer_id}/estimate")
def get_estimate(
    customer_id: str, session: DbSession, caller: AdminCaller, period: PeriodLabel | None = None
) -> EstimateOut:
    """The running total of the customer's current billing period, line by line; with
    `period=2026-10`, of the period starting in that month."""
    return EstimateOut.of(service.estimate(session, caller, customer_id, utcnow(), period))
