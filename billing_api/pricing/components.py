"""Price components as the rating engine reads them: small frozen values, no SQL.

`component_from_row` turns a stored `PriceComponent` (already validated by the API when it
was written) into a `Component`; the rating engine matches and prices with these.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from agentmeter.tables import PriceComponent


class ChargeModel(StrEnum):
    """The charge models a component can have (the one list: API, rating and pages)."""

    PER_UNIT = "per_unit"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"
    FLAT_FEE = "flat_fee"
    ALLOWANCE = "allowance"
    MINIMUM = "minimum"
    COST_PLUS = "cost_plus"


# Usage dimensions a component can filter on (fnmatch globs allowed in the patterns).
FILTER_DIMENSIONS = (
    "provider",
    "model",
    "tool",
    "operation",
    "step",
    "agent_name",
    "service_name",
    "source",
)


class Filters(Mapping[str, str]):
    """An immutable, hashable dimension → pattern mapping, iterated in dimension order."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        self._items = dict(sorted((str(k), str(v)) for k, v in pairs))

    def __getitem__(self, dimension: str) -> str:
        return self._items[dimension]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return f"Filters({self._items!r})"


NO_FILTERS = Filters()


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier of a graduated or volume price: quantities up to `up_to` (None: no bound)
    cost `unit_price` per the component's `per_units`, plus `flat_fee` once if reached."""

    up_to: int | None
    unit_price: Decimal
    flat_fee: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Component:
    """One priced thing of a price version or a customer override.

    `filters` maps a usage dimension to an exact value or glob; usage matches when every
    pattern matches its dimension. Fields a charge model does not use are None.
    """

    id: str = ""
    name: str
    meter: str | None = None
    filters: Mapping[str, str] = NO_FILTERS
    charge: ChargeModel
    unit_price: Decimal | None = None
    per_units: int = 1
    tiers: tuple[Tier, ...] = ()
    package_size: int | None = None
    included_quantity: Decimal | None = None
    amount: Decimal | None = None
    markup: Decimal | None = None
    priority: int = 0
    position: int = 0


def tier_from_json(data: dict[str, Any]) -> Tier:
    """A tier as stored in `PriceComponent.tiers` (decimals as strings)."""
    up_to = data.get("up_to")
    return Tier(
        up_to=None if up_to is None else int(up_to),
        unit_price=Decimal(str(data["unit_price"])),
        flat_fee=Decimal(str(data.get("flat_fee") or 0)),
    )


def tier_to_json(tier: Tier) -> dict[str, Any]:
    """The stored form of a tier: JSON with exact decimal strings."""
    return {
        "up_to": tier.up_to,
        "unit_price": format(tier.unit_price, "f"),
        "flat_fee": format(tier.flat_fee, "f"),
    }


def component_from_row(row: PriceComponent) -> Component:
    """The pure value of a stored component."""
    return Component(
        id=row.id,
        name=row.name,
        meter=row.meter,
        filters=Filters(row.filters or {}),
        charge=ChargeModel(row.charge),
        unit_price=row.unit_price,
        per_units=row.per_units,
        tiers=tuple(tier_from_json(t) for t in row.tiers or ()),
        package_size=row.package_size,
        included_quantity=row.included_quantity,
        amount=row.amount,
        markup=row.markup,
        priority=row.priority,
        position=row.position,
    )
