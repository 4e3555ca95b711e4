"""Rated calendar months of every customer, cached and kept exact.

The dashboard's tenant-wide figures (revenue, provider cost and margin of every customer
this month and the months before) would rate every customer on each view: seconds at
10,000 customers. They read `rated_customer_months` (and the usage per meter beside it)
instead, in SQL, once `catch_up` has recomputed, with `rate_period` itself, exactly what
changed since the cache last caught up. What changed is written by database triggers in
the writer's own transaction (`rating_changes`, migration 0014): usage of a customer on a
day, a customer's book or registration, a tenant's prices. So a cached figure never
disagrees with what rating the stored records and terms would give, whichever code (or
hand-written SQL) wrote them.

Why it is exact, step by step (`catch_up`):
1. *Claim*, in a short write transaction: bump the tenant's generation and mark every
   change row `claimed`. A write after this commit that changes a claimed (customer, day)
   sets it back unclaimed (the trigger's upsert; it costs a row write only then), and a
   write of a new (customer, day) adds an unclaimed row.
2. *Compute*, reading in a snapshot taken after the claim: every change row (claimed or
   not) marks customer-months to recompute with `rate_period`; a month not cached whole
   is recomputed whole. These reads see every write whose change row was claimed.
3. *Store*, in one write transaction, only if the generation is still the one claimed (no
   later reader claimed since, whose figures may be newer): delete the change rows still
   claimed (a write after the claim unclaimed its row, so it stays and is recomputed next
   time), drop cached months of other months those changes touch, store step 2's figures.
A write is therefore either in the stored figures or still marked. A session that holds
SQLite's write lock (no other writer can run) computes and stores in its own transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, Table, case, delete, func, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from agentmeter.clock import utcnow
from agentmeter.db import dialect_insert, holds_write_lock, in_chunks, is_sqlite, read_only
from agentmeter.partitions import month_of
from agentmeter.tables import (
    RatedCustomerMonth,
    RatedCustomerMonthUsage,
    RatedMonth,
    RatedMonthTotals,
    RatingCacheGeneration,
    RatingChange,
)
from billing_api.periods import Period, month_period
from billing_api.rating.engine import RatedPeriod
from billing_api.rating.service import rate_period
from billing_api.usage.repository import NANOS_PER_DAY

_EVERY_MONTH = ""
_ROWS: Table = RatedCustomerMonth.__table__  # type: ignore[assignment]
_USAGE: Table = RatedCustomerMonthUsage.__table__  # type: ignore[assignment]
_CHANGES: Table = RatingChange.__table__  # type: ignore[assignment]
_TOTALS: Table = RatedMonthTotals.__table__  # type: ignore[assignment]
_ANALYZE_AFTER = 10_000
# How long a reader may compute before another may take over (a reader that crashed);
# others wait for its result meanwhile, polling. A page gives up after twice that.
LEASE = timedelta(minutes=5)
_POLL_SECONDS = 0.05
_GIVE_UP_AFTER = 2 * LEASE


@dataclass(frozen=True, slots=True)
class MonthFigures:
    """One customer's rated calendar month: the totals the dashboard shows."""

    customer_id: str
    currency: str
    subtotal_minor: int
    # None when some priced usage has no known provider cost.
    provider_cost_minor: int | None

    @property
    def margin_minor(self) -> int | None:
        cost = self.provider_cost_minor
        return None if cost is None else self.subtotal_minor - cost

    @classmethod
    def of(cls, rated: RatedPeriod) -> MonthFigures:
        return cls(
            rated.customer_id, rated.currency, rated.subtotal_minor, rated.provider_cost_minor
        )


@dataclass(frozen=True, slots=True)
class MonthTotals:
    """Sums of one currency over a month's customers, a customer's unknown provider cost
    (and so margin) counted as 0."""

    revenue_minor: int
    provider_cost_minor: int
    margin_minor: int


@dataclass(frozen=True, slots=True)
class _Change:
    # None: every customer, in the month of `day` and every later one (new terms)
    customer_id: str | None
    day: int | None  # days since 1970 UTC, in the month changed; None: every day

    @property
    def month(self) -> str:
        """The calendar month of `day` as period labels read ("2026-11"), or every month."""
        if self.day is None:
            return _EVERY_MONTH
        year, month = month_of(self.day * NANOS_PER_DAY)
        return f"{year:04d}-{month:02d}"

    def touches(self, label: str) -> bool:
        """Whether the change may alter the figures of month `label`."""
        if self.customer_id is None:  # terms changed from a day on
            return self.month <= label  # (every month: "" sorts first)
        return self.month in (label, _EVERY_MONTH)


@dataclass(slots=True)
class Refresh:
    """What one reader recomputed (step 2), and the generation it claimed (step 1)."""

    tenant_id: str
    generation: int
    changes: list[_Change]
    # Month → the customers recomputed (None: the whole month) and their rated periods
    # (a customer with nothing to bill has none).
    recomputed: dict[str, tuple[set[str] | None, dict[str, RatedPeriod]]]


def _calendar_month(period: Period) -> str:
    if period != month_period(period.label, 1):
        raise ValueError(f"not a calendar month: {period}")
    return period.label


def _of_tenant(tenant_id: str) -> ColumnElement[bool]:
    return RatingChange.tenant_id == tenant_id


def claim(session: Session, tenant_id: str, now: datetime | None) -> int | None:
    """Step 1 (in `session`'s write transaction): the tenant's new generation, with the
    lease to compute under it until `now` + `LEASE`; None while another reader's lease
    runs (it is computing: wait for its result rather than compute the same again).
    `now` None: no lease (a session holding SQLite's write lock, whom nobody can wait for
    and no other reader can store before)."""
    table = RatingCacheGeneration
    until = None if now is None else now + LEASE
    upsert = dialect_insert(session, table).values(
        tenant_id=tenant_id, generation=1, computing_until=until
    )
    free = None if now is None else table.computing_until.is_(None) | (table.computing_until < now)
    generation = session.execute(
        upsert.on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={"generation": table.generation + 1, "computing_until": until},
            where=free,
        ).returning(table.generation)
    ).scalar_one_or_none()
    if generation is None:
        return None
    unclaimed = update(RatingChange).where(_of_tenant(tenant_id), ~RatingChange.claimed)
    session.execute(unclaimed.values(claimed=True))
    return int(generation)


def _release(engine: Engine, tenant_id: str, generation: int) -> None:
    """Give up the lease of `generation` (its compute failed), so nobody waits it out."""
    with Session(engine) as session, session.begin():
        session.execute(
            update(RatingCacheGeneration)
            .where(
                RatingCacheGeneration.tenant_id == tenant_id,
                RatingCacheGeneration.generation == generation,
            )
            .values(computing_until=None)
        )


def _cached(session: Session, tenant_id: str, labels: Sequence[str]) -> set[str]:
    """Which of the months in `labels` are cached whole."""
    query = select(RatedMonth.period).where(
        RatedMonth.tenant_id == tenant_id, RatedMonth.period.in_(labels)
    )
    return set(session.scalars(query))


def compute(
    session: Session, tenant_id: str, periods: Sequence[Period], generation: int
) -> Refresh:
    """Step 2: rate again what changed in the calendar months of `periods`, and every
    customer of a month not cached whole."""
    labels = [_calendar_month(p) for p in periods]
    changes = [
        _Change(*row)
        for row in session.execute(
            select(RatingChange.customer_id, RatingChange.day).where(_of_tenant(tenant_id))
        )
    ]
    new_terms = [c for c in changes if c.customer_id is None]
    cached = {
        label
        for label in (_cached(session, tenant_id, labels) if labels else ())
        if not any(c.touches(label) for c in new_terms)
    }
    refresh = Refresh(tenant_id, generation, changes, {})
    for period, label in zip(periods, labels, strict=True):
        if label not in cached:
            refresh.recomputed[label] = (None, rate_period(session, tenant_id, period))
            continue
        customers = sorted(
            {c.customer_id for c in changes if c.customer_id is not None and c.touches(label)}
        )
        if customers:
            rated = rate_period(session, tenant_id, period, customers)
            refresh.recomputed[label] = (set(customers), rated)
    return refresh


def store(session: Session, refresh: Refresh, *, claimed_only: bool = True) -> bool:
    """Step 3 (in `session`'s write transaction). False, with nothing written, when
    another reader claimed since. `claimed_only` False (a session that held the write
    lock from its reads on) also deletes unclaimed changes, which no other writer can have
    added."""
    bumped = session.connection().execute(
        update(RatingCacheGeneration)
        .where(
            RatingCacheGeneration.tenant_id == refresh.tenant_id,
            RatingCacheGeneration.generation == refresh.generation,
        )
        .values(generation=refresh.generation + 1, computing_until=None)
    )
    if bumped.rowcount != 1:
        return False
    tenant_id = refresh.tenant_id
    consumed = delete(_CHANGES).where(_CHANGES.c.tenant_id == tenant_id)
    deleted = session.connection().execute(
        consumed.where(_CHANGES.c.claimed) if claimed_only else consumed
    )
    if deleted.rowcount >= _ANALYZE_AFTER and not is_sqlite(session.get_bind().engine):
        # After a bulk load, PostgreSQL's statistics still count the rows just deleted, and
        # it would scan them all (dead) to find a tenant's next change; autovacuum comes
        # later.
        session.execute(text(f"ANALYZE {_CHANGES.name}"))
    # Cached months the changes touch but nobody recomputed: dropped whole.
    cached = session.scalars(select(RatedMonth.period).where(RatedMonth.tenant_id == tenant_id))
    for label in sorted(set(cached) - set(refresh.recomputed)):
        if any(c.touches(label) for c in refresh.changes):
            _forget(session, tenant_id, label, None)
    for label, (customers, rated) in refresh.recomputed.items():
        _forget(session, tenant_id, label, customers)
        _insert(session, tenant_id, label, rated.values())
        _sum_up(session, tenant_id, label)
        if customers is None:
            session.execute(
                dialect_insert(session, RatedMonth)
                .values(tenant_id=tenant_id, period=label)
                .on_conflict_do_nothing()
            )
    return True


def _insert(session: Session, tenant_id: str, label: str, rated: Iterable[RatedPeriod]) -> None:
    rows: list[dict[str, object]] = []
    usage: list[dict[str, object]] = []
    for r in rated:
        key = {"tenant_id": tenant_id, "period": label, "customer_id": r.customer_id}
        rows.append(key | {"currency": r.currency, "subtotal_minor": r.subtotal_minor,
                           "provider_cost_minor": r.provider_cost_minor})  # fmt: skip
        usage += [key | {"meter": m, "quantity_micros": q} for m, q in r.usage_micros.items()]
    connection = session.connection()
    if rows:
        connection.execute(_ROWS.insert(), rows)
    if usage:
        connection.execute(_USAGE.insert(), usage)


def _sum_up(session: Session, tenant_id: str, label: str) -> None:
    """The month's totals per currency, summed again from its rows."""
    cost = _ROWS.c.provider_cost_minor
    in_month = (_ROWS.c.tenant_id == tenant_id, _ROWS.c.period == label)
    sums = (
        select(
            _ROWS.c.tenant_id,
            _ROWS.c.period,
            _ROWS.c.currency,
            func.sum(_ROWS.c.subtotal_minor),
            func.coalesce(func.sum(cost), 0),
            func.sum(case((cost.is_(None), 0), else_=_ROWS.c.subtotal_minor - cost)),
        )
        .where(*in_month)
        .group_by(_ROWS.c.tenant_id, _ROWS.c.period, _ROWS.c.currency)
    )
    session.execute(
        delete(_TOTALS).where(_TOTALS.c.tenant_id == tenant_id, _TOTALS.c.period == label)
    )
    columns = ["tenant_id", "period", "currency", "revenue_minor", "provider_cost_minor",
               "margin_minor"]  # fmt: skip
    session.execute(_TOTALS.insert().from_select(columns, sums))


def _forget(session: Session, tenant_id: str, label: str, customers: set[str] | None) -> None:
    """Drop a cached month (`customers` None: whole, no longer complete) or its rows of
    `customers`."""
    if customers is None:
        session.execute(
            delete(RatedMonth).where(RatedMonth.tenant_id == tenant_id, RatedMonth.period == label)
        )
    for table in (_ROWS, _USAGE) if customers is not None else (_ROWS, _USAGE, _TOTALS):
        in_month = delete(table).where(table.c.tenant_id == tenant_id, table.c.period == label)
        if customers is None:
            session.execute(in_month)
            continue
        for chunk in in_chunks(sorted(customers)):
            session.execute(in_month.where(table.c.customer_id.in_(chunk)))


def tenants_with_changes(session: Session) -> list[str]:
    """Tenants with something changed since their cache last caught up."""
    return list(session.scalars(select(RatingChange.tenant_id).distinct()))


def _up_to_date(session: Session, tenant_id: str, labels: Sequence[str]) -> bool:
    """Nothing changed since the cache caught up, and every month in `labels` is cached."""
    if session.scalar(select(RatingChange.id).where(_of_tenant(tenant_id)).limit(1)):
        return False
    return _cached(session, tenant_id, labels) == set(labels)


@contextmanager
def _reading(engine: Engine) -> Iterator[Session]:
    """A session in a transaction that reads (on SQLite: a snapshot, no write lock)."""
    with read_only(engine) as connection, Session(connection) as reading, reading.begin():
        yield reading


def catch_up(session: Session, tenant_id: str, periods: Sequence[Period]) -> None:
    """Make the cached calendar months of `periods` what `rate_period` gives now. Up to
    date, it only reads; while another reader computes, it waits for that one's result.
    Its transactions run beside `session`'s (a session holding SQLite's write lock, which
    they would wait for, does all of it itself)."""
    if holds_write_lock(session):
        generation = claim(session, tenant_id, None)
        assert generation is not None  # no lease asked for, none refused
        store(session, compute(session, tenant_id, periods, generation), claimed_only=False)
        return
    engine = session.get_bind().engine
    labels = [_calendar_month(p) for p in periods]
    deadline = time.monotonic() + _GIVE_UP_AFTER.total_seconds()
    while time.monotonic() < deadline:
        with _reading(engine) as reading:
            if _up_to_date(reading, tenant_id, labels):
                return
        with Session(engine) as writing, writing.begin():
            generation = claim(writing, tenant_id, utcnow())
        if generation is None:
            time.sleep(_POLL_SECONDS)
            continue
        try:
            with _reading(engine) as reading:
                refresh = compute(reading, tenant_id, periods, generation)
            with Session(engine) as writing, writing.begin():
                if store(writing, refresh):
                    return
        except BaseException:
            _release(engine, tenant_id, generation)
            raise
    raise TimeoutError(f"rated months of tenant {tenant_id}: not caught up in {_GIVE_UP_AFTER}")


@contextmanager
def caught_up(session: Session, tenant_id: str, periods: Sequence[Period]) -> Iterator[Session]:
    """`catch_up`, then a session to read the cached months in (`customer_months`,
    `month_usage`, `month_totals`), begun after it: `session`'s snapshot may be older."""
    catch_up(session, tenant_id, periods)
    if holds_write_lock(session):
        yield session
        return
    with _reading(session.get_bind().engine) as reading:
        yield reading


def customer_months(session: Session, tenant_id: str, label: str) -> dict[str, MonthFigures]:
    """Customer id → figures of a cached calendar month (`catch_up` first)."""
    rows = session.execute(
        select(_ROWS.c.customer_id, _ROWS.c.currency, _ROWS.c.subtotal_minor,
               _ROWS.c.provider_cost_minor)
        .where(_ROWS.c.tenant_id == tenant_id, _ROWS.c.period == label)
    ).all()  # fmt: skip
    return {row[0]: MonthFigures(*row) for row in rows}


def month_usage(session: Session, tenant_id: str, label: str) -> dict[str, int]:
    """Meter → quantity (micro-units) of every customer in a cached calendar month."""
    total = func.sum(_USAGE.c.quantity_micros)
    rows = session.execute(
        select(_USAGE.c.meter, total)
        .where(_USAGE.c.tenant_id == tenant_id, _USAGE.c.period == label)
        .group_by(_USAGE.c.meter)
    )
    return {meter: int(quantity) for meter, quantity in rows}


def month_totals(
    session: Session, tenant_id: str, labels: Sequence[str]
) -> dict[str, dict[str, MonthTotals]]:
    """Month → currency → totals of the cached calendar months in `labels`."""
    rows = session.execute(
        select(_TOTALS.c.period, _TOTALS.c.currency, _TOTALS.c.revenue_minor,
               _TOTALS.c.provider_cost_minor, _TOTALS.c.margin_minor)
        .where(_TOTALS.c.tenant_id == tenant_id, _TOTALS.c.period.in_(labels))
    )  # fmt: skip
    totals: dict[str, dict[str, MonthTotals]] = {label: {} for label in labels}
    for label, currency, revenue, provider_cost, margin in rows:
        totals[label][currency] = MonthTotals(revenue, provider_cost, margin)
    return totals
