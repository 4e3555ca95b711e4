"""What-if: every customer's revenue and margin under draft price terms, before and after,
for the current period and the last closed one — with nothing written.

The draft is created through the pricing service (so it is checked exactly as publishing
would check it) inside a SAVEPOINT, every customer is rated by the rating service with
the draft in place, and the savepoint is rolled back. Publishing the same draft later
rates the same usage the same way, so the figures shown are what the customers' estimates
and drafts will say (until more usage arrives).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from billing_api.auth import Caller, Role
from billing_api.periods import Period, period_containing, previous_periods
from billing_api.pricing import service as pricing
from billing_api.pricing.schemas import VersionCreate
from billing_api.rating.engine import RatedPeriod
from billing_api.rating.service import rate_period


@dataclass(frozen=True, slots=True)
class Comparison:
    """One customer in one period: now and under the draft (None: nothing to bill)."""

    period: str
    customer_id: str
    currency: str
    revenue_before_minor: int
    revenue_after_minor: int
    margin_before_minor: int | None
    margin_after_minor: int | None

    @property
    def revenue_change_minor(self) -> int:
        return self.revenue_after_minor - self.revenue_before_minor


def _compare(
    period: Period, before: dict[str, RatedPeriod], after: dict[str, RatedPeriod]
) -> list[Comparison]:
    rows = []
    for customer_id in sorted(set(before) | set(after)):
        old, new = before.get(customer_id), after.get(customer_id)
        rated = new or old
        assert rated is not None  # the customer is in one of them
        rows.append(
            Comparison(
                period=period.label,
                customer_id=customer_id,
                currency=rated.currency,
                revenue_before_minor=old.subtotal_minor if old else 0,
                revenue_after_minor=new.subtotal_minor if new else 0,
                margin_before_minor=old.margin_minor if old else 0,
                margin_after_minor=new.margin_minor if new else 0,
            )
        )
    return rows


def preview_version(
    session: Session, caller: Caller, book_id: str, draft: VersionCreate, now: datetime
) -> list[Comparison]:
    """Re-rate the current and the last closed period with `draft` as a new version of
    `book_id`; nothing is written (see the module docstring). Pricing errors of the draft
    (an existing version at the same moment, an unknown book) raise as publishing would."""
    caller.require(Role.BILLING)  # before re-rating: the draft's creation would refuse too
    current = period_containing(now)
    periods = [current, *previous_periods(current, 1)]
    before = {p.label: rate_period(session, caller.tenant_id, p) for p in periods}
    savepoint = session.begin_nested()
    try:
        pricing.create_version(session, caller, book_id, draft.effective_from,
                               [c.component() for c in draft.components],
                               copy_from_version=draft.copy_from_version)  # fmt: skip
        session.flush()
        after = {p.label: rate_period(session, caller.tenant_id, p) for p in periods}
    finally:
        savepoint.rollback()
    return [row for p in periods for row in _compare(p, before[p.label], after[p.label])]
