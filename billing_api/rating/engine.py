"""The rating engine: a customer's usage aggregates for a period → priced lines.

Pure: takes the terms and the aggregates (already summed by the database), returns lines.
Arithmetic is Decimal; each line is rounded once to the currency's minor unit; the
subtotal is the sum of rounded lines.

Subsets are billed once. Stored meters are inclusive, so for each combination of
dimensions the engine splits them into disjoint parts: cache reads and cache writes that
match a component of their own are taken out of `input_tokens`, and reasoning tokens that
match one are taken out of `output_tokens`; a part without a component of its own stays
inside its parent and is billed at the parent's rate (its provider cost goes with it).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from agentmeter.money import from_minor, to_minor
from billing_api.periods import Period
from billing_api.pricing.components import ChargeModel, Component
from billing_api.rating import charges
from billing_api.rating.terms import BookTerms, SliceTerms, TenantPricing, UsageGroup
from otel_processor.usage import (
    CACHE_READ_TOKENS,
    CACHE_WRITE_TOKENS,
    INPUT_TOKENS,
    OUTPUT_REASONING_TOKENS,
    OUTPUT_TOKENS,
    from_micros,
)

PICO = Decimal(10) ** 12
# (subset meter, the inclusive meter it is part of)
SUBSETS = (
    (CACHE_READ_TOKENS, INPUT_TOKENS),
    (CACHE_WRITE_TOKENS, INPUT_TOKENS),
    (OUTPUT_REASONING_TOKENS, OUTPUT_TOKENS),
)


@dataclass(slots=True)
class PricedLine:
    """One invoice line: a component under one price version (or customer override)."""

    currency: str
    component_id: str
    component_name: str
    charge: str
    meter: str | None
    version_id: str | None
    version_number: int | None
    override_id: str | None
    per_units: int = 1  # the unit price is per this many units (e.g. per 1,000,000 tokens)
    quantity: Decimal = Decimal(0)
    unit_price: Decimal | None = None
    amount: Decimal = Decimal(0)  # unrounded
    provider_cost: Decimal = Decimal(0)  # known part, in the book's currency, unrounded
    unknown_cost_records: int = 0
    details: list[dict[str, Any]] = field(default_factory=list)

    @property
    def amount_minor(self) -> int:
        return to_minor(self.amount, self.currency)

    @property
    def provider_cost_minor(self) -> int | None:
        """Provider cost in minor units; None when part of it is unknown."""
        if self.unknown_cost_records:
            return None
        return to_minor(self.provider_cost, self.currency)

    @property
    def margin_minor(self) -> int | None:
        cost = self.provider_cost_minor
        return None if cost is None else self.amount_minor - cost


@dataclass(frozen=True, slots=True)
class UnpricedUsage:
    """Usage no component matches: it cannot be billed until a price covers it."""

    meter: str
    dims: tuple[tuple[str, str], ...]
    quantity: Decimal
    start: datetime
    end: datetime


@dataclass(slots=True)
class RatedPeriod:
    """A customer's priced period: lines, what could not be priced, and the totals."""

    customer_id: str
    period: Period
    currency: str
    book_id: str | None
    lines: list[PricedLine]
    unpriced: list[UnpricedUsage]
    versions: list[int]
    # Raw quantity per meter in the period (micro-units), priced or not: for spike checks.
    usage_micros: dict[str, int] = field(default_factory=dict)

    @property
    def subtotal_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines)

    @property
    def provider_cost_minor(self) -> int | None:
        costs = [line.provider_cost_minor for line in self.lines if line.meter is not None]
        return None if any(c is None for c in costs) else sum(c or 0 for c in costs)

    @property
    def margin_minor(self) -> int | None:
        cost = self.provider_cost_minor
        return None if cost is None else self.subtotal_minor - cost

    @property
    def is_empty(self) -> bool:
        return not self.lines and not self.unpriced


@dataclass(slots=True)
class _Part:
    component: Component
    quantity: Decimal
    cost: Decimal
    unknown: int


def _split(
    groups: Sequence[UsageGroup], terms: SliceTerms, start: datetime, end: datetime
) -> tuple[list[_Part], list[UnpricedUsage]]:
    """Disjoint parts of a slice's usage, each with the component that prices it."""
    by_dims: dict[tuple[tuple[str, str], ...], dict[str, UsageGroup]] = defaultdict(dict)
    for group in groups:
        by_dims[group.dims][group.meter] = group
    parts: list[_Part] = []
    unpriced: list[UnpricedUsage] = []
    for dims, meters in by_dims.items():
        quantity = {m: from_micros(g.quantity_micros) for m, g in meters.items()}
        cost = {m: Decimal(g.cost_pico) / PICO for m, g in meters.items()}
        unknown = {m: g.unknown_cost_records for m, g in meters.items()}
        own = {m: terms.component_for(m, dims) for m in meters}
        for subset, parent in SUBSETS:
            if subset not in meters or parent not in meters:
                continue
            if own[subset] is not None:
                quantity[parent] -= quantity[subset]
            else:
                # Billed inside its parent, at the parent's rate, with its cost.
                cost[parent] += cost.pop(subset)
                unknown[parent] += unknown.pop(subset)
                del quantity[subset]
        for meter, amount in quantity.items():
            component = own[meter]
            if component is None:
                if amount:
                    unpriced.append(UnpricedUsage(meter, dims, amount, start, end))
                continue
            parts.append(_Part(component, amount, cost[meter], unknown[meter]))
    return parts, unpriced


def rate_customer(
    customer_id: str,
    pricing: TenantPricing,
    period: Period,
    slices: Sequence[tuple[datetime, datetime, Sequence[UsageGroup]]],
) -> RatedPeriod:
    """Price one customer's period. `slices` split the period where terms change."""
    book: BookTerms | None = pricing.book_for(customer_id)
    currency = book.currency if book else "USD"
    usd_rate = book.usd_rate if book else Decimal(1)
    unpriced: list[UnpricedUsage] = []
    sliced: list[tuple[SliceTerms, list[_Part]]] = []
    totals: dict[str, Decimal] = defaultdict(Decimal)
    last_slice: dict[str, int] = {}
    usage_micros: dict[str, int] = defaultdict(int)
    for index, (start, end, groups) in enumerate(slices):
        for group in groups:
            usage_micros[group.meter] += group.quantity_micros
        terms = pricing.terms_at(customer_id, start)
        parts, missing = _split(groups, terms, start, end)
        unpriced.extend(missing)
        merged: dict[str, _Part] = {}
        for part in parts:
            if part.component.charge not in charges.USAGE_CHARGES:
                continue
            seen = merged.get(part.component.id)
            if seen is None:
                merged[part.component.id] = part
            else:
                seen.quantity += part.quantity
                seen.cost += part.cost
                seen.unknown += part.unknown
        sliced.append((terms, sorted(merged.values(), key=lambda p: p.component.position)))
        for part in merged.values():
            totals[part.component.name] += part.quantity
            last_slice[part.component.name] = index

    lines: dict[tuple[str, str | None, str | None], PricedLine] = {}
    used: dict[str, Decimal] = defaultdict(Decimal)
    for index, (terms, parts) in enumerate(sliced):
        for part in parts:
            component = part.component
            cost = part.cost * usd_rate
            result = charges.usage_charge(
                component,
                before=used[component.name],
                quantity=part.quantity,
                period_quantity=totals[component.name],
                cost=cost,
                last_slice=last_slice[component.name] == index,
            )
            used[component.name] += part.quantity
            line = _line(lines, component, terms, currency)
            line.quantity += part.quantity
            line.amount += result.amount
            line.unit_price = result.unit_price
            line.provider_cost += cost
            line.unknown_cost_records += part.unknown
            line.details.append(result.detail)

    opening = pricing.terms_at(customer_id, period.start)
    for component in opening.components:
        if component.charge == ChargeModel.FLAT_FEE:
            line = _line(lines, component, opening, currency)
            line.quantity = Decimal(1)
            line.unit_price = line.amount = component.amount or Decimal(0)
    rated = RatedPeriod(
        customer_id=customer_id,
        period=period,
        currency=currency,
        book_id=book.id if book else None,
        lines=list(lines.values()),
        unpriced=unpriced,
        versions=sorted({t.version.number for t, _ in sliced if t.version} | _version(opening)),
        usage_micros=dict(usage_micros),
    )
    for component in opening.components:
        if component.charge == ChargeModel.MINIMUM:
            # A true-up to the commitment, on top of every other line of the period.
            commitment = to_minor(component.amount or Decimal(0), currency)
            shortfall = commitment - rated.subtotal_minor
            if shortfall > 0:
                line = _line(lines, component, opening, currency)
                line.quantity = Decimal(1)
                line.amount = line.unit_price = from_minor(shortfall, currency)
                line.details.append({"commitment": str(component.amount)})
                rated.lines = list(lines.values())
    return rated


def _version(terms: SliceTerms) -> set[int]:
    return {terms.version.number} if terms.version else set()


def _line(
    lines: dict[tuple[str, str | None, str | None], PricedLine],
    component: Component,
    terms: SliceTerms,
    currency: str,
) -> PricedLine:
    override_id = terms.override_of.get(component.id)
    version = None if override_id else terms.version
    key = (component.id, version.id if version else None, override_id)
    line = lines.get(key)
    if line is None:
        line = PricedLine(
            currency=currency,
            component_id=component.id,
            component_name=component.name,
            charge=component.charge,
            meter=component.meter,
            version_id=version.id if version else None,
            version_number=version.number if version else None,
            override_id=override_id,
            per_units=component.per_units,
        )
        lines[key] = line
    return line
