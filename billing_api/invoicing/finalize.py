"""Finalize, void, credit notes: the steps after which an invoice no longer changes.

Finalizing locks the invoice row, refuses while blocking exceptions are open, draws
prepaid credits, takes the next number of the tenant's gapless sequence
(`{prefix}-{year}-{000123}`), and locks the price versions it used — all in one
transaction, so a failure leaves neither a number gap nor a half-finalized invoice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from agentmeter.money import exact_minor
from agentmeter.tables import CreditNote, Invoice
from billing_api.audit import log as audit_log
from billing_api.auth import Caller, Role
from billing_api.credits.service import apply_credits, reverse_credits
from billing_api.errors import ConflictError, NotFoundError, UnprocessableError
from billing_api.invoicing import repository
from billing_api.invoicing.drafts import credit_date
from billing_api.invoicing.repository import new_id
from billing_api.invoicing.states import InvoiceStatus
from billing_api.pricing.service import lock_versions_of_components
from billing_api.stripe import service as stripe_sync

INVOICE = "invoice"
CREDIT_NOTE = "credit_note"


def _invoice(session: Session, caller: Caller, invoice_id: str) -> Invoice:
    invoice = repository.lock_invoice(session, caller.tenant_id, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id!r}")
    return invoice


def before_period_end(invoice: Invoice, now: datetime) -> bool:
    """Whether finalizing `invoice` at `now` is early: its usage may still come, so it
    takes an explicit, audited reason."""
    return now < invoice.period_end


def finalize_invoice(
    session: Session,
    caller: Caller,
    invoice_id: str,
    *,
    now: datetime,
    early_reason: str | None = None,
) -> Invoice:
    """Number and freeze a draft. Before its period ends (usage may still come) only with
    `early_reason`, which the audit log keeps."""
    caller.require(Role.BILLING)
    tenant_id = caller.tenant_id
    invoice = _invoice(session, caller, invoice_id)
    if invoice.status != InvoiceStatus.DRAFT:
        raise ConflictError(f"invoice {invoice_id} is {invoice.status}, only drafts finalize")
    blocking = repository.open_blocking(session, tenant_id, invoice.id)
    if blocking:
        listed = "; ".join(f"{e.type}: {e.message}" for e in blocking)
        raise ConflictError(f"resolve or waive the blocking exceptions first: {listed}")
    early = before_period_end(invoice, now)
    if early and not (early_reason and early_reason.strip()):
        raise ConflictError(
            f"the period of invoice {invoice_id} ends at {invoice.period_end.isoformat()}; "
            "finalize it then, or now with before_period_end and a reason"
        )
    if invoice.subtotal_minor < 0:
        raise ConflictError("a negative invoice cannot be finalized; issue a credit note instead")
    applied = apply_credits(
        session,
        tenant_id,
        invoice.customer_id,
        invoice.currency,
        invoice.subtotal_minor,
        credit_date(invoice),
        invoice.id,
    )
    invoice.credits_minor = sum(amount for _, amount in applied)
    invoice.total_minor = invoice.subtotal_minor - invoice.credits_minor
    tenant = repository.tenant(session, tenant_id)
    number = repository.next_number(session, tenant_id, INVOICE, now.year)
    invoice.number = f"{tenant.invoice_prefix}-{now.year}-{number:06d}"
    invoice.status = InvoiceStatus.FINALIZED
    invoice.finalized_at = now
    lines = repository.lines(session, invoice.id)
    lock_versions_of_components(
        session, tenant_id, [line.component_id for line in lines if line.component_id]
    )
    audit_log.record(
        session,
        caller,
        entity="invoice",
        entity_id=invoice.id,
        action="finalize",
        after={
            "number": invoice.number,
            "subtotal_minor": invoice.subtotal_minor,
            "credits_minor": invoice.credits_minor,
            "total_minor": invoice.total_minor,
            "before_period_end": early,
        },
        reason=(early_reason or "") if early else "",
    )
    stripe_sync.invoice_finalized(session, invoice)
    session.flush()
    return invoice


def void_invoice(
    session: Session, caller: Caller, invoice_id: str, *, reason: str, now: datetime
) -> Invoice:
    """Void a finalized invoice: it keeps its number, its credit draws are given back."""
    caller.require(Role.BILLING)
    if not reason.strip():
        raise UnprocessableError("a reason is required to void an invoice")
    invoice = _invoice(session, caller, invoice_id)
    if invoice.status != InvoiceStatus.FINALIZED:
        raise ConflictError(f"invoice {invoice_id} is {invoice.status}; only finalized ones void")
    reverse_credits(session, caller.tenant_id, invoice.id)
    invoice.status = InvoiceStatus.VOID
    invoice.voided_at = now
    invoice.void_reason = reason
    audit_log.record(
        session,
        caller,
        entity="invoice",
        entity_id=invoice.id,
        action="void",
        before={"status": InvoiceStatus.FINALIZED},
        after={"status": InvoiceStatus.VOID},
        reason=reason,
    )
    stripe_sync.invoice_voided(session, invoice)
    session.flush()
    return invoice


def credited_minor(session: Session, invoice_id: str) -> int:
    return sum(note.amount_minor for note in repository.credit_notes(session, invoice_id))


def create_credit_note(
    session: Session,
    caller: Caller,
    invoice_id: str,
    *,
    amount: Decimal | None,
    reason: str,
    now: datetime,
) -> CreditNote:
    """A full (amount None) or partial credit against a finalized invoice's total; the
    credited sum never exceeds the total."""
    caller.require(Role.BILLING)
    if not reason.strip():
        raise UnprocessableError("a reason is required for a credit note")
    tenant_id = caller.tenant_id
    invoice = _invoice(session, caller, invoice_id)
    requested = None if amount is None else exact_minor(amount, invoice.currency)
    if invoice.status != InvoiceStatus.FINALIZED:
        raise ConflictError(f"invoice {invoice_id} is {invoice.status}; credit finalized ones")
    creditable = invoice.total_minor - credited_minor(session, invoice.id)
    amount_minor = creditable if requested is None else requested
    if amount_minor <= 0 or amount_minor > creditable:
        raise UnprocessableError(
            f"credit must be between 1 and {creditable} minor units (what is left to credit)"
        )
    tenant = repository.tenant(session, tenant_id)
    number = repository.next_number(session, tenant_id, CREDIT_NOTE, now.year)
    note = CreditNote(
        id=new_id(),
        tenant_id=tenant_id,
        invoice_id=invoice.id,
        number=f"{tenant.invoice_prefix}-CN-{now.year}-{number:06d}",
        amount_minor=amount_minor,
        reason=reason,
        created_at=now,
    )
    session.add(note)
    stripe_sync.credit_note_created(session, invoice, note)
    audit_log.record(
        session,
        caller,
        entity="invoice",
        entity_id=invoice.id,
        action="credit_note",
        after={"credit_note": note.number, "amount_minor": amount_minor},
        reason=reason,
    )
    session.flush()
    return note
