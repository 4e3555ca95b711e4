"""HTTP surface of invoicing: billing runs, drafts and review, finalize, void, credit notes,
exceptions, exports, and the tenant's billing settings."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.money import exact_minor
from agentmeter.settings import Settings
from agentmeter.tables import Customer, Invoice, utcnow
from billing_api.audit import log as audit_log
from billing_api.deps import AppSettings, DbSession, TenantId
from billing_api.errors import NotFoundError
from billing_api.invoicing import exceptions, exports, finalize, repository, review, runs
from billing_api.invoicing.leases import lease_duration, observed_status
from billing_api.invoicing.schemas import (
    AssignUnattributed,
    AuditOut,
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
from billing_api.invoicing.settings import BillingSettings, BillingSettingsUpdate, update_settings
from billing_api.invoicing.states import ExceptionStatus, RunStatus
from billing_api.web.security import page_headers

router = APIRouter(prefix="/api/v1", tags=["invoicing"])


def _actor(
    actor: Annotated[str | None, Header(alias="X-AgentMeter-Actor", max_length=200)] = None,
) -> str:
    """Who acts, for the audit log: the `X-AgentMeter-Actor` header, else "admin"."""
    return actor or "admin"


Actor = Annotated[str, Depends(_actor)]


def _invoice(session: Session, tenant_id: str, invoice_id: str) -> Invoice:
    invoice = repository.get_invoice(session, tenant_id, invoice_id)
    if invoice is None:
        raise NotFoundError(f"no invoice {invoice_id!r}")
    return invoice


def _full(session: Session, tenant_id: str, invoice_id: str) -> InvoiceOut:
    invoice = _invoice(session, tenant_id, invoice_id)
    return InvoiceOut.full(
        invoice,
        repository.lines(session, invoice.id),
        list(repository.list_exceptions(session, tenant_id, invoice_id=invoice.id)),
    )


@router.post("/billing-runs", status_code=202)
def create_run(
    body: RunCreate,
    request: Request,
    background: BackgroundTasks,
    session: DbSession,
    tenant_id: TenantId,
    settings: AppSettings,
) -> RunOut:
    """Draft every customer's invoice for a month, in the background; poll the run.
    Interrupted runs of the month (their worker died) are superseded by this one."""
    run = runs.start_run(session, tenant_id, body.period, lease=lease_duration(settings))
    engine: Engine = request.app.state.engine
    # Runs once the request's transaction, which created the run, has committed.
    background.add_task(_start_run_thread, engine, tenant_id, run.id, settings)
    return RunOut.of(run, RunStatus(run.status))


@router.post("/billing-runs/{run_id}/resume", status_code=202)
def resume_run(
    run_id: str,
    request: Request,
    background: BackgroundTasks,
    session: DbSession,
    tenant_id: TenantId,
    settings: AppSettings,
) -> RunOut:
    """Run an interrupted run again from the start (drafting converges: nothing is billed
    twice); 409 unless the run is interrupted."""
    run = runs.resume_run(session, tenant_id, run_id, now=utcnow(), lease=lease_duration(settings))
    background.add_task(_start_run_thread, request.app.state.engine, tenant_id, run.id, settings)
    return RunOut.of(run, RunStatus(run.status))


def _start_run_thread(engine: Engine, tenant_id: str, run_id: str, settings: Settings) -> None:
    threading.Thread(
        target=_run_quietly,
        args=(engine, tenant_id, run_id, lease_duration(settings)),
        name=f"run-{run_id}",
        daemon=True,
    ).start()


def _run_quietly(engine: Engine, tenant_id: str, run_id: str, lease: timedelta) -> None:
    try:
        runs.execute_run(engine, tenant_id, run_id, lease=lease)
    except Exception:  # recorded on the run (status failed) and logged by execute_run
        return


@router.get("/billing-runs/{run_id}")
def get_run(run_id: str, session: DbSession, tenant_id: TenantId, settings: AppSettings) -> RunOut:
    """The run's progress; readable while it works (reads never wait for the writer)."""
    run = repository.get_run(session, tenant_id, run_id)
    if run is None:
        raise NotFoundError(f"no billing run {run_id!r}")
    return RunOut.of(run, observed_status(run, utcnow(), lease_duration(settings)))


def _run_period(session: Session, tenant_id: str, run_id: str) -> str:
    run = repository.get_run(session, tenant_id, run_id)
    if run is None:
        raise NotFoundError(f"no billing run {run_id!r}")
    return run.period


@router.post("/billing-runs/{run_id}/register-customer")
def register_customer(
    run_id: str,
    body: RegisterCustomer,
    session: DbSession,
    tenant_id: TenantId,
    actor: Actor,
) -> InvoiceOut | None:
    """Register an unregistered customer id found by the run and re-draft its invoice."""
    period = _run_period(session, tenant_id, run_id)
    invoice = review.register_customer(
        session,
        tenant_id,
        period,
        customer_id=body.customer_id,
        name=body.name,
        email=body.email,
        actor=actor,
    )
    return None if invoice is None else _full(session, tenant_id, invoice.id)


@router.post("/billing-runs/{run_id}/map-customer")
def map_customer(
    run_id: str, body: MapCustomer, session: DbSession, tenant_id: TenantId, actor: Actor
) -> InvoiceOut | None:
    """Move usage recorded under a wrong customer id to a registered customer; re-draft."""
    period = _run_period(session, tenant_id, run_id)
    invoice = review.map_customer(
        session,
        tenant_id,
        period,
        from_id=body.from_customer_id,
        to_id=body.to_customer_id,
        actor=actor,
    )
    return None if invoice is None else _full(session, tenant_id, invoice.id)


@router.post("/billing-runs/{run_id}/assign-unattributed")
def assign_unattributed(
    run_id: str,
    body: AssignUnattributed,
    session: DbSession,
    tenant_id: TenantId,
    actor: Actor,
) -> InvoiceOut | None:
    """Attribute customer-less usage of the given traces to a customer; re-draft."""
    period = _run_period(session, tenant_id, run_id)
    invoice = review.assign_unattributed(
        session,
        tenant_id,
        period,
        trace_ids=body.trace_ids,
        customer_id=body.customer_id,
        actor=actor,
    )
    return None if invoice is None else _full(session, tenant_id, invoice.id)


@router.get("/invoices")
def list_invoices(
    session: DbSession,
    tenant_id: TenantId,
    period: str | None = None,
    status: str | None = None,
    customer_id: str | None = None,
) -> list[InvoiceOut]:
    """Invoices with their lines and exceptions (three queries, whatever their number)."""
    invoices = repository.list_invoices(
        session, tenant_id, period=period, status=status, customer_id=customer_id
    )
    ids = [i.id for i in invoices]
    lines = repository.lines_of(session, ids)
    exceptions = repository.exceptions_of(session, tenant_id, ids)
    return [InvoiceOut.full(i, lines.get(i.id, []), exceptions.get(i.id, [])) for i in invoices]


@router.get("/invoices/{invoice_id}")
def get_invoice(invoice_id: str, session: DbSession, tenant_id: TenantId) -> InvoiceOut:
    return _full(session, tenant_id, invoice_id)


@router.post("/invoices/{invoice_id}/lines", status_code=201)
def add_line(
    invoice_id: str, body: LineCreate, session: DbSession, tenant_id: TenantId, actor: Actor
) -> InvoiceOut:
    review.add_line(
        session,
        tenant_id,
        invoice_id,
        description=body.description,
        quantity=body.quantity,
        unit_price=body.unit_price,
        discount=body.discount,
        reason=body.reason,
        actor=actor,
    )
    return _full(session, tenant_id, invoice_id)


@router.patch("/invoices/{invoice_id}/lines/{line_id}")
def adjust_line(
    invoice_id: str,
    line_id: str,
    body: LineAdjust,
    session: DbSession,
    tenant_id: TenantId,
    actor: Actor,
) -> InvoiceOut:
    invoice = _invoice(session, tenant_id, invoice_id)
    review.adjust_line(
        session,
        tenant_id,
        invoice_id,
        line_id,
        amount_minor=exact_minor(body.amount, invoice.currency),
        reason=body.reason,
        actor=actor,
    )
    return _full(session, tenant_id, invoice_id)


@router.delete("/invoices/{invoice_id}/lines/{line_id}")
def remove_line(
    invoice_id: str,
    line_id: str,
    session: DbSession,
    tenant_id: TenantId,
    actor: Actor,
    reason: str = "",
) -> InvoiceOut:
    review.remove_line(session, tenant_id, invoice_id, line_id, reason=reason, actor=actor)
    return _full(session, tenant_id, invoice_id)


@router.post("/invoices/{invoice_id}/rerate")
def rerate(invoice_id: str, session: DbSession, tenant_id: TenantId, actor: Actor) -> InvoiceOut:
    review.rerate(session, tenant_id, invoice_id, actor=actor)
    return _full(session, tenant_id, invoice_id)


@router.post("/invoices/{invoice_id}/finalize")
def finalize_invoice(
    invoice_id: str,
    session: DbSession,
    tenant_id: TenantId,
    actor: Actor,
    body: FinalizeRequest | None = None,
) -> InvoiceOut:
    """Number and freeze a draft. Before its period ends: 409, unless the body says
    `{"before_period_end": true, "reason": …}` (kept in the audit log)."""
    finalize.finalize_invoice(
        session,
        tenant_id,
        invoice_id,
        actor=actor,
        now=utcnow(),
        early_reason=None if body is None else body.early_reason,
    )
    return _full(session, tenant_id, invoice_id)


@router.post("/invoices/{invoice_id}/void")
def void_invoice(
    invoice_id: str, body: VoidRequest, session: DbSession, tenant_id: TenantId, actor: Actor
) -> InvoiceOut:
    finalize.void_invoice(
        session, tenant_id, invoice_id, reason=body.reason, actor=actor, now=utcnow()
    )
    return _full(session, tenant_id, invoice_id)


@router.post("/invoices/{invoice_id}/credit-notes", status_code=201)
def create_credit_note(
    invoice_id: str,
    body: CreditNoteCreate,
    session: DbSession,
    tenant_id: TenantId,
    actor: Actor,
) -> CreditNoteOut:
    invoice = _invoice(session, tenant_id, invoice_id)
    note = finalize.create_credit_note(
        session,
        tenant_id,
        invoice_id,
        amount_minor=None if body.amount is None else exact_minor(body.amount, invoice.currency),
        reason=body.reason,
        actor=actor,
        now=utcnow(),
    )
    return CreditNoteOut.model_validate(note)


@router.get("/invoices/{invoice_id}/credit-notes")
def list_credit_notes(
    invoice_id: str, session: DbSession, tenant_id: TenantId
) -> list[CreditNoteOut]:
    invoice = _invoice(session, tenant_id, invoice_id)
    return [CreditNoteOut.model_validate(n) for n in repository.credit_notes(session, invoice.id)]


@router.get("/invoices/{invoice_id}/audit")
def audit(invoice_id: str, session: DbSession, tenant_id: TenantId) -> list[AuditOut]:
    invoice = _invoice(session, tenant_id, invoice_id)
    return [AuditOut.model_validate(a) for a in audit_log.trail(session, tenant_id, invoice.id)]


@router.get("/invoices/{invoice_id}/export.json")
def export_json(invoice_id: str, session: DbSession, tenant_id: TenantId) -> CustomerInvoiceOut:
    invoice = _invoice(session, tenant_id, invoice_id)
    return exports.as_json(invoice, repository.lines(session, invoice.id))


@router.get("/invoices/{invoice_id}/export.csv", response_class=Response)
def export_csv(invoice_id: str, session: DbSession, tenant_id: TenantId) -> Response:
    invoice = _invoice(session, tenant_id, invoice_id)
    body = exports.as_csv(invoice, repository.lines(session, invoice.id))
    name = invoice.number or invoice.id
    return Response(
        body,
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"'},
    )


@router.get("/invoices/{invoice_id}/invoice.html", response_class=HTMLResponse)
def export_html(invoice_id: str, session: DbSession, tenant_id: TenantId) -> HTMLResponse:
    invoice = _invoice(session, tenant_id, invoice_id)
    tenant = repository.tenant(session, tenant_id)
    customer = session.get(Customer, (tenant_id, invoice.customer_id))
    html = exports.as_html(invoice, repository.lines(session, invoice.id), tenant, customer)
    return HTMLResponse(html, headers=page_headers(html=html))


@router.get("/exceptions")
def list_exceptions(
    session: DbSession,
    tenant_id: TenantId,
    period: str | None = None,
    invoice_id: str | None = None,
    status: str | None = None,
) -> list[ExceptionOut]:
    found = repository.list_exceptions(
        session, tenant_id, period=period, invoice_id=invoice_id, status=status
    )
    return [ExceptionOut.of(e) for e in found]


@router.patch("/exceptions/{exception_id}")
def update_exception(
    exception_id: str,
    body: ExceptionUpdate,
    session: DbSession,
    tenant_id: TenantId,
    actor: Actor,
) -> ExceptionOut:
    exception = exceptions.set_exception_status(
        session,
        tenant_id,
        exception_id,
        status=ExceptionStatus(body.status),
        note=body.note,
        actor=actor,
        now=utcnow(),
    )
    return ExceptionOut.of(exception)


@router.get("/billing-settings")
def get_billing_settings(session: DbSession, tenant_id: TenantId) -> BillingSettings:
    return BillingSettings.of(repository.tenant(session, tenant_id))


@router.patch("/billing-settings")
def patch_billing_settings(
    body: BillingSettingsUpdate, session: DbSession, tenant_id: TenantId, actor: Actor
) -> BillingSettings:
    return BillingSettings.of(update_settings(session, tenant_id, body, actor=actor))
