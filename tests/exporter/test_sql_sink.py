"""`SqlUsageSink` on SQLite and PostgreSQL: dedup, exact quantities, trace attribution,
concurrent halves of a trace, and a store that cannot take writes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select

from agentmeter.db import make_engine, migrate
from agentmeter.response_keys import response_key
from agentmeter.settings import Settings
from agentmeter.tables import UsageCustomer, UsageRow, usage_meters, usage_spans
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import (
    Quantity,
    StoreUnavailableError,
    UsageBatch,
    UsageRecord,
    WriteResult,
    from_micros,
    to_micros,
)

TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
END_TIME = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def trace_id(n: int) -> str:
    return f"{n:032x}"


def span_id(n: int) -> str:
    return f"{n:016x}"


def usage(
    trace: int,
    span: int,
    meter: str = "input_tokens",
    quantity: Quantity = 10,
    customer: str = "",
) -> UsageRecord:
    return UsageRecord(
        trace_id=trace_id(trace),
        span_id=span_id(span),
        meter=meter,
        quantity=quantity,
        customer_id=customer,
        time_unix_nano=END_TIME,
        provider="openai",
        model="gpt-4o",
        operation="chat",
    )


def stored(engine: Engine, tenant: str = TENANT) -> dict[tuple[str, str, str], tuple[int, str]]:
    """(trace, span, meter) → (quantity_micros, customer_id) of every stored record."""
    table = UsageRow.__table__
    query = select(
        table.c.trace_id,
        table.c.span_id,
        table.c.meter,
        table.c.quantity_micros,
        table.c.customer_id,
    ).where(table.c.tenant_id == tenant)
    with engine.connect() as connection:
        return {
            (row.trace_id, row.span_id, row.meter): (row.quantity_micros, row.customer_id)
            for row in connection.execute(query)
        }


def customers(engine: Engine, tenant: str = TENANT) -> dict[tuple[str, str, str], str]:
    return {key: customer for key, (_, customer) in stored(engine, tenant).items()}


@pytest.fixture
def sink(engine: Engine) -> SqlUsageSink:
    return SqlUsageSink(engine)


class TestWriteCounts:
    def test_new_batch_is_all_inserted(self, sink: SqlUsageSink, engine: Engine) -> None:
        batch = UsageBatch(records=[usage(1, 1), usage(1, 2), usage(2, 3, "output_tokens")])

        assert sink.write(TENANT, batch) == WriteResult(inserted=3, duplicates=0)
        assert len(stored(engine)) == 3

    def test_same_batch_twice_is_all_duplicates_the_second_time(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        batch = UsageBatch(records=[usage(1, 1), usage(1, 1, "output_tokens"), usage(2, 2)])
        sink.write(TENANT, batch)

        assert sink.write(TENANT, batch) == WriteResult(inserted=0, duplicates=3)
        assert len(stored(engine)) == 3

    def test_duplicate_within_one_batch_is_counted_once(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        batch = UsageBatch(records=[usage(1, 1, quantity=5), usage(1, 1, quantity=5), usage(1, 2)])

        assert sink.write(TENANT, batch) == WriteResult(inserted=2, duplicates=1)
        assert len(stored(engine)) == 2

    def test_partly_known_batch_counts_each_part(self, sink: SqlUsageSink) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1), usage(1, 2)]))

        result = sink.write(TENANT, UsageBatch(records=[usage(1, 2), usage(1, 3), usage(1, 4)]))

        assert result == WriteResult(inserted=2, duplicates=1)


class TestEmptyBatch:
    def test_writes_nothing(self, sink: SqlUsageSink, engine: Engine) -> None:
        assert sink.write(TENANT, UsageBatch(records=[])) == WriteResult(inserted=0, duplicates=0)
        assert stored(engine) == {}


class TestRecordIdentity:
    def test_first_copy_of_a_duplicate_is_kept(self, sink: SqlUsageSink, engine: Engine) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1, quantity=7)]))

        sink.write(TENANT, UsageBatch(records=[usage(1, 1, quantity=9)]))

        assert stored(engine)[(trace_id(1), span_id(1), "input_tokens")][0] == to_micros(7)

    def test_same_span_in_another_tenant_is_new(self, sink: SqlUsageSink, engine: Engine) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1)]))

        sink.write(OTHER_TENANT, UsageBatch(records=[usage(1, 1)]))

        assert len(stored(engine, TENANT)) == 1
        assert len(stored(engine, OTHER_TENANT)) == 1

    def test_same_span_with_another_meter_is_new(self, sink: SqlUsageSink, engine: Engine) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1, "input_tokens")]))

        sink.write(TENANT, UsageBatch(records=[usage(1, 1, "output_tokens")]))

        assert set(stored(engine)) == {
            (trace_id(1), span_id(1), "input_tokens"),
            (trace_id(1), span_id(1), "output_tokens"),
        }

    def test_same_span_id_in_another_trace_is_new(self, sink: SqlUsageSink, engine: Engine) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1)]))

        sink.write(TENANT, UsageBatch(records=[usage(2, 1)]))

        assert set(stored(engine)) == {
            (trace_id(1), span_id(1), "input_tokens"),
            (trace_id(2), span_id(1), "input_tokens"),
        }

    def test_customer_is_not_part_of_identity(self, sink: SqlUsageSink, engine: Engine) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1, customer="acme")]))

        sink.write(TENANT, UsageBatch(records=[usage(1, 1, customer="globex")]))

        assert customers(engine) == {(trace_id(1), span_id(1), "input_tokens"): "acme"}

    def test_a_retry_with_more_meters_adds_only_those(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1, "input_tokens", 5)]))
        tool = usage(1, 1, "tool_calls", 1)._replace(source="tool")
        fuller = [usage(1, 1, "input_tokens", 6), usage(1, 1, "output_tokens", 7), tool]

        result = sink.write(TENANT, UsageBatch(records=fuller))

        assert result == WriteResult(inserted=2, duplicates=1)
        assert {key[2]: value[0] for key, value in stored(engine).items()} == {
            "input_tokens": to_micros(5),  # the first copy's
            "output_tokens": to_micros(7),
            "tool_calls": to_micros(1),
        }
        assert sink.write(TENANT, UsageBatch(records=fuller)) == WriteResult(0, 3)


class TestLeanLayout:
    """One row per span, strings once (migration 0015): what `usage_records` shows is what
    was written, ids included."""

    def test_one_row_per_span_and_each_string_once(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        records = [
            usage(trace, span, meter, customer="acme")
            for trace in range(1, 5)
            for span in range(1, 11)
            for meter in ("input_tokens", "cache_read_tokens", "output_tokens")
        ]
        sink.write(TENANT, UsageBatch(records=records))

        with engine.connect() as connection:
            count = [
                connection.execute(select(func.count()).select_from(table)).scalar()
                for table in (usage_spans, usage_meters, UsageCustomer.__table__)
            ]
        assert count == [40, 0, 1]  # spans, other meters, customer ids
        assert len(stored(engine)) == 120

    def test_spans_of_every_shape_in_one_batch_are_stored_as_written(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        """Span rows differ in which columns they set (a parent, a response id, which token
        meters, other meters); SQLite inserts each shape on its own (`_by_shape`)."""
        records = [
            usage(1, 1),
            usage(1, 2, "output_tokens", 7)._replace(parent_span_id=span_id(1)),
            usage(1, 3, "cache_write_tokens", 4)._replace(response_id="resp-3"),
            usage(1, 3, "input_tokens", 9)._replace(response_id="resp-3"),
            usage(2, 4, "tool_calls", 1)._replace(source="tool"),
            usage(2, 5, "output_reasoning_tokens", 2, customer="acme"),
            usage(2, 5, "output_tokens", 3, customer="acme"),
            usage(2, 6),
        ]
        sink.write(TENANT, UsageBatch(records=records))

        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    UsageRow.trace_id,
                    UsageRow.span_id,
                    UsageRow.meter,
                    UsageRow.quantity_micros,
                    UsageRow.customer_id,
                    UsageRow.parent_span_id,
                    UsageRow.response_id,
                )
            ).all()
        assert sorted(tuple(row) for row in rows) == sorted(
            (
                r.trace_id,
                r.span_id,
                r.meter,
                to_micros(r.quantity),
                r.customer_id,
                r.parent_span_id,
                response_key(r.response_id) if r.response_id else "",
            )
            for r in records
        )

    def test_ids_with_the_high_bit_set_read_back_as_written(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        record = usage(1, 1)._replace(
            trace_id="f" * 32, span_id="ffffffffffffff01", parent_span_id="8000000000000000"
        )
        sink.write(TENANT, UsageBatch(records=[record]))

        with engine.connect() as connection:
            row = connection.execute(
                select(UsageRow.trace_id, UsageRow.span_id, UsageRow.parent_span_id)
            ).one()
        assert tuple(row) == ("f" * 32, "ffffffffffffff01", "8000000000000000")

    def test_the_smallest_child_is_the_smallest_id_in_hex(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        """Span ids are stored as signed integers: the once-per-call rule still names the
        child whose hex id is smallest (a negative stored id is not smaller)."""
        parent = usage(1, 1)
        children = [
            usage(1, 1)._replace(span_id=child, parent_span_id=span_id(1))
            for child in ("8000000000000001", "0000000000000002")
        ]
        sink.write(TENANT, UsageBatch(records=[parent, *children]))

        with engine.connect() as connection:
            superseded = dict(
                connection.execute(
                    select(UsageRow.span_id, UsageRow.superseded_by).where(
                        UsageRow.superseded_by != ""
                    )
                ).all()
            )
        assert superseded == {span_id(1): "0000000000000002"}


# quantity → its exact micro-units
QUANTITIES: list[tuple[Quantity, int]] = [
    (1, 1_000_000),
    (123_456, 123_456_000_000),
    (10**9, 10**15),
    (Decimal("12.5"), 12_500_000),
    (Decimal("0.000001"), 1),
    (Decimal("999999999.999999"), 999_999_999_999_999),
    (0, 0),
]


class TestQuantities:
    def test_round_trip_exactly_through_quantity_micros(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        records = [
            usage(1, n, "sandbox_seconds", quantity)
            for n, (quantity, _) in enumerate(QUANTITIES, start=1)
        ]

        sink.write(TENANT, UsageBatch(records=records))

        rows = stored(engine)
        micros = [
            rows[(trace_id(1), span_id(n), "sandbox_seconds")][0] for n in range(1, len(rows) + 1)
        ]
        assert micros == [expected for _, expected in QUANTITIES]
        assert [from_micros(m) for m in micros] == [quantity for quantity, _ in QUANTITIES]

    def test_from_micros_prints_without_exponent(self) -> None:
        assert str(from_micros(12_500_000)) == "12.5"
        assert str(from_micros(1)) == "0.000001"
        assert str(from_micros(10**15)) == "1000000000"
        assert str(from_micros(0)) == "0"

    def test_to_micros_of_int_and_decimal_agree(self) -> None:
        assert to_micros(3) == to_micros(Decimal("3")) == to_micros(Decimal("3.000000"))


class TestTraceInheritance:
    def test_customer_less_record_first_then_trace_customer(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1), usage(1, 1, "output_tokens")]))
        assert set(customers(engine).values()) == {""}

        sink.write(TENANT, UsageBatch(records=[], trace_customers={trace_id(1): "acme"}))

        assert set(customers(engine).values()) == {"acme"}

    def test_trace_customer_first_then_customer_less_record(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        sink.write(TENANT, UsageBatch(records=[], trace_customers={trace_id(1): "acme"}))

        sink.write(TENANT, UsageBatch(records=[usage(1, 1), usage(1, 2)]))

        assert set(customers(engine).values()) == {"acme"}

    def test_customer_less_record_in_the_same_batch_as_its_trace_customer(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        batch = UsageBatch(
            records=[usage(1, 1), usage(1, 2, customer="acme")],
            trace_customers={trace_id(1): "acme"},
        )

        sink.write(TENANT, batch)

        assert set(customers(engine).values()) == {"acme"}

    def test_first_customer_wins(self, sink: SqlUsageSink, engine: Engine) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1)], trace_customers={trace_id(1): "acme"}))

        sink.write(
            TENANT, UsageBatch(records=[usage(1, 2)], trace_customers={trace_id(1): "globex"})
        )
        sink.write(TENANT, UsageBatch(records=[usage(1, 3)]))

        assert set(customers(engine).values()) == {"acme"}

    def test_first_customer_wins_over_a_later_one_for_earlier_orphans(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1)]))
        sink.write(TENANT, UsageBatch(records=[], trace_customers={trace_id(1): "acme"}))

        sink.write(TENANT, UsageBatch(records=[], trace_customers={trace_id(1): "globex"}))

        assert set(customers(engine).values()) == {"acme"}

    def test_record_with_its_own_customer_keeps_it(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        sink.write(TENANT, UsageBatch(records=[], trace_customers={trace_id(1): "acme"}))

        sink.write(TENANT, UsageBatch(records=[usage(1, 1, customer="globex"), usage(1, 2)]))

        assert customers(engine) == {
            (trace_id(1), span_id(1), "input_tokens"): "globex",
            (trace_id(1), span_id(2), "input_tokens"): "acme",
        }

    def test_stored_record_with_its_own_customer_keeps_it_when_the_trace_gets_one(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(1, 1, customer="globex"), usage(1, 2)]))

        sink.write(TENANT, UsageBatch(records=[], trace_customers={trace_id(1): "acme"}))

        assert customers(engine) == {
            (trace_id(1), span_id(1), "input_tokens"): "globex",
            (trace_id(1), span_id(2), "input_tokens"): "acme",
        }

    def test_other_traces_and_tenants_do_not_inherit(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        sink.write(TENANT, UsageBatch(records=[usage(2, 1)]))
        sink.write(OTHER_TENANT, UsageBatch(records=[usage(1, 1)]))

        sink.write(TENANT, UsageBatch(records=[], trace_customers={trace_id(1): "acme"}))
        sink.write(TENANT, UsageBatch(records=[usage(3, 1)]))

        assert set(customers(engine, TENANT).values()) == {""}
        assert set(customers(engine, OTHER_TENANT).values()) == {""}

    def test_many_traces_in_one_batch_beyond_one_in_list(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        # More traces than one IN (…) chunk of the sink holds.
        traces = range(1, 1202)
        sink.write(TENANT, UsageBatch(records=[usage(t, 1) for t in traces]))

        sink.write(
            TENANT,
            UsageBatch(records=[], trace_customers={trace_id(t): f"c{t}" for t in traces}),
        )
        sink.write(TENANT, UsageBatch(records=[usage(t, 2) for t in traces]))

        assert customers(engine) == {
            (trace_id(t), span_id(s), "input_tokens"): f"c{t}" for t in traces for s in (1, 2)
        }


TRACES = 50


def _write_halves_at_once(
    orphan_sink: SqlUsageSink, customer_sink: SqlUsageSink, traces: range
) -> list[BaseException]:
    """For each trace, one thread writes its customer-less records while the other writes
    its trace customer, both released by the same barrier."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def orphans() -> None:
        try:
            for t in traces:
                barrier.wait(timeout=30)
                orphan_sink.write(
                    TENANT,
                    UsageBatch(records=[usage(t, 1), usage(t, 1, "output_tokens"), usage(t, 2)]),
                )
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    def trace_customer() -> None:
        try:
            for t in traces:
                barrier.wait(timeout=30)
                customer_sink.write(
                    TENANT,
                    UsageBatch(
                        records=[usage(t, 3, customer=f"c{t}")],
                        trace_customers={trace_id(t): f"c{t}"},
                    ),
                )
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=orphans), threading.Thread(target=trace_customer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


class TestConcurrentHalvesOfATrace:
    # Two replicas on one database is the PostgreSQL deployment only.
    @pytest.mark.postgres
    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    def test_two_replicas_attribute_every_record(self, database_url: str, engine: Engine) -> None:
        # Two engines, as two `agentmeter serve` replicas on one PostgreSQL would have.
        other = make_engine(Settings(database_url=database_url))
        try:
            errors = _write_halves_at_once(
                SqlUsageSink(engine), SqlUsageSink(other), range(1, TRACES + 1)
            )
        finally:
            other.dispose()

        assert errors == []
        attributed = customers(engine)
        assert len(attributed) == TRACES * 4
        assert {key: c for key, c in attributed.items() if c != f"c{int(key[0], 16)}"} == {}

    def test_one_sink_shared_by_threads_attributes_every_record(
        self, sink: SqlUsageSink, engine: Engine
    ) -> None:
        # The server shares one sink between its worker threads.
        errors = _write_halves_at_once(sink, sink, range(1, TRACES + 1))

        assert errors == []
        attributed = customers(engine)
        assert len(attributed) == TRACES * 4
        assert {key: c for key, c in attributed.items() if c != f"c{int(key[0], 16)}"} == {}


class TestConcurrentOverlappingBatches:
    @pytest.mark.postgres
    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    def test_same_traces_in_opposite_orders_do_not_deadlock(
        self, database_url: str, engine: Engine
    ) -> None:
        # Two replicas each get a batch of the same five traces (one a retry of records the
        # other holds too), listed in opposite orders. Stops at the first failure.
        other = make_engine(Settings(database_url=database_url))
        sinks = (SqlUsageSink(engine), SqlUsageSink(other))
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def replica(index: int) -> None:
            for round_ in range(300):
                traces = [round_ * 10 + k for k in range(1, 6)]
                if index:
                    traces.reverse()
                batch = UsageBatch(
                    records=[usage(t, 1) for t in traces],
                    trace_customers={trace_id(t): "acme" for t in traces},
                )
                try:
                    barrier.wait(timeout=30)
                    sinks[index].write(TENANT, batch)
                except threading.BrokenBarrierError:
                    return
                except BaseException as error:
                    errors.append(error)
                    barrier.abort()
                    return

        threads = [threading.Thread(target=replica, args=(i,)) for i in range(2)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
        finally:
            other.dispose()

        assert [str(error)[:120] for error in errors] == []


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite file whose writers give up after 0.2 s."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'locked.db'}", sqlite_busy_timeout_seconds=0.2
    )
    engine = make_engine(settings)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


class TestStoreUnavailable:
    def test_postgresql_server_not_listening(self) -> None:
        engine = create_engine(
            "postgresql+psycopg://agentmeter@127.0.0.1:1/agentmeter?connect_timeout=2"
        )
        try:
            with pytest.raises(StoreUnavailableError):
                SqlUsageSink(engine).write(TENANT, UsageBatch(records=[usage(1, 1)]))
        finally:
            engine.dispose()

    def test_sqlite_file_locked_by_another_writer(self, sqlite_engine: Engine) -> None:
        path = sqlite_engine.url.database
        assert path is not None
        sink = SqlUsageSink(sqlite_engine)
        batch = UsageBatch(records=[usage(1, 1)], trace_customers={trace_id(1): "acme"})
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")

            with pytest.raises(StoreUnavailableError):
                sink.write(TENANT, batch)
            with pytest.raises(StoreUnavailableError):
                sink.write(TENANT, UsageBatch(records=[usage(2, 1)]))
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        assert stored(sqlite_engine) == {}
        # Nothing was half-written: once the lock is gone the same batch is all new.
        assert sink.write(TENANT, batch) == WriteResult(inserted=1, duplicates=0)
        assert set(customers(sqlite_engine).values()) == {"acme"}
