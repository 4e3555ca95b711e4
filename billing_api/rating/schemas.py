"""Rated periods as the API shows them to the builder (internal cost and margin included)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from agentmeter.money import format_minor, plain_decimal
from billing_api.rating.engine import PricedLine, RatedPeriod


class PricedLineOut(BaseModel):
    component_id: str
    component: str
    charge: str
    meter: str | None
    version: int | None
    override_id: str | None
    quantity: str
    unit_price: str | None
    amount: str
    amount_minor: int
    provider_cost_minor: int | None
    margin_minor: int | None
    details: list[dict[str, Any]]

    @classmethod
    def of(cls, line: PricedLine) -> PricedLineOut:
        return cls(
            component_id=line.component_id,
            component=line.component_name,
            charge=line.charge,
            meter=line.meter,
            version=line.version_number,
            override_id=line.override_id,
            quantity=plain_decimal(line.quantity),
            unit_price=None if line.unit_price is None else str(line.unit_price),
            amount=format_minor(line.amount_minor, line.currency),
            amount_minor=line.amount_minor,
            provider_cost_minor=line.provider_cost_minor,
            margin_minor=line.margin_minor,
            details=line.details,
        )


class UnpricedOut(BaseModel):
    meter: str
    dimensions: dict[str, str]
    quantity: str


class EstimateOut(BaseModel):
    customer_id: str
    period_start: datetime
    period_end: datetime
    currency: str
    price_book_id: str | None
    versions: list[int]
    lines: list[PricedLineOut]
    unpriced: list[UnpricedOut]
    subtotal: str
    subtotal_minor: int
    provider_cost_minor: int | None
    margin_minor: int | None

    @classmethod
    def of(cls, rated: RatedPeriod) -> EstimateOut:
        return cls(
            customer_id=rated.customer_id,
            period_start=rated.period.start,
            period_end=rated.period.end,
            currency=rated.currency,
            price_book_id=rated.book_id,
            versions=rated.versions,
            lines=[PricedLineOut.of(line) for line in rated.lines],
            unpriced=[
                UnpricedOut(
                    meter=u.meter, dimensions=dict(u.dims), quantity=plain_decimal(u.quantity)
                )
                for u in rated.unpriced
            ],
            subtotal=format_minor(rated.subtotal_minor, rated.currency),
            subtotal_minor=rated.subtotal_minor,
            provider_cost_minor=rated.provider_cost_minor,
            margin_minor=rated.margin_minor,
        )
