"""The states and kinds of Stripe sync, one definition each."""

from __future__ import annotations

from enum import StrEnum


class SyncStatus(StrEnum):
    """Where an invoice's copy on the connected Stripe account stands."""

    NOT_CONNECTED = "not_connected"
    PENDING = "pending"
    SYNCED = "synced"
    FAILED = "failed"


class PaymentStatus(StrEnum):
    """Whether the customer paid, as Stripe's webhooks report it."""

    UNPAID = "unpaid"
    PAID = "paid"
    PAYMENT_FAILED = "payment_failed"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


class JobKind(StrEnum):
    PUSH = "push"
    VOID = "void"
    CREDIT_NOTE = "credit_note"


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class EventStatus(StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored"


class CollectionMethod(StrEnum):
    SEND_INVOICE = "send_invoice"
    CHARGE_AUTOMATICALLY = "charge_automatically"


class ConnectedVia(StrEnum):
    API = "api"
    OAUTH = "oauth"
