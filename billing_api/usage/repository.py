"""All SQL of the usage domain: aggregates computed by the database."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import RowMapping, func, select
from sqlalchemy.orm import Session

from agentmeter.tables import UsageRow, to_unix_nano
from billing_api.usage.schemas import UsageQuery


def aggregate_usage(session: Session, tenant_id: str, query: UsageQuery) -> Sequence[RowMapping]:
    """Total quantity (micro-units) per customer, meter and requested dimensions."""
    keys = [UsageRow.customer_id, UsageRow.meter, *(getattr(UsageRow, d) for d in query.group_by)]
    statement = select(*keys, func.sum(UsageRow.quantity_micros).label("quantity_micros")).where(
        UsageRow.tenant_id == tenant_id, UsageRow.billed()
    )
    if query.customer_id is not None:
        statement = statement.where(UsageRow.customer_id == query.customer_id)
    if query.unattributed:
        statement = statement.where(UsageRow.customer_id == "")
    if query.meter is not None:
        statement = statement.where(UsageRow.meter == query.meter)
    if query.start is not None:
        statement = statement.where(UsageRow.time_unix_nano >= to_unix_nano(query.start))
    if query.end is not None:
        statement = statement.where(UsageRow.time_unix_nano < to_unix_nano(query.end))
    statement = statement.group_by(*keys).order_by(*keys)
    return session.execute(statement).mappings().all()
