"""The lean usage store (issue 13): migrations 0013 (identity as primary key, response keys)
and 0015 (one row per span, `usage_records` a view) convert usage stored by the layouts
before them, on SQLite and PostgreSQL, and the store keeps the identity and its lookups."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, func, insert, inspect, select

from agentmeter.db import alembic_config, make_engine
from agentmeter.response_keys import response_key
from agentmeter.settings import Settings
from agentmeter.tables import UsageRow, usage_meters, usage_spans
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord

TENANT = "tenant-a"
WHEN = 1_793_491_200_000_000_000  # 2026-11-01T00:00:00Z
IDENTITY = ["tenant_id", "trace_id", "span_id", "meter", "time_unix_nano"]


def old_row(span: int, meter: str, quantity: int, **changes: object) -> dict[str, object]:
    """A usage record as the layout before 0013 stored it (its `id` left to the store)."""
    return {
        "tenant_id": TENANT, "trace_id": f"{span // 2:032x}", "span_id": f"{span:016x}",
        "meter": meter, "quantity_micros": quantity * 10**6, "customer_id": "acme",
        "time_unix_nano": WHEN + span, "received_unix_nano": WHEN + span + 7,
        "provider": "openai", "model": "gpt-4o", "operation": "chat", "agent_name": "support",
        "step": "plan", "tool": "", "service_name": "agent", "source": "llm",
        "provider_cost_pico": quantity * 2_500_000, "parent_span_id": "",
        "response_id": f"chatcmpl-{span}", "superseded_by": "",
    } | changes  # fmt: skip


def new_record(span: int, meter: str, quantity: int, response_id: str = "") -> UsageRecord:
    """A record of trace 0 written after the conversion, as the sink is handed it (at the
    time `old_row` gives span 1)."""
    return UsageRecord(
        trace_id=f"{0:032x}",
        span_id=f"{span:016x}",
        meter=meter,
        quantity=quantity,
        customer_id="acme",
        time_unix_nano=WHEN + 1,
        provider="openai",
        model="gpt-4o",
        response_id=response_id,
    )


OLD_ROWS = [
    old_row(1, "input_tokens", 1_000),
    old_row(1, "output_tokens", 50),
    old_row(2, "input_tokens", 300, parent_span_id=f"{1:016x}", provider_cost_pico=None),
    old_row(3, "input_tokens", 1_000, superseded_by=f"{1:016x}", customer_id=""),
    old_row(4, "tool_calls", 1, source="tool", response_id=""),
    old_row(
        4, "agentmeter.usage.pages", 3, source="custom", response_id="", provider_cost_pico=None
    ),
    # A copy of span 1 with another end time: its own identity, its own span row.
    old_row(1, "input_tokens", 1_000, time_unix_nano=WHEN + 100, received_unix_nano=WHEN + 101),
]


@pytest.fixture
def at_0012(empty_database_url: str) -> Iterator[Engine]:
    """A database at revision 0012 holding `OLD_ROWS`."""
    engine = make_engine(Settings(database_url=empty_database_url))
    try:
        command.upgrade(alembic_config(engine), "0012")
        with engine.begin() as connection:
            connection.execute(insert(UsageRow.__table__), OLD_ROWS)
        yield engine
    finally:
        engine.dispose()


def stored(engine: Engine) -> list[dict[str, object]]:
    """Every stored usage record, as `old_row` builds them, in identity order."""
    columns = [UsageRow.__table__.c[name] for name in OLD_ROWS[0]]
    with engine.connect() as connection:
        identity = [UsageRow.__table__.c[name] for name in IDENTITY]
        rows = connection.execute(select(*columns).order_by(*identity)).mappings().all()
    return [dict(row) for row in rows]


def expected_rows() -> list[dict[str, object]]:
    """`OLD_ROWS` as 0013 leaves them: response ids replaced by their keys."""
    rows = [row | {"response_id": response_key(str(row["response_id"]))} for row in OLD_ROWS]
    return sorted(rows, key=lambda row: [row[c] for c in IDENTITY])


class TestMigration0013:
    def test_keeps_every_record_and_keys_them_by_their_identity(self, at_0012: Engine) -> None:
        command.upgrade(alembic_config(at_0012), "0013")

        assert stored(at_0012) == expected_rows()
        schema = inspect(at_0012)
        assert "id" not in {column["name"] for column in schema.get_columns("usage_records")}
        assert schema.get_pk_constraint("usage_records")["constrained_columns"] == IDENTITY
        assert {tuple(ix["column_names"]) for ix in schema.get_indexes("usage_records")} == {
            ("tenant_id", "customer_id", "time_unix_nano"),
            ("tenant_id", "trace_id", "parent_span_id"),
            ("tenant_id", "response_id"),
        }

    def test_the_converted_identity_still_drops_duplicates(self, at_0012: Engine) -> None:
        command.upgrade(alembic_config(at_0012), "head")
        copy = new_record(1, "input_tokens", 1_000)
        new = copy._replace(meter="cache_read_tokens", quantity=10)

        result = SqlUsageSink(at_0012).write(TENANT, UsageBatch(records=[copy, new]))

        assert (result.inserted, result.duplicates) == (1, 1)
        assert len(stored(at_0012)) == len(OLD_ROWS) + 1

    def test_the_sink_stores_response_ids_as_the_migration_converted_them(
        self, at_0012: Engine
    ) -> None:
        command.upgrade(alembic_config(at_0012), "head")
        # Another span of span 1's call (same response id), written after the conversion.
        sibling = new_record(9, "output_tokens", 50, response_id="chatcmpl-1")

        SqlUsageSink(at_0012).write(TENANT, UsageBatch(records=[sibling]))

        keys = {(row["span_id"], row["meter"]): row["response_id"] for row in stored(at_0012)}
        assert keys[(f"{9:016x}", "output_tokens")] == keys[(f"{1:016x}", "output_tokens")]
        assert keys[(f"{9:016x}", "output_tokens")] == response_key("chatcmpl-1")
        assert len(response_key("chatcmpl-1")) == 20

    def test_downgrade_restores_the_surrogate_key(self, at_0012: Engine) -> None:
        command.upgrade(alembic_config(at_0012), "0013")
        command.downgrade(alembic_config(at_0012), "0012")

        assert stored(at_0012) == expected_rows()
        schema = inspect(at_0012)
        assert schema.get_pk_constraint("usage_records")["constrained_columns"][0] == "id"
        assert schema.get_unique_constraints("usage_records")[0]["column_names"] == IDENTITY


class TestMigration0015:
    def test_keeps_every_record_as_one_row_per_span(self, at_0012: Engine) -> None:
        command.upgrade(alembic_config(at_0012), "head")

        # Every record reads back through the view as it was stored before.
        assert stored(at_0012) == expected_rows()
        with at_0012.connect() as connection:
            spans = connection.execute(select(func.count()).select_from(usage_spans)).scalar()
            meters = connection.execute(select(usage_meters.c.meter)).scalars().all()
        # Spans 1 (two end times), 2, 3 and 4; span 4's meters are not token meters.
        assert spans == 5
        assert sorted(meters) == ["agentmeter.usage.pages", "tool_calls"]

    def test_a_converted_span_takes_a_meter_it_lacked_and_drops_what_it_has(
        self, at_0012: Engine
    ) -> None:
        command.upgrade(alembic_config(at_0012), "head")
        copy = new_record(1, "output_tokens", 50)  # span 1 has it: a duplicate
        reasoning = copy._replace(meter="output_reasoning_tokens", quantity=7)  # it has not
        tool = copy._replace(meter="tool_calls", quantity=1, source="tool")

        result = SqlUsageSink(at_0012).write(TENANT, UsageBatch(records=[copy, reasoning, tool]))

        assert (result.inserted, result.duplicates) == (2, 1)
        added = {(r["span_id"], r["meter"]): r for r in stored(at_0012)}
        assert added[(f"{1:016x}", "output_reasoning_tokens")]["quantity_micros"] == 7 * 10**6
        assert added[(f"{1:016x}", "tool_calls")]["source"] == "tool"
        assert len(stored(at_0012)) == len(OLD_ROWS) + 2

    def test_downgrade_is_refused(self, at_0012: Engine) -> None:
        command.upgrade(alembic_config(at_0012), "head")

        with pytest.raises(NotImplementedError, match="restore a backup"):
            command.downgrade(alembic_config(at_0012), "0014")


def test_sqlite_reads_a_customers_period_by_its_index(engine: Engine) -> None:
    """Without statistics SQLite scanned a tenant's every span for one customer's period
    (by the identity's first column); migration 0015's statistics make it seek the
    customer's (customer, end time) range, through the view, as readers query it."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's query plans")
    SqlUsageSink(engine).write(TENANT, UsageBatch(records=[new_record(1, "input_tokens", 10)]))
    query = (
        select(UsageRow.meter, func.sum(UsageRow.quantity_micros))
        .where(
            UsageRow.tenant_id == TENANT,
            UsageRow.customer_id == "acme",
            UsageRow.time_unix_nano >= WHEN,
            UsageRow.time_unix_nano < WHEN + 10**9,
            UsageRow.billed(),
        )
        .group_by(UsageRow.meter)
    )
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        plan = [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
        assert connection.execute(query).all() == [("input_tokens", 10 * 10**6)]
    spans = [step for step in plan if step.startswith(("SEARCH s ", "SCAN s"))]
    assert spans == [
        "SEARCH s USING INDEX ix_usage_spans_customer_key_time_unix_nano "
        "(customer_key=? AND time_unix_nano>? AND time_unix_nano<?)"
    ], plan
