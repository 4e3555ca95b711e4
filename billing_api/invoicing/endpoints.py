"""HTTP surface of invoicing: billing runs, drafts and review, finalize, void, credit notes,
exceptions, exports, and the tenant's billing settings. Translation only: bodies in,
services called with the caller, their values out."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import HTMLResponse, Response

from agentmeter.clock import utcnow
from billing_api.auth import AdminCaller
from billing_api.deps import AppSettings, DbSession
from billing_api.invoicing import exceptions, finalize, review, runs, service
from billing_api.invoicing.leases import lease_duration
from billing_api.invoicing.schemas import (
    AssignUnattributed,
    AuditOut,
    BillingSettingsOut,
    BillingSettingsUpdate,
    CreditNoteCreate,
    CreditNoteOut,
    CustomerInvoiceOut,
    ExceptionOut,
    ExceptionUpdate,
    FinalizeRequest,
    InvoiceOut,
    LineAdjust,
    LineCreate,
    MapCustomer,
    RegisterCustomer,
    RunCreate,
    RunOut,
    VoidRequest,
)
from billing_api.invoicing.settings import billing_settings, update_settings
from billing_api.invoicing.states import ExceptionStatus
from billing_api.web.security import page_headers

router = APIRouter(prefix="/api/v1", tags=["invoicing"])


def _invoice_out(session: DbSession, caller: AdminCaller, invoice_id: str) -> InvoiceOut:
    return InvoiceOut.of(service.get_invoice(session, caller, invoice_id))


@router.post("/billing-runs", status_code=202)
def create_run(
    body: RunCreate,
    request: Request,
    background: BackgroundTasks,
    session: DbSession,
    caller: AdminCaller,
    settings: AppSettings,
) -> RunOut:
    """Draft every customer's invoice for a month, in a background job; poll the run.
    Interrupted runs of the month (their worker died) are superseded by this one."""
    run = runs.start_run(session, caller, body.period, lease=lease_duration(settings))
    # The job worker is woken once the request's transaction, which queued the job, commits.
    background.add_task(request.app.state.jobs.wake)
    return RunOut.of(run)


@router.post("/billing-runs/{run_id}/resume", status_code=202)
def resume_run(
    run_id: str,
    request: Request,
    background: BackgroundTasks,
    session: DbSession,
    caller: AdminCaller,
    settings: AppSettings,
) -> RunOut:
    """Run an interrupted run again from the start (drafting converges: nothing is billed
    twice); 409 unless the run is interrupted."""
    run = runs.resume_run(session, caller, run_id, now=utcnow(), lease=lease_duration(settings))
    background.add_task(request.app.state.jobs.wake)
    return RunOut.of(run)


@router.get("/billing-runs/{run_id}")
def get_run(run_id: str, session: DbSession, caller: AdminCaller, settings: AppSettings) -> RunOut:
    """The run's progress; readable while it works (reads never wait for the writer)."""
    return RunOut.of(
        runs.get_run(session, caller, run_id, now=utcnow(), lease=lease_duration(settings))
    )


@router.post("/billing-runs/{run_id}/register-customer")
def register_customer(
    run_id: str, body: RegisterCustomer, session: DbSession, caller: AdminCaller
) -> InvoiceOut | None:
    """Register an unregistered customer id found by the run and re-draft its invoice."""
    period = runs.run_period(session, caller, run_id)
    invoice = review.register_customer(
        session, caller, period, customer_id=body.customer_id, name=body.name, email=body.email
    )
    return None if invoice is None else _invoice_out(session, caller, invoice.id)


@router.post("/billing-runs/{run_id}/map-customer")
def map_customer(
    run_id: str, body: MapCustomer, session: DbSession, caller: AdminCaller
) -> InvoiceOut | None:
    """Move usage recorded under a wrong customer id to a registered customer; re-draft."""
    period = runs.run_period(session, caller, run_id)
    invoice = review.map_customer(
        session, caller, period, from_id=body.from_customer_id, to_id=body.to_customer_id
    )
    return None if invoice is None else _invoice_out(session, caller, invoice.id)


@router.post("/billing-runs/{run_id}/assign-unattributed")
def assign_unattributed(
    run_id: str, body: AssignUnattributed, session: DbSession, caller: AdminCaller
) -> InvoiceOut | None:
    """Attribute customer-less usage of the given traces to a customer; re-draft."""
    period = runs.run_period(session, caller, run_id)
    invoice = review.assign_unattributed(
        session, caller, period, trace_ids=body.trace_ids, customer_id=body.customer_id
    )
    return None if invoice is None else _invoice_out(session, caller, invoice.id)


@router.get("/invoices")
def list_invoices(
    session: DbSession,
    caller: AdminCaller,
    period: str | None = None,
    status: str | None = None,
    customer_id: str | None = None,
) -> list[InvoiceOut]:
    """Invoices with their lines and exceptions (three queries, whatever their number)."""
    found = service.list_invoices(
        session, caller, period=period, status=status, customer_id=customer_id
    )
    return [InvoiceOut.of(invoice) for invoice in found]


@router.get("/invoices/{invoice_id}")
def get_invoice(invoice_id: str, session: DbSession, caller: AdminCaller) -> InvoiceOut:
    return _invoice_out(session, caller, invoice_id)


@router.post("/invoices/{invoice_id}/lines", status_code=201)
def add_line(
    invoice_id: str, body: LineCreate, session: DbSession, caller: AdminCaller
) -> InvoiceOut:
    review.add_line(
        session,
        caller,
        invoice_id,
        description=body.description,
        quantity=body.quantity,
        unit_price=body.unit_price,
        discount=body.discount,
        reason=body.reason,
    )
    return _invoice_out(session, caller, invoice_id)


@router.patch("/invoices/{invoice_id}/lines/{line_id}")
def adjust_line(
    invoice_id: str, line_id: str, body: LineAdjust, session: DbSession, caller: AdminCaller
) -> InvoiceOut:
    review.adjust_line(session, caller, invoice_id, line_id, amount=body.amount, reason=body.reason)
    return _invoice_out(session, caller, invoice_id)


@router.delete("/invoices/{invoice_id}/lines/{line_id}")
def remove_line(
    invoice_id: str, line_id: str, session: DbSession, caller: AdminCaller, reason: str = ""
) -> InvoiceOut:
    review.remove_line(session, caller, invoice_id, line_id, reason=reason)
    return _invoice_out(session, caller, invoice_id)


@router.post("/invoices/{invoice_id}/rerate")
def rerate(invoice_id: str, session: DbSession, caller: AdminCaller) -> InvoiceOut:
    review.rerate(session, caller, invoice_id)
    return _invoice_out(session, caller, invoice_id)


@router.post("/invoices/{invoice_id}/finalize")
def finalize_invoice(
    invoice_id: str, session: DbSession, caller: AdminCaller, body: FinalizeRequest | None = None
) -> InvoiceOut:
    """Number and freeze a draft. Before its period ends: 409, unless the body says
    `{"before_period_end": true, "reason": …}` (kept in the audit log)."""
    finalize.finalize_invoice(
        session,
        caller,
        invoice_id,
        now=utcnow(),
        early_reason=None if body is None else body.early_reason,
    )
    return _invoice_out(session, caller, invoice_id)


@router.post("/invoices/{invoice_id}/void")
def void_invoice(
    invoice_id: str, body: VoidRequest, session: DbSession, caller: AdminCaller
) -> InvoiceOut:
    finalize.void_invoice(session, caller, invoice_id, reason=body.reason, now=utcnow())
    return _invoice_out(session, caller, invoice_id)


@router.post("/invoices/{invoice_id}/credit-notes", status_code=201)
def create_credit_note(
    invoice_id: str, body: CreditNoteCreate, session: DbSession, caller: AdminCaller
) -> CreditNoteOut:
    note = finalize.create_credit_note(
        session, caller, invoice_id, amount=body.amount, reason=body.reason, now=utcnow()
    )
    return CreditNoteOut.model_validate(note)


@router.get("/invoices/{invoice_id}/credit-notes")
def list_credit_notes(
    invoice_id: str, session: DbSession, caller: AdminCaller
) -> list[CreditNoteOut]:
    found = service.credit_notes(session, caller, invoice_id)
    return [CreditNoteOut.model_validate(note) for note in found]


@router.get("/invoices/{invoice_id}/audit")
def audit(invoice_id: str, session: DbSession, caller: AdminCaller) -> list[AuditOut]:
    found = service.audit_trail(session, caller, invoice_id)
    return [AuditOut.model_validate(entry) for entry in found]


@router.get("/invoices/{invoice_id}/export.json")
def export_json(invoice_id: str, session: DbSession, caller: AdminCaller) -> CustomerInvoiceOut:
    return CustomerInvoiceOut.of(service.customer_view(session, caller, invoice_id))


@router.get("/invoices/{invoice_id}/export.csv", response_class=Response)
def export_csv(invoice_id: str, session: DbSession, caller: AdminCaller) -> Response:
    document = service.export_invoice(session, caller, invoice_id, "csv")
    return Response(
        document.content,
        media_type=document.media_type,
        headers={"content-disposition": f'attachment; filename="{document.filename}"'},
    )


@router.get("/invoices/{invoice_id}/invoice.html", response_class=HTMLResponse)
def export_html(invoice_id: str, session: DbSession, caller: AdminCaller) -> HTMLResponse:
    html = service.export_invoice(session, caller, invoice_id, "html").content
    return HTMLResponse(html, headers=page_headers(html=html))


@router.get("/exceptions")
def list_exceptions(
    session: DbSession,
    caller: AdminCaller,
    period: str | None = None,
    invoice_id: str | None = None,
    status: str | None = None,
) -> list[ExceptionOut]:
    found = service.list_exceptions(
        session, caller, period=period, invoice_id=invoice_id, status=status
    )
    return [ExceptionOut.of(e) for e in found]


@router.patch("/exceptions/{exception_id}")
def update_exception(
    exception_id: str, body: ExceptionUpdate, session: DbSession, caller: AdminCaller
) -> ExceptionOut:
    exception = exceptions.set_exception_status(
        session,
        caller,
        exception_id,
        status=ExceptionStatus(body.status),
        note=body.note,
        now=utcnow(),
    )
    return ExceptionOut.of(exception)


@router.get("/billing-settings")
def get_billing_settings(session: DbSession, caller: AdminCaller) -> BillingSettingsOut:
    return BillingSettingsOut.model_validate(billing_settings(session, caller))


@router.patch("/billing-settings")
def patch_billing_settings(
    body: BillingSettingsUpdate, session: DbSession, caller: AdminCaller
) -> BillingSettingsOut:
    changed = update_settings(session, caller, body.model_dump(exclude_unset=True))
    return BillingSettingsOut.model_validate(changed)
