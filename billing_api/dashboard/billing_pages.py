"""Billing: start a run and watch it (htmx polls its progress), the review queue of the
period's drafts with their exceptions, and one invoice's review — resolve or waive an
exception, adjust or add a line, finalize, void, credit notes — each action followed by
its entry in the audit trail shown on the same page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import QueryParams

from agentmeter.clock import utcnow
from agentmeter.tables import BillingException, BillingRun, Invoice
from billing_api.audit import log as audit_log
from billing_api.auth import Caller, Role
from billing_api.customers.service import count_customers, get_customer
from billing_api.dashboard.forms import Model, parse
from billing_api.dashboard.http import (
    PREFIX,
    DashboardRoute,
    StaffCaller,
    fragment,
    render,
    see_other,
)
from billing_api.dashboard.paging import ListPage, list_page
from billing_api.deps import DbSession
from billing_api.errors import NotFoundError, UnprocessableError
from billing_api.invoicing import exceptions, finalize, repository, review, runs
from billing_api.invoicing.leases import lease_duration
from billing_api.invoicing.schemas import (
    CreditNoteCreate,
    ExceptionUpdate,
    FinalizeRequest,
    LineAdjust,
    LineCreate,
    RegisterCustomer,
    RunCreate,
    VoidRequest,
)
from billing_api.invoicing.states import ExceptionKind, ExceptionStatus, InvoiceStatus, RunStatus
from billing_api.periods import period_containing, previous_periods
from billing_api.stripe import service as stripe

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)


def _checked(schema: type[Model], data: Mapping[str, Any]) -> Model:
    body, errors = parse(schema, data)
    if body is None:
        raise UnprocessableError("; ".join(f"{k or 'form'}: {v}" for k, v in errors.items()))
    return body


def _invoice(session: DbSession, caller: Caller, invoice_id: str) -> Invoice:
    invoice = repository.get_invoice(session, caller.tenant_id, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id!r}")
    return invoice


def _run(session: DbSession, caller: Caller, run_id: str) -> BillingRun:
    run = repository.get_run(session, caller.tenant_id, run_id)
    if run is None:
        raise NotFoundError(f"no billing run {run_id!r}")
    return run


DRAFTS = (InvoiceStatus.DRAFT,)
CLOSED = (InvoiceStatus.FINALIZED, InvoiceStatus.VOID)


@router.get("/billing", response_class=HTMLResponse)
def billing(
    request: Request, session: DbSession, caller: StaffCaller, period: str | None = None
) -> Response:
    """The review queue of a period (default: the last closed one): its drafts
    (`?page=`) and its finalized and void invoices (`?closed_page=`) a page at a time."""
    label = _checked(RunCreate, {"period": period}).period if period else None
    label = label or previous_periods(period_containing(utcnow()), 1)[0].label
    return _billing_page(request, session, caller, label, request.query_params)


def _billing_page(
    request: Request,
    session: DbSession,
    caller: Caller,
    period: str,
    query: QueryParams,
    status: int = 200,
    **extra: Any,
) -> Response:
    """The billing page of `period` at the pages `query` asks for; `extra` adds to the
    context (a refused form's errors and input)."""
    drafted, drafts = _invoices(session, caller, period, DRAFTS, query, "drafts", "page")
    closed, others = _invoices(session, caller, period, CLOSED, query, "invoices", "closed_page")
    found = repository.exceptions_of(session, caller.tenant_id, [i.id for i in drafts])
    per_invoice = {
        invoice_id: open_count
        for invoice_id, of_invoice in found.items()
        if (open_count := sum(e.status == ExceptionStatus.OPEN for e in of_invoice))
    }
    run_exceptions = repository.run_exceptions(
        session, caller.tenant_id, period, ExceptionStatus.OPEN
    )
    context = {
        "period": period,
        "drafts": drafts,
        "drafted": drafted,
        "others": others,
        "closed": closed,
        "open_per_invoice": per_invoice,
        "run_exceptions": run_exceptions,
        "has_customers": bool(run_exceptions) and count_customers(session, caller) > 0,
        "unregistered": ExceptionKind.UNREGISTERED_CUSTOMER,
        "unattributed": ExceptionKind.UNATTRIBUTED_USAGE,
        "customer_errors": {},
        "customer_input": {},
        **extra,
    }
    return render(request, caller, "billing.html", page="billing", title="Billing",
                  context=context, status=status)  # fmt: skip


def _invoices(
    session: DbSession,
    caller: Caller,
    period: str,
    statuses: Sequence[str],
    query: QueryParams,
    noun: str,
    param: str,
) -> tuple[ListPage, Sequence[Invoice]]:
    total = repository.count_period_invoices(session, caller.tenant_id, period, statuses)
    listed = list_page(f"{PREFIX}/billing", query, total, noun=noun, param=param)
    shown = repository.page_period_invoices(session, caller.tenant_id, period, statuses,
                                            offset=listed.offset, limit=listed.size)  # fmt: skip
    return listed, shown


@router.post("/billing/runs")
def start_run(
    request: Request,
    background: BackgroundTasks,
    session: DbSession,
    caller: StaffCaller,
    period: Annotated[str, Form(max_length=7)],
) -> Response:
    """Start drafting every customer's invoice for `period`; the run page shows progress."""
    caller.require(Role.BILLING)
    body = _checked(RunCreate, {"period": period})
    settings = request.app.state.settings
    run_id = runs.start_run(session, caller, body.period, lease=lease_duration(settings)).id
    # As the API does: the job worker is woken once this request's transaction commits.
    background.add_task(request.app.state.jobs.wake)
    return see_other(f"/billing/runs/{run_id}")


@router.get("/billing/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, session: DbSession, caller: StaffCaller, run_id: str) -> Response:
    """A run's progress; while it runs, htmx refreshes the progress every second."""
    run = _run(session, caller, run_id)
    return render(request, caller, "run.html", page="billing", title=f"Billing run {run.period}",
                  context={"run": run, "running": RunStatus.RUNNING})  # fmt: skip


@router.get("/billing/runs/{run_id}/progress", response_class=HTMLResponse)
def run_progress(
    request: Request, session: DbSession, caller: StaffCaller, run_id: str
) -> Response:
    """The progress block alone (what htmx swaps in)."""
    run = _run(session, caller, run_id)
    return fragment(request, "run_progress.html", {"run": run, "running": RunStatus.RUNNING})


@router.get("/invoices/{invoice_id}", response_class=HTMLResponse)
def invoice_page(
    request: Request, session: DbSession, caller: StaffCaller, invoice_id: str
) -> Response:
    """One invoice with its lines, exceptions, credit notes and audit trail."""
    invoice = _invoice(session, caller, invoice_id)
    exceptions = repository.list_exceptions(session, caller.tenant_id, invoice_id=invoice.id)
    audit = [
        *audit_log.trail(session, caller.tenant_id, invoice.id),
        *(a for e in exceptions for a in audit_log.trail(session, caller.tenant_id, e.id)),
    ]
    context = {
        "invoice": invoice,
        "lines": repository.lines(session, invoice.id),
        "exceptions": exceptions,
        "credit_notes": repository.credit_notes(session, invoice.id),
        "credited_minor": finalize.credited_minor(session, invoice.id),
        "audit": sorted(audit, key=lambda a: a.id, reverse=True),
        "sync": stripe.invoice_sync(session, caller, invoice.id),
        "early": finalize.before_period_end(invoice, utcnow()),
    }
    title = invoice.number or f"Draft {invoice.period} {invoice.customer_id}"
    return render(request, caller, "invoice.html", page="invoice", title=title, context=context)


@router.post("/invoices/{invoice_id}/exceptions/{exception_id}")
def set_exception(
    session: DbSession,
    caller: StaffCaller,
    invoice_id: str,
    exception_id: str,
    status: Annotated[str, Form(max_length=16)],
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Resolve, waive (a note says why) or reopen an exception of the invoice."""
    caller.require(Role.BILLING)
    body = _checked(ExceptionUpdate, {"status": status, "note": note})
    exception = repository.get_exception(session, caller.tenant_id, exception_id)
    if exception is None or exception.invoice_id != _invoice(session, caller, invoice_id).id:
        raise NotFoundError(f"no exception {exception_id!r} on invoice {invoice_id!r}")
    exceptions.set_exception_status(session, caller, exception_id,
                                    status=ExceptionStatus(body.status), note=body.note,
                                    now=utcnow())  # fmt: skip
    return see_other(f"/invoices/{invoice_id}#audit")


@router.post("/invoices/{invoice_id}/lines/{line_id}")
def adjust_line(
    session: DbSession,
    caller: StaffCaller,
    invoice_id: str,
    line_id: str,
    amount: Annotated[str, Form(max_length=40)],
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Set a draft line's amount by hand, with a reason."""
    caller.require(Role.BILLING)
    body = _checked(LineAdjust, {"amount": amount, "reason": reason})
    review.adjust_line(session, caller, invoice_id, line_id, amount=body.amount,
                       reason=body.reason)  # fmt: skip
    return see_other(f"/invoices/{invoice_id}#audit")


@router.post("/invoices/{invoice_id}/lines")
def add_line(
    session: DbSession,
    caller: StaffCaller,
    invoice_id: str,
    description: Annotated[str, Form(max_length=500)] = "",
    quantity: Annotated[str, Form(max_length=40)] = "",
    unit_price: Annotated[str, Form(max_length=40)] = "",
    discount: Annotated[str, Form(max_length=5)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Add a manual charge or a discount to a draft."""
    caller.require(Role.BILLING)
    data = {"description": description, "quantity": quantity, "unit_price": unit_price,
            "discount": bool(discount), "reason": reason}  # fmt: skip
    body = _checked(LineCreate, data)
    review.add_line(session, caller, invoice_id, description=body.description,
                    quantity=body.quantity, unit_price=body.unit_price,
                    discount=body.discount, reason=body.reason)  # fmt: skip
    return see_other(f"/invoices/{invoice_id}#audit")


@router.post("/invoices/{invoice_id}/finalize")
def finalize_invoice(
    session: DbSession,
    caller: StaffCaller,
    invoice_id: str,
    before_period_end: Annotated[str, Form(max_length=8)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Number and freeze the invoice (refused while blocking exceptions are open); before
    its period ends only with the box ticked and a reason, as the API's body says."""
    caller.require(Role.BILLING)
    body = _checked(FinalizeRequest, {"before_period_end": before_period_end, "reason": reason})
    finalize.finalize_invoice(session, caller, invoice_id, now=utcnow(),
                              early_reason=body.early_reason)  # fmt: skip
    return see_other(f"/invoices/{invoice_id}#audit")


@router.post("/invoices/{invoice_id}/void")
def void_invoice(
    session: DbSession,
    caller: StaffCaller,
    invoice_id: str,
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Void the invoice, saying why."""
    caller.require(Role.BILLING)
    body = _checked(VoidRequest, {"reason": reason})
    finalize.void_invoice(session, caller, invoice_id, reason=body.reason,
                          now=utcnow())  # fmt: skip
    return see_other(f"/invoices/{invoice_id}#audit")


@router.post("/invoices/{invoice_id}/stripe-sync")
def retry_stripe_sync(session: DbSession, caller: StaffCaller, invoice_id: str) -> Response:
    """Queue the invoice's failed Stripe jobs again (or its first push), as
    `POST /api/v1/invoices/{id}/stripe-sync` does; the worker runs them."""
    caller.require(Role.BILLING)
    stripe.retry_sync(session, caller, invoice_id, now=utcnow())
    return see_other(f"/invoices/{invoice_id}#stripe")


@router.post("/invoices/{invoice_id}/credit-notes")
def credit_note(
    session: DbSession,
    caller: StaffCaller,
    invoice_id: str,
    amount: Annotated[str, Form(max_length=40)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Credit a finalized invoice, in full (no amount) or in part."""
    caller.require(Role.BILLING)
    body = _checked(CreditNoteCreate, {"amount": amount, "reason": reason})
    finalize.create_credit_note(session, caller, invoice_id, amount=body.amount,
                                reason=body.reason, now=utcnow())  # fmt: skip
    return see_other(f"/invoices/{invoice_id}#audit")


def _run_exception(
    session: DbSession, caller: Caller, exception_id: str, kind: str
) -> BillingException:
    exception = repository.get_exception(session, caller.tenant_id, exception_id)
    if exception is None or exception.type != kind or exception.invoice_id:
        raise NotFoundError(f"no {kind} exception {exception_id!r}")
    return exception


@router.post("/billing/exceptions/{exception_id}/register")
def register_customer(
    session: DbSession,
    caller: StaffCaller,
    exception_id: str,
    name: Annotated[str, Form(max_length=200)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
) -> Response:
    """Register the customer id usage arrived under; its draft is made at once."""
    caller.require(Role.BILLING)
    exception = _run_exception(session, caller, exception_id, ExceptionKind.UNREGISTERED_CUSTOMER)
    body = _checked(RegisterCustomer, {"customer_id": exception.evidence["customer_id"],
                                       "name": name, "email": email})  # fmt: skip
    review.register_customer(session, caller, exception.period,
                             customer_id=body.customer_id, name=body.name,
                             email=body.email)  # fmt: skip
    return see_other(f"/billing?period={exception.period}#unattributed")


@router.post("/billing/exceptions/{exception_id}/map", response_model=None)
def map_customer(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    exception_id: str,
    to_customer_id: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """Move the usage of an unregistered id to a registered customer (its id typed in)."""
    caller.require(Role.BILLING)
    exception = _run_exception(session, caller, exception_id, ExceptionKind.UNREGISTERED_CUSTOMER)
    to_id = to_customer_id.strip()
    refused = _unknown_customer(request, session, caller, exception, to_id)
    if refused:
        return refused
    review.map_customer(session, caller, exception.period,
                        from_id=exception.evidence["customer_id"], to_id=to_id)  # fmt: skip
    return see_other(f"/billing?period={exception.period}#unattributed")


@router.post("/billing/exceptions/{exception_id}/assign", response_model=None)
def assign_unattributed(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    exception_id: str,
    customer_id: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    """Attribute the period's customer-less traces (those the run found) to a customer."""
    caller.require(Role.BILLING)
    exception = _run_exception(session, caller, exception_id, ExceptionKind.UNATTRIBUTED_USAGE)
    to_id = customer_id.strip()
    refused = _unknown_customer(request, session, caller, exception, to_id)
    if refused:
        return refused
    review.assign_unattributed(session, caller, exception.period,
                               trace_ids=list(exception.evidence["trace_ids"]),
                               customer_id=to_id)  # fmt: skip
    return see_other(f"/billing?period={exception.period}#unattributed")


def _unknown_customer(
    request: Request,
    session: DbSession,
    caller: Caller,
    exception: BillingException,
    entered: str,
) -> Response | None:
    """None when `entered` is a registered customer's id; otherwise the billing page of
    the exception's period again (422), the reason beside the exception's customer field.
    The page lists no customers to choose from (a tenant may have tens of thousands)."""
    error = f"no customer {entered!r} is registered (the Customers page lists them)"
    if not entered:
        error = "enter the id of a registered customer"
    elif "\x00" not in entered:  # no id holds NUL (PostgreSQL text cannot): not looked up
        try:
            get_customer(session, caller, entered)
            return None
        except NotFoundError:
            pass
    query = QueryParams({"period": exception.period})
    return _billing_page(request, session, caller, exception.period, query, status=422,
                         customer_errors={exception.id: error},
                         customer_input={exception.id: entered})  # fmt: skip
