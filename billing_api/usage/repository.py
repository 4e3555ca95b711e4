"""All SQL of the usage domain: aggregates computed by the database."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, RowMapping, case, func, literal, select, update
from sqlalchemy.orm import Session

from agentmeter.tables import (
    SPAN_METERS,
    TraceCustomer,
    UsageRow,
    meters_of_spans,
    to_unix_nano,
    usage_meters,
    usage_spans,
)
from agentmeter.usage_keys import UsageKeys, trace_bytes

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
    keys = UsageKeys(session.connection())
    tenant_key = keys.find_tenant(tenant_id)
    from_key = None if tenant_key is None else keys.find_customer(tenant_key, from_id)
    if tenant_key is None or from_key is None:
        return 0  # no usage or trace was ever stored under `from_id`
    to_key = keys.customer(tenant_key, to_id)
    session.execute(
        update(TraceCustomer)
        .where(TraceCustomer.tenant_key == tenant_key, TraceCustomer.customer_key == from_key)
        .values(customer_key=to_key)
    )
    spans = (usage_spans.c.customer_key == from_key,)
    moved = _records_of(session, spans)
    session.execute(update(usage_spans).where(*spans).values(customer_key=to_key))
    return moved


def attribute_traces(
    session: Session, tenant_id: str, trace_ids: Sequence[str], customer_id: str
) -> int:
    """Give the customer-less usage of these traces to `customer_id`; returns how many
    usage records it gave."""
    keys = UsageKeys(session.connection())
    tenant_key = keys.find_tenant(tenant_id)
    nobody = None if tenant_key is None else keys.find_customer(tenant_key, "")
    if tenant_key is None or nobody is None:
        return 0  # the tenant never stored customer-less usage
    traces = [trace_bytes(trace) for trace in trace_ids]
    spans = (
        usage_spans.c.tenant_key == tenant_key,
        usage_spans.c.customer_key == nobody,
        usage_spans.c.trace_id.in_(traces),
    )
    moved = _records_of(session, spans)
    session.execute(
        update(usage_spans)
        .where(*spans)
        .values(customer_key=keys.customer(tenant_key, customer_id))
    )
    return moved


def _records_of(session: Session, spans: Sequence[ColumnElement[bool]]) -> int:
    """How many usage records the spans matching `spans` hold: their token meters and
    their rows of `usage_meters`."""
    present = sum(
        (case((usage_spans.c[m].is_not(None), 1), else_=0) for m in SPAN_METERS),
        start=literal(0),
    )
    tokens = select(func.coalesce(func.sum(present), 0)).where(*spans)
    others = select(func.count()).select_from(usage_meters.join(usage_spans, meters_of_spans()))
    return int(session.execute(tokens).scalar_one()) + int(
        session.execute(others.where(*spans)).scalar_one()
    )
