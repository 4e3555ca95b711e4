"""The rated-month cache (billing_api/rating/cache.py) never disagrees with rating the stored
records: every kind of writer marks what it changes (database triggers, migration 0014), a
write racing a reader is never lost, and under concurrent ingest the cache ends exact."""

from __future__ import annotations

import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.db import is_sqlite, read_only
from agentmeter.tables import (
    RatedCustomerMonth,
    RatingCacheGeneration,
    RatingChange,
    UsageRow,
)
from agentmeter.tenants import create_tenant
from billing_api.customers import service as customers
from billing_api.dashboard.overview import refresh_figures
from billing_api.jobs.kinds import job_registry
from billing_api.jobs.worker import run_due_jobs
from billing_api.periods import Period, month_period
from billing_api.pricing import service as pricing
from billing_api.pricing.components import ChargeModel, Component
from billing_api.rating import cache
from billing_api.rating.cache import (
    MonthFigures,
    MonthTotals,
    Refresh,
    caught_up,
    claim,
    compute,
    customer_months,
    month_totals,
    month_usage,
    store,
)
from billing_api.rating.service import rate_period
from billing_api.usage.repository import attribute_traces, move_customer_usage
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, UsageRecord
from tests.billing_api.callers import staff
from tests.billing_api.scenario import INPUT, MILLION, NOW, Scenario, record

NOVEMBER = month_period("2026-11", 1)
OCTOBER = month_period("2026-10", 1)
MONTHS = [OCTOBER, NOVEMBER]


@contextmanager
def reader(engine: Engine) -> Iterator[Session]:
    """A session as a GET request has it: on SQLite a snapshot that takes no write lock."""
    with read_only(engine) as connection, Session(connection) as session, session.begin():
        yield session


def write(engine: Engine, tenant_id: str, *records: UsageRecord) -> None:
    SqlUsageSink(engine).write(tenant_id, UsageBatch(list(records)))


@dataclass(frozen=True)
class Month:
    """A month as the dashboard reads it: each customer's figures, usage per meter (every
    customer) and totals per currency."""

    customers: dict[str, MonthFigures]
    usage: dict[str, int]
    totals: dict[str, MonthTotals]


def fresh(engine: Engine, tenant_id: str) -> dict[str, Month]:
    """What rating every customer now gives, without the cache."""
    months = {}
    with Session(engine) as session:
        for period in MONTHS:
            rated = rate_period(session, tenant_id, period)
            usage: Counter[str] = Counter()
            sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
            for r in rated.values():
                usage.update(r.usage_micros)
                sum_ = sums[r.currency]
                sum_[0] += r.subtotal_minor
                sum_[1] += r.provider_cost_minor or 0
                sum_[2] += r.margin_minor or 0
            months[period.label] = Month(
                {c: MonthFigures.of(r) for c, r in rated.items()},
                dict(usage),
                {currency: MonthTotals(*sum_) for currency, sum_ in sums.items()},
            )
    return months


def read(session: Session, tenant_id: str) -> dict[str, Month]:
    totals = month_totals(session, tenant_id, [p.label for p in MONTHS])
    return {
        p.label: Month(
            customer_months(session, tenant_id, p.label),
            month_usage(session, tenant_id, p.label),
            totals[p.label],
        )
        for p in MONTHS
    }


def cached(engine: Engine, tenant_id: str) -> dict[str, Month]:
    with reader(engine) as session, caught_up(session, tenant_id, MONTHS) as cache:
        return read(cache, tenant_id)


def recomputed(engine: Engine, tenant_id: str) -> dict[str, set[str] | None]:
    """What a reader would recompute now (nothing is kept)."""
    with Session(engine) as session:
        try:
            generation = claim(session, tenant_id, None)
            assert generation is not None
            refresh = compute(session, tenant_id, MONTHS, generation)
            return {label: customers for label, (customers, _) in refresh.recomputed.items()}
        finally:
            session.rollback()


def claim_and_compute(engine: Engine, tenant_id: str, now: datetime | None = None) -> Refresh:
    """Steps 1 and 2 of a reader, as `catch_up` takes them."""
    with Session(engine) as session, session.begin():
        generation = claim(session, tenant_id, now or utcnow())
    assert generation is not None
    with reader(engine) as session:
        return compute(session, tenant_id, MONTHS, generation)


def stored(engine: Engine, refresh: Refresh) -> bool:
    """Step 3."""
    with Session(engine) as session, session.begin():
        return store(session, refresh)


def test_the_cache_answers_what_rating_gives_and_keeps_it(
    engine: Engine, scenario: Scenario
) -> None:
    tenant_id = scenario.tenant_id
    assert recomputed(engine, tenant_id) == {"2026-10": None, "2026-11": None}
    figures = cached(engine, tenant_id)
    assert figures == fresh(engine, tenant_id)
    # acme: 2 M tokens at 10.00 per million, cost 2.00 per million (the scenario's terms).
    acme = figures["2026-11"].customers["acme"]
    assert (acme.subtotal_minor, acme.provider_cost_minor, acme.margin_minor) == (2000, 400, 1600)
    # acme's and globex's tokens (the unattributed ones are nobody's)
    assert figures["2026-11"].usage == {"input_tokens": 7_000_000 * MILLION}
    assert figures["2026-11"].totals == {"USD": MonthTotals(7000, 1400, 5600)}
    assert figures["2026-10"] == Month({}, {}, {})
    # Stored: the next reader recomputes nothing and writes nothing.
    assert recomputed(engine, tenant_id) == {}
    with Session(engine) as session:
        assert session.scalars(select(RatingChange.id)).all() == []
        rows = session.scalars(
            select(RatedCustomerMonth.customer_id).where(RatedCustomerMonth.tenant_id == tenant_id)
        ).all()
    assert sorted(rows) == ["acme", "globex"]
    assert cached(engine, tenant_id) == figures


def _new_usage(engine: Engine, tenant_id: str) -> None:
    write(engine, tenant_id, record("acme", 1_000_000))


def _late_usage(engine: Engine, tenant_id: str) -> None:
    write(engine, tenant_id, record("globex", 3_000_000, datetime(2026, 10, 20, tzinfo=UTC)))


def _attribution(engine: Engine, tenant_id: str) -> None:
    with Session(engine) as session, session.begin():
        traces = session.scalars(
            select(UsageRow.trace_id).where(
                UsageRow.tenant_id == tenant_id, UsageRow.customer_id == ""
            )
        ).all()
        assert attribute_traces(session, tenant_id, traces, "globex") == 1


def _customer_move(engine: Engine, tenant_id: str) -> None:
    with Session(engine) as session, session.begin():
        assert move_customer_usage(session, tenant_id, "acme", "globex") == 1


def _hand_written_sql(engine: Engine, tenant_id: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "DELETE FROM usage_spans WHERE customer_key IN (SELECT c.key FROM "
                "usage_customers AS c JOIN usage_tenants AS t ON t.key = c.tenant_key "
                "WHERE t.tenant_id = :t AND c.customer_id = 'globex')"
            ),
            {"t": tenant_id},
        )


def _recost(engine: Engine, tenant_id: str) -> None:
    with Session(engine) as session, session.begin():
        pricing.create_provider_cost(
            session,
            staff(tenant_id),
            provider="openai",
            model="gpt-4o",
            meter="input_tokens",
            unit_cost_usd=Decimal("3"),
            per_units=MILLION,
            effective_from=NOVEMBER.start,
        )
    run_due_jobs(engine, job_registry())


def _new_price_version(engine: Engine, tenant_id: str) -> None:
    with Session(engine) as session, session.begin():
        book = pricing.list_price_books(session, staff(tenant_id))[0]
        dearer = Component(name="input", meter="input_tokens", charge=ChargeModel.PER_UNIT,
                           unit_price=Decimal("12"), per_units=MILLION)  # fmt: skip
        pricing.create_version(session, staff(tenant_id), book.id, NOVEMBER.start, [dearer])


def _another_book(engine: Engine, tenant_id: str) -> None:
    with Session(engine) as session, session.begin():
        admin = staff(tenant_id)
        flat = Component(name="platform", meter=None, charge=ChargeModel.FLAT_FEE,
                         amount=Decimal("49"))  # fmt: skip
        book = pricing.create_price_book(session, admin, "flat", "USD")
        pricing.create_version(session, admin, book.id, OCTOBER.start, [INPUT, flat])
        pricing.set_customer_price_book(session, admin, "globex", book.id)


def _new_customer(engine: Engine, tenant_id: str) -> None:
    _another_book(engine, tenant_id)  # its flat fee bills a customer without usage
    with Session(engine) as session, session.begin():
        customers.create_customer(session, staff(tenant_id), "initech", "Initech")
        book = next(
            b for b in pricing.list_price_books(session, staff(tenant_id)) if b.name == "flat"
        )
        pricing.set_customer_price_book(session, staff(tenant_id), "initech", book.id)


WRITERS: dict[str, Callable[[Engine, str], None]] = {
    "ingest": _new_usage,
    "late usage of a closed month": _late_usage,
    "attribution of customer-less traces": _attribution,
    "a customer's usage moved": _customer_move,
    "hand-written SQL": _hand_written_sql,
    "recost by a provider cost": _recost,
    "a new price version": _new_price_version,
    "a customer moved to another book": _another_book,
    "a new customer": _new_customer,
}


@pytest.mark.parametrize("change", WRITERS.values(), ids=WRITERS.keys())
def test_every_writer_marks_what_it_changes(
    engine: Engine, scenario: Scenario, change: Callable[[Engine, str], None]
) -> None:
    tenant_id = scenario.tenant_id
    before = cached(engine, tenant_id)
    change(engine, tenant_id)
    after = fresh(engine, tenant_id)
    assert after != before  # each of these changes some figure
    assert recomputed(engine, tenant_id)  # and is marked, so it is recomputed
    assert cached(engine, tenant_id) == after
    assert recomputed(engine, tenant_id) == {}


def test_only_what_changed_is_recomputed(engine: Engine, scenario: Scenario) -> None:
    tenant_id = scenario.tenant_id
    cached(engine, tenant_id)
    _new_usage(engine, tenant_id)
    assert recomputed(engine, tenant_id) == {"2026-11": {"acme"}}
    _late_usage(engine, tenant_id)
    assert recomputed(engine, tenant_id) == {"2026-10": {"globex"}, "2026-11": {"acme"}}
    _new_price_version(engine, tenant_id)  # from November 1: October is priced as it was
    assert recomputed(engine, tenant_id) == {"2026-10": {"globex"}, "2026-11": None}
    _another_book(engine, tenant_id)  # a new book: every month
    assert recomputed(engine, tenant_id) == {"2026-10": None, "2026-11": None}


def test_a_write_after_the_claim_is_not_lost(engine: Engine, scenario: Scenario) -> None:
    tenant_id = scenario.tenant_id
    cached(engine, tenant_id)
    _new_usage(engine, tenant_id)
    refresh = claim_and_compute(engine, tenant_id)
    _new_usage(engine, tenant_id)  # committed after the reader read, before it stores
    assert stored(engine, refresh)
    acme = refresh.recomputed["2026-11"][1]["acme"]  # computed before the second write
    assert (
        acme.subtotal_minor != fresh(engine, tenant_id)["2026-11"].customers["acme"].subtotal_minor
    )
    assert recomputed(engine, tenant_id) == {"2026-11": {"acme"}}  # the write stays marked
    assert cached(engine, tenant_id) == fresh(engine, tenant_id)
    assert recomputed(engine, tenant_id) == {}


def test_a_reader_past_its_lease_is_taken_over_and_cannot_store(
    engine: Engine, scenario: Scenario
) -> None:
    tenant_id = scenario.tenant_id
    cached(engine, tenant_id)
    _new_usage(engine, tenant_id)
    first = claim_and_compute(engine, tenant_id)
    with Session(engine) as session, session.begin():
        assert claim(session, tenant_id, utcnow()) is None  # its lease runs: wait for it
    _new_usage(engine, tenant_id)
    second = claim_and_compute(engine, tenant_id, utcnow() + cache.LEASE * 2)  # it ran out
    assert not stored(engine, first)  # its figures may be older than the second's
    assert stored(engine, second)
    assert cached(engine, tenant_id) == fresh(engine, tenant_id)
    assert recomputed(engine, tenant_id) == {}


def test_readers_wait_for_the_one_computing(engine: Engine, scenario: Scenario) -> None:
    """While one reader computes, another waits for its result instead of computing the
    same again (and making the first one's work useless)."""
    tenant_id = scenario.tenant_id
    cached(engine, tenant_id)
    _new_usage(engine, tenant_id)
    computing = claim_and_compute(engine, tenant_id)
    waited: list[dict[str, Month]] = []
    waiter = threading.Thread(target=lambda: waited.append(cached(engine, tenant_id)))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive()  # waiting for the lease holder
    assert stored(engine, computing)
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert waited == [fresh(engine, tenant_id)]
    with Session(engine) as session:
        generation = session.get(RatingCacheGeneration, tenant_id)
        assert generation is not None  # one claim and one store: the waiter claimed nothing
        assert (generation.generation, generation.computing_until) == (
            computing.generation + 1,
            None,
        )


def test_a_failed_compute_gives_up_its_lease(
    engine: Engine, scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = scenario.tenant_id
    cached(engine, tenant_id)
    _new_usage(engine, tenant_id)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("rating failed")

    monkeypatch.setattr(cache, "rate_period", broken)
    with pytest.raises(RuntimeError, match="rating failed"):
        cached(engine, tenant_id)
    monkeypatch.undo()
    with Session(engine) as session:
        generation = session.get(RatingCacheGeneration, tenant_id)
        assert generation is not None and generation.computing_until is None
    assert cached(engine, tenant_id) == fresh(engine, tenant_id)  # at once, no lease to wait


def test_a_writing_session_on_sqlite_catches_up_in_its_own_transaction(
    engine: Engine, scenario: Scenario
) -> None:
    """A session that holds SQLite's write lock stores in its transaction (a second
    connection would wait for it)."""
    tenant_id = scenario.tenant_id
    with (
        Session(engine) as session,
        session.begin(),
        caught_up(session, tenant_id, MONTHS) as cache,
    ):
        assert (cache is session) == is_sqlite(engine)
        figures = read(cache, tenant_id)
    assert figures == fresh(engine, tenant_id)
    assert recomputed(engine, tenant_id) == {}


def test_calendar_months_only(engine: Engine, scenario: Scenario) -> None:
    shifted = Period(datetime(2026, 11, 5, tzinfo=UTC), datetime(2026, 12, 5, tzinfo=UTC))
    with (
        reader(engine) as session,
        pytest.raises(ValueError, match="calendar month"),
        caught_up(session, scenario.tenant_id, [shifted]),
    ):
        pass


def test_exact_under_concurrent_ingest(engine: Engine, scenario: Scenario) -> None:
    """Ingest, moves and attribution run in a thread while readers refresh the cache; once
    the writers stop, the cache agrees with rating the stored records."""
    tenant_id = scenario.tenant_id
    enough_reads, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            n = 0
            while n < 60 or not enough_reads.is_set():  # overlap at least 20 refreshes
                who = ("acme", "globex", "initech", "")[n % 4]
                trace = uuid.uuid4().hex
                write(engine, tenant_id, record(who, 1000 + n, trace_id=trace),
                      record("", 7, trace_id=trace))  # fmt: skip
                if n % 10 == 9:
                    with Session(engine) as session, session.begin():
                        attribute_traces(session, tenant_id, [trace], "globex")
                        move_customer_usage(session, tenant_id, "initech", "acme")
                n += 1
        except BaseException as error:
            errors.append(error)
        finally:
            stop.set()

    writer = threading.Thread(target=ingest)
    writer.start()
    reads = stores = 0
    while not stop.is_set():
        stores += stored(engine, claim_and_compute(engine, tenant_id))
        reads += 1
        if reads == 20:
            enough_reads.set()
    writer.join()
    assert not errors, errors
    assert reads >= 20 and stores > 0
    assert cached(engine, tenant_id) == fresh(engine, tenant_id)


def test_the_background_job_catches_every_tenant_up(engine: Engine, scenario: Scenario) -> None:
    tenant_id = scenario.tenant_id
    _new_usage(engine, tenant_id)
    _late_usage(engine, tenant_id)
    refresh_figures(engine, NOW)
    with Session(engine) as session:
        assert session.scalars(select(RatingChange.id)).all() == []
    assert recomputed(engine, tenant_id) == {}
    assert cached(engine, tenant_id) == fresh(engine, tenant_id)


def test_many_changes_consumed_refresh_the_planner_statistics(
    engine: Engine, scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a store that deleted many change rows (after a bulk load) analyzes the
    table, so finding a tenant's next change does not scan the dead rows."""
    monkeypatch.setattr(cache, "_ANALYZE_AFTER", 1)
    tenant_id = scenario.tenant_id
    assert cached(engine, tenant_id) == fresh(engine, tenant_id)
    if not is_sqlite(engine):
        with engine.connect() as connection:
            analyzed = connection.scalar(
                text(
                    "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'rating_changes'"
                )
            )
        assert analyzed is not None


def test_one_tenant_failing_leaves_the_others_caught_up(
    engine: Engine,
    scenario: Scenario,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = create_tenant(engine, "failing").tenant_id
    write(engine, failing, record("initech", 1000))
    _new_usage(engine, scenario.tenant_id)
    rate = rate_period  # what the cache calls

    def rate_or_fail(session: Session, tenant_id: str, *args: Any, **kwargs: Any) -> Any:
        if tenant_id == failing:
            raise RuntimeError("rating failed")
        return rate(session, tenant_id, *args, **kwargs)

    monkeypatch.setattr(cache, "rate_period", rate_or_fail)
    refresh_figures(engine, NOW)
    assert f"dashboard figures of tenant {failing} not caught up" in caplog.text
    assert recomputed(engine, scenario.tenant_id) == {}
    monkeypatch.undo()
    assert recomputed(engine, failing) == {"2026-10": None, "2026-11": None}
