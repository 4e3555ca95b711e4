"""All SQL of credits: grants and their append-only ledger.

A grant's remaining balance is the sum of its ledger entries; nothing else stores it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from agentmeter.tables import CreditGrant, CreditLedgerEntry

GRANT = "grant"
DRAW = "draw"
REVERSAL = "reversal"
VOID = "void"
EXPIRE = "expire"


def add_grant(session: Session, grant: CreditGrant) -> None:
    session.add(grant)
    session.flush()


def add_entries(session: Session, entries: Iterable[CreditLedgerEntry]) -> None:
    session.add_all(list(entries))
    session.flush()


def get_grant(
    session: Session, tenant_id: str, customer_id: str, grant_id: str
) -> CreditGrant | None:
    return session.scalars(
        select(CreditGrant).where(
            CreditGrant.tenant_id == tenant_id,
            CreditGrant.customer_id == customer_id,
            CreditGrant.id == grant_id,
        )
    ).first()


def list_grants(session: Session, tenant_id: str, customer_id: str) -> Sequence[CreditGrant]:
    return session.scalars(
        select(CreditGrant)
        .where(CreditGrant.tenant_id == tenant_id, CreditGrant.customer_id == customer_id)
        .order_by(CreditGrant.granted_at, CreditGrant.id)
    ).all()


def lock_customer_grants(
    session: Session, tenant_id: str, customer_id: str
) -> Sequence[CreditGrant]:
    """Every grant of the customer, locked until the transaction ends.

    PostgreSQL: SELECT … FOR UPDATE, in id order so that lockers never deadlock. SQLite
    has one writer at a time but pysqlite opens the write transaction only at the first
    write, so reads before it could be stale: a no-op UPDATE first makes this transaction
    the writer, and everything read after it current.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(CreditGrant)
            .where(CreditGrant.tenant_id == tenant_id, CreditGrant.customer_id == customer_id)
            .values(priority=CreditGrant.priority)
            .execution_options(synchronize_session=False)
        )
    return session.scalars(
        select(CreditGrant)
        .where(CreditGrant.tenant_id == tenant_id, CreditGrant.customer_id == customer_id)
        .order_by(CreditGrant.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()


def lock_grants(session: Session, grant_ids: Iterable[str]) -> Sequence[CreditGrant]:
    """The given grants, locked (see `lock_customer_grants`), in id order."""
    ids = sorted(set(grant_ids))
    if not ids:
        return []
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(CreditGrant)
            .where(CreditGrant.id.in_(ids))
            .values(priority=CreditGrant.priority)
            .execution_options(synchronize_session=False)
        )
    return session.scalars(
        select(CreditGrant)
        .where(CreditGrant.id.in_(ids))
        .order_by(CreditGrant.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()


def remaining(
    session: Session, grant_ids: Iterable[str], *, as_of: datetime | None = None
) -> dict[str, int]:
    """Sum of ledger entries per grant (entries recorded at or before `as_of`, if given)."""
    ids = sorted(set(grant_ids))
    if not ids:
        return {}
    query = select(CreditLedgerEntry.grant_id, func.sum(CreditLedgerEntry.amount_minor)).where(
        CreditLedgerEntry.grant_id.in_(ids)
    )
    if as_of is not None:
        query = query.where(CreditLedgerEntry.created_at <= as_of)
    totals = {
        grant_id: int(total)
        for grant_id, total in session.execute(query.group_by(CreditLedgerEntry.grant_id))
    }
    return {grant_id: totals.get(grant_id, 0) for grant_id in ids}


def ledger(
    session: Session, tenant_id: str, customer_id: str, grant_id: str | None, limit: int
) -> Sequence[tuple[CreditLedgerEntry, str]]:
    """Ledger entries with their grant's currency, oldest first."""
    query = (
        select(CreditLedgerEntry, CreditGrant.currency)
        .join(CreditGrant, CreditGrant.id == CreditLedgerEntry.grant_id)
        .where(
            CreditLedgerEntry.tenant_id == tenant_id, CreditLedgerEntry.customer_id == customer_id
        )
    )
    if grant_id is not None:
        query = query.where(CreditLedgerEntry.grant_id == grant_id)
    rows = session.execute(query.order_by(CreditLedgerEntry.id).limit(limit))
    return [(entry, currency) for entry, currency in rows]


def invoice_entries(
    session: Session, tenant_id: str, invoice_id: str
) -> Sequence[CreditLedgerEntry]:
    """The draws and reversals recorded for an invoice."""
    return session.scalars(
        select(CreditLedgerEntry)
        .where(
            CreditLedgerEntry.tenant_id == tenant_id,
            CreditLedgerEntry.invoice_id == invoice_id,
            CreditLedgerEntry.kind.in_((DRAW, REVERSAL)),
        )
        .order_by(CreditLedgerEntry.id)
    ).all()


def expired_with_balance(
    session: Session, tenant_id: str | None, now: datetime
) -> Sequence[tuple[str, str]]:
    """(tenant id, grant id) of unvoided grants expired by `now` that still hold credit."""
    balance = func.coalesce(func.sum(CreditLedgerEntry.amount_minor), 0)
    query = (
        select(CreditGrant.tenant_id, CreditGrant.id)
        .join(CreditLedgerEntry, CreditLedgerEntry.grant_id == CreditGrant.id)
        .where(
            CreditGrant.expires_at.is_not(None),
            CreditGrant.expires_at <= now,
            CreditGrant.voided_at.is_(None),
        )
        .group_by(CreditGrant.tenant_id, CreditGrant.id)
        .having(balance > 0)
        .order_by(CreditGrant.tenant_id, CreditGrant.id)
    )
    if tenant_id is not None:
        query = query.where(CreditGrant.tenant_id == tenant_id)
    return [(t, g) for t, g in session.execute(query)]


def customers_with_grants(
    session: Session, tenant_id: str, customer_ids: Sequence[str]
) -> set[str]:
    """Those of these customers that hold any credit grant."""
    if not customer_ids:
        return set()
    return set(
        session.scalars(
            select(CreditGrant.customer_id)
            .where(CreditGrant.tenant_id == tenant_id, CreditGrant.customer_id.in_(customer_ids))
            .distinct()
        )
    )
