"""Usage queries: stored micro-units become exact decimal strings here."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy.orm import Session

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
