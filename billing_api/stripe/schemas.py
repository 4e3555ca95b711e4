"""Stripe Connect request and response bodies."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from billing_api.stripe.states import CollectionMethod


class AccountConnect(BaseModel):
    """Connect an account onboarded elsewhere; optionally take a platform fee."""

    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(pattern=r"^acct_[A-Za-z0-9]{1,60}$", examples=["acct_1Nv0FGQ9RKHgCVdK"])
    application_fee_percent: Decimal | None = Field(
        default=None, ge=0, le=100, decimal_places=4, description="percent of each invoice total"
    )


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    stripe_enabled: bool
    connected: bool
    account_id: str | None
    connected_via: str | None
    connected_at: datetime | None
    application_fee_percent: Decimal | None


class ConnectUrlOut(BaseModel):
    url: str


class CustomerTermsSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection_method: CollectionMethod = CollectionMethod.SEND_INVOICE
    days_until_due: int | None = Field(default=None, ge=0, le=3650)


class CustomerTermsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    customer_id: str
    collection_method: CollectionMethod
    days_until_due: int | None
    stripe_customer_id: str | None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str
    status: str
    attempts: int
    last_error: str
    next_attempt_at: datetime


class InvoiceSyncOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    invoice_id: str
    stripe_invoice_id: str | None
    stripe_sync_status: str
    stripe_error: str
    payment_status: str
    jobs: list[JobOut]


class WebhookReceived(BaseModel):
    received: bool
    duplicate: bool
