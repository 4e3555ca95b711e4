"""HTTP surface of credits: a customer's grants, balance and ledger."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from agentmeter.clock import utcnow
from agentmeter.money import format_minor
from billing_api.auth import AdminCaller
from billing_api.credits import service
from billing_api.credits.schemas import (
    CreditBalanceOut,
    CreditGrantCreate,
    CreditGrantOut,
    CreditGrantVoid,
    CurrencyBalanceOut,
    LedgerEntryOut,
)
from billing_api.deps import DbSession
from billing_api.pricing.schemas import UtcDatetime

router = APIRouter(prefix="/api/v1/customers/{customer_id}/credits", tags=["credits"])


@router.post("", status_code=201)
def grant_credits(
    customer_id: str, body: CreditGrantCreate, session: DbSession, caller: AdminCaller
) -> CreditGrantOut:
    """Grant prepaid credit. Invoices in the grant's currency draw it when finalized:
    lowest `priority` first, then soonest expiry, then oldest."""
    now = utcnow()
    grant, remaining = service.grant_credits(
        session,
        caller,
        customer_id,
        currency=body.currency,
        amount_minor=body.amount_minor,
        now=now,
        priority=body.priority,
        expires_at=body.expires_at,
        description=body.description,
    )
    return CreditGrantOut.of(grant, remaining, now)


@router.get("")
def list_grants(customer_id: str, session: DbSession, caller: AdminCaller) -> list[CreditGrantOut]:
    """Every grant, oldest first, with what remains of it."""
    now = utcnow()
    return [
        CreditGrantOut.of(grant, remaining, now)
        for grant, remaining in service.list_grants(session, caller, customer_id)
    ]


@router.get("/balance")
def get_balance(
    customer_id: str, session: DbSession, caller: AdminCaller, at: UtcDatetime | None = None
) -> CreditBalanceOut:
    """Credit usable at `at` (default now) per currency; credit expired by then is not."""
    moment = utcnow() if at is None else at
    balances = service.balance(session, caller, customer_id, moment)
    return CreditBalanceOut(
        customer_id=customer_id,
        at=moment,
        balances=[
            CurrencyBalanceOut(
                currency=currency, balance=format_minor(minor, currency), balance_minor=minor
            )
            for currency, minor in balances.items()
        ],
    )


@router.get("/ledger")
def get_ledger(
    customer_id: str,
    session: DbSession,
    caller: AdminCaller,
    grant_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[LedgerEntryOut]:
    """Every credit movement, oldest first: grant, draw, reversal, void, expire."""
    return [
        LedgerEntryOut.of(entry, currency)
        for entry, currency in service.ledger(session, caller, customer_id, grant_id, limit)
    ]


@router.post("/{grant_id}/void")
def void_grant(
    customer_id: str,
    grant_id: str,
    body: CreditGrantVoid,
    session: DbSession,
    caller: AdminCaller,
) -> CreditGrantOut:
    """Void a grant; what remained of it leaves the balance (a "void" ledger entry)."""
    now = utcnow()
    grant, remaining = service.void_grant(session, caller, customer_id, grant_id, body.reason, now)
    return CreditGrantOut.of(grant, remaining, now)
