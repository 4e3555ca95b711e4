"""Credit grant, balance and ledger bodies. Amounts are decimal strings in major units."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentmeter import money
from agentmeter.money import format_minor, to_minor
from agentmeter.tables import CreditGrant, CreditLedgerEntry
from billing_api.pricing.schemas import Currency, Price, UtcDatetime

# Far above any credit pack, far below what a BIGINT of minor units holds.
MAX_AMOUNT = Decimal(10) ** 13


def exact_minor(amount: Decimal, currency: str, field: str) -> int:
    """`amount` (> 0, major units) in minor units, refusing what would need rounding
    (`agentmeter.money.exact_minor`)."""
    if amount <= 0:
        raise ValueError(f"{field} must be greater than zero")
    if amount >= MAX_AMOUNT:
        raise ValueError(f"{field} must be below {MAX_AMOUNT:,}")
    return money.exact_minor(amount, currency, field)


class CreditGrantCreate(BaseModel):
    """A credit pack: `amount` of `currency`, drawn by invoices in that currency."""

    model_config = ConfigDict(extra="forbid")

    amount: Price = Field(examples=["100.00"])
    currency: Currency
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    expires_at: UtcDatetime | None = None
    description: str = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _exact_amount(self) -> CreditGrantCreate:
        exact_minor(self.amount, self.currency, "amount")
        return self

    @property
    def amount_minor(self) -> int:
        return to_minor(self.amount, self.currency)


class CreditGrantVoid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500)


class CreditGrantOut(BaseModel):
    id: str
    customer_id: str
    currency: str
    amount: str
    amount_minor: int
    remaining: str
    remaining_minor: int
    priority: int
    granted_at: datetime
    expires_at: datetime | None
    voided_at: datetime | None
    description: str
    # active | depleted | expired | voided, as of the request
    status: str

    @classmethod
    def of(cls, grant: CreditGrant, remaining_minor: int, now: datetime) -> CreditGrantOut:
        if grant.voided_at is not None:
            status = "voided"
        elif grant.expires_at is not None and grant.expires_at <= now:
            status = "expired"
        elif remaining_minor <= 0:
            status = "depleted"
        else:
            status = "active"
        return cls(
            id=grant.id,
            customer_id=grant.customer_id,
            currency=grant.currency,
            amount=format_minor(grant.amount_minor, grant.currency),
            amount_minor=grant.amount_minor,
            remaining=format_minor(remaining_minor, grant.currency),
            remaining_minor=remaining_minor,
            priority=grant.priority,
            granted_at=grant.granted_at,
            expires_at=grant.expires_at,
            voided_at=grant.voided_at,
            description=grant.description,
            status=status,
        )


class CurrencyBalanceOut(BaseModel):
    currency: str
    balance: str
    balance_minor: int


class CreditBalanceOut(BaseModel):
    customer_id: str
    at: datetime
    balances: list[CurrencyBalanceOut]


class LedgerEntryOut(BaseModel):
    id: int
    grant_id: str
    kind: str
    currency: str
    amount: str
    amount_minor: int
    invoice_id: str | None
    note: str
    created_at: datetime

    @classmethod
    def of(cls, entry: CreditLedgerEntry, currency: str) -> LedgerEntryOut:
        return cls(
            id=entry.id,
            grant_id=entry.grant_id,
            kind=entry.kind,
            currency=currency,
            amount=format_minor(entry.amount_minor, currency),
            amount_minor=entry.amount_minor,
            invoice_id=entry.invoice_id,
            note=entry.note,
            created_at=entry.created_at,
        )
