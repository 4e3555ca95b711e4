"""The SQL usage sink: bulk insert with dedup, trace attribution, commit before return."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Insert, Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from agentmeter.db import dialect_insert, in_chunks, is_retryable, is_sqlite, read_only
from agentmeter.partitions import MonthlyPartitions, missing_partition
from agentmeter.response_keys import response_key
from agentmeter.tables import TraceCustomer, UsageRow
from exporter.group_commit import GroupCommit
from exporter.provider_calls import (
    inherit_agent_names,
    lock_calls,
    settle_calls,
    store_agent_spans,
)
from exporter.provider_costs import CostOverrides, ProviderCostCatalog, canonical_provider
from exporter.recost import hold_cost_overrides, load_cost_overrides
from otel_processor.usage import (
    StoreUnavailableError,
    UsageBatch,
    UsageRecord,
    WriteResult,
    to_micros,
)

logger = logging.getLogger("agentmeter.ingest")

_USAGE: Table = UsageRow.__table__  # type: ignore[assignment]
_TRACES: Table = TraceCustomer.__table__  # type: ignore[assignment]
# Bound on the number of values in one IN (…) list.
# The overrides a batch was costed with, and its records' costs.
_Costed = tuple[CostOverrides, list[int | None]]


class _Write(NamedTuple):
    tenant_id: str
    batch: UsageBatch
    costed: _Costed | None  # the overrides it was costed with, and its records' costs


# What a committed write reports: its counts, and its traces still without a customer.
_Written = tuple[WriteResult, set[str]]


class SqlUsageSink:
    """A `UsageSink` on SQLite or PostgreSQL.

    Per batch: trace customers are recorded (first one wins), customer-less records inherit
    their trace's customer, records are inserted with ON CONFLICT DO NOTHING on (tenant,
    trace id, span id, meter, time), earlier customer-less records of newly attributed traces
    are updated. Batches written at the same moment from several threads share one
    transaction (`exporter.group_commit`); if that transaction fails on one batch's data,
    each batch is written again in a transaction of its own, so only the bad batch fails.
    `write` returns only after its batch is committed. Writes from this process are
    serialized here (SQLite has one writer).

    Providers are stored by their canonical id (`canonical_provider`). In the same
    transaction, agent spans are recorded and nameless records take their nearest agent's
    name, and the records that bill each provider call are settled
    (`exporter.provider_calls`).

    On PostgreSQL, the month partitions the records need are created first, in their own
    transaction (`agentmeter.partitions`).

    With `costs`, each record is stored with its provider cost (`provider_cost_pico`),
    computed before the write from the catalog and the tenant's cost overrides, and again
    inside the write if the overrides changed meanwhile (`exporter.recost` says why).
    """

    def __init__(self, engine: Engine, costs: ProviderCostCatalog | None = None) -> None:
        self._engine = engine
        self._costs = costs
        self._sqlite = is_sqlite(engine)
        # The hot path goes straight to the driver's executemany with tuples: SQLAlchemy's
        # per-row parameter handling cost more than the insert itself, and the driver's
        # rowcount (sum over the batch) is what counts inserted records on both backends.
        placeholder = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_usage_sql = (
            f"INSERT INTO {_USAGE.name} ({', '.join(_ROW_COLUMNS)}) "
            f"VALUES ({', '.join([placeholder] * len(_ROW_COLUMNS))}) "
            "ON CONFLICT (tenant_id, trace_id, span_id, meter, time_unix_nano) DO NOTHING"
        )
        self._insert_traces: Insert = dialect_insert(engine, _TRACES).on_conflict_do_nothing(
            index_elements=["tenant_id", "trace_id"]
        )
        self._partitions = MonthlyPartitions(engine)
        # Every write of this sink goes through one group committer: SQLite's one writer
        # needs them serialized anyway, and on both backends exports that arrive together
        # share a commit.
        self._commits = GroupCommit(self._commit_group)

    def write(self, tenant_id: str, batch: UsageBatch) -> WriteResult:
        if not tenant_id:
            raise ValueError("SqlUsageSink.write needs the tenant id")
        batch = _as_stored(batch)
        try:
            costed = self._provider_costs(tenant_id, batch)
            # Before the group's transaction: a missing month is created in its own.
            self._partitions.ensure(r.time_unix_nano for r in batch.records)
            result, unattributed = self._commits.submit(_Write(tenant_id, batch, costed))
            if not self._sqlite and (unattributed or batch.trace_customers):
                # A concurrent writer may have committed the other half of a trace (its
                # customer, or its customer-less spans) after our reads: settle both now
                # that ours is committed, so one of the two always sees the other.
                with self._engine.begin() as connection:
                    traces = unattributed | set(batch.trace_customers)
                    _attribute_traces(connection, tenant_id, traces)
        except SQLAlchemyError as error:
            if is_retryable(error):
                raise StoreUnavailableError(f"usage store unavailable: {error}") from None
            if isinstance(error, IntegrityError) and missing_partition(error):
                # A month detached since it was cached: the exporter's retry recreates it.
                self._partitions.forget()
                raise StoreUnavailableError("usage month was detached; retry") from None
            raise  # a bug in the code or the schema: answered INTERNAL, never "retry"
        return result

    def _provider_costs(self, tenant_id: str, batch: UsageBatch) -> _Costed | None:
        # Outside the group's transaction: reading overrides and costing need no writer.
        if self._costs is None or not batch.records:
            return None
        with read_only(self._engine) as connection:
            overrides = load_cost_overrides(connection, tenant_id)
        return overrides, self._costs.costs(batch.records, overrides)

    def _settled_costs(
        self, connection: Connection, tenant_id: str, batch: UsageBatch, costed: _Costed | None
    ) -> list[int | None]:
        """The costs to store: those computed before the write, unless the overrides have
        changed since (read again in the write's transaction, under the shared lock)."""
        if costed is None or self._costs is None:
            return [None] * len(batch.records)
        hold_cost_overrides(connection, tenant_id)
        overrides, costs = costed
        current = load_cost_overrides(connection, tenant_id)
        return costs if current == overrides else self._costs.costs(batch.records, current)

    def _commit_group(self, writes: Sequence[_Write]) -> list[_Written | BaseException]:
        """One transaction for every write of the group; if it fails, each write in a
        transaction of its own, so one batch's bad data fails only its own export."""
        if len(writes) > 1:
            try:
                with self._engine.begin() as connection:
                    return [self._write(connection, write) for write in writes]
            except Exception as error:
                if isinstance(error, SQLAlchemyError) and is_retryable(error):
                    # The store itself failed (down, locked, a deadlock): each write would
                    # meet it again; every exporter of the group retries.
                    return [error] * len(writes)
                logger.warning("a group of %d writes failed; writing each alone", len(writes))
        outcomes: list[_Written | BaseException] = []
        for write in writes:
            try:
                with self._engine.begin() as connection:
                    outcomes.append(self._write(connection, write))
            except Exception as error:
                outcomes.append(error)
        return outcomes

    def _write(self, connection: Connection, write: _Write) -> _Written:
        tenant_id, batch, costed = write
        received = time.time_ns()
        costs = self._settled_costs(connection, tenant_id, batch, costed)
        lock_calls(connection, tenant_id, batch.records, batch.agent_spans)
        # Rows go in key order: two batches holding the same traces in other orders
        # would otherwise deadlock on PostgreSQL.
        if batch.trace_customers:
            connection.execute(
                self._insert_traces,
                [
                    {"tenant_id": tenant_id, "trace_id": trace, "customer_id": customer}
                    for trace, customer in sorted(batch.trace_customers.items())
                ],
            )
        orphan_traces = {r.trace_id for r in batch.records if not r.customer_id}
        inherited = _trace_customers(connection, tenant_id, orphan_traces)
        rows = sorted(
            (
                _row(tenant_id, record, received, inherited, cost)
                for record, cost in zip(batch.records, costs, strict=True)
            ),
            key=_row_key,
        )
        inserted = 0
        if rows:
            inserted = connection.exec_driver_sql(self._insert_usage_sql, rows).rowcount
        store_agent_spans(connection, tenant_id, batch.agent_spans)
        settle_calls(connection, tenant_id, batch.records, all_new=inserted == len(rows))
        inherit_agent_names(connection, tenant_id, batch.records, batch.agent_spans)
        # Customer-less rows stored earlier (say, by an attempt whose reply was lost)
        # of traces whose customer is now known get it too.
        attributed = set(batch.trace_customers) | inherited.keys()
        if attributed:
            _attribute_traces(connection, tenant_id, attributed)
        unattributed = orphan_traces - inherited.keys()
        return WriteResult(inserted=inserted, duplicates=len(rows) - inserted), unattributed


_ROW_COLUMNS = (
    "tenant_id",
    "trace_id",
    "span_id",
    "meter",
    "quantity_micros",
    "customer_id",
    "time_unix_nano",
    "received_unix_nano",
    "provider",
    "model",
    "operation",
    "agent_name",
    "step",
    "tool",
    "service_name",
    "source",
    "parent_span_id",
    "response_id",
    "provider_cost_pico",
)
Row = tuple[Any, ...]


def _row_key(row: Row) -> tuple[str, str, str, int]:
    return row[1], row[2], row[3], row[6]


def _row(
    tenant_id: str,
    record: UsageRecord,
    received: int,
    inherited: dict[str, str],
    provider_cost_pico: int | None,
) -> Row:
    """A usage row in `_ROW_COLUMNS` order."""
    return (
        tenant_id,
        record.trace_id,
        record.span_id,
        record.meter,
        to_micros(record.quantity),
        record.customer_id or inherited.get(record.trace_id, ""),
        record.time_unix_nano,
        received,
        *record[6:],  # provider … response_id, in UsageRecord's field order
        provider_cost_pico,
    )


def _as_stored(batch: UsageBatch) -> UsageBatch:
    """The batch with each record's provider as its canonical id (`openai.chat` → `openai`)
    and its response id as its stored key (`agentmeter.response_keys`)."""
    keys: dict[str, str] = {}  # a span's records share its response id: hash it once
    records: list[UsageRecord] = []
    for r in batch.records:
        provider = canonical_provider(r.provider)
        key = keys.get(r.response_id)
        if key is None:
            key = keys[r.response_id] = response_key(r.response_id)
        unchanged = provider == r.provider and key == r.response_id
        records.append(r if unchanged else r._replace(provider=provider, response_id=key))
    return replace(batch, records=records)


def _trace_customers(
    connection: Connection, tenant_id: str, trace_ids: Iterable[str]
) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in in_chunks(sorted(trace_ids)):
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
    for chunk in in_chunks(sorted(trace_ids)):
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
