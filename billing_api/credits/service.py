"""Prepaid credit: grants (credit packs) and the ledger that moves them.

Every movement is a ledger entry; a grant's remaining balance is the sum of its entries:
grant (+amount), draw (− applied to an invoice), reversal (+ a voided invoice's draw given
back), void (− what was left when the grant was voided), expire (− what was left when it
expired).

Which credit an invoice uses is `plan_credit_application`, a pure function. Invoicing calls
`apply_credits` when it finalizes an invoice and `reverse_credits` when it voids one;
drafts and estimates use `preview_credits`, which writes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.money import normalize_currency
from agentmeter.tables import CreditGrant, CreditLedgerEntry
from billing_api.auth import Caller, Role
from billing_api.credits import repository
from billing_api.customers.service import get_customer
from billing_api.errors import ConflictError, NotFoundError, UnprocessableError

logger = logging.getLogger("agentmeter.credits")


@dataclass(frozen=True, slots=True)
class GrantBalance:
    """What the application rule needs to know about one grant."""

    id: str
    currency: str
    priority: int
    granted_at: datetime
    expires_at: datetime | None
    voided_at: datetime | None
    remaining_minor: int

    @classmethod
    def of(cls, grant: CreditGrant, remaining_minor: int) -> GrantBalance:
        return cls(
            id=grant.id,
            currency=grant.currency,
            priority=grant.priority,
            granted_at=grant.granted_at,
            expires_at=grant.expires_at,
            voided_at=grant.voided_at,
            remaining_minor=remaining_minor,
        )


class CreditDraw(NamedTuple):
    """Credit taken from one grant for an invoice, in minor units (positive)."""

    grant_id: str
    amount_minor: int


def usable(grant: GrantBalance, currency: str, at: datetime) -> bool:
    """Whether `grant` can pay an invoice in `currency` dated `at`."""
    return (
        grant.currency == currency
        and grant.voided_at is None
        and grant.granted_at <= at
        and (grant.expires_at is None or grant.expires_at > at)
        and grant.remaining_minor > 0
    )


def application_order(grant: GrantBalance) -> tuple[int, bool, datetime, datetime, str]:
    """Sort key: lower priority first, then soonest expiry (none last), oldest, id."""
    expires_at = grant.expires_at or grant.granted_at  # ignored when there is no expiry
    return (grant.priority, grant.expires_at is None, expires_at, grant.granted_at, grant.id)


def plan_credit_application(
    total_minor: int, grants_with_remaining: Iterable[GrantBalance], at: datetime, *, currency: str
) -> list[CreditDraw]:
    """Which grants pay `total_minor` of an invoice in `currency` dated `at`, and how much.

    The rule, in order:
    1. Only grants that are usable at `at`: in the invoice's currency, granted at or before
       `at`, not expired at `at` (expiry strictly after `at`), not voided, with credit left.
    2. Lowest `priority` number first; among equals, the grant that expires soonest (grants
       without expiry last), then the oldest grant, then the grant id (so the order is
       total and the same on every run).
    3. Each grant is drawn up to its remaining balance until the total is covered; what no
       grant covers stays on the invoice.

    Returns draws with positive amounts, in application order; nothing for a total ≤ 0.
    """
    left = total_minor
    draws: list[CreditDraw] = []
    candidates = sorted(
        (g for g in grants_with_remaining if usable(g, currency, at)), key=application_order
    )
    for grant in candidates:
        if left <= 0:
            break
        amount = min(left, grant.remaining_minor)
        draws.append(CreditDraw(grant.id, amount))
        left -= amount
    return draws


# --- Grants ----------------------------------------------------------------------------


def grant_credits(
    session: Session,
    caller: Caller,
    customer_id: str,
    *,
    currency: str,
    amount_minor: int,
    now: datetime,
    priority: int = 0,
    expires_at: datetime | None = None,
    description: str = "",
) -> tuple[CreditGrant, int]:
    """Grant a credit pack: the grant and its opening ledger entry."""
    caller.require(Role.BILLING)
    get_customer(session, caller, customer_id)
    if expires_at is not None and expires_at <= now:
        raise UnprocessableError("expires_at must be in the future")
    grant = CreditGrant(
        id=uuid.uuid4().hex,
        tenant_id=caller.tenant_id,
        customer_id=customer_id,
        currency=currency,
        amount_minor=amount_minor,
        priority=priority,
        granted_at=now,
        expires_at=expires_at,
        description=description,
    )
    repository.add_grant(session, grant)
    repository.add_entries(
        session, [_entry(grant, repository.GRANT, grant.amount_minor, now, note=description)]
    )
    return grant, grant.amount_minor


def list_grants(
    session: Session, caller: Caller, customer_id: str
) -> list[tuple[CreditGrant, int]]:
    """The customer's grants, oldest first, each with its remaining balance."""
    get_customer(session, caller, customer_id)
    grants = repository.list_grants(session, caller.tenant_id, customer_id)
    left = repository.remaining(session, [g.id for g in grants])
    return [(grant, left[grant.id]) for grant in grants]


def balance(session: Session, caller: Caller, customer_id: str, at: datetime) -> dict[str, int]:
    """Credit usable at `at`, per currency: the ledger as recorded up to `at`, without the
    grants that had expired (or been voided) by then."""
    get_customer(session, caller, customer_id)
    grants = [
        g
        for g in repository.list_grants(session, caller.tenant_id, customer_id)
        if g.granted_at <= at
    ]
    left = repository.remaining(session, [g.id for g in grants], as_of=at)
    totals: dict[str, int] = {g.currency: 0 for g in grants}
    for grant in grants:
        if grant.expires_at is None or grant.expires_at > at:
            totals[grant.currency] += left[grant.id]
    return dict(sorted(totals.items()))


def ledger(
    session: Session,
    caller: Caller,
    customer_id: str,
    grant_id: str | None = None,
    limit: int = 1000,
) -> Sequence[tuple[CreditLedgerEntry, str]]:
    """Ledger entries (with their currency), oldest first."""
    get_customer(session, caller, customer_id)
    return repository.ledger(session, caller.tenant_id, customer_id, grant_id, limit)


def void_grant(
    session: Session, caller: Caller, customer_id: str, grant_id: str, reason: str, now: datetime
) -> tuple[CreditGrant, int]:
    """Void a grant: its remaining credit leaves the ledger as a "void" entry."""
    caller.require(Role.BILLING)
    get_customer(session, caller, customer_id)
    if repository.get_grant(session, caller.tenant_id, customer_id, grant_id) is None:
        raise NotFoundError(f"no credit grant {grant_id!r} for customer {customer_id!r}")
    (grant,) = repository.lock_grants(session, [grant_id])
    if grant.voided_at is not None:
        raise ConflictError(f"credit grant {grant_id!r} is already voided")
    left = repository.remaining(session, [grant_id])[grant_id]
    grant.voided_at = now
    repository.add_entries(session, [_entry(grant, repository.VOID, -left, now, note=reason)])
    return grant, 0


# --- Invoices --------------------------------------------------------------------------


def preview_credits(
    session: Session,
    tenant_id: str,
    customer_id: str,
    currency: str,
    total_minor: int,
    at: datetime,
) -> list[CreditDraw]:
    """The credit `apply_credits` would draw now, without writing or locking anything."""
    grants = repository.list_grants(session, tenant_id, customer_id)
    left = repository.remaining(session, [g.id for g in grants])
    balances = [GrantBalance.of(g, left[g.id]) for g in grants]
    return plan_credit_application(total_minor, balances, at, currency=normalize_currency(currency))


def apply_credits(
    session: Session,
    tenant_id: str,
    customer_id: str,
    currency: str,
    total_minor: int,
    at: datetime,
    invoice_id: str,
    *,
    now: datetime | None = None,
) -> list[CreditDraw]:
    """Draw credit for invoice `invoice_id` (total `total_minor`, dated `at`) and record
    one "draw" entry (negative, with the invoice id) per grant used.

    The customer's grants stay locked until the caller's transaction ends, so concurrent
    applications see each other's draws and never overdraw a grant. Applying to an invoice
    that already holds draws changes nothing and returns those draws.
    """
    now = now or utcnow()
    grants = repository.lock_customer_grants(session, tenant_id, customer_id)
    existing = _net_draws(repository.invoice_entries(session, tenant_id, invoice_id))
    if existing:
        return existing
    left = repository.remaining(session, [g.id for g in grants])
    plan = plan_credit_application(
        total_minor,
        [GrantBalance.of(g, left[g.id]) for g in grants],
        at,
        currency=normalize_currency(currency),
    )
    by_id = {g.id: g for g in grants}
    note = f"applied to invoice {invoice_id}"
    repository.add_entries(
        session,
        [
            _entry(by_id[d.grant_id], repository.DRAW, -d.amount_minor, now, invoice_id, note)
            for d in plan
        ],
    )
    return plan


def reverse_credits(
    session: Session, tenant_id: str, invoice_id: str, *, now: datetime | None = None
) -> list[CreditDraw]:
    """Give back the credit a (voided) invoice drew: a "reversal" entry per grant.

    Idempotent: only draws not yet reversed are. Credit given back to a grant that has
    since been voided or has expired leaves again at once ("void"/"expire" entry), so the
    ledger never holds credit nobody can use.
    """
    now = now or utcnow()
    drawn = _net_draws(repository.invoice_entries(session, tenant_id, invoice_id))
    if not drawn:
        return []
    grants = {g.id: g for g in repository.lock_grants(session, [d.grant_id for d in drawn])}
    # Read again under the lock: a concurrent reversal may have committed meanwhile.
    drawn = _net_draws(repository.invoice_entries(session, tenant_id, invoice_id))
    entries = []
    for grant_id, amount in drawn:
        grant = grants[grant_id]
        note = f"invoice {invoice_id} voided"
        entries.append(_entry(grant, repository.REVERSAL, amount, now, invoice_id, note))
        if grant.voided_at is not None:
            entries.append(_entry(grant, repository.VOID, -amount, now, invoice_id, "grant voided"))
        elif grant.expires_at is not None and grant.expires_at <= now:
            entries.append(
                _entry(grant, repository.EXPIRE, -amount, now, invoice_id, _expired_note(grant))
            )
    repository.add_entries(session, entries)
    return drawn


def _net_draws(entries: Iterable[CreditLedgerEntry]) -> list[CreditDraw]:
    net: dict[str, int] = defaultdict(int)
    for entry in entries:
        net[entry.grant_id] += entry.amount_minor
    return [CreditDraw(grant_id, -amount) for grant_id, amount in net.items() if amount < 0]


# --- Expiry ----------------------------------------------------------------------------


def expire_credits(session: Session, tenant_id: str, now: datetime) -> list[CreditDraw]:
    """Record an "expire" entry for the credit left on each grant expired by `now`.

    Idempotent: an expired grant holds nothing once its entry is written, so running this
    again (or in two workers at once: the grants are locked) writes nothing more.
    """
    candidates = [g for _, g in repository.expired_with_balance(session, tenant_id, now)]
    grants = repository.lock_grants(session, candidates)
    left = repository.remaining(session, [g.id for g in grants])
    expired = []
    entries = []
    for grant in grants:
        amount = left[grant.id]
        if amount > 0 and grant.voided_at is None:
            entries.append(
                _entry(grant, repository.EXPIRE, -amount, now, note=_expired_note(grant))
            )
            expired.append(CreditDraw(grant.id, amount))
    repository.add_entries(session, entries)
    return expired


def expire_all_credits(engine: Engine, now: datetime | None = None) -> int:
    """Job boundary for the background loop: expire credit for every tenant, one
    transaction per tenant (a failing tenant is logged and skipped). Returns the number of
    grants expired."""
    now = now or utcnow()
    with Session(engine) as session:
        tenant_ids = sorted({t for t, _ in repository.expired_with_balance(session, None, now)})
    count = 0
    for tenant_id in tenant_ids:
        try:
            with Session(engine) as session, session.begin():
                count += len(expire_credits(session, tenant_id, now))
        except Exception:
            logger.exception("expiring credits failed", extra={"tenant_id": tenant_id})
    return count


def _expired_note(grant: CreditGrant) -> str:
    assert grant.expires_at is not None
    return f"expired at {grant.expires_at.isoformat()}"


def _entry(
    grant: CreditGrant,
    kind: str,
    amount_minor: int,
    now: datetime,
    invoice_id: str | None = None,
    note: str = "",
) -> CreditLedgerEntry:
    return CreditLedgerEntry(
        tenant_id=grant.tenant_id,
        customer_id=grant.customer_id,
        grant_id=grant.id,
        kind=kind,
        amount_minor=amount_minor,
        invoice_id=invoice_id,
        note=note[:500],
        created_at=now,
    )


def customers_with_credit(
    session: Session, tenant_id: str, customer_ids: Sequence[str]
) -> set[str]:
    """Those of these customers that hold any credit grant (only they can have credit to
    preview)."""
    return repository.customers_with_grants(session, tenant_id, customer_ids)
