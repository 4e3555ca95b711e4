"""All SQL of invoicing: invoices and lines, exceptions, runs, numbering."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Select, and_, delete, func, or_, select, update
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from agentmeter.clock import utcnow
from agentmeter.db import dialect_insert
from agentmeter.tables import (
    BillingException,
    BillingRun,
    CreditNote,
    Invoice,
    InvoiceLine,
    InvoiceSequence,
    Tenant,
    UsageCustomer,
    UsageRow,
    UsageTenant,
    span_bills,
    to_unix_nano,
    usage_spans,
)
from billing_api.invoicing.states import (
    ExceptionStatus,
    InvoiceStatus,
    LineKind,
    RunStatus,
    Severity,
)
from billing_api.periods import Period


def new_id() -> str:
    """A new row's id."""
    return uuid.uuid4().hex


def _locked(session: Session, statement: Select[Invoice]) -> Invoice | None:
    # Row lock on PostgreSQL; SQLite has one writer at a time already.
    return session.scalars(statement.with_for_update()).first()


def lock_tenant(session: Session, tenant_id: str) -> None:
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())


def tenant(session: Session, tenant_id: str) -> Tenant:
    found = session.get(Tenant, tenant_id)
    assert found is not None, f"no tenant {tenant_id}"
    return found


def lock_invoices_for_period(
    session: Session,
    tenant_id: str,
    period: Period,
    currencies: dict[str, str],
    *,
    new_id: Callable[[], str],
) -> dict[str, Invoice]:
    """Each customer's invoice for the period (customer → currency given), created as an
    empty draft where missing, all locked for update.

    INSERT … ON CONFLICT DO NOTHING on (tenant, customer, period start) makes concurrent
    billing runs converge on one invoice per customer instead of drafting two; customers
    are locked in id order, so two runs never deadlock.
    """
    if not currencies:
        return {}
    # One statement executed for many rows (not one VALUES list per call): compiled once
    # and cached, which a 500-row literal VALUES list never is.
    session.execute(
        dialect_insert(session, Invoice).on_conflict_do_nothing(
            index_elements=["tenant_id", "customer_id", "period_start"]
        ),
        [
            {
                "id": new_id(),
                "tenant_id": tenant_id,
                "customer_id": customer_id,
                "period": period.label,
                "period_start": period.start,
                "period_end": period.end,
                "currency": currency,
                "status": InvoiceStatus.DRAFT,
                "versions": [],
                "subtotal_minor": 0,
                "credits_minor": 0,
                "total_minor": 0,
                "void_reason": "",
                "created_at": utcnow(),
            }
            for customer_id, currency in sorted(currencies.items())
        ],
    )
    found = session.scalars(
        select(Invoice)
        .where(
            Invoice.tenant_id == tenant_id,
            Invoice.period_start == period.start,
            Invoice.customer_id.in_(list(currencies)),
        )
        .order_by(Invoice.customer_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return {invoice.customer_id: invoice for invoice in found}


def lines_of(session: Session, invoice_ids: Sequence[str]) -> dict[str, list[InvoiceLine]]:
    found: dict[str, list[InvoiceLine]] = {}
    if invoice_ids:
        query = (
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id.in_(invoice_ids))
            .order_by(InvoiceLine.invoice_id, InvoiceLine.position)
        )
        for line in session.scalars(query):
            found.setdefault(line.invoice_id, []).append(line)
    return found


def exceptions_in_scopes(
    session: Session, tenant_id: str, scopes: Sequence[str]
) -> dict[str, list[BillingException]]:
    found: dict[str, list[BillingException]] = {}
    if scopes:
        query = select(BillingException).where(
            BillingException.tenant_id == tenant_id, BillingException.scope.in_(scopes)
        )
        for exception in session.scalars(query):
            found.setdefault(exception.scope, []).append(exception)
    return found


def lock_invoice(session: Session, tenant_id: str, invoice_id: str) -> Invoice | None:
    return _locked(
        session, select(Invoice).where(Invoice.tenant_id == tenant_id, Invoice.id == invoice_id)
    )


def get_invoice(session: Session, tenant_id: str, invoice_id: str) -> Invoice | None:
    return session.scalars(
        select(Invoice).where(Invoice.tenant_id == tenant_id, Invoice.id == invoice_id)
    ).first()


def list_invoices(
    session: Session,
    tenant_id: str,
    *,
    period: str | None = None,
    status: str | None = None,
    customer_id: str | None = None,
) -> Sequence[Invoice]:
    query = select(Invoice).where(Invoice.tenant_id == tenant_id)
    if period:
        query = query.where(Invoice.period == period)
    if status:
        query = query.where(Invoice.status == status)
    if customer_id:
        query = query.where(Invoice.customer_id == customer_id)
    return session.scalars(query.order_by(Invoice.period_start, Invoice.customer_id)).all()


def subtotals_by_customer(
    session: Session, tenant_id: str, period: str, status: str
) -> dict[str, int]:
    """Customer id → the summed subtotals of its invoices of `period` in `status`."""
    query = (
        select(Invoice.customer_id, func.sum(Invoice.subtotal_minor))
        .where(Invoice.tenant_id == tenant_id, Invoice.period == period, Invoice.status == status)
        .group_by(Invoice.customer_id)
    )
    return {customer_id: int(total) for customer_id, total in session.execute(query)}


def lines(session: Session, invoice_id: str) -> list[InvoiceLine]:
    return list(
        session.scalars(
            select(InvoiceLine)
            .where(InvoiceLine.invoice_id == invoice_id)
            .order_by(InvoiceLine.position)
        )
    )


def delete_drafts_of(session: Session, tenant_id: str, customer_id: str) -> None:
    """Delete a customer id's drafts (their usage moved elsewhere) and their exceptions."""
    drafts = select(Invoice.id).where(
        Invoice.tenant_id == tenant_id,
        Invoice.customer_id == customer_id,
        Invoice.status == InvoiceStatus.DRAFT,
    )
    ids = list(session.scalars(drafts))
    if not ids:
        return
    session.execute(delete(InvoiceLine).where(InvoiceLine.invoice_id.in_(ids)))
    session.execute(delete(BillingException).where(BillingException.invoice_id.in_(ids)))
    session.execute(delete(Invoice).where(Invoice.id.in_(ids)))


def delete_lines(session: Session, line_ids: Sequence[str]) -> None:
    if line_ids:
        session.execute(delete(InvoiceLine).where(InvoiceLine.id.in_(line_ids)))


class _UnixNanos(FunctionElement[int]):
    """A stored UTC timestamp as integer Unix nanoseconds (as usage times are kept), so
    one query can compare invoice periods with usage rows on either database."""

    type = BigInteger()
    name = "unix_nanos"
    inherit_cache = True


@compiles(_UnixNanos, "postgresql")
def _unix_nanos_postgresql(element: _UnixNanos, compiler: SQLCompiler, **kw: Any) -> str:
    # EXTRACT gives the exact numeric seconds of a timestamp without time zone.
    column = compiler.process(element.clauses, **kw)
    return f"CAST(EXTRACT(EPOCH FROM {column}) * 1000000000 AS BIGINT)"


@compiles(_UnixNanos, "sqlite")
def _unix_nanos_sqlite(element: _UnixNanos, compiler: SQLCompiler, **kw: Any) -> str:
    # Stored as text "YYYY-MM-DD HH:MM:SS.ffffff": whole seconds, then the microseconds.
    column = compiler.process(element.clauses, **kw)
    return (
        f"(CAST(strftime('%s', {column}) AS INTEGER) * 1000000000"
        f" + CAST(substr({column} || '.000000', 21, 6) AS INTEGER) * 1000)"
    )


@dataclass(frozen=True, slots=True)
class LateUsage:
    """A finalized invoice whose period received usage after it was finalized."""

    invoice: Invoice
    records: int
    spans: int


def late_usage(
    session: Session, tenant_id: str, before: datetime, customer_ids: Sequence[str] | None = None
) -> dict[str, list[LateUsage]]:
    """Finalized invoices of periods starting before `before` (of all customers, or the
    given ones) with usage received after they were finalized that is not yet settled, by
    customer, in one query.

    Late usage is settled once a finalized invoice carries a prior-period line for that
    period computed after it arrived (compared with that invoice's `rated_at`); until then
    it is found on every run. `records`/`spans` count all usage received after the
    invoice was finalized.
    """
    adjusted = (
        select(
            Invoice.customer_id,
            InvoiceLine.adjusts_period,
            func.max(Invoice.rated_at).label("settled_at"),
        )
        .join(InvoiceLine, InvoiceLine.invoice_id == Invoice.id)
        .where(
            Invoice.tenant_id == tenant_id,
            Invoice.status == InvoiceStatus.FINALIZED,
            InvoiceLine.kind == LineKind.PRIOR_PERIOD,
        )
        .group_by(Invoice.customer_id, InvoiceLine.adjusts_period)
        .subquery()
    )
    settled_at = func.coalesce(adjusted.c.settled_at, Invoice.finalized_at)
    query = (
        select(Invoice, func.count(), func.count(func.distinct(UsageRow.span_id)))
        .join(
            UsageRow,
            and_(
                UsageRow.tenant_id == Invoice.tenant_id,
                UsageRow.customer_id == Invoice.customer_id,
                UsageRow.time_unix_nano >= _UnixNanos(Invoice.period_start),
                UsageRow.time_unix_nano < _UnixNanos(Invoice.period_end),
                UsageRow.received_unix_nano > _UnixNanos(Invoice.finalized_at),
                UsageRow.billed(),
            ),
        )
        .outerjoin(
            adjusted,
            and_(
                adjusted.c.customer_id == Invoice.customer_id,
                adjusted.c.adjusts_period == Invoice.period,
            ),
        )
        .where(
            Invoice.tenant_id == tenant_id,
            Invoice.status == InvoiceStatus.FINALIZED,
            Invoice.period_start < before,
        )
        .group_by(Invoice.id, adjusted.c.settled_at)
        .having(func.max(UsageRow.received_unix_nano) > _UnixNanos(settled_at))
        .order_by(Invoice.customer_id, Invoice.period_start)
    )
    if customer_ids is not None:
        query = query.where(Invoice.customer_id.in_(customer_ids))
    found: dict[str, list[LateUsage]] = {}
    for invoice, records, spans in session.execute(query):
        found.setdefault(invoice.customer_id, []).append(LateUsage(invoice, records, spans))
    return found


def customers_with_usage(
    session: Session, tenant_id: str, start: datetime, end: datetime
) -> set[str]:
    """Customer ids (not empty) with billed usage in [start, end).

    From the span tables, not the `usage_records` view: the distinct customers of a
    tenant's month of spans, without turning each span into its records first."""
    spans = usage_spans.c
    customers = UsageCustomer.__table__.c
    query = (
        select(customers.customer_id)
        .join(usage_spans, spans.customer_key == customers.key)
        .join(UsageTenant, UsageTenant.key == spans.tenant_key)
        .where(
            UsageTenant.tenant_id == tenant_id,
            customers.customer_id != "",
            spans.time_unix_nano >= to_unix_nano(start),
            spans.time_unix_nano < to_unix_nano(end),
            span_bills(),
        )
        .distinct()
    )
    return set(session.scalars(query))


def billed_prior_period_adjustments(
    session: Session, tenant_id: str, customer_id: str, period: str, exclude_invoice_id: str
) -> int:
    """What finalized invoices already billed as late-usage adjustments for `period`."""
    total = session.scalar(
        select(func.coalesce(func.sum(InvoiceLine.amount_minor), 0))
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(
            Invoice.tenant_id == tenant_id,
            Invoice.customer_id == customer_id,
            Invoice.status == InvoiceStatus.FINALIZED,
            Invoice.id != exclude_invoice_id,
            InvoiceLine.kind == LineKind.PRIOR_PERIOD,
            InvoiceLine.adjusts_period == period,
        )
    )
    return int(total or 0)


def usage_history(
    session: Session, tenant_id: str, customer_ids: Sequence[str], starts: Sequence[datetime]
) -> list[tuple[str, dict[str, int]]]:
    """(customer, usage per meter) from the customers' invoices of the periods starting
    at `starts` (void ones included: the usage happened)."""
    if not customer_ids:
        return []
    rows = session.execute(
        select(Invoice.customer_id, Invoice.usage_micros).where(
            Invoice.tenant_id == tenant_id,
            Invoice.customer_id.in_(customer_ids),
            Invoice.period_start.in_(starts),
        )
    )
    return [(customer_id, dict(usage or {})) for customer_id, usage in rows]


def unattributed_usage(
    session: Session, tenant_id: str, start: datetime, end: datetime
) -> tuple[int, int, list[str]]:
    """(records, quantity micros, up to 20 trace ids) of customer-less usage in the period."""
    where = (
        UsageRow.tenant_id == tenant_id,
        UsageRow.customer_id == "",
        UsageRow.time_unix_nano >= to_unix_nano(start),
        UsageRow.time_unix_nano < to_unix_nano(end),
        UsageRow.billed(),
    )
    count, quantity = session.execute(
        select(func.count(), func.coalesce(func.sum(UsageRow.quantity_micros), 0)).where(*where)
    ).one()
    traces = session.scalars(select(UsageRow.trace_id).where(*where).distinct().limit(20)).all()
    return int(count), int(quantity), list(traces)


def next_number(session: Session, tenant_id: str, kind: str, year: int) -> int:
    """The next number of a gapless per-tenant, per-kind, per-year sequence.

    The upsert takes the sequence row's lock until the caller's transaction ends, so
    concurrent finalizations queue here and a rolled-back one gives its number back.
    """
    statement = (
        dialect_insert(session, InvoiceSequence)
        .values(tenant_id=tenant_id, kind=kind, year=year, last_number=1)
        .on_conflict_do_update(
            index_elements=["tenant_id", "kind", "year"],
            set_={"last_number": InvoiceSequence.last_number + 1},
        )
        .returning(InvoiceSequence.last_number)
    )
    number = session.execute(statement).scalar_one()
    return int(number)


def exceptions_in_scope(session: Session, tenant_id: str, scope: str) -> list[BillingException]:
    return list(
        session.scalars(
            select(BillingException).where(
                BillingException.tenant_id == tenant_id, BillingException.scope == scope
            )
        )
    )


def open_blocking(session: Session, tenant_id: str, invoice_id: str) -> list[BillingException]:
    return list(
        session.scalars(
            select(BillingException).where(
                BillingException.tenant_id == tenant_id,
                BillingException.invoice_id == invoice_id,
                BillingException.severity == Severity.BLOCKING,
                BillingException.status == ExceptionStatus.OPEN,
            )
        )
    )


def list_exceptions(
    session: Session,
    tenant_id: str,
    *,
    period: str | None = None,
    invoice_id: str | None = None,
    status: str | None = None,
) -> Sequence[BillingException]:
    query = select(BillingException).where(BillingException.tenant_id == tenant_id)
    if period:
        query = query.where(BillingException.period == period)
    if invoice_id:
        query = query.where(BillingException.invoice_id == invoice_id)
    if status:
        query = query.where(BillingException.status == status)
    return session.scalars(query.order_by(BillingException.created_at)).all()


def exceptions_of(
    session: Session, tenant_id: str, invoice_ids: Sequence[str]
) -> dict[str, list[BillingException]]:
    """The exceptions of each of these invoices, in one query."""
    found: dict[str, list[BillingException]] = {}
    if invoice_ids:
        query = (
            select(BillingException)
            .where(
                BillingException.tenant_id == tenant_id,
                BillingException.invoice_id.in_(invoice_ids),
            )
            .order_by(BillingException.created_at)
        )
        for exception in session.scalars(query):
            assert exception.invoice_id is not None
            found.setdefault(exception.invoice_id, []).append(exception)
    return found


def get_exception(session: Session, tenant_id: str, exception_id: str) -> BillingException | None:
    return session.scalars(
        select(BillingException).where(
            BillingException.tenant_id == tenant_id, BillingException.id == exception_id
        )
    ).first()


def credit_notes(session: Session, invoice_id: str) -> Sequence[CreditNote]:
    return session.scalars(
        select(CreditNote)
        .where(CreditNote.invoice_id == invoice_id)
        .order_by(CreditNote.created_at)
    ).all()


def get_run(session: Session, tenant_id: str, run_id: str) -> BillingRun | None:
    return session.scalars(
        select(BillingRun).where(BillingRun.tenant_id == tenant_id, BillingRun.id == run_id)
    ).first()


def claim_run(
    session: Session, tenant_id: str, run_id: str, holder: str, now: datetime, lease: timedelta
) -> bool:
    """Take the lease of a running run that nobody holds, or whose holder's lease lapsed."""
    result = session.execute(
        update(BillingRun)
        .where(
            BillingRun.tenant_id == tenant_id,
            BillingRun.id == run_id,
            BillingRun.status == RunStatus.RUNNING,
            or_(
                BillingRun.holder == "",
                BillingRun.heartbeat_at.is_(None),
                BillingRun.heartbeat_at < now - lease,
            ),
        )
        .values(holder=holder, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def renew_run_lease(
    session: Session, tenant_id: str, run_id: str, holder: str, now: datetime
) -> bool:
    """Renew the lease `holder` holds on a running run; False if it holds it no more."""
    result = session.execute(
        update(BillingRun)
        .where(
            BillingRun.tenant_id == tenant_id,
            BillingRun.id == run_id,
            BillingRun.holder == holder,
            BillingRun.status == RunStatus.RUNNING,
        )
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def running_runs(session: Session, tenant_id: str, period: str) -> Sequence[BillingRun]:
    """The tenant's runs of `period` still marked running (live or not)."""
    return session.scalars(
        select(BillingRun).where(
            BillingRun.tenant_id == tenant_id,
            BillingRun.period == period,
            BillingRun.status == RunStatus.RUNNING,
        )
    ).all()


def count_period_invoices(
    session: Session, tenant_id: str, period: str, statuses: Sequence[str]
) -> int:
    """How many of the period's invoices `page_period_invoices` pages through."""
    query = select(func.count()).select_from(Invoice)
    return session.scalar(query.where(_of_period(tenant_id, period, statuses))) or 0


def page_period_invoices(
    session: Session,
    tenant_id: str,
    period: str,
    statuses: Sequence[str],
    *,
    offset: int,
    limit: int,
) -> Sequence[Invoice]:
    """The period's invoices in these statuses by customer id, `limit` of them from
    `offset`."""
    query = (
        select(Invoice)
        .where(_of_period(tenant_id, period, statuses))
        .order_by(Invoice.customer_id, Invoice.id)
        .offset(offset)
        .limit(limit)
    )
    return session.scalars(query).all()


def _of_period(tenant_id: str, period: str, statuses: Sequence[str]) -> ColumnElement[bool]:
    return and_(
        Invoice.tenant_id == tenant_id, Invoice.period == period, Invoice.status.in_(statuses)
    )


def run_exceptions(
    session: Session, tenant_id: str, period: str, status: str
) -> Sequence[BillingException]:
    """The period's exceptions of no invoice (those a run raised about usage to attribute)."""
    query = select(BillingException).where(
        BillingException.tenant_id == tenant_id,
        BillingException.period == period,
        BillingException.invoice_id.is_(None),
        BillingException.status == status,
    )
    return session.scalars(query.order_by(BillingException.created_at)).all()
