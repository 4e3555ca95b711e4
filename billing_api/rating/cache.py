"""Rated calendar months of every customer, cached and kept exact.

The dashboard's tenant-wide figures (revenue, provider cost and margin of every customer
this month and the months before) would rate every customer on each view: seconds at
10,000 customers. `rated_months` answers from `rated_customer_months` instead, after
recomputing, with `rate_period` itself, exactly what changed since the cache last caught
up. What changed is written by database triggers in the writer's own transaction
(`rating_changes`, migration 0014): usage of a customer in a month, a customer's book or
registration, a tenant's prices. So a cached figure never disagrees with what rating the
stored records and terms would give, whichever code (or hand-written SQL) wrote them.

Why it is exact, step by step (`rated_months`):
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

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Table, delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from agentmeter.db import dialect_insert, holds_write_lock, in_chunks, read_only
from agentmeter.tables import RatedCustomerMonth, RatedMonth, RatingCacheGeneration, RatingChange
from billing_api.periods import Period, month_period
from billing_api.rating.engine import RatedPeriod
from billing_api.rating.service import rate_period

_EVERY_MONTH = ""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ROWS: Table = RatedCustomerMonth.__table__  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class MonthFigures:
    """One customer's rated calendar month: the totals the dashboard shows."""

    customer_id: str
    currency: str
    subtotal_minor: int
    # None when some priced usage has no known provider cost.
    provider_cost_minor: int | None
    usage_micros: dict[str, int] = field(default_factory=dict)

    @property
    def margin_minor(self) -> int | None:
        cost = self.provider_cost_minor
        return None if cost is None else self.subtotal_minor - cost

    @classmethod
    def of(cls, rated: RatedPeriod) -> MonthFigures:
        return cls(
            rated.customer_id,
            rated.currency,
            rated.subtotal_minor,
            rated.provider_cost_minor,
            dict(rated.usage_micros),
        )


@dataclass(frozen=True, slots=True)
class _Change:
    customer_id: str | None
    day: int | None  # of the usage's end time, days since 1970 UTC; None: every day

    @property
    def month(self) -> str:
        """The calendar month of `day` as period labels read ("2026-11"), or every month."""
        if self.day is None:
            return _EVERY_MONTH
        date = _EPOCH + timedelta(days=self.day)
        return f"{date.year:04d}-{date.month:02d}"


@dataclass(slots=True)
class Refresh:
    """What one reader computed (step 2), and the generation it claimed (step 1)."""

    tenant_id: str
    generation: int
    changes: list[_Change]
    months: dict[str, dict[str, MonthFigures]]
    # Month → the customers recomputed in it; None: the whole month.
    recomputed: dict[str, set[str] | None]


def _calendar_month(period: Period) -> str:
    if period != month_period(period.label, 1):
        raise ValueError(f"not a calendar month: {period}")
    return period.label


def _of_tenant(tenant_id: str) -> ColumnElement[bool]:
    return RatingChange.tenant_id == tenant_id


def claim(session: Session, tenant_id: str) -> int:
    """Step 1 (in `session`'s write transaction): the tenant's new generation."""
    generation = session.execute(
        dialect_insert(session, RatingCacheGeneration)
        .values(tenant_id=tenant_id, generation=1)
        .on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={"generation": RatingCacheGeneration.generation + 1},
        )
        .returning(RatingCacheGeneration.generation)
    ).scalar_one()
    session.execute(
        update(RatingChange)
        .where(_of_tenant(tenant_id), ~RatingChange.claimed)
        .values(claimed=True)
    )
    return int(generation)


def compute(
    session: Session, tenant_id: str, periods: Sequence[Period], generation: int
) -> Refresh:
    """Step 2: every customer's figures of each calendar month in `periods` (a customer
    with nothing to bill has none), from the cache and what changed since."""
    labels = [_calendar_month(p) for p in periods]
    changes = [
        _Change(*row)
        for row in session.execute(
            select(RatingChange.customer_id, RatingChange.day).where(_of_tenant(tenant_id))
        )
    ]
    everything = any(c.customer_id is None for c in changes)
    cached = (
        set()
        if everything or not labels
        else set(
            session.scalars(
                select(RatedMonth.period).where(
                    RatedMonth.tenant_id == tenant_id, RatedMonth.period.in_(labels)
                )
            )
        )
    )
    refresh = Refresh(tenant_id, generation, changes, {}, {})
    for period, label in zip(periods, labels, strict=True):
        if label not in cached:
            rated = rate_period(session, tenant_id, period)
            refresh.months[label] = {c: MonthFigures.of(r) for c, r in rated.items()}
            refresh.recomputed[label] = None
            continue
        dirty = {c.customer_id for c in changes if c.month in (label, _EVERY_MONTH)}
        customers = sorted(c for c in dirty if c is not None)
        figures = _cached_month(session, tenant_id, label, dirty)
        if customers:
            again = rate_period(session, tenant_id, period, customers)
            figures.update((c, MonthFigures.of(r)) for c, r in again.items())
            refresh.recomputed[label] = set(customers)
        refresh.months[label] = figures
    return refresh


def _cached_month(
    session: Session, tenant_id: str, label: str, leave_out: set[str | None]
) -> dict[str, MonthFigures]:
    rows = session.execute(
        select(
            RatedCustomerMonth.customer_id,
            RatedCustomerMonth.currency,
            RatedCustomerMonth.subtotal_minor,
            RatedCustomerMonth.provider_cost_minor,
            RatedCustomerMonth.usage_micros,
        ).where(RatedCustomerMonth.tenant_id == tenant_id, RatedCustomerMonth.period == label)
    )
    return {row[0]: MonthFigures(*row) for row in rows if row[0] not in leave_out}


def _up_to_date(session: Session, tenant_id: str, labels: Sequence[str]) -> bool:
    """Nothing changed since the cache caught up, and every month in `labels` is cached."""
    if session.scalar(select(RatingChange.id).where(_of_tenant(tenant_id)).limit(1)):
        return False
    cached = session.scalars(
        select(RatedMonth.period).where(
            RatedMonth.tenant_id == tenant_id, RatedMonth.period.in_(labels)
        )
    )
    return set(cached) == set(labels)


def store(session: Session, refresh: Refresh, *, claimed_only: bool = True) -> bool:
    """Step 3 (in `session`'s write transaction). False, with nothing written, when
    another reader claimed since: `refresh` is still right as of its reads, just not kept.
    `claimed_only` False (a session that held the write lock from its reads on) also
    deletes unclaimed changes, which no other writer can have added."""
    bumped = session.connection().execute(
        update(RatingCacheGeneration)
        .where(
            RatingCacheGeneration.tenant_id == refresh.tenant_id,
            RatingCacheGeneration.generation == refresh.generation,
        )
        .values(generation=refresh.generation + 1)
    )
    if bumped.rowcount != 1:
        return False
    tenant_id = refresh.tenant_id
    consumed = delete(RatingChange).where(_of_tenant(tenant_id))
    session.execute(consumed.where(RatingChange.claimed) if claimed_only else consumed)
    # Cached months the changes touch but nobody recomputed: dropped whole.
    if any(c.customer_id is None or c.month == _EVERY_MONTH for c in refresh.changes):
        touched = set(
            session.scalars(select(RatedMonth.period).where(RatedMonth.tenant_id == tenant_id))
        )
    else:
        touched = {c.month for c in refresh.changes}
    for label in sorted(touched - set(refresh.recomputed)):
        _forget(session, tenant_id, label, None)
    for label, customers in refresh.recomputed.items():
        figures = refresh.months[label]
        _forget(session, tenant_id, label, customers)
        kept = [f for f in figures.values() if customers is None or f.customer_id in customers]
        if kept:
            session.connection().execute(
                _ROWS.insert(),
                [
                    {
                        "tenant_id": tenant_id,
                        "period": label,
                        "customer_id": f.customer_id,
                        "currency": f.currency,
                        "subtotal_minor": f.subtotal_minor,
                        "provider_cost_minor": f.provider_cost_minor,
                        "usage_micros": f.usage_micros,
                    }
                    for f in kept
                ],
            )
        if customers is None:
            session.execute(
                dialect_insert(session, RatedMonth)
                .values(tenant_id=tenant_id, period=label)
                .on_conflict_do_nothing()
            )
    return True


def _forget(session: Session, tenant_id: str, label: str, customers: set[str] | None) -> None:
    """Drop a cached month (`customers` None: whole, no longer complete) or its rows of
    `customers`."""
    in_month = (RatedCustomerMonth.tenant_id == tenant_id, RatedCustomerMonth.period == label)
    if customers is None:
        session.execute(
            delete(RatedMonth).where(RatedMonth.tenant_id == tenant_id, RatedMonth.period == label)
        )
        session.execute(delete(RatedCustomerMonth).where(*in_month))
        return
    for chunk in in_chunks(sorted(customers)):
        session.execute(
            delete(RatedCustomerMonth).where(*in_month, RatedCustomerMonth.customer_id.in_(chunk))
        )


def tenants_with_changes(session: Session) -> list[str]:
    """Tenants with something changed since their cache last caught up."""
    return list(session.scalars(select(RatingChange.tenant_id).distinct()))


def rated_months(
    session: Session, tenant_id: str, periods: Sequence[Period]
) -> dict[str, dict[str, MonthFigures]]:
    """Month label → customer id → figures, for calendar-month `periods`: what
    `rate_period` gives for each (customers with nothing to bill left out), from the cache
    once it has caught up with what changed. Up to date, it reads and writes nothing else.
    Its own transactions run beside `session`'s; a session holding SQLite's write lock
    (which they would wait for) is used for all of it instead."""
    if holds_write_lock(session):
        refresh = compute(session, tenant_id, periods, claim(session, tenant_id))
        store(session, refresh, claimed_only=False)
        return refresh.months
    engine = session.get_bind().engine
    labels = [_calendar_month(p) for p in periods]
    with read_only(engine) as connection, Session(connection) as reading, reading.begin():
        if _up_to_date(reading, tenant_id, labels):
            return {label: _cached_month(reading, tenant_id, label, set()) for label in labels}
    with Session(engine) as writing, writing.begin():
        generation = claim(writing, tenant_id)
    with read_only(engine) as connection, Session(connection) as reading, reading.begin():
        refresh = compute(reading, tenant_id, periods, generation)
    with Session(engine) as writing, writing.begin():
        store(writing, refresh)
    return refresh.months
