"""The usage table's monthly partitions on PostgreSQL (agentmeter/partitions.py): created by
the migration (converting stored usage), on demand by ingest and ahead by the CLI; a
detached month leaves every read; SQLite has none and says so."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.command import cli
from agentmeter.db import alembic_config, make_engine
from agentmeter.partitions import existing_months, month_bounds, partitioned
from agentmeter.settings import Settings
from agentmeter.tables import UsageRow, to_unix_nano
from billing_api.usage.repository import aggregate_usage
from billing_api.usage.service import UsageSelection
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import StoreUnavailableError, UsageBatch, UsageRecord

TENANT = "tenant-a"


def record(span: int, moment: datetime, quantity: int = 10) -> UsageRecord:
    return UsageRecord(
        trace_id=f"{span:032x}",
        span_id=f"{span:016x}",
        meter="input_tokens",
        quantity=quantity,
        customer_id="acme",
        time_unix_nano=to_unix_nano(moment),
        provider="openai",
        model="gpt-4o",
    )


def billed(engine: Engine) -> int:
    with Session(engine) as session:
        rows = aggregate_usage(session, TENANT, UsageSelection())
    return int(sum(row["quantity_micros"] for row in rows)) // 10**6


def months(engine: Engine) -> set[tuple[int, int]]:
    with engine.connect() as connection:
        return existing_months(connection)


UsageCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def usage_cli(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> UsageCli:
    """`agentmeter usage *args` on the test's store: (exit code, stdout, last stderr line)."""
    monkeypatch.setenv("AGENTMETER_DATABASE_URL", database_url)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(["usage", *args])
        out, err = capsys.readouterr()
        return code, out, (err.strip().splitlines() or [""])[-1]  # after the JSON log lines

    return run


@pytest.fixture
def pg_engine(engine: Engine) -> Iterator[Engine]:
    if not partitioned_backend(engine):
        pytest.skip("monthly partitions exist on PostgreSQL only")
    yield engine


def partitioned_backend(engine: Engine) -> bool:
    with engine.connect() as connection:
        return partitioned(connection)


class TestOnPostgresql:
    def test_migration_leaves_this_month_and_three_ahead(self, pg_engine: Engine) -> None:
        now = utcnow()
        ahead = [
            (now.year + (now.month - 1 + k) // 12, (now.month - 1 + k) % 12 + 1) for k in range(4)
        ]

        assert set(ahead) <= months(pg_engine)

    def test_ingest_creates_a_new_months_partition_and_still_deduplicates(
        self, pg_engine: Engine
    ) -> None:
        sink = SqlUsageSink(pg_engine)
        may = datetime(2031, 5, 17, 12, tzinfo=UTC)
        assert (2031, 5) not in months(pg_engine)

        first = sink.write(TENANT, UsageBatch(records=[record(1, may), record(2, may)]))
        retry = sink.write(TENANT, UsageBatch(records=[record(1, may), record(2, may)]))

        assert (2031, 5) in months(pg_engine)
        assert (first.inserted, retry.inserted, retry.duplicates) == (2, 0, 2)
        assert billed(pg_engine) == 20

    def test_detached_month_leaves_reads_and_comes_back_empty(
        self,
        pg_engine: Engine,
        usage_cli: UsageCli,
    ) -> None:
        sink = SqlUsageSink(pg_engine)
        may, june = datetime(2031, 5, 17, tzinfo=UTC), datetime(2031, 6, 2, tzinfo=UTC)
        sink.write(TENANT, UsageBatch(records=[record(1, may), record(2, june, 5)]))

        code, out, _ = usage_cli("detach", "2031-05")

        assert code == 0
        spans, meters = json.loads(out)["detached_tables"]
        assert spans.startswith("usage_spans_203105_detached_")
        assert meters.startswith("usage_meters_203105_detached_")
        assert billed(pg_engine) == 5  # May's record left every read
        with pg_engine.connect() as connection:
            kept = connection.exec_driver_sql(f"SELECT count(*) FROM {spans}").scalar_one()
        assert kept == 1  # ... and waits in its own table to be archived
        # Late May usage: the sink still believes May exists; its retry recreates it.
        with pytest.raises(StoreUnavailableError):
            sink.write(TENANT, UsageBatch(records=[record(3, may, 7)]))
        sink.write(TENANT, UsageBatch(records=[record(3, may, 7)]))
        assert billed(pg_engine) == 12

    def test_compacting_a_month_rebuilds_its_indexes_and_keeps_its_usage(
        self,
        pg_engine: Engine,
        usage_cli: UsageCli,
    ) -> None:
        sink = SqlUsageSink(pg_engine)
        may = datetime(2031, 5, 17, tzinfo=UTC)
        # Ids in random order, several exports: the identity's pages split half empty.
        spans = random.Random(7).sample(range(1, 2**62), 3000)
        for chunk in range(0, len(spans), 500):
            batch = [record(span, may, 1) for span in spans[chunk : chunk + 500]]
            sink.write(TENANT, UsageBatch(records=batch))
        sink.write(TENANT, UsageBatch(records=[record(1, datetime(2031, 6, 2, tzinfo=UTC))]))
        files_before = index_files(pg_engine, "usage_spans_203105")

        code, out, _ = usage_cli("compact", "2031-05")

        assert code == 0
        answer = json.loads(out)
        assert answer["tables"] == ["usage_spans_203105", "usage_meters_203105"]
        assert 0 < answer["bytes_after"] < answer["bytes_before"]
        files_after = index_files(pg_engine, "usage_spans_203105")
        assert files_after.keys() == files_before.keys()  # the same indexes, each rebuilt
        assert not set(files_after.values()) & set(files_before.values())
        assert billed(pg_engine) == 3000 + 10  # June untouched, May whole
        again = sink.write(TENANT, UsageBatch(records=[record(spans[0], may, 1)]))
        assert (again.inserted, again.duplicates) == (0, 1)  # the identity still holds
        code, _, err = usage_cli("compact", "1999-01")
        assert (code, err) == (2, "no attached partition usage_spans_199901")

    def test_cli_creates_months_ahead_and_refuses_unknown_months(
        self,
        pg_engine: Engine,
        usage_cli: UsageCli,
    ) -> None:
        code, out, _ = usage_cli("partitions", "--ahead", "6")

        assert code == 0
        answer = json.loads(out)
        # The migration made this month and three more; six ahead adds three.
        assert len(answer["created"]) == 3
        assert set(answer["created"]) <= set(answer["attached"])
        code, _, err = usage_cli("detach", "1999-01")
        assert (code, err) == (2, "no attached partition usage_spans_199901")
        code, _, err = usage_cli("detach", "May")
        assert code == 2


def index_files(engine: Engine, table: str) -> dict[str, int]:
    """Each index of `table` by name, and the file holding it (a rebuild gives a new one)."""
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT c.relname, c.relfilenode FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = CAST(%s AS regclass)",
            (table,),
        )
        return {name: node for name, node in rows}


def test_migration_moves_stored_usage_into_month_partitions(empty_database_url: str) -> None:
    engine = make_engine(Settings(database_url=empty_database_url))
    try:
        command.upgrade(alembic_config(engine), "0010")
        january = month_bounds((2025, 1))[0]
        rows = [
            {
                "tenant_id": TENANT, "trace_id": f"{n:032x}", "span_id": f"{n:016x}",
                "meter": "input_tokens", "quantity_micros": n * 10**6, "customer_id": "acme",
                "time_unix_nano": when, "received_unix_nano": when, "provider": "openai",
                "model": "gpt-4o", "operation": "chat", "agent_name": "", "step": "", "tool": "",
                "service_name": "", "source": "llm",
            }
            for n, when in ((1, january), (2, to_unix_nano(utcnow())))
        ]  # fmt: skip
        with engine.begin() as connection:
            connection.execute(insert(UsageRow.__table__), rows)

        command.upgrade(alembic_config(engine), "head")

        with engine.connect() as connection:
            total = connection.execute(select(func.sum(UsageRow.quantity_micros))).scalar_one()
            assert total == 3 * 10**6
            if partitioned(connection):
                assert (2025, 1) in existing_months(connection)
        # The identity still holds after the conversion: a retried record is a duplicate.
        again = SqlUsageSink(engine).write(
            TENANT, UsageBatch(records=[record(1, datetime(2025, 1, 1, tzinfo=UTC))])
        )
        assert (again.inserted, again.duplicates) == (0, 1)
    finally:
        engine.dispose()


def test_sqlite_has_no_partitions(
    engine: Engine,
    usage_cli: UsageCli,
) -> None:
    if partitioned_backend(engine):
        pytest.skip("SQLite only")

    for command_name in ("detach", "compact"):
        code, _, err = usage_cli(command_name, "2026-01")

        assert (code, err) == (2, "usage is partitioned by month only on PostgreSQL")
