"""Do the app's reads stay fast when `usage_records` becomes a view over the lean layout?

    scripts/test.sh --exec python bench/lean_reads.py [--customers 10000]
        [--records 1000000] [--requests 50]

PostgreSQL only (issue 13's read goal is on PostgreSQL). Loads `bench/dataset.py`'s year
of usage (per-meter rows, as today), times the reads of `bench/read_paths.py` through the
real app, then converts the store in SQL to the one-row-per-span layout of
`bench/lean_layout.py` (the conversion a migration would run), replaces the table by a view
of the same name and columns (one pass over the spans, unpivoted by `LATERAL (VALUES …)`),
and times the same reads again, unchanged code. Prints both timings, the plan of the usage
read through the view, and the bytes of each layout. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import Engine, event, text  # noqa: E402

from agentmeter.tenants import issue_keys  # noqa: E402
from bench.dataset import build, fresh_postgres  # noqa: E402
from bench.lean_layout import METERS  # noqa: E402
from bench.read_paths import _reads  # noqa: E402
from bench.reads import app_client, time_reads, twelve_months  # noqa: E402

_DIMENSIONS = "provider, model, operation, agent_name, step, tool, service_name, source"
_HEX64 = "('x' || {})::bit(64)::bigint"  # 16 hex digits as a signed 64-bit integer
_SPANS = ", ".join(f"{m}_micros bigint, {m}_cost_pico bigint, {m}_superseded_by bigint"
                   for m in METERS)  # fmt: skip

_CONVERT = [
    "CREATE TABLE lean_tenants (key serial PRIMARY KEY, tenant_id varchar(32) UNIQUE)",
    "CREATE TABLE lean_customers (key serial PRIMARY KEY, tenant_key integer NOT NULL, "
    "customer_id text NOT NULL, UNIQUE (customer_id, tenant_key))",
    f"CREATE TABLE lean_dimensions (id serial PRIMARY KEY, {_DIMENSIONS.replace(',', ' text,')}"
    " text, UNIQUE (provider, model, operation, agent_name, step, tool, service_name, source))",
    "CREATE TABLE lean_spans (tenant_key integer NOT NULL, customer_key integer NOT NULL, "
    "dimension_id integer NOT NULL, trace_id uuid NOT NULL, span_id bigint NOT NULL, "
    "time_unix_nano bigint NOT NULL, received_unix_nano bigint NOT NULL, "
    f"parent_span_id bigint, response_hash bigint, {_SPANS}, "
    "PRIMARY KEY (tenant_key, trace_id, span_id, time_unix_nano)) "
    "PARTITION BY RANGE (time_unix_nano)",
    "INSERT INTO lean_tenants (tenant_id) SELECT DISTINCT tenant_id FROM usage_records",
    "INSERT INTO lean_customers (tenant_key, customer_id) SELECT DISTINCT t.key, u.customer_id "
    "FROM usage_records AS u JOIN lean_tenants AS t USING (tenant_id)",
    f"INSERT INTO lean_dimensions ({_DIMENSIONS}) SELECT DISTINCT {_DIMENSIONS} FROM usage_records",
]


def _insert_spans() -> str:
    per_meter = ", ".join(
        f"max(u.quantity_micros) FILTER (WHERE u.meter = '{m}'), "
        f"max(u.provider_cost_pico) FILTER (WHERE u.meter = '{m}'), "
        f"max({_HEX64.format('nullif(u.superseded_by, %s)')}) "
        f"FILTER (WHERE u.meter = '{m}')"
        for m in METERS
    ).replace("%s", "''")
    response = "substr(encode(sha256(convert_to(u.response_id, 'UTF8')), 'hex'), 1, 16)"
    return (
        "INSERT INTO lean_spans SELECT t.key, c.key, d.id, CAST(u.trace_id AS uuid), "
        f"{_HEX64.format('u.span_id')}, u.time_unix_nano, min(u.received_unix_nano), "
        f"{_HEX64.format('nullif(u.parent_span_id, %s)')}, "
        f"{_HEX64.format(f'nullif({response}, %s)')}, {per_meter} "
        "FROM usage_records AS u JOIN lean_tenants AS t USING (tenant_id) "
        "JOIN lean_customers AS c ON c.tenant_key = t.key AND c.customer_id = u.customer_id "
        f"JOIN lean_dimensions AS d USING ({_DIMENSIONS}) "
        "GROUP BY t.key, c.key, d.id, u.trace_id, u.span_id, u.time_unix_nano, "
        "u.parent_span_id, u.response_id"
    ).replace("%s", "''")


def _view() -> str:
    meters = ", ".join(
        f"('{m}', s.{m}_micros, s.{m}_cost_pico, s.{m}_superseded_by)" for m in METERS
    )
    hex16 = "lpad(to_hex({}), 16, '0')"
    return (
        "CREATE VIEW usage_records AS SELECT t.tenant_id, "
        "replace(CAST(s.trace_id AS text), '-', '') AS trace_id, "
        f"{hex16.format('s.span_id')} AS span_id, m.meter, m.quantity_micros, c.customer_id, "
        f"s.time_unix_nano, s.received_unix_nano, {_DIMENSIONS}, m.provider_cost_pico, "
        f"coalesce({hex16.format('s.parent_span_id')}, '') AS parent_span_id, "
        "coalesce(to_hex(s.response_hash), '') AS response_id, "
        f"coalesce({hex16.format('m.superseded_by')}, '') AS superseded_by "
        "FROM lean_spans AS s JOIN lean_tenants AS t ON t.key = s.tenant_key "
        "JOIN lean_customers AS c ON c.key = s.customer_key "
        "JOIN lean_dimensions AS d ON d.id = s.dimension_id "
        f"CROSS JOIN LATERAL (VALUES {meters}) "
        "AS m(meter, quantity_micros, provider_cost_pico, superseded_by) "
        "WHERE m.quantity_micros IS NOT NULL"
    )


def _size(engine: Engine, table: str) -> int:
    """Bytes of a table with its indexes and partitions."""
    with engine.connect() as connection:
        size: int = connection.execute(
            text(
                "SELECT pg_total_relation_size(CAST(:t AS regclass)) + coalesce((SELECT "
                "sum(pg_total_relation_size(relid)) FROM pg_partition_tree(CAST(:t AS "
                "regclass)) WHERE level > 0), 0)"
            ),
            {"t": table},
        ).scalar_one()
    return size


def _convert(engine: Engine) -> None:
    """The per-meter table → the lean tables, then the view in the table's place."""
    with engine.begin() as connection:
        months = connection.exec_driver_sql(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i "
            "JOIN pg_class AS c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST('usage_records' AS regclass)"
        ).all()
        for statement in _CONVERT:
            connection.exec_driver_sql(statement)
        for name, bounds in months:
            connection.exec_driver_sql(f"CREATE TABLE lean_{name} PARTITION OF lean_spans {bounds}")
        connection.exec_driver_sql(_insert_spans())
        connection.exec_driver_sql(
            "CREATE INDEX ix_lean_spans_customer_time ON lean_spans (customer_key, time_unix_nano)"
        )
        connection.exec_driver_sql(
            "CREATE INDEX ix_lean_spans_response ON lean_spans (tenant_key, response_hash) "
            "WHERE response_hash IS NOT NULL"
        )
        connection.exec_driver_sql("ALTER TABLE usage_records RENAME TO usage_records_old")
        connection.exec_driver_sql(_view())
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in ("lean_spans", "lean_customers", "lean_dimensions", "lean_tenants"):
            connection.exec_driver_sql(f"VACUUM (ANALYZE) {table}")


def _time(
    engine: Engine, url: str, tenant_id: str, sizes: tuple[int, int], what: str
) -> list[bytes]:
    """Time `bench/read_paths.py`'s reads through the app; `sizes`: (records, requests).
    Returns each read's answer."""
    records, requests = sizes
    admin_key = issue_keys(engine, tenant_id).admin_key
    with app_client(engine, url, {"Authorization": f"Bearer {admin_key}"}) as client:
        reads = _reads(twelve_months()[1])
        time_reads(client, reads, requests, label="postgresql", records=records, what=what)
        answers = [client.get(path).content for _, path in reads]
        statements: list[tuple[str, Any]] = []

        def keep(_c: object, _cursor: object, sql: str, params: Any, *_: object) -> None:
            if "usage_records" in sql and sql.lstrip().startswith("SELECT"):
                statements.append((sql, params))

        event.listen(engine, "before_cursor_execute", keep)
        client.get(reads[-1][1])  # the estimate
        event.remove(engine, "before_cursor_execute", keep)
    with engine.connect() as connection:
        for sql, params in statements:
            plan = connection.exec_driver_sql(f"EXPLAIN ANALYZE {sql}", params).scalars().all()
            print(f"    estimate query {plan[-1]}: {' '.join(sql.split())[:90]}…")
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    base = os.environ.get("AGENTMETER_TEST_POSTGRES_URL")
    if not base:
        print("postgresql: skipped (set AGENTMETER_TEST_POSTGRES_URL; see scripts/test.sh)")
        return
    url = fresh_postgres(base)
    start, end = twelve_months()
    engine, tenant_id, _ = build(url, args.customers, args.records, start=start, end=end)
    spans = args.records // 3
    print(f"postgresql: {args.records:,} records ({spans:,} spans), {args.customers:,} customers")
    print(f"  per-meter table: {_size(engine, 'usage_records') / spans:7.1f} bytes/span")
    before = _time(engine, url, tenant_id, (args.records, args.requests), "per-meter table:")
    _convert(engine)
    lean = sum(_size(engine, t) for t in ("lean_spans", "lean_customers", "lean_dimensions"))
    print(f"  lean tables:     {lean / spans:7.1f} bytes/span (spans, customers, dimensions)")
    after = _time(engine, url, tenant_id, (args.records, args.requests), "lean view:")
    print(f"  the same answers through the view: {before == after}")
    with engine.connect() as connection:
        plan = connection.exec_driver_sql(
            "EXPLAIN ANALYZE SELECT model, time_unix_nano / 86400000000000, sum(quantity_micros) "
            "FROM usage_records WHERE tenant_id = %s AND customer_id = 'cust-00000' "
            "AND superseded_by = '' GROUP BY 1, 2",
            (tenant_id,),
        ).scalars()
        print("  plan of a customer's usage through the view:")
        for line in plan:
            print(f"    {line}")
    engine.dispose()


if __name__ == "__main__":
    main()
