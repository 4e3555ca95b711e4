"""Usage queries: stored micro-units become exact decimal strings here."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from sqlalchemy.orm import Session

from billing_api.auth import Caller
from billing_api.errors import UnprocessableError
from billing_api.usage import repository
from billing_api.usage.repository import aggregate_usage
from billing_api.usage.schemas import UsageAnswer, UsageQuery
from otel_processor.usage import from_micros

_EPOCH_DAY = date(1970, 1, 1)


def query_usage(session: Session, tenant_id: str, query: UsageQuery) -> UsageAnswer:
    rows = []
    for values in aggregate_usage(session, tenant_id, query):
        out = {"customer_id": values["customer_id"], "meter": values["meter"]}
        out.update({dim: values[dim] for dim in query.group_by})
        if query.interval == "day":
            out["day"] = (_EPOCH_DAY + timedelta(days=int(values["day_number"]))).isoformat()
        out["quantity"] = str(from_micros(int(values["quantity_micros"])))
        rows.append(out)
    return UsageAnswer(rows=rows)


def move_customer_usage(session: Session, caller: Caller, from_id: str, to_id: str) -> int:
    """Usage recorded under a wrong customer id belongs to `to_id`: move all of it, and
    the traces attributed to it, so later spans of those traces follow. Returns how many
    usage records moved."""
    return repository.move_customer_usage(session, caller.tenant_id, from_id, to_id)


def attribute_traces(
    session: Session, caller: Caller, trace_ids: Sequence[str], customer_id: str
) -> int:
    """Attribute the customer-less usage of these traces to `customer_id` (usage that
    already has a customer keeps it). Returns how many usage records were attributed."""
    if not trace_ids:
        raise UnprocessableError("name the trace ids to attribute")
    return repository.attribute_traces(session, caller.tenant_id, trace_ids, customer_id)
