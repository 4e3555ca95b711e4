"""The SQL usage sink: bulk insert with dedup, trace attribution, commit before return."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Insert, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from agentmeter.db import UNAVAILABLE_ERRORS, is_sqlite
from agentmeter.tables import TraceCustomer, UsageRow
from otel_processor.usage import (
    QUANTITY_PLACES,
    StoreUnavailableError,
    UsageBatch,
    UsageRecord,
    WriteResult,
)

_USAGE: Table = UsageRow.__table__  # type: ignore[assignment]
_TRACES: Table = TraceCustomer.__table__  # type: ignore[assignment]
_MICROS: int = 10**QUANTITY_PLACES
# Bound on the number of values in one IN (…) list.
_CHUNK = 500


def to_micros(quantity: int | Decimal) -> int:
    """A usage quantity as integer micro-units (exact: quantities carry ≤ 6 places)."""
    if isinstance(quantity, int):
        return quantity * _MICROS
    return int(quantity.scaleb(QUANTITY_PLACES))


def from_micros(micros: int) -> Decimal:
    """Integer micro-units back to an exact Decimal quantity, without exponent notation."""
    whole, fraction = divmod(micros, _MICROS)
    if not fraction:
        return Decimal(whole)
    return Decimal(micros).scaleb(-QUANTITY_PLACES).normalize()


class SqlUsageSink:
    """A `UsageSink` on SQLite or PostgreSQL.

    One transaction per batch: trace customers are recorded (first one wins), customer-less
    records inherit their trace's customer, records are inserted with ON CONFLICT DO
    NOTHING on (tenant, trace id, span id, meter), earlier customer-less records of newly
    attributed traces are updated, then the transaction commits. `write` returns only after
    the commit. SQLite has one writer: writes from this process are serialized here.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = is_sqlite(engine)
        dialect_insert = sqlite.insert if self._sqlite else postgresql.insert
        self._insert_usage: Insert = dialect_insert(_USAGE).on_conflict_do_nothing(
            index_elements=["tenant_id", "trace_id", "span_id", "meter"]
        )
        self._insert_traces: Insert = dialect_insert(_TRACES).on_conflict_do_nothing(
            index_elements=["tenant_id", "trace_id"]
        )
        self._lock: AbstractContextManager[Any] = (
            threading.Lock() if self._sqlite else nullcontext()
        )

    def write(self, tenant_id: str, batch: UsageBatch) -> WriteResult:
        if not tenant_id:
            raise ValueError("SqlUsageSink.write needs the tenant id")
        try:
            with self._lock:
                result, unattributed = self._write(tenant_id, batch)
            if not self._sqlite and (unattributed or batch.trace_customers):
                # A concurrent writer may have committed the other half of a trace (its
                # customer, or its customer-less spans) after our reads: settle both now
                # that ours is committed, so one of the two always sees the other.
                with self._engine.begin() as connection:
                    traces = unattributed | set(batch.trace_customers)
                    _attribute_traces(connection, tenant_id, traces)
        except UNAVAILABLE_ERRORS as error:
            raise StoreUnavailableError(f"usage store unavailable: {error}") from None
        return result

    def _write(self, tenant_id: str, batch: UsageBatch) -> tuple[WriteResult, set[str]]:
        received = time.time_ns()
        with self._engine.begin() as connection:
            if batch.trace_customers:
                connection.execute(
                    self._insert_traces,
                    [
                        {"tenant_id": tenant_id, "trace_id": trace, "customer_id": customer}
                        for trace, customer in batch.trace_customers.items()
                    ],
                )
            orphan_traces = {r.trace_id for r in batch.records if not r.customer_id}
            inherited = _trace_customers(connection, tenant_id, orphan_traces)
            rows = [_row(tenant_id, record, received, inherited) for record in batch.records]
            inserted = connection.execute(self._insert_usage, rows).rowcount if rows else 0
            if batch.trace_customers:
                _attribute_traces(connection, tenant_id, batch.trace_customers)
        unattributed = orphan_traces - inherited.keys()
        return WriteResult(inserted=inserted, duplicates=len(rows) - inserted), unattributed


def _row(
    tenant_id: str, record: UsageRecord, received: int, inherited: dict[str, str]
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "meter": record.meter,
        "quantity_micros": to_micros(record.quantity),
        "customer_id": record.customer_id or inherited.get(record.trace_id, ""),
        "time_unix_nano": record.time_unix_nano,
        "received_unix_nano": received,
        "provider": record.provider,
        "model": record.model,
        "operation": record.operation,
        "agent_name": record.agent_name,
        "step": record.step,
        "tool": record.tool,
        "service_name": record.service_name,
        "source": record.source,
    }


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def _trace_customers(
    connection: Connection, tenant_id: str, trace_ids: Iterable[str]
) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in _chunks(trace_ids):
        query = select(_TRACES.c.trace_id, _TRACES.c.customer_id).where(
            _TRACES.c.tenant_id == tenant_id, _TRACES.c.trace_id.in_(chunk)
        )
        found.update({row.trace_id: row.customer_id for row in connection.execute(query)})
    return found


def _attribute_traces(connection: Connection, tenant_id: str, trace_ids: Iterable[str]) -> None:
    """Give customer-less usage of these traces the customer recorded for the trace."""
    customer = (
        select(_TRACES.c.customer_id)
        .where(_TRACES.c.tenant_id == _USAGE.c.tenant_id, _TRACES.c.trace_id == _USAGE.c.trace_id)
        .scalar_subquery()
    )
    has_customer = (
        select(_TRACES.c.trace_id)
        .where(_TRACES.c.tenant_id == _USAGE.c.tenant_id, _TRACES.c.trace_id == _USAGE.c.trace_id)
        .exists()
    )
    for chunk in _chunks(trace_ids):
        connection.execute(
            update(_USAGE)
            .where(
                _USAGE.c.tenant_id == bindparam("tenant"),
                _USAGE.c.customer_id == "",
                _USAGE.c.trace_id.in_(chunk),
                has_customer,
            )
            .values(customer_id=customer),
            {"tenant": tenant_id},
        )
