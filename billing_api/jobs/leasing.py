"""The one claim/lease implementation, for every table that queues leased work.

A leased table has a row id, a status, an attempt counter and one time column that holds
when a waiting row is due, and, while a worker holds the row, when its lease runs out. The
queue of `jobs` is one such table; the webhook outbox (`webhook_deliveries`) and the Stripe
outbox (`stripe_jobs`) are others: they keep their rows as the state the tenant reads
(status, attempts, next attempt, last error, Stripe progress), leased the same way.

- `due`: the rows in the given statuses whose time has come, read `FOR UPDATE SKIP
  LOCKED` on PostgreSQL so concurrent workers take different rows (SQLite's single writer
  serializes them anyway);
- `claim`: a compare-and-set UPDATE on (status, attempts) to the running status with the
  attempt counted and the lease in the time column: of two workers that read the same row,
  one UPDATE matches;
- `update_held` / `lock_held`: renew the lease, save progress or record the outcome, only
  while this worker's attempt still holds the row (status running, same attempts).

A failed attempt waits `retry_delay(attempts)` before the next: the one backoff.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=6)


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt: 30 s doubling, ≤ 6 h."""
    doublings = min(max(0, attempts - 1), 20)  # 30 s × 2^20 is far past the cap
    return min(BASE_DELAY * (1 << doublings), MAX_DELAY)


@dataclass(frozen=True, slots=True)
class LeasedTable:
    """A table of leased work: which columns a claim and a lease work on."""

    model: type[Any]
    id: InstrumentedAttribute[Any]
    status: InstrumentedAttribute[str]
    attempts: InstrumentedAttribute[int]
    due_at: InstrumentedAttribute[datetime]
    running: str  # the status of a row a worker holds

    def due(self, statuses: Iterable[str], now: datetime) -> Select[Any]:
        """Rows in `statuses` due at `now`, locked and skipping rows others locked; the
        caller adds its own conditions, order and limit."""
        return (
            select(self.model)
            .where(self.status.in_(list(statuses)), self.due_at <= now)
            .with_for_update(skip_locked=True, of=self.model)
        )

    def claim(
        self,
        session: Session,
        row_id: Any,
        seen_status: str,
        seen_attempts: int,
        lease_until: datetime,
        **values: Any,
    ) -> bool:
        """Take the row for one attempt if nobody changed it since it was read."""
        result = session.execute(
            update(self.model)
            .where(
                self.id == row_id,
                self.status == seen_status,
                self.attempts == seen_attempts,
            )
            .values(
                {
                    self.status: self.running,
                    self.attempts: seen_attempts + 1,
                    self.due_at: lease_until,
                    **{getattr(self.model, name): value for name, value in values.items()},
                }
            )
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def held(self, row_id: Any, attempts: int) -> tuple[ColumnElement[bool], ...]:
        """The condition that this worker's attempt still holds the row."""
        return (self.id == row_id, self.status == self.running, self.attempts == attempts)

    def update_held(
        self,
        session: Session,
        row_id: Any,
        attempts: int,
        *conditions: ColumnElement[bool],
        **values: Any,
    ) -> bool:
        """Set `values` on the row if this worker's attempt still holds it."""
        result = session.execute(
            update(self.model)
            .where(*self.held(row_id, attempts), *conditions)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def lock_held(self, session: Session, row_id: Any, attempts: int) -> Any | None:
        """The row, locked, if this worker's attempt still holds it."""
        return session.scalars(
            select(self.model).where(*self.held(row_id, attempts)).with_for_update()
        ).first()
