"""Invoices as callers see them: frozen values built from the rows, with the builder's
internal figures (`internal`) only when the caller may see them (see `service`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from agentmeter.tables import BillingException, Invoice, InvoiceLine
from billing_api.invoicing.states import InvoiceStatus, LineKind


@dataclass(frozen=True, slots=True)
class LineInternals:
    """How a line was rated, and what it cost: staff only."""

    component_id: str | None
    charge: str | None
    version: int | None
    override_id: str | None
    rated_amount_minor: int | None
    adjustment_reason: str
    provider_cost_minor: int | None
    margin_minor: int | None
    adjusts_period: str | None
    details: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LineView:
    id: str
    kind: LineKind
    description: str
    meter: str | None
    quantity: Decimal
    unit_price: Decimal | None
    per_units: int
    amount_minor: int
    internal: LineInternals | None


@dataclass(frozen=True, slots=True)
class ExceptionView:
    """A billing exception as reviewers see it."""

    id: str
    invoice_id: str | None
    period: str
    customer_id: str
    type: str
    severity: str
    status: str
    message: str
    evidence: dict[str, Any]
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: str
    note: str

    @classmethod
    def of(cls, exception: BillingException) -> ExceptionView:
        return cls(
            id=exception.id,
            invoice_id=exception.invoice_id,
            period=exception.period,
            customer_id=exception.customer_id,
            type=exception.type,
            severity=exception.severity,
            status=exception.status,
            message=exception.message,
            evidence=exception.evidence,
            created_at=exception.created_at,
            resolved_at=exception.resolved_at,
            resolved_by=exception.resolved_by,
            note=exception.note,
        )


@dataclass(frozen=True, slots=True)
class InvoiceInternals:
    """The builder's side of an invoice: staff only."""

    price_book_id: str | None
    versions: list[int]
    provider_cost_minor: int | None
    margin_minor: int | None
    voided_at: datetime | None
    void_reason: str
    exceptions: list[ExceptionView]
    stripe_invoice_id: str | None
    stripe_sync_status: str
    stripe_error: str
    payment_status: str


@dataclass(frozen=True, slots=True)
class InvoiceView:
    """An invoice as its caller may see it (see the module docstring)."""

    id: str
    number: str | None
    status: InvoiceStatus
    customer_id: str
    period: str
    period_start: datetime
    period_end: datetime
    currency: str
    lines: list[LineView]
    subtotal_minor: int
    credits_minor: int
    total_minor: int
    finalized_at: datetime | None
    internal: InvoiceInternals | None


@dataclass(frozen=True, slots=True)
class InvoiceDocument:
    """An exported invoice: a file name, its media type and its text."""

    filename: str
    media_type: str
    content: str


def line_view(line: InvoiceLine, internal: bool) -> LineView:
    return LineView(
        id=line.id,
        kind=LineKind(line.kind),
        description=line.description,
        meter=line.meter,
        quantity=line.quantity,
        unit_price=line.unit_price,
        per_units=line.per_units,
        amount_minor=line.amount_minor,
        internal=LineInternals(
            component_id=line.component_id,
            charge=line.charge,
            version=line.version_number,
            override_id=line.override_id,
            rated_amount_minor=line.rated_amount_minor,
            adjustment_reason=line.adjustment_reason,
            provider_cost_minor=line.provider_cost_minor,
            margin_minor=line.margin_minor,
            adjusts_period=line.adjusts_period,
            details=line.details,
        )
        if internal
        else None,
    )


def invoice_view(
    invoice: Invoice,
    lines: Sequence[InvoiceLine],
    exceptions: Sequence[BillingException],
    *,
    internal: bool,
) -> InvoiceView:
    return InvoiceView(
        id=invoice.id,
        number=invoice.number,
        status=InvoiceStatus(invoice.status),
        customer_id=invoice.customer_id,
        period=invoice.period,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        currency=invoice.currency,
        lines=[line_view(line, internal) for line in lines],
        subtotal_minor=invoice.subtotal_minor,
        credits_minor=invoice.credits_minor,
        total_minor=invoice.total_minor,
        finalized_at=invoice.finalized_at,
        internal=InvoiceInternals(
            price_book_id=invoice.price_book_id,
            versions=invoice.versions,
            provider_cost_minor=invoice.provider_cost_minor,
            margin_minor=invoice.margin_minor,
            voided_at=invoice.voided_at,
            void_reason=invoice.void_reason,
            exceptions=[ExceptionView.of(e) for e in exceptions],
            stripe_invoice_id=invoice.stripe_invoice_id,
            stripe_sync_status=invoice.stripe_sync_status,
            stripe_error=invoice.stripe_error,
            payment_status=invoice.payment_status,
        )
        if internal
        else None,
    )
