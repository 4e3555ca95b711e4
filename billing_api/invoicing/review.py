"""Review actions on drafts and exceptions; each change lands in the append-only audit log
with who, when, before and after."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from agentmeter.money import to_minor
from agentmeter.tables import (
    Customer,
    Invoice,
    InvoiceLine,
    TraceCustomer,
    UsageRow,
    utcnow,
)
from billing_api.audit import log as audit_log
from billing_api.errors import ConflictError, NotFoundError, UnprocessableError
from billing_api.invoicing import repository
from billing_api.invoicing.drafts import (
    recompute_totals,
    redraft_customer,
)
from billing_api.invoicing.exceptions import set_exception_status
from billing_api.invoicing.repository import new_id
from billing_api.invoicing.states import ExceptionKind, ExceptionStatus, InvoiceStatus, LineKind


def _draft(session: Session, tenant_id: str, invoice_id: str) -> Invoice:
    invoice = repository.lock_invoice(session, tenant_id, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id!r}")
    if invoice.status != InvoiceStatus.DRAFT:
        raise ConflictError(f"invoice {invoice_id} is {invoice.status}; only drafts change")
    return invoice


def adjust_line(
    session: Session,
    tenant_id: str,
    invoice_id: str,
    line_id: str,
    *,
    amount_minor: int,
    reason: str,
    actor: str,
) -> InvoiceLine:
    """Set a line's amount by hand. The rated amount is kept beside it, and the
    adjustment survives re-rating (it is re-applied to the same component and version)."""
    if not reason.strip():
        raise UnprocessableError("a reason is required to adjust a line")
    invoice = _draft(session, tenant_id, invoice_id)
    lines = repository.lines(session, invoice.id)
    line = next((item for item in lines if item.id == line_id), None)
    if line is None:
        raise NotFoundError(f"no line {line_id!r} on invoice {invoice_id}")
    before = snapshot(line)
    if line.rated_amount_minor is None:
        line.rated_amount_minor = line.amount_minor
    line.amount_minor = amount_minor
    line.adjustment_reason = reason
    if line.provider_cost_minor is not None:
        line.margin_minor = amount_minor - line.provider_cost_minor
    recompute_totals(session, invoice, lines)
    audit_log.record(
        session,
        tenant_id,
        entity="invoice_line",
        entity_id=invoice.id,
        action="adjust_line",
        actor=actor,
        before=before,
        after=snapshot(line),
        reason=reason,
    )
    session.flush()
    return line


def add_line(
    session: Session,
    tenant_id: str,
    invoice_id: str,
    *,
    description: str,
    quantity: Decimal,
    unit_price: Decimal,
    discount: bool,
    reason: str,
    actor: str,
) -> InvoiceLine:
    """Add a manual charge, or a discount (entered positive, billed negative)."""
    if quantity <= 0 or unit_price < 0:
        raise UnprocessableError("quantity must be positive and unit_price not negative")
    invoice = _draft(session, tenant_id, invoice_id)
    lines = repository.lines(session, invoice.id)
    amount = to_minor(quantity * unit_price, invoice.currency)
    line = InvoiceLine(
        id=new_id(),
        invoice_id=invoice.id,
        position=len(lines),
        kind=LineKind.DISCOUNT if discount else LineKind.MANUAL,
        description=description,
        quantity=quantity,
        unit_price=unit_price,
        amount_minor=-amount if discount else amount,
        adjustment_reason=reason,
        details=[],
    )
    session.add(line)
    recompute_totals(session, invoice, [*lines, line])
    audit_log.record(
        session,
        tenant_id,
        entity="invoice_line",
        entity_id=invoice.id,
        action="add_discount" if discount else "add_line",
        actor=actor,
        after=snapshot(line),
        reason=reason,
    )
    session.flush()
    return line


def remove_line(
    session: Session, tenant_id: str, invoice_id: str, line_id: str, *, reason: str, actor: str
) -> None:
    """Remove a manual line or discount (rated lines are adjusted, not removed)."""
    invoice = _draft(session, tenant_id, invoice_id)
    lines = repository.lines(session, invoice.id)
    line = next((item for item in lines if item.id == line_id), None)
    if line is None:
        raise NotFoundError(f"no line {line_id!r} on invoice {invoice_id}")
    if line.kind not in (LineKind.MANUAL, LineKind.DISCOUNT):
        raise ConflictError("only manual lines and discounts can be removed; adjust rated lines")
    repository.delete_lines(session, [line.id])
    recompute_totals(session, invoice, [item for item in lines if item.id != line.id])
    audit_log.record(
        session,
        tenant_id,
        entity="invoice_line",
        entity_id=invoice.id,
        action="remove_line",
        actor=actor,
        before=snapshot(line),
        reason=reason,
    )
    session.flush()


def rerate(session: Session, tenant_id: str, invoice_id: str, *, actor: str) -> Invoice:
    invoice = _draft(session, tenant_id, invoice_id)
    before = {"subtotal_minor": invoice.subtotal_minor}
    redrafted = redraft_customer(
        session, tenant_id, invoice.customer_id, invoice.period, run_id=None
    )
    result = redrafted or invoice
    audit_log.record(
        session,
        tenant_id,
        entity="invoice",
        entity_id=invoice.id,
        action="rerate",
        actor=actor,
        before=before,
        after={"subtotal_minor": result.subtotal_minor},
    )
    return result


def register_customer(
    session: Session,
    tenant_id: str,
    period: str,
    *,
    customer_id: str,
    name: str,
    email: str | None,
    actor: str,
) -> Invoice | None:
    """One click for an unregistered customer id: register it and re-draft its invoice."""
    if session.get(Customer, (tenant_id, customer_id)) is not None:
        raise ConflictError(f"customer {customer_id!r} already exists")
    session.add(Customer(tenant_id=tenant_id, id=customer_id, name=name, email=email))
    session.flush()
    audit_log.record(
        session,
        tenant_id,
        entity="customer",
        entity_id=customer_id,
        action="register_from_run",
        actor=actor,
        after={"name": name, "period": period},
    )
    _settle_unregistered(session, tenant_id, period, customer_id, actor, "registered")
    return redraft_customer(session, tenant_id, customer_id, period, run_id=None)


def _settle_unregistered(
    session: Session, tenant_id: str, period: str, customer_id: str, actor: str, how: str
) -> None:
    """Resolve the run's `unregistered_customer` exception for this id, if open."""
    for exception in repository.exceptions_in_scope(session, tenant_id, f"run:{period}"):
        if (
            exception.type == ExceptionKind.UNREGISTERED_CUSTOMER
            and exception.fingerprint == customer_id
            and exception.status == ExceptionStatus.OPEN
        ):
            set_exception_status(
                session,
                tenant_id,
                exception.id,
                status=ExceptionStatus.RESOLVED,
                note=f"customer id {customer_id!r} {how}",
                actor=actor,
                now=utcnow(),
            )


def map_customer(
    session: Session, tenant_id: str, period: str, *, from_id: str, to_id: str, actor: str
) -> Invoice | None:
    """One click for usage under a wrong customer id: move all of it to a registered
    customer, drop the orphan draft, and re-draft the customer's invoice."""
    if session.get(Customer, (tenant_id, to_id)) is None:
        raise NotFoundError(f"no customer {to_id!r}: register it first")
    orphan = [
        i
        for i in repository.list_invoices(session, tenant_id, customer_id=from_id)
        if i.status != InvoiceStatus.DRAFT
    ]
    if orphan:
        raise ConflictError(f"{from_id!r} already has finalized invoices; credit them instead")
    moved = session.execute(
        update(UsageRow)
        .where(UsageRow.tenant_id == tenant_id, UsageRow.customer_id == from_id)
        .values(customer_id=to_id)
    ).rowcount  # type: ignore[attr-defined]
    session.execute(
        update(TraceCustomer)
        .where(TraceCustomer.tenant_id == tenant_id, TraceCustomer.customer_id == from_id)
        .values(customer_id=to_id)
    )
    repository.delete_drafts_of(session, tenant_id, from_id)
    _settle_unregistered(session, tenant_id, period, from_id, actor, f"mapped to {to_id!r}")
    audit_log.record(
        session,
        tenant_id,
        entity="customer",
        entity_id=to_id,
        action="map_usage",
        actor=actor,
        before={"customer_id": from_id},
        after={"customer_id": to_id, "records": moved},
    )
    return redraft_customer(session, tenant_id, to_id, period, run_id=None)


def assign_unattributed(
    session: Session,
    tenant_id: str,
    period: str,
    *,
    trace_ids: list[str],
    customer_id: str,
    actor: str,
) -> Invoice | None:
    """Attribute the customer-less usage of some traces to a customer, and re-draft."""
    if session.get(Customer, (tenant_id, customer_id)) is None:
        raise NotFoundError(f"no customer {customer_id!r}: register it first")
    if not trace_ids:
        raise UnprocessableError("name the trace ids to attribute")
    moved = session.execute(
        update(UsageRow)
        .where(
            UsageRow.tenant_id == tenant_id,
            UsageRow.customer_id == "",
            UsageRow.trace_id.in_(trace_ids),
        )
        .values(customer_id=customer_id)
    ).rowcount  # type: ignore[attr-defined]
    audit_log.record(
        session,
        tenant_id,
        entity="customer",
        entity_id=customer_id,
        action="assign_unattributed",
        actor=actor,
        after={"trace_ids": trace_ids, "records": moved},
    )
    return redraft_customer(session, tenant_id, customer_id, period, run_id=None)


def snapshot(line: InvoiceLine) -> dict[str, Any]:
    """A line as the audit log records it."""
    return {
        "id": line.id,
        "kind": line.kind,
        "description": line.description,
        "quantity": str(line.quantity),
        "unit_price": None if line.unit_price is None else str(line.unit_price),
        "amount_minor": line.amount_minor,
        "rated_amount_minor": line.rated_amount_minor,
        "adjustment_reason": line.adjustment_reason,
    }
