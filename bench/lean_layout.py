"""Bytes per LLM span of the lean usage layout proposed for issue 13, before it is built.

    scripts/test.sh --exec python bench/lean_layout.py [--spans 30000]
        [--backend both|sqlite|postgresql] [--no-response-index]

Stores the same spans as `bench/storage.py` (input, cache-read and output tokens each) in
the proposed layout, written directly (no sink), compacts the store as `bench/storage.py`
does, and prints the bytes of each table and of each index, per span. It answers one
question before the writers and readers move: how close the layout comes to the goal of
≤ 200 bytes per LLM span on each backend, and what each part costs.

The layout:

- `lean_tenants (key, tenant_id)`, `lean_customers (key, tenant_key, customer_id)` and
  `lean_dimensions (id, provider, model, operation, agent_name, step, tool, service_name,
  source, digest)`: the strings of a record, each stored once and referenced by an
  integer. The customer has a key of its own (not part of the dimension combination):
  attribution changes it alone, and a customer's period is one index range.
- `lean_spans`, ONE row per span: tenant and customer keys and dimension id, the trace id
  as 16 bytes (PostgreSQL `uuid`, SQLite blob), span and parent span ids as 64-bit
  integers, end and receive times, an 8-byte hash of the response id, and per canonical
  token meter (input, cache read, cache write, output, reasoning) its quantity in
  micro-units, its provider cost and the span that supersedes it, NULL when absent (a NULL
  takes no bytes on either backend). On PostgreSQL the 4-byte columns come first, so the
  8-byte ones need no padding. Identity: (tenant, trace, span, end time), SQLite
  `WITHOUT ROWID` (the identity clusters the table), PostgreSQL the primary key (which must
  hold the partition key). Indexes: (customer, end time) for a customer's period, (tenant,
  response hash) for the once-per-call rule; a span's children are found through the
  identity's (tenant, trace) prefix.
- `lean_trace_customers` and `lean_agent_spans`: today's tables with the same keys and ids.

Custom meters (tool calls, `agentmeter.usage.*`) would sit in a side table keyed like a span
plus the meter; LLM spans carry none, so it holds nothing here. Nothing is timed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Connection, Engine, create_engine, text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from bench.dataset import fresh_postgres  # noqa: E402
from bench.storage import TENANT, batches, print_sizes  # noqa: E402
from otel_processor.usage import UsageBatch, UsageRecord, to_micros  # noqa: E402

METERS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
          "reasoning_tokens")  # fmt: skip
TABLES = ("lean_spans", "lean_customers", "lean_dimensions", "lean_tenants", "lean_trace_customers",
          "lean_agent_spans")  # fmt: skip
_METER_COLUMNS = [
    f"{m}_{part}" for m in METERS for part in ("micros", "cost_pico", "superseded_by")
]

_DDL = {
    "postgresql": [
        "CREATE TABLE lean_tenants (key serial PRIMARY KEY, tenant_id varchar(32) UNIQUE)",
        "CREATE TABLE lean_customers (key serial PRIMARY KEY, tenant_key integer NOT NULL, "
        "customer_id text NOT NULL, UNIQUE (customer_id, tenant_key))",
        "CREATE TABLE lean_dimensions (id serial PRIMARY KEY, provider text NOT NULL, "
        "model text NOT NULL, operation text NOT NULL, agent_name text NOT NULL, "
        "step text NOT NULL, tool text NOT NULL, service_name text NOT NULL, "
        "source text NOT NULL, digest bytea NOT NULL UNIQUE)",
        "CREATE TABLE lean_spans (tenant_key integer NOT NULL, customer_key integer NOT NULL, "
        "dimension_id integer NOT NULL, trace_id uuid NOT NULL, span_id bigint NOT NULL, "
        "time_unix_nano bigint NOT NULL, received_unix_nano bigint NOT NULL, "
        "parent_span_id bigint, response_hash bigint, "
        + ", ".join(f"{c} bigint" for c in _METER_COLUMNS)
        + ", PRIMARY KEY (tenant_key, trace_id, span_id, time_unix_nano)) "
        "PARTITION BY RANGE (time_unix_nano)",
        "CREATE TABLE lean_spans_202611 PARTITION OF lean_spans FOR VALUES FROM "
        "(1793491200000000000) TO (1796083200000000000)",
        "CREATE INDEX ix_lean_spans_customer_time ON lean_spans (customer_key, time_unix_nano)",
        "CREATE INDEX ix_lean_spans_response ON lean_spans (tenant_key, response_hash) "
        "WHERE response_hash IS NOT NULL",
        "CREATE TABLE lean_trace_customers (tenant_key integer, trace_id uuid, "
        "customer_id text NOT NULL, PRIMARY KEY (tenant_key, trace_id))",
        "CREATE TABLE lean_agent_spans (tenant_key integer, trace_id uuid, span_id bigint, "
        "parent_span_id bigint, agent_name text NOT NULL, "
        "PRIMARY KEY (tenant_key, trace_id, span_id))",
    ],
    "sqlite": [
        "CREATE TABLE lean_tenants (key INTEGER PRIMARY KEY, tenant_id TEXT UNIQUE)",
        "CREATE TABLE lean_customers (key INTEGER PRIMARY KEY, tenant_key INTEGER NOT NULL, "
        "customer_id TEXT NOT NULL, UNIQUE (customer_id, tenant_key))",
        "CREATE TABLE lean_dimensions (id INTEGER PRIMARY KEY, provider TEXT NOT NULL, "
        "model TEXT NOT NULL, operation TEXT NOT NULL, agent_name TEXT NOT NULL, "
        "step TEXT NOT NULL, tool TEXT NOT NULL, service_name TEXT NOT NULL, "
        "source TEXT NOT NULL, digest BLOB NOT NULL UNIQUE)",
        "CREATE TABLE lean_spans (tenant_key INTEGER NOT NULL, trace_id BLOB NOT NULL, "
        "span_id INTEGER NOT NULL, time_unix_nano INTEGER NOT NULL, "
        "customer_key INTEGER NOT NULL, dimension_id INTEGER NOT NULL, "
        "received_unix_nano INTEGER NOT NULL, "
        "parent_span_id INTEGER, response_hash INTEGER, "
        + ", ".join(f"{c} INTEGER" for c in _METER_COLUMNS)
        + ", PRIMARY KEY (tenant_key, trace_id, span_id, time_unix_nano)) WITHOUT ROWID",
        "CREATE INDEX ix_lean_spans_customer_time ON lean_spans (customer_key, time_unix_nano)",
        "CREATE INDEX ix_lean_spans_response ON lean_spans (tenant_key, response_hash) "
        "WHERE response_hash IS NOT NULL",
        "CREATE TABLE lean_trace_customers (tenant_key INTEGER, trace_id BLOB, "
        "customer_id TEXT NOT NULL, PRIMARY KEY (tenant_key, trace_id)) WITHOUT ROWID",
        "CREATE TABLE lean_agent_spans (tenant_key INTEGER, trace_id BLOB, span_id INTEGER, "
        "parent_span_id INTEGER, agent_name TEXT NOT NULL, "
        "PRIMARY KEY (tenant_key, trace_id, span_id)) WITHOUT ROWID",
    ],
}
_SPAN_COLUMNS = (
    "tenant_key", "customer_key", "dimension_id", "trace_id", "span_id", "time_unix_nano",
    "received_unix_nano", "parent_span_id", "response_hash", *_METER_COLUMNS,
)  # fmt: skip


def span_id(hex_id: str) -> int | None:
    """A 16-hex-digit span id as a signed 64-bit integer (None for no span)."""
    return int.from_bytes(bytes.fromhex(hex_id), "big", signed=True) if hex_id else None


def response_hash(response_id: str) -> int | None:
    """An 8-byte hash of a response id, as a signed 64-bit integer (None for none)."""
    if not response_id:
        return None
    digest = hashlib.blake2b(response_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _Loader:
    """Writes batches into the lean tables, interning dimension combinations."""

    def __init__(self, connection: Connection, postgres: bool, variant: Variant) -> None:
        self._connection = connection
        self._postgres = postgres
        self._variant = variant
        self._p = "%s" if postgres else "?"
        self._dimensions: dict[tuple[str, ...], int] = {}
        self._customers: dict[str, int] = {}
        connection.exec_driver_sql(
            f"INSERT INTO lean_tenants (tenant_id) VALUES ({self._p})", (TENANT,)
        )
        self._tenant = 1

    def _trace(self, hex_id: str) -> object:
        return hex_id if self._postgres else bytes.fromhex(hex_id)

    def _customer(self, customer_id: str) -> int:
        found = self._customers.get(customer_id)
        if found is None:
            self._connection.exec_driver_sql(
                "INSERT INTO lean_customers (tenant_key, customer_id) "
                f"VALUES ({self._p}, {self._p})",
                (self._tenant, customer_id),
            )
            found = self._customers[customer_id] = len(self._customers) + 1
        return found

    def _dimension(self, record: UsageRecord) -> int:
        values = (
            record.provider, record.model, record.operation,
            record.agent_name, record.step, record.tool, record.service_name, record.source,
        )  # fmt: skip
        found = self._dimensions.get(values)
        if found is None:
            digest = hashlib.blake2b("\x1f".join(values).encode(), digest_size=16)
            placeholders = ", ".join([self._p] * 9)
            self._connection.exec_driver_sql(
                "INSERT INTO lean_dimensions (provider, model, operation, agent_name, step, "
                f"tool, service_name, source, digest) VALUES ({placeholders})",
                (*values, digest.digest()),
            )
            found = self._dimensions[values] = len(self._dimensions) + 1
        return found

    def _spans(self, records: Sequence[UsageRecord]) -> Iterator[tuple[object, ...]]:
        by_span: dict[tuple[str, str, int], list[UsageRecord]] = {}
        for record in records:
            key = (record.trace_id, record.span_id, record.time_unix_nano)
            by_span.setdefault(key, []).append(record)
        for (trace, span, end), meters in sorted(by_span.items()):
            first = meters[0]
            values: dict[str, int | None] = dict.fromkeys(_METER_COLUMNS)
            for record in meters:
                micros = to_micros(record.quantity)
                units = self._variant.token_units and micros % 10**6 == 0
                values[f"{record.meter}_micros"] = micros // 10**6 if units else micros
                values[f"{record.meter}_cost_pico"] = micros * 3
            yield (
                self._tenant, self._customer(first.customer_id), self._dimension(first),
                self._trace(trace), span_id(span), end, end + 10**9,
                span_id(first.parent_span_id), response_hash(first.response_id),
                *values.values(),
            )  # fmt: skip

    def write(self, batch: UsageBatch) -> None:
        p = self._p
        self._connection.exec_driver_sql(
            f"INSERT INTO lean_spans ({', '.join(_SPAN_COLUMNS)}) "
            f"VALUES ({', '.join([p] * len(_SPAN_COLUMNS))})",
            list(self._spans(batch.records)),
        )
        self._connection.exec_driver_sql(
            f"INSERT INTO lean_trace_customers VALUES ({p}, {p}, {p})",
            [(self._tenant, self._trace(t), c) for t, c in sorted(batch.trace_customers.items())],
        )
        self._connection.exec_driver_sql(
            f"INSERT INTO lean_agent_spans VALUES ({p}, {p}, {p}, {p}, {p})",
            [
                (
                    self._tenant,
                    self._trace(a.trace_id),
                    span_id(a.span_id),
                    span_id(a.parent_span_id),
                    a.agent_name,
                )
                for a in sorted(batch.agent_spans)
            ],
        )


def _relation_bytes(url: str, postgres: bool) -> dict[str, int]:
    """Bytes of each table and each index, after compaction, by relation name."""
    if not postgres:
        path = url.removeprefix("sqlite:///")
        database = sqlite3.connect(path, isolation_level=None)
        try:
            database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            database.execute("VACUUM")
            rows = database.execute(
                "SELECT m.tbl_name || ' ' || m.name, sum(d.pgsize) FROM dbstat AS d "
                "JOIN sqlite_master AS m ON m.name = d.name "
                "WHERE m.tbl_name LIKE 'lean_%' GROUP BY m.name ORDER BY m.name"
            ).fetchall()
        finally:
            database.close()
        return dict(rows)
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as connection:
        for table in TABLES:
            connection.exec_driver_sql(f"VACUUM FULL ANALYZE {table}")
        found = connection.execute(
            text(
                "SELECT coalesce(i.tablename, c.relname) || ' ' || c.relname, "
                "pg_relation_size(c.oid) + CASE WHEN c.relkind = 'r' THEN "
                "coalesce(pg_relation_size(c.reltoastrelid), 0) ELSE 0 END "
                "FROM pg_class AS c LEFT JOIN pg_indexes AS i ON i.indexname = c.relname "
                "WHERE c.relname LIKE 'lean%' AND c.relkind IN ('r', 'i') ORDER BY 1"
            )
        ).all()
    engine.dispose()
    return {name: size for name, size in found}


class Variant(NamedTuple):
    """Departures from the layout, to measure what each part costs."""

    response_index: bool = True  # False: no (tenant, response hash) index
    sqlite_rowid: bool = False  # True: SQLite spans in a rowid table, identity a unique index
    token_units: bool = False  # True: whole token counts stored as counts, not micro-units


def _children_lookup(engine: Engine, batch: UsageBatch, spans: int) -> None:
    """PostgreSQL: the once-per-call rule's lookup of the children of a batch's spans,
    through the identity's (tenant, trace) prefix, then through a parent-span index."""
    pairs = sorted({(r.trace_id, span_id(r.span_id)) for r in batch.records})
    query = (
        "EXPLAIN ANALYZE WITH k(t, s) AS (SELECT * FROM unnest(CAST(%s AS uuid[]), "
        "CAST(%s AS bigint[]))) SELECT s.trace_id, s.parent_span_id, min(s.span_id) FROM k "
        "JOIN lean_spans AS s ON s.tenant_key = 1 AND s.trace_id = k.t "
        "AND s.parent_span_id = k.s GROUP BY 1, 2"
    )
    parameters = ([t for t, _ in pairs], [s for _, s in pairs])
    with engine.connect() as connection:
        connection.exec_driver_sql("ANALYZE lean_spans")
        for how in ("identity prefix", "parent-span index"):
            if how == "parent-span index":
                connection.exec_driver_sql(
                    "CREATE INDEX ix_parent ON lean_spans (tenant_key, trace_id, parent_span_id)"
                )
                connection.exec_driver_sql("ANALYZE lean_spans")
            best = min(
                float(connection.exec_driver_sql(query, parameters).scalars().all()[-1].split()[2])
                for _ in range(5)
            )
            print(f"  children of {len(pairs)} spans, through the {how}: {best:.2f} ms")
        size = connection.exec_driver_sql(
            "SELECT sum(pg_relation_size(indexrelid)) FROM pg_index "
            "WHERE indrelid IN (SELECT relid FROM pg_partition_tree('lean_spans')) "
            "AND position('parent' IN CAST(CAST(indexrelid AS regclass) AS text)) > 0"
        ).scalar_one()
        print(f"  the parent-span index (not kept) would add {size / spans:.1f} bytes/span")
        connection.rollback()


def run(label: str, url: str, spans: int, variant: Variant) -> None:
    postgres = label == "postgresql"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        for statement in _DDL[label]:
            if "ix_lean_spans_response" in statement and not variant.response_index:
                continue
            if statement.startswith("CREATE TABLE lean_spans ") and variant.sqlite_rowid:
                statement = statement.removesuffix(" WITHOUT ROWID")
            connection.exec_driver_sql(statement)
        loader = _Loader(connection, postgres, variant)
        exports = batches(spans, 500)
        for export in exports:
            loader.write(export)
    if postgres:
        _children_lookup(engine, exports[-1], spans)
    engine.dispose()
    sizes = _relation_bytes(url, postgres)
    print(f"{label}: {spans:,} LLM spans, lean layout")
    print_sizes(f"{label}: lean layout per LLM span", sizes, spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=30_000)
    parser.add_argument("--backend", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--no-response-index", action="store_true")
    parser.add_argument("--sqlite-rowid", action="store_true")
    parser.add_argument("--token-units", action="store_true")
    args = parser.parse_args()
    variant = Variant(not args.no_response_index, args.sqlite_rowid, args.token_units)
    print(f"variant: {variant}")
    if args.backend in ("both", "postgresql"):
        base = os.environ.get("AGENTMETER_TEST_POSTGRES_URL")
        if base:
            run("postgresql", fresh_postgres(base), args.spans, variant)
        else:
            print("postgresql: skipped (set AGENTMETER_TEST_POSTGRES_URL; see scripts/test.sh)")
    if args.backend in ("both", "sqlite"):
        with tempfile.TemporaryDirectory() as directory:
            run("sqlite", f"sqlite:///{directory}/lean.db", args.spans, variant)


if __name__ == "__main__":
    main()
