"""usage: one row per span (the lean usage store); `usage_records` becomes a view

Issue 13's storage goal (docs/lean_usage.md). A span's usage was one row per meter, each
repeating the tenant, the hex ids, the customer and eight dimension strings. Now:

- `usage_tenants`, `usage_customers` and `usage_dimensions` hold those strings once each,
  referenced by integer keys;
- `usage_spans` holds one row per span (identity: tenant, trace, span, end time): its keys,
  ids as bytes and integers, and per canonical token meter its quantity, provider cost and
  superseding span, NULL when the span has no record of that meter;
- `usage_meters` holds a span's other records (tool calls, custom meters), one row each;
- `trace_customers` and `agent_spans` take the same keys and ids.

`usage_records` becomes a view with the columns it had, one row per record, so every reader
keeps its queries. On PostgreSQL both tables are partitioned by month as `usage_records`
was (the months it had are created). The records are converted in SQL (SQLite through
Python functions registered on the migration's connection); a span's records that
disagreed on the customer or a dimension (only ever possible through the ready-made
records of AgentMeter's own UsageService) keep the greatest customer id and the first
combination of dimensions. The rated-month triggers of migration 0014 move to the new
tables: a span's row changes mark its customer and day as a record's did.

Downgrading is not supported: restore the database from a backup taken before.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 16:00:00.000000
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_METERS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "output_reasoning_tokens",
)
_DIMENSIONS = ("provider", "model", "operation", "agent_name", "step", "tool", "service_name")
_DIMENSION_LENGTHS = (128, 256, 128, 256, 256, 256, 256)
_SPAN_KEY = ("tenant_key", "trace_id", "span_id", "time_unix_nano")
_NANOS_PER_DAY = 86_400 * 10**9


def _create_tables(postgres: bool) -> None:
    op.create_table(
        "usage_tenants",
        sa.Column("key", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_usage_tenants")),
        sa.UniqueConstraint("tenant_id", name=op.f("uq_usage_tenants_tenant_id")),
    )
    op.create_table(
        "usage_customers",
        sa.Column("key", sa.Integer(), nullable=False),
        sa.Column("tenant_key", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_usage_customers")),
        sa.UniqueConstraint(
            "customer_id", "tenant_key", name=op.f("uq_usage_customers_customer_id_tenant_key")
        ),
    )
    op.create_table(
        "usage_dimensions",
        sa.Column("id", sa.Integer(), nullable=False),
        *(
            sa.Column(name, sa.String(length=length), nullable=False)
            for name, length in zip(_DIMENSIONS, _DIMENSION_LENGTHS, strict=True)
        ),
        sa.Column("digest", sa.LargeBinary(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_dimensions")),
        sa.UniqueConstraint("digest", name=op.f("uq_usage_dimensions_digest")),
    )
    meters = op.create_table(
        "usage_token_meters",
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("meter", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_usage_token_meters")),
    )
    # Number 0 stands for a span's other meters (rows of `usage_meters`).
    op.bulk_insert(meters, [{"number": n, "meter": m} for n, m in enumerate(("", *_METERS))])
    partitioned: dict[str, object] = (
        {"postgresql_partition_by": "RANGE (time_unix_nano)"} if postgres else {}
    )
    # 8-byte columns first, then 4-byte ones, then bytes: PostgreSQL pads none of them.
    op.create_table(
        "usage_spans",
        sa.Column("span_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time_unix_nano", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("received_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("parent_span_id", sa.BigInteger(), nullable=True),
        *(
            sa.Column(column, sa.BigInteger(), nullable=True)
            for meter in _METERS
            for column in (f"{meter}_cost_pico", f"{meter}_superseded_by")
        ),
        sa.Column("tenant_key", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("customer_key", sa.Integer(), nullable=False),
        sa.Column("dimension_id", sa.Integer(), nullable=False),
        *(sa.Column(meter, sa.Integer(), nullable=True) for meter in _METERS),
        sa.Column("trace_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("response_key", sa.LargeBinary(length=10), nullable=True),
        sa.Column("has_meters", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint(*_SPAN_KEY, name=op.f("pk_usage_spans")),
        **partitioned,  # type: ignore[arg-type]
    )
    op.create_table(
        "usage_meters",
        sa.Column("tenant_key", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("span_id", sa.BigInteger(), nullable=False),
        sa.Column("time_unix_nano", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("meter", sa.String(length=128), nullable=False),
        sa.Column("quantity_micros", sa.BigInteger(), nullable=False),
        sa.Column("provider_cost_pico", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint(*_SPAN_KEY, "meter", name=op.f("pk_usage_meters")),
        sqlite_with_rowid=False,
        **partitioned,  # type: ignore[arg-type]
    )


def _replace_trace_tables(postgres: bool) -> None:
    """`trace_customers` and `agent_spans` with keys and ids as the spans have them; the old
    ones stay, renamed, until their rows are converted."""
    for table in ("trace_customers", "agent_spans"):
        op.rename_table(table, f"{table}_old")
        if postgres:
            op.execute(f"ALTER TABLE {table}_old RENAME CONSTRAINT pk_{table} TO pk_{table}_old")
    op.create_table(
        "trace_customers",
        sa.Column("tenant_key", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("customer_key", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_key", "trace_id", name=op.f("pk_trace_customers")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "agent_spans",
        sa.Column("tenant_key", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.LargeBinary(length=16), nullable=False),
        sa.Column("span_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("parent_span_id", sa.BigInteger(), nullable=True),
        sa.Column("agent_name", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("tenant_key", "trace_id", "span_id", name=op.f("pk_agent_spans")),
        sqlite_with_rowid=False,
    )


def _create_indexes(postgres: bool) -> None:
    op.create_index(
        op.f("ix_usage_spans_customer_key_time_unix_nano"),
        "usage_spans",
        ["customer_key", "time_unix_nano"],
    )
    where = sa.text("response_key IS NOT NULL")
    op.create_index(
        "ix_usage_spans_response",
        "usage_spans",
        ["tenant_key", "response_key"],
        postgresql_where=where,
        sqlite_where=where,
    )
    if postgres:  # SQLite finds a span's children through the identity (agentmeter.tables)
        op.create_index(
            "ix_usage_spans_parent",
            "usage_spans",
            ["tenant_key", "trace_id", "parent_span_id"],
            postgresql_where=sa.text("parent_span_id IS NOT NULL"),
        )


def _dimension_digest(*values: str) -> bytes:
    """`agentmeter.usage_keys.Dimensions.digest`, frozen here."""
    return hashlib.sha256("\x1f".join(values).encode()).digest()[:16]


def _span_int(span_hex: str) -> int | None:
    return int.from_bytes(bytes.fromhex(span_hex), "big", signed=True) if span_hex else None


def _unhex(value: str) -> bytes | None:
    return bytes.fromhex(value) if value else None


def _convert(postgres: bool) -> None:
    """The records of `usage_records` into the new tables."""
    if postgres:
        digest = (
            "substring(sha256(convert_to(concat_ws(chr(31), "
            f"{', '.join(f'u.{d}' for d in _DIMENSIONS)}), 'UTF8')) FROM 1 FOR 16)"
        )

        def span(column: str) -> str:
            return f"CAST(CAST(('x' || nullif({column}, '')) AS bit(64)) AS bigint)"

        def unhex(column: str) -> str:
            return f"decode(nullif({column}, ''), 'hex')"
    else:
        sqlite = op.get_bind().connection.driver_connection
        sqlite.create_function("dimension_digest", 7, _dimension_digest, deterministic=True)  # type: ignore[union-attr]
        sqlite.create_function("span_int", 1, _span_int, deterministic=True)  # type: ignore[union-attr]
        sqlite.create_function("unhex_id", 1, _unhex, deterministic=True)  # type: ignore[union-attr]
        digest = f"dimension_digest({', '.join(f'u.{d}' for d in _DIMENSIONS)})"

        def span(column: str) -> str:
            return f"span_int({column})"

        def unhex(column: str) -> str:
            return f"unhex_id({column})"

    op.execute(
        "INSERT INTO usage_tenants (tenant_id) SELECT tenant_id FROM usage_records "
        "UNION SELECT tenant_id FROM trace_customers_old UNION SELECT tenant_id FROM "
        "agent_spans_old ORDER BY 1"
    )
    op.execute(
        "INSERT INTO usage_customers (tenant_key, customer_id) "
        "SELECT t.key, u.customer_id FROM (SELECT tenant_id, customer_id FROM usage_records "
        "UNION SELECT tenant_id, customer_id FROM trace_customers_old) AS u "
        "JOIN usage_tenants AS t ON t.tenant_id = u.tenant_id ORDER BY 1, 2"
    )
    dimensions = ", ".join(_DIMENSIONS)
    op.execute(
        f"INSERT INTO usage_dimensions ({dimensions}, digest) "
        f"SELECT {', '.join(f'min(u.{d})' for d in _DIMENSIONS)}, digest FROM "
        f"(SELECT u.*, {digest} AS digest FROM usage_records AS u) AS u GROUP BY digest"
    )
    # Token meters with whole tokens go to the span's columns; any other record (other
    # meters, and part tokens, which only ready-made records could carry) to usage_meters.
    whole = "u.quantity_micros % 1000000 = 0"
    meters = ", ".join(f"'{m}'" for m in _METERS)
    other = f"(u.meter NOT IN ({meters}) OR u.quantity_micros % 1000000 <> 0)"
    per_meter = ", ".join(
        f"max(u.quantity_micros / 1000000) FILTER (WHERE u.meter = '{m}' AND {whole}) AS {m}, "
        f"max(u.provider_cost_pico) FILTER (WHERE u.meter = '{m}' AND {whole}) AS {m}_cost_pico, "
        f"max({span('u.superseded_by')}) FILTER (WHERE u.meter = '{m}' AND {whole}) "
        f"AS {m}_superseded_by"
        for m in _METERS
    )
    columns = ", ".join(c for m in _METERS for c in (m, f"{m}_cost_pico", f"{m}_superseded_by"))
    has_meters = f"CASE WHEN count(*) FILTER (WHERE {other}) > 0 THEN true END"
    grouped = (
        f"SELECT t.key AS tenant_key, {unhex('u.trace_id')} AS trace_id, "
        f"{span('u.span_id')} AS span_id, u.time_unix_nano, max(u.customer_id) AS customer_id, "
        "min(d.id) AS dimension_id, min(u.received_unix_nano) AS received_unix_nano, "
        f"{span('max(u.parent_span_id)')} AS parent_span_id, "
        f"{unhex('max(u.response_id)')} AS response_key, {has_meters} AS has_meters, {per_meter} "
        "FROM usage_records AS u JOIN usage_tenants AS t ON t.tenant_id = u.tenant_id "
        f"JOIN usage_dimensions AS d ON d.digest = {digest} "
        "GROUP BY t.key, u.trace_id, u.span_id, u.time_unix_nano"
    )
    span_columns = (
        "tenant_key, trace_id, span_id, time_unix_nano, customer_key, dimension_id, "
        f"received_unix_nano, parent_span_id, response_key, has_meters, {columns}"
    )
    op.execute(
        f"INSERT INTO usage_spans ({span_columns}) SELECT "
        + span_columns.replace("customer_key", "c.key").replace("tenant_key", "g.tenant_key")
        + f" FROM ({grouped}) AS g JOIN usage_customers AS c "
        "ON c.tenant_key = g.tenant_key AND c.customer_id = g.customer_id"
    )
    op.execute(
        "INSERT INTO trace_customers (tenant_key, trace_id, customer_key) "
        f"SELECT t.key, {unhex('o.trace_id')}, c.key FROM trace_customers_old AS o "
        "JOIN usage_tenants AS t ON t.tenant_id = o.tenant_id "
        "JOIN usage_customers AS c ON c.tenant_key = t.key AND c.customer_id = o.customer_id"
    )
    op.execute(
        "INSERT INTO agent_spans (tenant_key, trace_id, span_id, parent_span_id, agent_name) "
        f"SELECT t.key, {unhex('o.trace_id')}, {span('o.span_id')}, "
        f"{span('o.parent_span_id')}, o.agent_name FROM agent_spans_old AS o "
        "JOIN usage_tenants AS t ON t.tenant_id = o.tenant_id"
    )
    op.execute(
        "INSERT INTO usage_meters (tenant_key, trace_id, span_id, time_unix_nano, meter, "
        f"quantity_micros, provider_cost_pico) SELECT t.key, {unhex('u.trace_id')}, "
        f"{span('u.span_id')}, u.time_unix_nano, u.meter, u.quantity_micros, "
        "u.provider_cost_pico FROM usage_records AS u "
        f"JOIN usage_tenants AS t ON t.tenant_id = u.tenant_id WHERE {other}"
    )


def _view(postgres: bool) -> str:
    """`usage_records` as it was: one row per record of a span."""
    if postgres:
        trace = "encode(s.trace_id, 'hex')"

        def hex16(column: str) -> str:
            return f"lpad(to_hex({column}), 16, '0')"

        response = "encode(s.response_key, 'hex')"
    else:
        trace = "lower(hex(s.trace_id))"

        def hex16(column: str) -> str:
            return f"CASE WHEN {column} IS NOT NULL THEN printf('%016x', {column}) END"

        response = "CASE WHEN s.response_key IS NOT NULL THEN lower(hex(s.response_key)) END"
    others = "CASE WHEN x.meter = 'tool_calls' THEN 'tool' ELSE 'custom' END"
    same_span = " AND ".join(f"x.{k} = s.{k}" for k in _SPAN_KEY)
    if postgres:
        # One pass over the spans: each span's token columns become rows, and its other
        # meters are looked up only when it has some.
        tokens = ", ".join(
            f"('{m}', 'llm', CAST(s.{m} AS bigint) * 1000000, s.{m}_cost_pico, s.{m}_superseded_by)"
            for m in _METERS
        )
        meters = (
            f"CROSS JOIN LATERAL (SELECT * FROM (VALUES {tokens}) AS tokens "
            f"UNION ALL SELECT x.meter, {others}, x.quantity_micros, x.provider_cost_pico, "
            f"CAST(NULL AS bigint) FROM usage_meters AS x WHERE s.has_meters AND {same_span}) "
            "AS m(meter, source, quantity_micros, provider_cost_pico, superseded_by)"
        )
        meter, source, quantity, cost, superseded = (
            f"m.{c}"
            for c in ("meter", "source", "quantity_micros", "provider_cost_pico", "superseded_by")
        )
    else:
        # SQLite has no LATERAL, and a UNION ALL would keep the view from being flattened
        # into the queries that join it: each span joins the numbered token meters (one row
        # per token meter, a CASE per column) and number 0, its other meters' rows.
        def pick(column: str, other: str) -> str:
            cases = " ".join(
                f"WHEN {n} THEN s.{column.format(m)}" for n, m in enumerate(_METERS, 1)
            )
            return f"CASE n.number {cases} ELSE {other} END"

        meters = (
            "CROSS JOIN usage_token_meters AS n LEFT JOIN usage_meters AS x "
            f"ON n.number = 0 AND s.has_meters AND {same_span}"
        )
        meter = "CASE n.number WHEN 0 THEN x.meter ELSE n.meter END"
        source = f"CASE n.number WHEN 0 THEN {others} ELSE 'llm' END"
        quantity = pick("{} * 1000000", "x.quantity_micros")
        cost = pick("{}_cost_pico", "x.provider_cost_pico")
        superseded = pick("{}_superseded_by", "NULL")
    return (
        f"CREATE VIEW usage_records AS SELECT t.tenant_id, {trace} AS trace_id, "
        f"{hex16('s.span_id')} AS span_id, {meter} AS meter, {quantity} AS quantity_micros, "
        "c.customer_id, s.time_unix_nano, s.received_unix_nano, "
        f"{', '.join(f'd.{d}' for d in _DIMENSIONS)}, {source} AS source, "
        f"{cost} AS provider_cost_pico, "
        f"coalesce({hex16('s.parent_span_id')}, '') AS parent_span_id, "
        f"coalesce({response}, '') AS response_id, "
        f"coalesce({hex16(superseded)}, '') AS superseded_by "
        "FROM usage_spans AS s JOIN usage_tenants AS t ON t.key = s.tenant_key "
        "JOIN usage_customers AS c ON c.key = s.customer_key "
        f"JOIN usage_dimensions AS d ON d.id = s.dimension_id {meters} "
        f"WHERE {quantity} IS NOT NULL"
    )


# The rated-month triggers (migration 0014), now on the span and meter tables.
_CHANGES = "rating_changes (tenant_id, customer_id, day, writer, claimed)"
_KEY = "(tenant_id, customer_id, day, writer)"
_PG_MONTH_DAY = (
    "(extract(epoch FROM date_trunc('month', to_timestamp(day * 86400) AT TIME ZONE 'UTC'))"
    " / 86400)::integer"
)
_PG_CHANGED = f"""
    INSERT INTO {_CHANGES}
    SELECT DISTINCT t.tenant_id, c.customer_id, {_PG_MONTH_DAY}, txid_current(), false
    FROM (SELECT DISTINCT customer_key, day FROM changed) AS changed
    JOIN usage_customers AS c ON c.key = changed.customer_key
    JOIN usage_tenants AS t ON t.key = c.tenant_key
    ON CONFLICT {_KEY} DO NOTHING;
    RETURN NULL;
"""
_PG_SPAN_DAYS = f"SELECT customer_key, time_unix_nano / {_NANOS_PER_DAY} AS day FROM"
_PG_METER_DAYS = (
    f"SELECT s.customer_key, s.time_unix_nano / {_NANOS_PER_DAY} AS day FROM usage_spans AS s "
    "JOIN {rows} AS x ON " + " AND ".join(f"x.{k} = s.{k}" for k in _SPAN_KEY)
)
_PG_FUNCTIONS = f"""
CREATE FUNCTION rating_changes_of_spans() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changed AS ({_PG_SPAN_DAYS} changed_rows) {_PG_CHANGED}
END $$;

CREATE FUNCTION rating_changes_of_spans_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changed AS ({_PG_SPAN_DAYS} old_rows UNION {_PG_SPAN_DAYS} new_rows) {_PG_CHANGED}
END $$;

CREATE FUNCTION rating_changes_of_meters() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changed AS ({_PG_METER_DAYS.format(rows="changed_rows")}) {_PG_CHANGED}
END $$;

CREATE FUNCTION rating_changes_of_meters_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changed AS ({_PG_METER_DAYS.format(rows="old_rows")}
                     UNION {_PG_METER_DAYS.format(rows="new_rows")}) {_PG_CHANGED}
END $$;
"""


def _pg_triggers(table: str) -> str:
    kind = "spans" if table == "usage_spans" else "meters"
    return f"""
CREATE TRIGGER rating_changes_insert AFTER INSERT ON {table}
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rating_changes_of_{kind}();
CREATE TRIGGER rating_changes_delete AFTER DELETE ON {table}
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rating_changes_of_{kind}();
CREATE TRIGGER rating_changes_update AFTER UPDATE ON {table}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rating_changes_of_{kind}_update();
"""


def _sqlite_upsert(row: str, customer_key: str, when: str = "true") -> str:
    tenant = f"(SELECT tenant_id FROM usage_tenants WHERE key = {row}.tenant_key)"
    customer = f"(SELECT customer_id FROM usage_customers WHERE key = {customer_key})"
    day = f"{row}.time_unix_nano / {_NANOS_PER_DAY}"
    return (
        f"INSERT INTO {_CHANGES} SELECT {tenant}, {customer}, {day}, 0, false WHERE {when} "
        f"ON CONFLICT {_KEY} DO UPDATE SET claimed = false WHERE claimed;"
    )


def _sqlite_triggers() -> dict[str, str]:
    """Trigger name → its CREATE statement."""
    span_of = (
        "(SELECT s.customer_key FROM usage_spans AS s WHERE "
        + " AND ".join(f"s.{k} = {{row}}.{k}" for k in _SPAN_KEY)
        + ")"
    )
    moved = "OLD.customer_key <> NEW.customer_key OR OLD.time_unix_nano <> NEW.time_unix_nano"
    bodies = {
        "usage_spans": {
            "INSERT": _sqlite_upsert("NEW", "NEW.customer_key"),
            "DELETE": _sqlite_upsert("OLD", "OLD.customer_key"),
            # The old customer and day too, when they are not the new ones.
            "UPDATE": _sqlite_upsert("NEW", "NEW.customer_key")
            + _sqlite_upsert("OLD", "OLD.customer_key", moved),
        },
        "usage_meters": {
            event: _sqlite_upsert(row, span_of.format(row=row))
            for event, row in (("INSERT", "NEW"), ("DELETE", "OLD"), ("UPDATE", "NEW"))
        },
    }
    return {
        f"rating_changes_{table}_{event.lower()}": (
            f"CREATE TRIGGER rating_changes_{table}_{event.lower()} AFTER {event} ON {table} "
            f"BEGIN {body} END"
        )
        for table, events in bodies.items()
        for event, body in events.items()
    }


# SQLite plans without statistics until ANALYZE, and then would seek a tenant's every span
# by the identity's first column rather than a customer's by its index. These say what a
# store of a million spans looks like (ANALYZE on a real store replaces them).
_SQLITE_STATISTICS = (
    ("usage_spans", "sqlite_autoindex_usage_spans_1", "1000000 100000 8 1 1"),
    ("usage_spans", "ix_usage_spans_customer_key_time_unix_nano", "1000000 100 1"),
    ("usage_spans", "ix_usage_spans_response", "1000000 100000 1"),
    ("usage_meters", "usage_meters", "100000 10000 2 1 1 1"),
    ("usage_customers", "sqlite_autoindex_usage_customers_1", "10000 1 1"),
    ("usage_tenants", "sqlite_autoindex_usage_tenants_1", "10 1"),
    ("usage_dimensions", "sqlite_autoindex_usage_dimensions_1", "1000 1"),
)


def _sqlite_statistics() -> None:
    op.execute("ANALYZE sqlite_schema")  # creates sqlite_stat1 when there is none
    tables = ", ".join(sorted({f"'{table}'" for table, _, _ in _SQLITE_STATISTICS}))
    op.execute(f"DELETE FROM sqlite_stat1 WHERE tbl IN ({tables})")
    for table, index, statistics in _SQLITE_STATISTICS:
        op.execute(f"INSERT INTO sqlite_stat1 VALUES ('{table}', '{index}', '{statistics}')")


def upgrade() -> None:
    connection = op.get_bind()
    postgres = connection.dialect.name == "postgresql"
    months: list[tuple[str, str]] = []
    if postgres:
        months = [
            (name.removeprefix("usage_records_"), bounds)
            for name, bounds in connection.exec_driver_sql(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i "
                "JOIN pg_class AS c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = CAST('usage_records' AS regclass)"
            )
        ]
    _create_tables(postgres)
    _replace_trace_tables(postgres)
    for month, bounds in months:
        for table in ("usage_spans", "usage_meters"):
            op.execute(f"CREATE TABLE {table}_{month} PARTITION OF {table} {bounds}")
    _convert(postgres)
    _create_indexes(postgres)
    op.drop_table("trace_customers_old")
    op.drop_table("agent_spans_old")
    # The old table's triggers go with it.
    op.execute("DROP TABLE usage_records" + (" CASCADE" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION rating_changes_of_usage()")
        op.execute("DROP FUNCTION rating_changes_of_usage_update()")
    op.execute(_view(postgres))
    if postgres:
        op.execute(_PG_FUNCTIONS)
        op.execute(_pg_triggers("usage_spans"))
        op.execute(_pg_triggers("usage_meters"))
    else:
        for statement in _sqlite_triggers().values():
            op.execute(statement)
        _sqlite_statistics()


def downgrade() -> None:
    raise NotImplementedError(
        "0015 converts usage to one row per span; restore a backup taken before it"
    )
