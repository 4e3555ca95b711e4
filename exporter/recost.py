"""Provider cost in the store: reading a tenant's overrides, and recosting stored usage.

The costing rules are `exporter.provider_costs` (pure); this module is their SQL.

Consistency with ingest. A record must never keep the cost of overrides that were replaced
before it committed, whichever order the writers run in. So every writer of costs reads the
overrides inside the transaction that writes, while holding the tenant's *cost overrides
lock* shared (`hold_cost_overrides`), and a change of overrides takes that lock exclusively
(`lock_cost_overrides`) before it commits:

- on PostgreSQL the lock is a transaction-scoped advisory lock: a change waits for the
  writers that read the old overrides to commit, and writers that start meanwhile wait for
  the change to commit and then read the new overrides;
- on SQLite every write transaction begins IMMEDIATE (the single writer lock), which
  already orders them; the functions do nothing there.

The recost that follows a change (`recost_usage`, run as a job, never in a request) reads
the overrides again for each page, inside the page's transaction under the shared lock:
records that arrive while it runs are costed right by their writer, and a later change
(with its own recost queued behind this one) never sees a page rewritten with the old rates.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, Engine, Table, bindparam, select, text, tuple_, update

from agentmeter.db import in_chunks
from agentmeter.tables import (
    SPAN_METERS,
    ProviderCostOverride,
    UsageDimensions,
    to_unix_nano,
    usage_meters,
    usage_spans,
)
from agentmeter.usage_keys import UsageKeys, span_hex, trace_hex
from exporter.provider_costs import CostOverride, CostOverrides, ProviderCostCatalog
from otel_processor.usage import Quantity, UsageRecord, from_micros

_DIMENSIONS: Table = UsageDimensions.__table__  # type: ignore[assignment]
_OVERRIDES: Table = ProviderCostOverride.__table__  # type: ignore[assignment]


def _lock_id(tenant_id: str) -> int:
    """The tenant's advisory lock id: a stable signed 64-bit number."""
    digest = hashlib.sha256(f"agentmeter.cost_overrides:{tenant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def hold_cost_overrides(connection: Connection, tenant_id: str) -> None:
    """Take the tenant's cost overrides lock shared until the transaction ends (writers of
    costs, before they read the overrides)."""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock_shared(:id)"), {"id": _lock_id(tenant_id)}
        )


def lock_cost_overrides(connection: Connection, tenant_id: str) -> None:
    """Take the tenant's cost overrides lock exclusively until the transaction ends (a
    change of overrides, before it commits)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _lock_id(tenant_id)})


def load_cost_overrides(connection: Connection, tenant_id: str) -> CostOverrides:
    """The tenant's `ProviderCostOverride` rows, compiled."""
    query = select(_OVERRIDES).where(_OVERRIDES.c.tenant_id == tenant_id)
    return CostOverrides(CostOverride.from_row(row) for row in connection.execute(query))


def recost_usage(
    engine_or_connection: Engine | Connection,
    tenant_id: str,
    *,
    start: datetime | None = None,
    catalog: ProviderCostCatalog | None = None,
    batch_size: int = 2_000,
) -> int:
    """Recompute the provider cost of the tenant's stored usage (from `start` on, if given)
    with today's catalog and overrides; return how many records changed.

    For when the builder adds or changes a cost override (the `pricing.recost` job).
    Spans are read in batches of `batch_size` (each whole, with all its records), each
    with the overrides committed when its batch runs. Given an engine, each batch commits
    on its own; given a connection, everything runs in the caller's transaction, which the
    caller commits.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    catalog = catalog or ProviderCostCatalog()
    changed = 0
    after: tuple[bytes, int, int] | None = None
    while True:
        if isinstance(engine_or_connection, Engine):
            with engine_or_connection.begin() as connection:
                page_changed, after = _recost_page(
                    connection, tenant_id, start, after, catalog, batch_size
                )
        else:
            page_changed, after = _recost_page(
                engine_or_connection, tenant_id, start, after, catalog, batch_size
            )
        changed += page_changed
        if after is None:
            return changed


_S = usage_spans.c
_M = usage_meters.c
_SPAN_KEY = (_S.trace_id, _S.span_id, _S.time_unix_nano)  # a tenant's spans, in key order
_COSTS = [(meter, _S[meter], _S[f"{meter}_cost_pico"]) for meter in SPAN_METERS]
_SET_SPAN_COST = {
    meter: update(usage_spans)
    .where(
        _S.tenant_key == bindparam("tenant"),
        _S.trace_id == bindparam("trace"),
        _S.span_id == bindparam("span"),
        _S.time_unix_nano == bindparam("time"),
    )
    .values({f"{meter}_cost_pico": bindparam("cost")})
    for meter in SPAN_METERS
}
_SET_METER_COST = (
    update(usage_meters)
    .where(
        _M.tenant_key == bindparam("tenant"),
        _M.trace_id == bindparam("trace"),
        _M.span_id == bindparam("span"),
        _M.time_unix_nano == bindparam("time"),
        _M.meter == bindparam("meter_"),
    )
    .values(provider_cost_pico=bindparam("cost"))
)


# Where the (quantity, cost) pairs of a span's token meters start in a page's rows: after
# the span's key, `has_meters`, the provider and the model.
_FIRST_COST = len(_SPAN_KEY) + 3


class _Stored(NamedTuple):
    """One stored record: where its cost is, and what it is now."""

    key: tuple[bytes, int, int]  # (trace id, span id, end time) of its span
    meter: str
    cost: int | None


def _recost_page(
    connection: Connection,
    tenant_id: str,
    start: datetime | None,
    after: tuple[bytes, int, int] | None,
    catalog: ProviderCostCatalog,
    batch_size: int,
) -> tuple[int, tuple[bytes, int, int] | None]:
    """Recost the next spans after `after`; return the changes and where to go on (None
    when done)."""
    hold_cost_overrides(connection, tenant_id)
    overrides = load_cost_overrides(connection, tenant_id)
    tenant_key = UsageKeys(connection).find_tenant(tenant_id)
    if tenant_key is None:
        return 0, None
    query = (
        select(
            *_SPAN_KEY,
            _S.has_meters,
            _DIMENSIONS.c.provider,
            _DIMENSIONS.c.model,
            *(column for _, micros, cost in _COSTS for column in (micros, cost)),
        )
        .join(_DIMENSIONS, _DIMENSIONS.c.id == _S.dimension_id)
        .where(_S.tenant_key == tenant_key)
    )
    if start is not None:
        query = query.where(_S.time_unix_nano >= to_unix_nano(start))
    if after is not None:
        query = query.where(tuple_(*_SPAN_KEY) > tuple_(*after))
    rows = list(connection.execute(query.order_by(*_SPAN_KEY).limit(batch_size)))
    if not rows:
        return 0, None
    spans = {tuple(row[:3]): row for row in rows}
    records: list[UsageRecord] = []
    stored: list[_Stored] = []

    def add(key: tuple[bytes, int, int], meter: str, quantity: Quantity, cost: int | None) -> None:
        trace, span, end = key
        row = spans[key]
        records.append(
            UsageRecord(
                trace_id=trace_hex(trace),
                span_id=span_hex(span),
                meter=meter,
                quantity=quantity,
                customer_id="",
                time_unix_nano=end,
                provider=row.provider,
                model=row.model,
            )
        )
        stored.append(_Stored(key, meter, cost))

    for key, row in spans.items():
        for index, (meter, _, _) in enumerate(_COSTS):
            tokens = row[_FIRST_COST + 2 * index]
            if tokens is not None:
                add(key, meter, tokens, row[_FIRST_COST + 2 * index + 1])
    with_meters = [key for key, row in spans.items() if row.has_meters]
    for chunk in in_chunks(with_meters):
        query = select(*(_M[c.name] for c in _SPAN_KEY), _M.meter, _M.quantity_micros,
                       _M.provider_cost_pico).where(
            _M.tenant_key == tenant_key, tuple_(*(_M[c.name] for c in _SPAN_KEY)).in_(chunk)
        )  # fmt: skip
        for trace, span, end, meter, micros, cost in connection.execute(query):
            add((bytes(trace), span, end), meter, from_micros(micros), cost)
    costs = catalog.costs(records, overrides)
    changed = 0
    updates: dict[str | None, list[dict[str, object]]] = {}
    for record, cost in zip(stored, costs, strict=True):
        if cost == record.cost:
            continue
        trace, span, end = record.key
        parameters = {"tenant": tenant_key, "trace": trace, "span": span, "time": end}
        parameters["cost"] = cost
        if record.meter in _SET_SPAN_COST:
            updates.setdefault(record.meter, []).append(parameters)
        else:
            updates.setdefault(None, []).append(parameters | {"meter_": record.meter})
        changed += 1
    for meter_name, parameters_list in updates.items():
        statement = _SET_METER_COST if meter_name is None else _SET_SPAN_COST[meter_name]
        connection.execute(statement, parameters_list)
    if len(rows) < batch_size:
        return changed, None
    trace, span, end = rows[-1][:3]
    return changed, (trace, span, end)
