"""Invoicing request and response bodies.

`InvoiceOut` is the builder's view (provider cost and margin included); the customer's
view (`CustomerInvoiceOut`, used by exports and the portal) never carries them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentmeter.money import MAX_MINOR, format_minor, plain_decimal
from billing_api.invoicing.runs import RunView
from billing_api.invoicing.states import RunStatus
from billing_api.invoicing.views import ExceptionView, InvoiceView, LineView
from billing_api.periods import PeriodLabel

# Amounts entered by hand stay far inside 64-bit minor units, whatever the currency.
MAX_AMOUNT = Decimal(10) ** 12


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    period: PeriodLabel


class RunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    period: str
    status: RunStatus = Field(
        description="interrupted: its worker stopped sending heartbeats (killed); resume it "
        "or start a new run of the period, which supersedes it"
    )
    total_customers: int
    processed_customers: int
    drafted: int
    error: str
    created_at: datetime
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, run: RunView) -> RunOut:
        return cls.model_validate(run)


class CustomerLineOut(BaseModel):
    id: str
    kind: str
    description: str
    meter: str | None
    quantity: str
    unit_price: str | None
    per_units: int
    amount: str
    amount_minor: int

    @property
    def price_label(self) -> str:
        """ "3.00" or "3.00 / 1,000,000": what the unit price is for, said on the line."""
        if self.unit_price is None:
            return ""
        return self.unit_price if self.per_units == 1 else f"{self.unit_price} / {self.per_units:,}"


class LineOut(CustomerLineOut):
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


def _customer_line(line: LineView, currency: str) -> dict[str, Any]:
    return {
        "id": line.id,
        "kind": line.kind,
        "description": line.description,
        "meter": line.meter,
        "quantity": plain_decimal(line.quantity),
        "unit_price": None if line.unit_price is None else str(line.unit_price),
        "per_units": line.per_units,
        "amount": format_minor(line.amount_minor, currency),
        "amount_minor": line.amount_minor,
    }


class CustomerInvoiceOut(BaseModel):
    """What the customer sees: no provider cost, no margin, no internal ids of prices."""

    id: str
    number: str | None
    status: str
    customer_id: str
    period: str
    period_start: datetime
    period_end: datetime
    currency: str
    lines: list[CustomerLineOut]
    subtotal: str
    credits: str
    total: str
    subtotal_minor: int
    credits_minor: int
    total_minor: int
    finalized_at: datetime | None

    @classmethod
    def of(cls, invoice: InvoiceView) -> CustomerInvoiceOut:
        return cls(
            **_invoice_fields(invoice),
            lines=[
                CustomerLineOut(**_customer_line(line, invoice.currency)) for line in invoice.lines
            ],
        )


def _invoice_fields(invoice: InvoiceView) -> dict[str, Any]:
    currency = invoice.currency
    return {
        "id": invoice.id,
        "number": invoice.number,
        "status": invoice.status,
        "customer_id": invoice.customer_id,
        "period": invoice.period,
        "period_start": invoice.period_start,
        "period_end": invoice.period_end,
        "currency": currency,
        "subtotal": format_minor(invoice.subtotal_minor, currency),
        "credits": format_minor(invoice.credits_minor, currency),
        "total": format_minor(invoice.total_minor, currency),
        "subtotal_minor": invoice.subtotal_minor,
        "credits_minor": invoice.credits_minor,
        "total_minor": invoice.total_minor,
        "finalized_at": invoice.finalized_at,
    }


class ExceptionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
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
    def of(cls, exception: ExceptionView) -> ExceptionOut:
        return cls.model_validate(exception)


class InvoiceOut(CustomerInvoiceOut):
    """The builder's view of an invoice."""

    lines: list[LineOut]  # type: ignore[assignment]
    price_book_id: str | None
    versions: list[int]
    provider_cost_minor: int | None
    margin_minor: int | None
    voided_at: datetime | None
    void_reason: str
    exceptions: list[ExceptionOut]
    stripe_invoice_id: str | None
    stripe_sync_status: str
    stripe_error: str
    payment_status: str

    @classmethod
    def of(cls, invoice: InvoiceView) -> InvoiceOut:
        """`invoice` as staff see it; the service gives internal figures only to staff."""
        internal = invoice.internal
        assert internal is not None, "the builder's view of an invoice asked without them"
        return cls(
            **_invoice_fields(invoice),
            lines=[_line_out(line, invoice.currency) for line in invoice.lines],
            price_book_id=internal.price_book_id,
            versions=internal.versions,
            provider_cost_minor=internal.provider_cost_minor,
            margin_minor=internal.margin_minor,
            voided_at=internal.voided_at,
            void_reason=internal.void_reason,
            exceptions=[ExceptionOut.of(e) for e in internal.exceptions],
            stripe_invoice_id=internal.stripe_invoice_id,
            stripe_sync_status=internal.stripe_sync_status,
            stripe_error=internal.stripe_error,
            payment_status=internal.payment_status,
        )


def _line_out(line: LineView, currency: str) -> LineOut:
    internal = line.internal
    assert internal is not None, "the builder's view of a line asked without its figures"
    return LineOut(
        **_customer_line(line, currency),
        component_id=internal.component_id,
        charge=internal.charge,
        version=internal.version,
        override_id=internal.override_id,
        rated_amount_minor=internal.rated_amount_minor,
        adjustment_reason=internal.adjustment_reason,
        provider_cost_minor=internal.provider_cost_minor,
        margin_minor=internal.margin_minor,
        adjusts_period=internal.adjusts_period,
        details=internal.details,
    )


class LineAdjust(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(
        ge=-MAX_AMOUNT, le=MAX_AMOUNT, description="the line's new amount in major units"
    )
    reason: str = Field(min_length=1, max_length=2000)


class LineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = Field(min_length=1, max_length=500)
    quantity: Decimal = Field(default=Decimal(1), gt=0, le=MAX_AMOUNT, decimal_places=12)
    unit_price: Decimal = Field(
        ge=0,
        le=MAX_AMOUNT,
        decimal_places=12,
        description="major units; a discount is entered positive",
    )
    discount: bool = False
    reason: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _bounded_amount(self) -> Self:
        """Each factor is bounded and so must their product be: it becomes a line amount."""
        if self.quantity * self.unit_price > MAX_AMOUNT:
            raise ValueError(f"quantity × unit_price must not exceed {MAX_AMOUNT:,}")
        return self


class FinalizeRequest(BaseModel):
    """Optional: finalizing before the invoice's period ends needs both fields."""

    model_config = ConfigDict(extra="forbid")
    before_period_end: bool = Field(
        default=False, description="finalize although the period has not ended (audited)"
    )
    reason: str = Field(default="", max_length=2000, description="why, for the audit log")

    @model_validator(mode="after")
    def _reason_given(self) -> Self:
        if self.before_period_end and not self.reason.strip():
            raise ValueError("finalizing before the period ends needs a reason")
        return self

    @property
    def early_reason(self) -> str | None:
        """The reason to finalize before the period ends, if that is asked for."""
        return self.reason if self.before_period_end else None


class VoidRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class CreditNoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal | None = Field(
        default=None, gt=0, le=MAX_AMOUNT, description="major units; omit for in full"
    )
    reason: str = Field(min_length=1, max_length=2000)


class CreditNoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    invoice_id: str
    number: str
    amount_minor: int
    reason: str
    created_at: datetime


class ExceptionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str = Field(pattern="^(open|resolved|waived)$")
    note: str = Field(default="", max_length=2000)


class RegisterCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=200)
    email: str | None = None


class MapCustomer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_customer_id: str = Field(min_length=1, max_length=256)
    to_customer_id: str = Field(min_length=1, max_length=256)


class AssignUnattributed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trace_ids: list[str] = Field(min_length=1)
    customer_id: str = Field(min_length=1, max_length=256)


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    entity: str
    entity_id: str
    action: str
    actor: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str
    created_at: datetime


class BillingSettingsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    invoice_prefix: str
    late_usage_policy: str
    spike_factor: Decimal
    margin_floor_percent: Decimal
    review_threshold_minor: int | None
    brand_name: str | None
    brand_color: str | None
    brand_logo_url: str | None


class BillingSettingsUpdate(BaseModel):
    """Fields left out are unchanged."""

    model_config = ConfigDict(extra="forbid")

    invoice_prefix: str | None = Field(default=None, pattern=r"^[A-Z0-9]{1,12}$")
    late_usage_policy: str | None = Field(default=None, pattern="^(adjust_next|exception_only)$")
    spike_factor: Decimal | None = Field(default=None, gt=1, le=1000, decimal_places=6)
    margin_floor_percent: Decimal | None = Field(default=None, ge=-100, le=100, decimal_places=6)
    # Strict: JSON false is not a threshold of 0.
    review_threshold_minor: int | None = Field(
        default=None, ge=0, le=MAX_MINOR, strict=True, description="null: no review threshold"
    )
    brand_name: str | None = Field(default=None, max_length=200)
    # Only a hex colour: it goes into the invoice's stylesheet.
    brand_color: str | None = Field(default=None, pattern=r"^#[0-9a-fA-F]{3}([0-9a-fA-F]{3})?$")
    brand_logo_url: str | None = Field(default=None, pattern=r"^https://\S+$", max_length=2000)

    @model_validator(mode="after")
    def _no_null_for_required(self) -> Self:
        """Only the nullable settings may be set to null; the others can only change."""
        for name in _REQUIRED_SETTINGS:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null; leave it out to keep it")
        return self


_REQUIRED_SETTINGS = ("invoice_prefix", "late_usage_policy", "spike_factor", "margin_floor_percent")
