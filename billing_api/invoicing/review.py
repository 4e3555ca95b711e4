"""Review actions on drafts and on the ids a billing run found, by a staff caller; each
change lands in the append-only audit log with who (the caller's actor), when, before and
after.

A draft's rated lines are adjusted (never removed), manual lines and discounts added or
removed; re-rating keeps them. An id a run found that is not a registered customer is
registered (by the customers service's rules) or its usage is moved to a registered
customer (by the usage service); customer-less usage of some traces is attributed to a
customer. Each re-drafts the customer's invoice at once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.money import exact_minor, to_minor
from agentmeter.tables import Invoice, InvoiceLine
from billing_api.audit import log as audit_log
from billing_api.auth import Caller, Role
from billing_api.customers import service as customers
from billing_api.errors import ConflictError, NotFoundError, UnprocessableError
from billing_api.invoicing import repository
from billing_api.invoicing.drafts import recompute_totals, redraft_customer
from billing_api.invoicing.exceptions import set_exception_status
from billing_api.invoicing.repository import new_id
from billing_api.invoicing.states import ExceptionKind, ExceptionStatus, InvoiceStatus, LineKind
from billing_api.usage.service import attribute_traces, move_customer_usage


def _draft(session: Session, caller: Caller, invoice_id: str) -> Invoice:
    invoice = repository.lock_invoice(session, caller.tenant_id, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id!r}")
    if invoice.status != InvoiceStatus.DRAFT:
        raise ConflictError(f"invoice {invoice_id} is {invoice.status}; only drafts change")
    return invoice


def adjust_line(
    session: Session,
    caller: Caller,
    invoice_id: str,
    line_id: str,
    *,
    amount: Decimal,
    reason: str,
) -> InvoiceLine:
    """Set a line's amount (major units of the invoice's currency, exact to its minor
    unit) by hand. The rated amount is kept beside it, and the adjustment survives
    re-rating (it is re-applied to the same component and version)."""
    caller.require(Role.BILLING)
    if not reason.strip():
        raise UnprocessableError("a reason is required to adjust a line")
    invoice = _draft(session, caller, invoice_id)
    amount_minor = exact_minor(amount, invoice.currency)
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
        caller,
        entity="invoice_line",
        entity_id=invoice.id,
        action="adjust_line",
        before=before,
        after=snapshot(line),
        reason=reason,
    )
    session.flush()
    return line


def add_line(
    session: Session,
    caller: Caller,
    invoice_id: str,
    *,
    description: str,
    quantity: Decimal,
    unit_price: Decimal,
    discount: bool,
    reason: str,
) -> InvoiceLine:
    """Add a manual charge, or a discount (entered positive, billed negative): quantity ×
    unit price, rounded once like every line."""
    caller.require(Role.BILLING)
    if quantity <= 0 or unit_price < 0:
        raise UnprocessableError("quantity must be positive and unit_price not negative")
    invoice = _draft(session, caller, invoice_id)
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
        caller,
        entity="invoice_line",
        entity_id=invoice.id,
        action="add_discount" if discount else "add_line",
        after=snapshot(line),
        reason=reason,
    )
    session.flush()
    return line


def remove_line(
    session: Session, caller: Caller, invoice_id: str, line_id: str, *, reason: str
) -> None:
    """Remove a manual line or discount (rated lines are adjusted, not removed)."""
    caller.require(Role.BILLING)
    invoice = _draft(session, caller, invoice_id)
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
        caller,
        entity="invoice_line",
        entity_id=invoice.id,
        action="remove_line",
        before=snapshot(line),
        reason=reason,
    )
    session.flush()


def rerate(session: Session, caller: Caller, invoice_id: str) -> Invoice:
    """Re-rate one draft now (as a run would), keeping the reviewer's lines."""
    caller.require(Role.BILLING)
    invoice = _draft(session, caller, invoice_id)
    before = {"subtotal_minor": invoice.subtotal_minor}
    redrafted = redraft_customer(
        session, caller.tenant_id, invoice.customer_id, invoice.period, run_id=None
    )
    result = redrafted or invoice
    audit_log.record(
        session,
        caller,
        entity="invoice",
        entity_id=invoice.id,
        action="rerate",
        before=before,
        after={"subtotal_minor": result.subtotal_minor},
    )
    return result


def register_customer(
    session: Session,
    caller: Caller,
    period: str,
    *,
    customer_id: str,
    name: str,
    email: str | None,
) -> Invoice | None:
    """One click for an unregistered customer id: register it (as the customers API
    would, with its validation) and re-draft its invoice."""
    caller.require(Role.BILLING)
    customers.register_customer(session, caller, customer_id, name, email)
    session.flush()
    audit_log.record(
        session,
        caller,
        entity="customer",
        entity_id=customer_id,
        action="register_from_run",
        after={"name": name, "period": period},
    )
    _settle_unregistered(session, caller, period, customer_id, "registered")
    return redraft_customer(session, caller.tenant_id, customer_id, period, run_id=None)


def _settle_unregistered(
    session: Session, caller: Caller, period: str, customer_id: str, how: str
) -> None:
    """Resolve the run's `unregistered_customer` exception for this id, if open."""
    for exception in repository.exceptions_in_scope(session, caller.tenant_id, f"run:{period}"):
        if (
            exception.type == ExceptionKind.UNREGISTERED_CUSTOMER
            and exception.fingerprint == customer_id
            and exception.status == ExceptionStatus.OPEN
        ):
            set_exception_status(
                session,
                caller,
                exception.id,
                status=ExceptionStatus.RESOLVED,
                note=f"customer id {customer_id!r} {how}",
                now=utcnow(),
            )


def _registered(session: Session, caller: Caller, customer_id: str) -> None:
    try:
        customers.get_customer(session, caller, customer_id)
    except NotFoundError:
        raise NotFoundError(f"no customer {customer_id!r}: register it first") from None


def map_customer(
    session: Session, caller: Caller, period: str, *, from_id: str, to_id: str
) -> Invoice | None:
    """One click for usage under a wrong customer id: move all of it to a registered
    customer, drop the orphan draft, and re-draft the customer's invoice."""
    caller.require(Role.BILLING)
    tenant_id = caller.tenant_id
    _registered(session, caller, to_id)
    orphan = [
        i
        for i in repository.list_invoices(session, tenant_id, customer_id=from_id)
        if i.status != InvoiceStatus.DRAFT
    ]
    if orphan:
        raise ConflictError(f"{from_id!r} already has finalized invoices; credit them instead")
    moved = move_customer_usage(session, caller, from_id, to_id)
    repository.delete_drafts_of(session, tenant_id, from_id)
    _settle_unregistered(session, caller, period, from_id, f"mapped to {to_id!r}")
    audit_log.record(
        session,
        caller,
        entity="customer",
        entity_id=to_id,
        action="map_usage",
        before={"customer_id": from_id},
        after={"customer_id": to_id, "records": moved},
    )
    return redraft_customer(session, tenant_id, to_id, period, run_id=None)


def assign_unattributed(
    session: Session,
    caller: Caller,
    period: str,
    *,
    trace_ids: list[str],
    customer_id: str,
) -> Invoice | None:
    """Attribute the customer-less usage of some traces to a customer, and re-draft."""
    caller.require(Role.BILLING)
    _registered(session, caller, customer_id)
    moved = attribute_traces(session, caller, trace_ids, customer_id)
    audit_log.record(
        session,
        caller,
        entity="customer",
        entity_id=customer_id,
        action="assign_unattributed",
        after={"trace_ids": trace_ids, "records": moved},
    )
    return redraft_customer(session, caller.tenant_id, customer_id, period, run_id=None)


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
