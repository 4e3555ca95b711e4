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

from sqlalchemy import Connection, Engine, Table, bindparam, select, text, tuple_, update

from agentmeter.tables import ProviderCostOverride, UsageRow, to_unix_nano
from exporter.provider_costs import CostOverride, CostOverrides, ProviderCostCatalog
from otel_processor.usage import UsageRecord, from_micros

_USAGE: Table = UsageRow.__table__  # type: ignore[assignment]
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
    batch_size: int = 5_000,
) -> int:
    """Recompute `provider_cost_pico` of the tenant's stored usage (from `start` on, if
    given) with today's catalog and overrides; return how many records changed.

    For when the builder adds or changes a cost override (the `pricing.recost` job).
    Records are read span by span in batches of about `batch_size` records, each with the
    overrides committed when its batch runs. Given an engine, each batch commits on its
    own; given a connection, everything runs in the caller's transaction, which the caller
    commits.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    catalog = catalog or ProviderCostCatalog()
    changed = 0
    after: tuple[int, str, str] | None = None
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


_SPAN_KEY = (_USAGE.c.time_unix_nano, _USAGE.c.trace_id, _USAGE.c.span_id)
_RECOST_COLUMNS = (
    *_SPAN_KEY,
    _USAGE.c.meter,
    _USAGE.c.quantity_micros,
    _USAGE.c.provider,
    _USAGE.c.model,
    _USAGE.c.provider_cost_pico,
)
_SET_COST = (
    update(_USAGE)
    .where(
        _USAGE.c.tenant_id == bindparam("tenant"),
        _USAGE.c.trace_id == bindparam("trace"),
        _USAGE.c.span_id == bindparam("span"),
        _USAGE.c.meter == bindparam("meter_"),
        _USAGE.c.time_unix_nano == bindparam("time"),
    )
    .values(provider_cost_pico=bindparam("cost"))
)


def _recost_page(
    connection: Connection,
    tenant_id: str,
    start: datetime | None,
    after: tuple[int, str, str] | None,
    catalog: ProviderCostCatalog,
    batch_size: int,
) -> tuple[int, tuple[int, str, str] | None]:
    """Recost the next whole spans after `after`; return the changes and where to go on
    (None when done)."""
    hold_cost_overrides(connection, tenant_id)
    overrides = load_cost_overrides(connection, tenant_id)
    query = select(*_RECOST_COLUMNS).where(_USAGE.c.tenant_id == tenant_id)
    if start is not None:
        query = query.where(_USAGE.c.time_unix_nano >= to_unix_nano(start))
    if after is not None:
        query = query.where(tuple_(*_SPAN_KEY) > tuple_(*after))
    rows = list(connection.execute(query.order_by(*_SPAN_KEY).limit(batch_size)))
    if not rows:
        return 0, None
    following: tuple[int, str, str] | None = None  # None: the last page
    if len(rows) == batch_size:
        # The page may end inside a span: leave that span whole to the next page, unless
        # it is the only one on the page, then read all of it here.
        last = (rows[-1].time_unix_nano, rows[-1].trace_id, rows[-1].span_id)
        whole = [r for r in rows if (r.time_unix_nano, r.trace_id, r.span_id) != last]
        if whole:
            rows = whole
            following = (rows[-1].time_unix_nano, rows[-1].trace_id, rows[-1].span_id)
        else:
            span = select(*_RECOST_COLUMNS).where(
                _USAGE.c.tenant_id == tenant_id, tuple_(*_SPAN_KEY) == tuple_(*last)
            )
            rows = list(connection.execute(span))
            following = last

    records = [
        UsageRecord(
            trace_id=row.trace_id,
            span_id=row.span_id,
            meter=row.meter,
            quantity=from_micros(row.quantity_micros),
            customer_id="",
            time_unix_nano=row.time_unix_nano,
            provider=row.provider,
            model=row.model,
        )
        for row in rows
    ]
    costs = catalog.costs(records, overrides)
    updates = [
        {
            "tenant": tenant_id,
            "trace": row.trace_id,
            "span": row.span_id,
            "meter_": row.meter,
            "time": row.time_unix_nano,
            "cost": cost,
        }
        for row, cost in zip(rows, costs, strict=True)
        if cost != row.provider_cost_pico
    ]
    if updates:
        connection.execute(_SET_COST, updates)
    return len(updates), following
