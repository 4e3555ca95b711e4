"""Charge models as pure functions of quantity: no I/O, no rounding.

Every usage-based model is written as a cumulative charge F(q): the amount owed for the
first q units of the period. A line for a slice of the period (a price version in effect
for part of it) is F(after) − F(before) at that version's rates, so tiers, allowances and
packages count the whole period, and a mid-period price change prices each unit once, at
the rates in effect when it was used. Volume pricing is the exception: its rate depends on
the period total, so each slice is priced at the rate of the tier the total falls in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from billing_api.pricing.components import ChargeModel, Component, Tier

USAGE_CHARGES = frozenset(
    {
        ChargeModel.PER_UNIT,
        ChargeModel.GRADUATED,
        ChargeModel.VOLUME,
        ChargeModel.PACKAGE,
        ChargeModel.ALLOWANCE,
        ChargeModel.COST_PLUS,
    }
)

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Charge:
    """An unrounded amount and how it was reached, for the invoice line's explanation."""

    amount: Decimal
    unit_price: Decimal | None
    detail: dict[str, Any] = field(default_factory=dict)


def _rate(unit_price: Decimal | None, per_units: int) -> Decimal:
    return (unit_price or ZERO) / per_units


def _ceil_div(quantity: Decimal, size: int) -> int:
    """Whole packages needed for `quantity` (Decimal `//` truncates, so not -(-q // s))."""
    return int((quantity / size).to_integral_value(rounding=ROUND_CEILING))


def _tier_ranges(tiers: tuple[Tier, ...]) -> list[tuple[Decimal, Decimal | None, Tier]]:
    """(start, end, tier): tier k holds units in (start, end]; the last tier has no end."""
    ranges = []
    start = ZERO
    for tier in tiers:
        end = None if tier.up_to is None else Decimal(tier.up_to)
        ranges.append((start, end, tier))
        if end is not None:
            start = end
    return ranges


def graduated_slice(
    component: Component, before: Decimal, after: Decimal
) -> tuple[Decimal, list[dict[str, str]]]:
    """Units (before, after] priced at the rate of the tier each falls in, plus the flat
    fee of every tier whose first unit falls in this slice."""
    total = ZERO
    pieces: list[dict[str, str]] = []
    for start, end, tier in _tier_ranges(component.tiers):
        low = max(before, start)
        high = after if end is None else min(after, end)
        if high <= low:
            continue
        flat = tier.flat_fee if before <= start < after else ZERO
        amount = (high - low) * _rate(tier.unit_price, component.per_units) + flat
        total += amount
        pieces.append(
            {
                "tier_from": str(start),
                "tier_to": "" if end is None else str(end),
                "quantity": str(high - low),
                "unit_price": str(tier.unit_price),
                "flat_fee": str(flat),
                "amount": str(amount),
            }
        )
    return total, pieces


def volume_tier(component: Component, period_quantity: Decimal) -> Tier:
    """The tier whose range holds the period's total quantity (all units at its rate)."""
    for _, end, tier in _tier_ranges(component.tiers):
        if end is None or period_quantity <= end:
            return tier
    return component.tiers[-1]


def cumulative(component: Component, quantity: Decimal) -> Decimal:
    """F(q): the amount owed for the first q units of a period under `component`."""
    charge = component.charge
    if charge == ChargeModel.PER_UNIT:
        return quantity * _rate(component.unit_price, component.per_units)
    if charge == ChargeModel.GRADUATED:
        return graduated_slice(component, ZERO, quantity)[0]
    if charge == ChargeModel.PACKAGE:
        assert component.package_size
        return _ceil_div(quantity, component.package_size) * (component.unit_price or ZERO)
    if charge == ChargeModel.ALLOWANCE:
        overage = max(ZERO, quantity - (component.included_quantity or ZERO))
        return overage * _rate(component.unit_price, component.per_units)
    raise ValueError(f"{charge} is not a cumulative charge model")


def usage_charge(
    component: Component,
    *,
    before: Decimal,
    quantity: Decimal,
    period_quantity: Decimal,
    cost: Decimal,
    last_slice: bool,
) -> Charge:
    """The charge for `quantity` units used after `before` units of the same component in
    this period. `period_quantity` is the period total (volume tiers); `cost` the provider
    cost of those units in the book's currency (cost-plus)."""
    charge = component.charge
    after = before + quantity
    if charge == ChargeModel.VOLUME:
        tier = volume_tier(component, period_quantity)
        amount = quantity * _rate(tier.unit_price, component.per_units)
        # The tier's flat fee is owed once per period, on its last slice, and only when
        # some usage reached the tier.
        flat = tier.flat_fee if last_slice and period_quantity > 0 else ZERO
        return Charge(
            amount + flat,
            tier.unit_price,
            {"tier_up_to": "" if tier.up_to is None else str(tier.up_to), "flat_fee": str(flat)},
        )
    if charge == ChargeModel.COST_PLUS:
        markup = component.markup or ZERO
        fee = quantity * _rate(component.unit_price, component.per_units)
        return Charge(
            cost * (1 + markup) + fee,
            component.unit_price,
            {"provider_cost": str(cost), "markup": str(markup), "unit_fee": str(fee)},
        )
    amount = cumulative(component, after) - cumulative(component, before)
    detail: dict[str, Any] = {"before": str(before), "after": str(after)}
    unit_price: Decimal | None = component.unit_price
    if charge == ChargeModel.GRADUATED:
        amount, detail["tiers"] = graduated_slice(component, before, after)
        unit_price = None
    elif charge == ChargeModel.ALLOWANCE:
        included = component.included_quantity or ZERO
        detail["included"] = str(included)
        detail["overage"] = str(max(ZERO, after - included) - max(ZERO, before - included))
    elif charge == ChargeModel.PACKAGE:
        assert component.package_size
        detail["packages"] = str(
            _ceil_div(after, component.package_size) - _ceil_div(before, component.package_size)
        )
        detail["package_size"] = str(component.package_size)
    return Charge(amount, unit_price, detail)
