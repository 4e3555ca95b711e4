"""HTTP surface of the usage domain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from billing_api.auth import AdminCaller
from billing_api.deps import DbSession
from billing_api.usage import service
from billing_api.usage.schemas import UsageAnswer, UsageQuery

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])


@router.get("")
def get_usage(
    query: Annotated[UsageQuery, Query()], session: DbSession, caller: AdminCaller
) -> UsageAnswer:
    """Usage totals per customer and meter (and each `group_by` dimension), as exact
    decimal strings. Filters: `customer_id`, `unattributed=true`, `meter`, and the
    half-open UTC range [`start`, `end`)."""
    return UsageAnswer.of(service.query_usage(session, caller, query.selection()))
