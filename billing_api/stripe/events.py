"""Stripe webhook intake: verified events are stored once per event id, answered at once,
and processed from the store.

Processing routes a Connect event by its `account` to the tenant that connected it and
finds our invoice by `metadata.agentmeter_invoice_id` (set by the push) or by its Stripe
id. The invoice events move `payment_status`:

    invoice.finalized → unpaid    invoice.paid → paid    invoice.payment_failed → payment_failed
    invoice.voided → void         invoice.marked_uncollectible → uncollectible

Stripe does not promise order, so an event older (`created`) than the one that set the
current status changes nothing, paid and void are final, and finalized never moves a
status back to unpaid. A replayed event id is not stored twice, so it changes nothing.
Events for an unknown account, of other types, or for invoices we did not push are kept
as "ignored", with a log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import Invoice, StripeEvent
from billing_api.stripe import repository
from billing_api.stripe.states import EventStatus, PaymentStatus

logger = logging.getLogger("agentmeter.stripe")

PAYMENT_STATUS_OF = {
    "invoice.finalized": PaymentStatus.UNPAID,
    "invoice.paid": PaymentStatus.PAID,
    "invoice.payment_failed": PaymentStatus.PAYMENT_FAILED,
    "invoice.voided": PaymentStatus.VOID,
    "invoice.marked_uncollectible": PaymentStatus.UNCOLLECTIBLE,
}
FINAL = (PaymentStatus.PAID, PaymentStatus.VOID)
BATCH_SIZE = 100


def store_event(session: Session, event: dict[str, Any]) -> bool:
    """Keep a verified event for processing; False if its id was stored before (a replay)."""
    account = event.get("account")
    return repository.insert_event(
        session,
        StripeEvent(
            id=event["id"][:255],
            account_id=account[:64] if isinstance(account, str) else None,
            type=event["type"][:128],
            payload=event,
            status=EventStatus.PENDING,
            note="",
            received_at=utcnow(),
        ),
    )


@dataclass(slots=True)
class EventReport:
    processed: int = 0
    ignored: int = 0


def process_events(engine: Engine, *, limit: int = 1000) -> EventReport:
    """Apply the stored, unprocessed events (at most `limit`). A job boundary: commits per
    batch; safe to run from several workers at once (rows are claimed by lock)."""
    report = EventReport()
    while report.processed + report.ignored < limit:
        with Session(engine) as session, session.begin():
            batch = repository.pending_events(session, min(BATCH_SIZE, limit))
            for event in batch:
                note = _apply(session, event)
                event.processed_at = utcnow()
                event.note = note or ""
                event.status = EventStatus.IGNORED if note else EventStatus.PROCESSED
                if note:
                    report.ignored += 1
                    logger.info(
                        "stripe event %s (%s) ignored: %s",
                        event.id,
                        event.type,
                        note,
                        extra={"event_id": event.id, "account": event.account_id},
                    )
                else:
                    report.processed += 1
        if len(batch) < BATCH_SIZE:
            break
    return report


def _apply(session: Session, event: StripeEvent) -> str | None:
    """Apply one event; None if it applied, else why it was ignored."""
    status = PAYMENT_STATUS_OF.get(event.type)
    if status is None:
        return "event type not handled"
    if event.account_id is None:
        return "not a Connect event (no account)"
    tenant_id = repository.tenant_of_account(session, event.account_id)
    if tenant_id is None:
        logger.warning("stripe event %s for unknown account %s", event.id, event.account_id)
        return f"unknown account {event.account_id}"
    data = event.payload["data"].get("object")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return "event carries no invoice"
    invoice = _our_invoice(session, tenant_id, data)
    if invoice is None:
        return f"no invoice of ours is Stripe invoice {data['id']}"
    if invoice.stripe_invoice_id is None:
        invoice.stripe_invoice_id = data["id"]
    created = event.payload.get("created")
    created = created if isinstance(created, int) else 0
    current = PaymentStatus(invoice.payment_status)
    if (
        current in FINAL
        or (invoice.payment_event_at is not None and created < invoice.payment_event_at)
        or (status is PaymentStatus.UNPAID and current is not PaymentStatus.UNPAID)
    ):
        return f"stale: payment status stays {current}"
    invoice.payment_status = status
    invoice.payment_event_at = created
    return None


def _our_invoice(session: Session, tenant_id: str, data: dict[str, Any]) -> Invoice | None:
    metadata = data.get("metadata")
    ours = metadata.get("agentmeter_invoice_id") if isinstance(metadata, dict) else None
    if isinstance(ours, str):
        invoice = repository.lock_invoice(session, tenant_id, ours)
        if invoice is not None and invoice.stripe_invoice_id in (None, data["id"]):
            return invoice
    return repository.invoice_by_stripe_id(session, tenant_id, data["id"])
