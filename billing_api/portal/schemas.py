"""Portal request and response bodies: portal sessions and the brand (admin API), and the
customer's JSON API (`/portal/api/…`), which carries no cost, margin or price id."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agentmeter.money import format_minor, plain_decimal
from billing_api.portal.branding import BrandSettings
from billing_api.portal.service import ChargeLine, CurrentPeriod, DailySeries, InvoiceView
from billing_api.portal.sessions import DEFAULT_EXPIRES_IN, MAX_EXPIRES_IN, MIN_EXPIRES_IN
from billing_api.stripe.states import PaymentStatus
from billing_api.web.formatting import parse_locale
from billing_api.web.security import is_frame_source

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EMAIL = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


class PortalSessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_in: int = Field(
        default=int(DEFAULT_EXPIRES_IN.total_seconds()),
        ge=int(MIN_EXPIRES_IN.total_seconds()),
        le=int(MAX_EXPIRES_IN.total_seconds()),
        description="seconds the link stays valid (default 24 h, at most 30 days)",
    )


class PortalSessionOut(BaseModel):
    id: str
    url: str
    token: str
    expires_at: datetime


def _text(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value.strip()


def _https_url(value: str) -> str:
    """An absolute https URL with a host and nothing that could leave an attribute."""
    parts = urlsplit(value)
    if (
        parts.scheme != "https"
        or not parts.hostname
        or any(c in value for c in " \"'<>\\`")
        or _CONTROL.search(value)
    ):
        raise ValueError("must be an absolute https:// URL")
    return value


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address like support@example.com")
    return value


def _locale(value: str) -> str:
    return str(parse_locale(value)).replace("_", "-")


def _frame_sources(values: list[str]) -> list[str]:
    bad = [v for v in values if not is_frame_source(v)]
    if bad:
        raise ValueError(
            f"not a frame-ancestors source: {', '.join(map(repr, bad))}; use 'self' or "
            "https://host[:port] (a leading *. allowed), one per item"
        )
    return list(dict.fromkeys(values))


class BrandingIn(BaseModel):
    """`PUT /api/v1/branding`: the whole brand (fields left out are cleared)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, AfterValidator(_text)] | None = Field(
        default=None, min_length=1, max_length=200
    )
    logo_url: Annotated[str, AfterValidator(_https_url)] | None = Field(
        default=None, max_length=2000
    )
    primary_color: str | None = Field(
        default=None, pattern=r"^#[0-9a-fA-F]{6}$", description="#rrggbb"
    )
    support_email: Annotated[str, AfterValidator(_email)] | None = Field(
        default=None, max_length=320
    )
    support_url: Annotated[str, AfterValidator(_https_url)] | None = Field(
        default=None, max_length=2000
    )
    locale: Annotated[str, AfterValidator(_locale)] | None = Field(
        default=None, max_length=35, description="BCP 47 tag, e.g. en-US, de-DE"
    )
    frame_ancestors: Annotated[list[str], AfterValidator(_frame_sources)] = Field(
        default_factory=list,
        max_length=16,
        description="CSP sources that may embed the portal: 'self' or https://host",
    )

    def settings(self) -> BrandSettings:
        return BrandSettings(
            name=self.name,
            logo_url=self.logo_url,
            primary_color=self.primary_color.lower() if self.primary_color else None,
            support_email=self.support_email,
            support_url=self.support_url,
            locale=self.locale,
            frame_ancestors=tuple(self.frame_ancestors),
        )


class BrandingOut(BaseModel):
    name: str | None
    logo_url: str | None
    primary_color: str | None
    support_email: str | None
    support_url: str | None
    locale: str | None
    frame_ancestors: list[str]

    @classmethod
    def of(cls, brand: BrandSettings) -> BrandingOut:
        return cls(
            name=brand.name,
            logo_url=brand.logo_url,
            primary_color=brand.primary_color,
            support_email=brand.support_email,
            support_url=brand.support_url,
            locale=brand.locale,
            frame_ancestors=list(brand.frame_ancestors),
        )


# --- The customer's JSON API --------------------------------------------------------------


class PortalLineOut(BaseModel):
    description: str
    meter: str | None
    quantity: str
    unit_price: str | None
    per_units: int
    amount: str
    amount_minor: int

    @classmethod
    def of(cls, line: ChargeLine, currency: str) -> PortalLineOut:
        return cls(
            description=line.description,
            meter=line.meter,
            quantity=plain_decimal(line.quantity),
            unit_price=None if line.unit_price is None else str(line.unit_price),
            per_units=line.per_units,
            amount=format_minor(line.amount_minor, currency),
            amount_minor=line.amount_minor,
        )


class PortalBudgetOut(BaseModel):
    limit: str
    spent: str
    percent_used: str
    within_limit: bool


class PortalEstimateOut(BaseModel):
    customer_id: str
    period_start: datetime
    period_end: datetime
    currency: str
    lines: list[PortalLineOut]
    subtotal: str
    subtotal_minor: int
    credit_balance: str
    budget: PortalBudgetOut | None

    @classmethod
    def of(cls, current: CurrentPeriod) -> PortalEstimateOut:
        currency = current.currency
        budget = current.budget
        return cls(
            customer_id=current.customer_id,
            period_start=current.period.start,
            period_end=current.period.end,
            currency=currency,
            lines=[PortalLineOut.of(line, currency) for line in current.lines],
            subtotal=format_minor(current.subtotal_minor, currency),
            subtotal_minor=current.subtotal_minor,
            credit_balance=format_minor(current.credit_balance_minor, currency),
            budget=None
            if budget is None
            else PortalBudgetOut(
                limit=format_minor(budget.limit_minor, budget.currency),
                spent=format_minor(budget.spent_minor, budget.currency),
                percent_used=str(budget.percent_used),
                within_limit=budget.within_limit,
            ),
        )


class PortalSeriesOut(BaseModel):
    label: str
    values: list[str]
    total: str


class PortalDailyOut(BaseModel):
    """The daily chart's data: exact decimal strings, one per day."""

    start: datetime
    end: datetime
    by: str
    meter: str | None
    days: list[str]
    series: list[PortalSeriesOut]

    @classmethod
    def of(
        cls, start: datetime, end: datetime, by: str, meter: str | None, daily: DailySeries
    ) -> PortalDailyOut:
        return cls(
            start=start,
            end=end,
            by=by,
            meter=meter,
            days=[day.isoformat() for day in daily.days],
            series=[
                PortalSeriesOut(
                    label=label,
                    values=[plain_decimal(v) for v in values],
                    total=plain_decimal(daily.total(label)),
                )
                for label, values in daily.series.items()
            ],
        )


class PortalUsageOut(BaseModel):
    """Rows as `GET /api/v1/usage` answers them."""

    rows: list[dict[str, str]]


class PortalInvoiceOut(BaseModel):
    id: str
    number: str | None
    status: str
    payment_status: PaymentStatus
    period_start: datetime
    period_end: datetime
    currency: str
    lines: list[PortalLineOut]
    subtotal: str
    credits: str
    total: str
    total_minor: int
    finalized_at: datetime | None

    @classmethod
    def of(cls, invoice: InvoiceView) -> PortalInvoiceOut:
        currency = invoice.currency
        return cls(
            id=invoice.id,
            number=invoice.number,
            status=invoice.status,
            payment_status=invoice.payment_status,
            period_start=invoice.period.start,
            period_end=invoice.period.end,
            currency=currency,
            lines=[PortalLineOut.of(line, currency) for line in invoice.lines],
            subtotal=format_minor(invoice.subtotal_minor, currency),
            credits=format_minor(invoice.credits_minor, currency),
            total=format_minor(invoice.total_minor, currency),
            total_minor=invoice.total_minor,
            finalized_at=invoice.finalized_at,
        )
