"""Reading invoices: what a caller may see of them, decided here from the caller.

Staff see an invoice whole: its lines with the price ids they were rated by, provider cost
and margin, exceptions and Stripe state (`InvoiceView.internal`). A customer-scoped caller
(the portal) sees only its own invoices, and of them only what the customer is billed:
`internal` is None on the invoice and on every line, whatever the caller asks for. Exports
(JSON, CSV, printable HTML) are the customer's view for everyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlalchemy.orm import Session

from agentmeter.tables import AuditEntry, CreditNote, Invoice
from billing_api.audit import log as audit_log
from billing_api.auth import Caller
from billing_api.customers.service import get_customer
from billing_api.errors import NotFoundError
from billing_api.invoicing import exports, repository
from billing_api.invoicing.states import InvoiceStatus
from billing_api.invoicing.views import ExceptionView, InvoiceDocument, InvoiceView, invoice_view

ExportKind = Literal["json", "csv", "html"]
# What a customer sees of its invoices: drafts are still the builder's.
ISSUED = (InvoiceStatus.FINALIZED, InvoiceStatus.VOID)


def find_invoice(session: Session, caller: Caller, invoice_id: str) -> Invoice:
    """The invoice row, if the caller may see it. A customer-scoped caller sees only its
    own issued (finalized or void) invoices; any other answers 404, as an unknown id does."""
    invoice = repository.get_invoice(session, caller.tenant_id, invoice_id)
    if invoice is None or not _visible(caller, invoice):
        raise NotFoundError(f"no invoice {invoice_id!r}")
    return invoice


def _visible(caller: Caller, invoice: Invoice) -> bool:
    if caller.customer_id is None:
        return True
    return invoice.customer_id == caller.customer_id and invoice.status in ISSUED


def get_invoice(session: Session, caller: Caller, invoice_id: str) -> InvoiceView:
    """One invoice with its lines (and, for staff, its exceptions and internal figures)."""
    invoice = find_invoice(session, caller, invoice_id)
    internal = caller.sees_internal_figures
    exceptions = (
        repository.list_exceptions(session, caller.tenant_id, invoice_id=invoice.id)
        if internal
        else []
    )
    return invoice_view(
        invoice, repository.lines(session, invoice.id), exceptions, internal=internal
    )


def list_invoices(
    session: Session,
    caller: Caller,
    *,
    period: str | None = None,
    status: str | None = None,
    customer_id: str | None = None,
) -> list[InvoiceView]:
    """Invoices with their lines (and exceptions for staff), in three queries whatever
    their number; a customer-scoped caller gets only its own issued ones."""
    if caller.customer_id is not None:
        customer_id = caller.customer(customer_id)
    invoices = [
        i
        for i in repository.list_invoices(
            session, caller.tenant_id, period=period, status=status, customer_id=customer_id
        )
        if _visible(caller, i)
    ]
    ids = [i.id for i in invoices]
    internal = caller.sees_internal_figures
    lines = repository.lines_of(session, ids)
    exceptions = repository.exceptions_of(session, caller.tenant_id, ids) if internal else {}
    return [
        invoice_view(i, lines.get(i.id, []), exceptions.get(i.id, []), internal=internal)
        for i in invoices
    ]


def customer_view(session: Session, caller: Caller, invoice_id: str) -> InvoiceView:
    """The invoice as its customer sees it (no internal figures), for any caller that may
    see the invoice: what exports carry."""
    invoice = find_invoice(session, caller, invoice_id)
    return invoice_view(invoice, repository.lines(session, invoice.id), [], internal=False)


def export_invoice(
    session: Session, caller: Caller, invoice_id: str, kind: ExportKind
) -> InvoiceDocument:
    """The invoice as the customer's JSON document, a CSV of its lines, or a printable
    HTML page under the builder's brand: the customer's view (no cost, no margin) for
    every caller."""
    view = customer_view(session, caller, invoice_id)
    name = view.number or view.id
    if kind == "csv":
        return InvoiceDocument(f"{name}.csv", "text/csv; charset=utf-8", exports.as_csv(view))
    if kind == "json":
        body = exports.as_json(view).model_dump_json(indent=2)
        return InvoiceDocument(f"{name}.json", "application/json", body)
    tenant = repository.tenant(session, caller.tenant_id)
    try:
        customer_name = get_customer(session, caller, view.customer_id).name
    except NotFoundError:  # usage under an id not registered (yet)
        customer_name = view.customer_id
    html = exports.as_html(view, tenant, customer_name)
    return InvoiceDocument(f"{name}.html", "text/html; charset=utf-8", html)


def credit_notes(session: Session, caller: Caller, invoice_id: str) -> Sequence[CreditNote]:
    """The credit notes of an invoice, oldest first."""
    return repository.credit_notes(session, find_invoice(session, caller, invoice_id).id)


def audit_trail(session: Session, caller: Caller, invoice_id: str) -> Sequence[AuditEntry]:
    """The audit log of an invoice (review changes, finalize, void, credit notes)."""
    invoice = find_invoice(session, caller, invoice_id)
    return audit_log.trail(session, caller.tenant_id, invoice.id)


def list_exceptions(
    session: Session,
    caller: Caller,
    *,
    period: str | None = None,
    invoice_id: str | None = None,
    status: str | None = None,
) -> list[ExceptionView]:
    """The tenant's billing exceptions, oldest first."""
    found = repository.list_exceptions(
        session, caller.tenant_id, period=period, invoice_id=invoice_id, status=status
    )
    return [ExceptionView.of(e) for e in found]
