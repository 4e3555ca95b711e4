"""Rated calendar months of every customer, cached and kept exact.

The dashboard's tenant-wide figures (revenue, provider cost and margin of every customer
this month and the months before) would rate every customer on each view: seconds at
10,000 customers. `rated_months` answers from `rated_customer_months` instead, after
recomputing, with `rate_period` itself, exactly what changed since the cache last caught
up. What changed is written by database triggers in the writer's own transaction
(`rating_changes`, migration 0014): usage of a customer in a month, a customer's book or
registration, a tenant's prices. So a cached figure never disagrees with what rating the
stored records and terms would give, whichever code (or hand-written SQL) wrote them.

Why it is exact, step by step:
1. Read the tenant's generation and every change row (id, seq), then the cached rows.
2. Recompute with `rate_period` every customer-month a change marks (every customer of a
   month not cached whole). These reads come after step 1, so they see at least every
   write whose change row step 1 saw.
3. In one write transaction: bump the generation only if it is still the one read in
   step 1 (else another reader stored since, perhaps from newer data: store nothing),
   delete the change rows read in step 1 with the `seq` read (a write after step 1 left a
   new row, or a new `seq`, so it stays and is recomputed next time), drop cached months
   of other months those changes touch, and store what step 2 computed.
A write after step 1 is therefore either in the stored figures or still marked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from agentmeter.db import dialect_insert, holds_write_lock, in_chunks
from agentmeter.tables import RatedCustomerMonth, RatedMonth, RatingCacheGeneration, RatingChange
from billing_api.periods import Period, month_period
from billing_api.rating.engine import RatedPeriod
from billing_api.rating.service import rate_period

_EVERY_MONTH = ""
_CHANGES: Table = RatingChange.__table__  # type: ignore[assignment]
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
    id: int
    seq: int
    customer_id: str | None
    month: str


@dataclass(slots=True)
class Refresh:
    """What one reader computed, and from which state of the cache (steps 1 and 2)."""

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


def compute(session: Session, tenant_id: str, periods: Sequence[Period]) -> Refresh:
    """Steps 1 and 2: every customer's figures of each calendar month in `periods` (a
    customer with nothing to bill has none), from the cache and what changed since."""
    labels = [_calendar_month(p) for p in periods]
    generation = session.scalar(
        select(RatingCacheGeneration.generation).where(RatingCacheGeneration.tenant_id == tenant_id)
    )
    changes = [
        _Change(*row)
        for row in session.execute(
            select(
                RatingChange.id, RatingChange.seq, RatingChange.customer_id, RatingChange.month
            ).where(RatingChange.tenant_id == tenant_id)
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
    refresh = Refresh(tenant_id, generation or 0, changes, {}, {})
    for period, label in zip(periods, labels, strict=True):
        if label not in cached:
            rated = rate_period(session, tenant_id, period)
            refresh.months[label] = {c: MonthFigures.of(r) for c, r in rated.items()}
            refresh.recomputed[label] = None
            continue
        dirty = {c.customer_id for c in changes if c.month in (label, _EVERY_MONTH)}
        figures = {
            row.customer_id: MonthFigures(
                row.customer_id,
                row.currency,
                row.subtotal_minor,
                row.provider_cost_minor,
                row.usage_micros,
            )
            for row in session.scalars(
                select(RatedCustomerMonth).where(
                    RatedCustomerMonth.tenant_id == tenant_id, RatedCustomerMonth.period == label
                )
            )
            if row.customer_id not in dirty
        }
        customers = sorted(c for c in dirty if c is not None)
        if customers:
            for customer_id, rated_period in rate_period(
                session, tenant_id, period, customers
            ).items():
                figures[customer_id] = MonthFigures.of(rated_period)
            refresh.recomputed[label] = set(customers)
        refresh.months[label] = figures
    return refresh


def _won(session: Session, refresh: Refresh) -> bool:
    """Bump the tenant's generation if it is still the one `refresh` read."""
    connection = session.connection()
    if refresh.generation == 0:
        inserted = connection.execute(
            dialect_insert(session, RatingCacheGeneration)
            .values(tenant_id=refresh.tenant_id, generation=1)
            .on_conflict_do_nothing()
        )
        return bool(inserted.rowcount)
    bumped = connection.execute(
        update(RatingCacheGeneration)
        .where(
            RatingCacheGeneration.tenant_id == refresh.tenant_id,
            RatingCacheGeneration.generation == refresh.generation,
        )
        .values(generation=refresh.generation + 1)
    )
    return bool(bumped.rowcount)


def _store_in(session: Session, refresh: Refresh) -> bool:
    if not _won(session, refresh):
        return False
    tenant_id = refresh.tenant_id
    connection = session.connection()
    if refresh.changes:
        connection.execute(
            delete(_CHANGES).where(
                _CHANGES.c.id == bindparam("c_id"), _CHANGES.c.seq == bindparam("c_seq")
            ),
            [{"c_id": c.id, "c_seq": c.seq} for c in refresh.changes],
        )
    # Cached months the consumed changes touch but nobody recomputed: dropped whole.
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
        kept = (
            figures.values()
            if customers is None
            else (figures[c] for c in customers if c in figures)
        )
        values = [
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
        ]
        if values:
            connection.execute(_ROWS.insert(), values)
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


def store(session: Session, refresh: Refresh) -> bool:
    """Step 3, in a transaction of its own (or in `session`'s when it holds SQLite's write
    lock, which a second connection would wait for). False when another reader stored
    first: the figures computed are still right as of their reads, just not kept."""
    if not refresh.changes and not refresh.recomputed:
        return True  # nothing to catch up: no write, no commit
    if holds_write_lock(session):
        return _store_in(session, refresh)
    with Session(session.get_bind().engine) as writer, writer.begin():
        if _store_in(writer, refresh):
            return True
        writer.rollback()
        return False


def rated_months(
    session: Session, tenant_id: str, periods: Sequence[Period]
) -> dict[str, dict[str, MonthFigures]]:
    """Month label → customer id → figures, for calendar-month `periods`: what
    `rate_period` gives for each (customers with nothing to bill left out), read from the
    cache once it has caught up with what changed."""
    refresh = compute(session, tenant_id, periods)
    store(session, refresh)
    return refresh.months
