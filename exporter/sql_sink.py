"""The SQL usage sink: bulk insert with dedup, trace attribution, commit before return."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from decimal import Decimal
from functools import lru_cache, partial
from itertools import repeat
from operator import is_not, itemgetter
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, Insert, Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from agentmeter.db import (
    dialect_insert,
    driver_placeholder,
    in_chunks,
    is_retryable,
    is_sqlite,
    read_only,
)
from agentmeter.partitions import MonthlyPartitions, missing_partition
from agentmeter.response_keys import response_key
from agentmeter.tables import SPAN_KEY, SPAN_METERS, TraceCustomer, usage_spans
from agentmeter.usage_keys import (
    Dimensions,
    UsageKeyCache,
    UsageKeys,
    span_int,
    trace_bytes,
    trace_hex,
)
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

_TRACES: Table = TraceCustomer.__table__  # type: ignore[assignment]
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
    their trace's customer, each span's records are inserted as one row of `usage_spans`
    (its token meters) and rows of `usage_meters` (its other meters), with ON CONFLICT DO
    NOTHING on their identity; a span stored before gets only the meters it lacked, the
    others count as duplicates (identity stays per meter). Earlier customer-less spans of
    newly attributed traces are updated. Batches written at the same moment from several
    threads share one transaction (`exporter.group_commit`); if that transaction fails on
    one batch's data, each batch is written again in a transaction of its own, so only the
    bad batch fails. `write` returns only after its batch is committed. Writes from this
    process are serialized here (SQLite has one writer).

    Providers are stored by their canonical id (`canonical_provider`), ids as bytes and
    integers, strings once each (`agentmeter.usage_keys`). In the same transaction, agent
    spans are recorded and nameless spans take their nearest agent's name, and the records
    that bill each provider call are settled (`exporter.provider_calls`).

    On PostgreSQL, the month partitions the records need are created first, in their own
    transaction (`agentmeter.partitions`).

    With `costs`, each record is stored with its provider cost, computed before the write
    from the catalog and the tenant's cost overrides, and again inside the write if the
    overrides changed meanwhile (`exporter.recost` says why).
    """

    def __init__(self, engine: Engine, costs: ProviderCostCatalog | None = None) -> None:
        self._engine = engine
        self._costs = costs
        self._sqlite = is_sqlite(engine)
        self._keys = UsageKeyCache()
        # tenant id → its cost overrides as the last write read them (under the lock).
        self._overrides: dict[str, CostOverrides] = {}
        self._received = 0
        # The hot path goes straight to the driver's executemany with tuples: SQLAlchemy's
        # per-row parameter handling cost more than the insert itself, and the driver's
        # rowcount (sum over the batch) is what counts inserted rows on both backends.
        self._p = driver_placeholder(engine)
        self._insert_traces: Insert = dialect_insert(engine, _TRACES).on_conflict_do_nothing(
            index_elements=["tenant_key", "trace_id"]
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
                    keys = self._keys.keys(connection)
                    traces = unattributed | set(batch.trace_customers)
                    attribute_traces(connection, keys, tenant_id, traces)
                self._keys.keep(keys)
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
        """The batch's costs, with the tenant's overrides as this sink's last write read
        them (or read now, outside any transaction, for its first write): costing needs no
        writer, and the write checks them again under the lock (`_settled_costs`)."""
        if self._costs is None or not batch.records:
            return None
        overrides = self._overrides.get(tenant_id)
        if overrides is None:
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
        current = self._overrides[tenant_id] = load_cost_overrides(connection, tenant_id)
        return costs if current == overrides else self._costs.costs(batch.records, current)

    def _commit_group(self, writes: Sequence[_Write]) -> list[_Written | BaseException]:
        """One transaction for every write of the group; if it fails, each write in a
        transaction of its own, so one batch's bad data fails only its own export."""
        if len(writes) > 1:
            try:
                with self._engine.begin() as connection:
                    keys = self._keys.keys(connection)
                    written: list[_Written | BaseException] = [
                        self._write(connection, keys, write) for write in writes
                    ]
                self._keys.keep(keys)
                return written
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
                    keys = self._keys.keys(connection)
                    outcomes.append(self._write(connection, keys, write))
                self._keys.keep(keys)
            except Exception as error:
                outcomes.append(error)
        return outcomes

    def _next_received(self) -> int:
        """This write's receive time: unique per write of this sink (writes are serialized),
        so that a span row carrying it is known to be this write's."""
        self._received = max(time.time_ns(), self._received + 1)
        return self._received

    def _write(self, connection: Connection, keys: UsageKeys, write: _Write) -> _Written:
        tenant_id, batch, costed = write
        received = self._next_received()
        costs = self._settled_costs(connection, tenant_id, batch, costed)
        lock_calls(connection, tenant_id, batch.records, batch.agent_spans)
        tenant_key = keys.tenant(tenant_id)
        # Rows go in key order: two batches holding the same traces in other orders
        # would otherwise deadlock on PostgreSQL.
        if batch.trace_customers:
            customers = keys.customers_of(tenant_key, batch.trace_customers.values())
            connection.execute(
                self._insert_traces,
                [
                    {
                        "tenant_key": tenant_key,
                        "trace_id": trace_bytes(trace),
                        "customer_key": customers[customer],
                    }
                    for trace, customer in sorted(batch.trace_customers.items())
                ],
            )
        orphan_traces = {r.trace_id for r in batch.records if not r.customer_id}
        inherited = _trace_customers(connection, tenant_key, orphan_traces)
        rows = _Rows(keys, tenant_key, received, batch.records, costs, inherited)
        # (psycopg sends a None as cheaply as any value: one shape there.)
        shapes = _by_shape(rows.spans) if self._sqlite else [(SPAN_COLUMNS, rows.spans)]
        new_spans = sum(
            connection.exec_driver_sql(
                _insert_sql(self._p, "usage_spans", columns, SPAN_KEY), values
            ).rowcount
            for columns, values in shapes
            if values
        )
        inserted = rows.token_records
        if new_spans < len(rows.spans):
            inserted -= self._merge_stored(connection, rows)
        if rows.meters:
            insert_meters = _insert_sql(self._p, "usage_meters", _METER_COLUMNS, _METER_KEY)
            inserted += connection.exec_driver_sql(insert_meters, rows.meters).rowcount
        store_agent_spans(connection, tenant_key, batch.agent_spans)
        settle_calls(
            connection, keys, tenant_id, batch.records, all_new=new_spans == len(rows.spans)
        )
        inherit_agent_names(connection, keys, tenant_id, batch.records, batch.agent_spans)
        # Customer-less spans stored earlier (say, by an attempt whose reply was lost)
        # of traces whose customer is now known get it too.
        attributed = set(batch.trace_customers) | inherited.keys()
        if attributed:
            attribute_traces(connection, keys, tenant_id, attributed)
        unattributed = orphan_traces - inherited.keys()
        result = WriteResult(inserted=inserted, duplicates=len(batch.records) - inserted)
        return result, unattributed

    def _merge_stored(self, connection: Connection, rows: _Rows) -> int:
        """Some of the batch's spans were stored before (a retry, another receiver): give
        the stored rows the token meters they lack (and mark that they have other meters,
        when this batch brings some). Returns how many of the batch's token records were
        not inserted: those the stored copies already held."""
        p = self._p
        stored: dict[tuple[bytes, int, int], tuple[Any, ...]] = {}
        presence = ", ".join(f"{m} IS NOT NULL" for m in SPAN_METERS)
        for chunk in in_chunks(rows.spans):
            keys = " OR ".join(
                [f"(trace_id = {p} AND span_id = {p} AND time_unix_nano = {p})"] * len(chunk)
            )
            found = connection.exec_driver_sql(
                f"SELECT trace_id, span_id, time_unix_nano, received_unix_nano, has_meters, "
                f"{presence} FROM usage_spans WHERE tenant_key = {p} AND ({keys})",
                (rows.tenant_key, *(value for row in chunk for value in row[1:4])),
            )
            stored.update({(bytes(r[0]), r[1], r[2]): tuple(r[3:]) for r in found})
        held = 0
        for row in rows.spans:
            received, has_meters, *present = stored[row[1], row[2], row[3]]
            if received == rows.received:
                continue  # inserted by this write
            values: dict[str, Any] = {}
            for index, meter in enumerate(SPAN_METERS):
                tokens = row[_FIRST_METER + 3 * index]
                if tokens is None:
                    continue
                if present[index]:
                    held += 1
                else:
                    values[meter] = tokens
                    values[f"{meter}_cost_pico"] = row[_FIRST_METER + 3 * index + 1]
            if row[_HAS_METERS] and not has_meters:
                values["has_meters"] = True
            if values:
                connection.execute(
                    update(usage_spans)
                    .where(*(usage_spans.c[k] == v for k, v in zip(SPAN_KEY, row, strict=False)))
                    .values(values)
                )
        return held


SPAN_COLUMNS = (
    *SPAN_KEY,
    "customer_key",
    "dimension_id",
    "received_unix_nano",
    "parent_span_id",
    "response_key",
    "has_meters",
    *(c for m in SPAN_METERS for c in (m, f"{m}_cost_pico", f"{m}_superseded_by")),
)
_HAS_METERS = SPAN_COLUMNS.index("has_meters")
_FIRST_METER = _HAS_METERS + 1
_METER_INDEX = {meter: _FIRST_METER + 3 * i for i, meter in enumerate(SPAN_METERS)}
_METER_KEY = (*SPAN_KEY, "meter")
_METER_COLUMNS = (*_METER_KEY, "quantity_micros", "provider_cost_pico")
Row = list[Any]

# row → for each of its values, whether it is set (not None), without a Python loop
_NOT_NULL = partial(map, is_not, repeat(None))


def _by_shape(
    rows: Sequence[tuple[Any, ...]],
) -> Iterator[tuple[tuple[str, ...], Sequence[Any]]]:
    """SQLite: span rows (of `SPAN_COLUMNS`, in order) grouped by which of their values are
    set: each group's columns, and its rows' values of those columns. NULLs are left to the
    columns' default rather than sent: sqlite3 binds each None parameter through its
    adapter look-up, ~0.2 µs apiece (a span row has ~15), against ~0.01 µs an integer."""
    groups: dict[tuple[bool, ...], list[tuple[Any, ...]]] = {}
    for row in rows:
        groups.setdefault(tuple(_NOT_NULL(row)), []).append(row)
    for shape, grouped in groups.items():
        present = [index for index, is_set in enumerate(shape) if is_set]
        pick = itemgetter(*present)
        yield tuple(SPAN_COLUMNS[index] for index in present), [pick(row) for row in grouped]


@lru_cache(maxsize=256)
def _insert_sql(
    placeholder: str, table: str, columns: tuple[str, ...], key: tuple[str, ...]
) -> str:
    """The INSERT of rows of `table` with these columns, a copy of a stored `key` skipped
    (span rows come in a few shapes, `_by_shape`: cached)."""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join([placeholder] * len(columns))}) "
        f"ON CONFLICT ({', '.join(key)}) DO NOTHING"
    )


def _whole(quantity: int | Decimal) -> int | None:
    """A quantity as a whole number, None if it has a fraction."""
    if type(quantity) is int:
        return quantity
    whole, fraction = divmod(to_micros(quantity), 10**6)
    return None if fraction else whole


class _Rows:
    """A batch's records as rows of `usage_spans` (one per span, in key order) and of
    `usage_meters` (its other meters)."""

    def __init__(
        self,
        keys: UsageKeys,
        tenant_key: int,
        received: int,
        records: Sequence[UsageRecord],
        costs: Sequence[int | None],
        inherited: dict[str, int],
    ) -> None:
        self.tenant_key = tenant_key
        self.received = received
        by_span: dict[tuple[str, str, int], list[int]] = {}
        for index, record in enumerate(records):
            by_span.setdefault((record.trace_id, record.span_id, record.time_unix_nano), []).append(
                index
            )
        firsts = [records[indexes[0]] for indexes in by_span.values()]
        customers = keys.customers_of(
            tenant_key,
            {r.customer_id for r in firsts if r.customer_id or r.trace_id not in inherited},
        )
        dimensions = keys.dimensions_of({Dimensions(*r[6:13]) for r in firsts})
        self.spans: list[tuple[Any, ...]] = []
        self.meters: list[tuple[Any, ...]] = []
        # Token records put in a span row (duplicates within the batch left out).
        self.token_records = 0
        for (trace, span, end), indexes in sorted(by_span.items()):
            first = records[indexes[0]]
            key = (tenant_key, trace_bytes(trace), span_int(span), end)
            row: Row = [
                *key,
                customers[first.customer_id]
                if first.customer_id or trace not in inherited
                else inherited[trace],
                dimensions[Dimensions(*first[6:13])],
                received,
                span_int(first.parent_span_id),
                None,
                None,
                *([None] * (3 * len(SPAN_METERS))),
            ]
            for index in indexes:
                record = records[index]
                column = _METER_INDEX.get(record.meter)
                tokens = None if column is None else _whole(record.quantity)
                if column is None or tokens is None:  # (part tokens: never from spans)
                    self.meters.append(
                        (*key, record.meter, to_micros(record.quantity), costs[index])
                    )
                    row[_HAS_METERS] = True
                elif row[column] is None:
                    row[column] = tokens
                    row[column + 1] = costs[index]
                    if record.response_id and row[_HAS_METERS - 1] is None:
                        row[_HAS_METERS - 1] = bytes.fromhex(record.response_id)
                    self.token_records += 1
            self.spans.append(tuple(row))
        self.meters.sort(key=lambda m: m[:5])


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
        if provider == r.provider and key == r.response_id:
            records.append(r)
        else:  # (positionally: `_replace` cost more than the rest of this loop)
            records.append(_record((*r[:6], provider, *r[7:15], key)))
    return replace(batch, records=records)


# A UsageRecord from a tuple of its fields, in order, without NamedTuple's per-call checks.
_record = partial(tuple.__new__, UsageRecord)


def _trace_customers(
    connection: Connection, tenant_key: int, trace_ids: Iterable[str]
) -> dict[str, int]:
    """trace id → the key of the customer recorded for it, of these traces."""
    found: dict[str, int] = {}
    for chunk in in_chunks(sorted(trace_ids)):
        query = select(_TRACES.c.trace_id, _TRACES.c.customer_key).where(
            _TRACES.c.tenant_key == tenant_key,
            _TRACES.c.trace_id.in_([trace_bytes(trace) for trace in chunk]),
        )
        found.update({trace_hex(trace): key for trace, key in connection.execute(query)})
    return found


def attribute_traces(
    connection: Connection, keys: UsageKeys, tenant_id: str, trace_ids: Iterable[str]
) -> None:
    """Give the customer-less spans of these traces the customer recorded for their trace."""
    tenant_key = keys.find_tenant(tenant_id)
    nobody = None if tenant_key is None else keys.find_customer(tenant_key, "")
    if tenant_key is None or nobody is None:
        return  # the tenant never stored a customer-less span
    customers = _trace_customers(connection, tenant_key, trace_ids)
    if not customers:
        return
    statement = (
        update(usage_spans)
        .where(
            usage_spans.c.tenant_key == tenant_key,
            usage_spans.c.customer_key == nobody,
            usage_spans.c.trace_id == bindparam("b_trace"),
        )
        .values(customer_key=bindparam("b_customer"))
    )
    connection.execute(
        statement,
        [
            {"b_trace": trace_bytes(trace), "b_customer": customer}
            for trace, customer in sorted(customers.items())
        ],
    )
