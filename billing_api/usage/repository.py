"""All SQL of the usage domain: aggregates computed by the database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, RowMapping, func, select, update
from sqlalchemy.orm import Session

from agentmeter.tables import TraceCustomer, UsageRow, to_unix_nano

if TYPE_CHECKING:
    from billing_api.usage.service import UsageSelection

NANOS_PER_DAY = 86_400 * 10**9


def aggregate_usage(
    session: Session, tenant_id: str, query: UsageSelection
) -> Sequence[RowMapping]:
    """Total quantity (micro-units) per customer, meter and requested dimensions (and UTC
    day number, `day_number`, when `query.by_day`)."""
    keys: list[ColumnElement[Any]] = [
        UsageRow.__table__.c.customer_id,
        UsageRow.__table__.c.meter,
        *(UsageRow.__table__.c[d] for d in query.group_by),
    ]
    if query.by_day:
        # Integer division on both backends: the UTC day number since the epoch.
        keys.append((UsageRow.time_unix_nano // NANOS_PER_DAY).label("day_number"))
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


def move_customer_usage(session: Session, tenant_id: str, from_id: str, to_id: str) -> int:
    """Move all usage (and trace attributions) of customer id `from_id` to `to_id`;
    returns how many usage records moved."""
    moved = session.execute(
        update(UsageRow)
        .where(UsageRow.tenant_id == tenant_id, UsageRow.customer_id == from_id)
        .values(customer_id=to_id)
    ).rowcount  # type: ignore[attr-defined]
    session.execute(
        update(TraceCustomer)
        .where(TraceCustomer.tenant_id == tenant_id, TraceCustomer.customer_id == from_id)
        .values(customer_id=to_id)
    )
    return int(moved)


def attribute_traces(
    session: Session, tenant_id: str, trace_ids: Sequence[str], customer_id: str
) -> int:
    """Give the customer-less usage of these traces to `customer_id`; returns how many
    usage records it gave."""
    moved = session.execute(
        update(UsageRow)
        .where(
            UsageRow.tenant_id == tenant_id,
            UsageRow.customer_id == "",
            UsageRow.trace_id.in_(trace_ids),
        )
        .values(customer_id=customer_id)
    ).rowcount  # type: ignore[attr-defined]
    return int(moved)
