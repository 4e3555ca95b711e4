"""Pricing request and response bodies, and the validation of charge models.

Money and prices are exact decimals: given as JSON strings (preferred) or numbers, returned
as strings. A component names one charge model and sets exactly the fields that model
uses, so a field meant for another model (or a typo) is refused rather than ignored.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from itertools import pairwise
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from agentmeter.money import UnknownCurrencyError, normalize_currency
from billing_api.periods import UtcMoment
from billing_api.pricing.components import (
    FILTER_DIMENSIONS,
    ChargeModel,
    Component,
    Filters,
    Tier,
)
from billing_api.pricing.service import BookDetail, OverrideDetail, VersionDetail
from otel_processor.usage import CANONICAL_METERS, METER_NAME_PATTERN, is_meter_name

PRICE_PLACES = 12
# Prices are stored as text of at most 64 characters; no price comes near this bound.
_MAX_DECIMAL = Decimal(10) ** 18
_MAX_PER_UNITS = 10**15
# One rule for every price in AgentMeter (components and provider costs alike).
PER_UNITS_RULE = (
    "how many units the price is for; default 1 everywhere (a price per single unit). "
    'Token prices are usually quoted per million: say "per_units": 1000000'
)
# The text form of a price, as documented in the OpenAPI schema and enforced.
PRICE_PATTERN = r"^[0-9]+(\.[0-9]{1,12})?$"
_SIGNED_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?", re.ASCII)


def _to_decimal(value: object) -> Decimal:
    """A non-negative Decimal with at most 12 places from a JSON string or number."""
    if isinstance(value, bool):
        raise ValueError('expected a decimal number, e.g. "2.50"')
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        # A JSON number arrives as a float; its shortest repr is the number the client wrote.
        number = Decimal(str(value))
    elif isinstance(value, str):
        # Only the documented pattern: Decimal() alone would also take "1_000", " 5 ",
        # "1E+2", "NaN" and non-ASCII digits such as "５". A sign is read only to say why
        # it is refused.
        if not _SIGNED_TEXT.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a decimal number: ASCII digits with an optional point, "
                'e.g. "2.50" (no spaces, underscores or exponent)'
            )
        number = Decimal(value)
        if number >= 0 and _places(number) > PRICE_PLACES:
            raise ValueError(f"at most {PRICE_PLACES} decimal places")
    else:
        raise ValueError('expected a decimal number as a string, e.g. "2.50"')
    if not number.is_finite():
        raise ValueError("must be a finite number")
    if number < 0:
        raise ValueError("must not be negative")
    if number >= _MAX_DECIMAL:
        raise ValueError("must be below 10^18")
    if number == 0:
        return Decimal(0)
    if _places(number) > PRICE_PLACES:
        # Trailing zeros past the limit are harmless ("1.0000000000000" is 1).
        number = number.normalize()
        if _places(number) > PRICE_PLACES:
            raise ValueError(f"at most {PRICE_PLACES} decimal places")
    # Plain notation (1E+2 → 100); otherwise kept as written, "2.50" stays "2.50".
    return Decimal(format(number, "f"))


def _places(number: Decimal) -> int:
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


# A non-negative exact decimal in, a decimal string out.
Price = Annotated[
    Decimal,
    PlainValidator(_to_decimal),
    PlainSerializer(lambda value: format(value, "f"), return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": PRICE_PATTERN},
                {"type": "number", "minimum": 0},
            ],
            "examples": ["2.50"],
        }
    ),
]
DecimalOut = Annotated[Decimal, PlainSerializer(lambda value: format(value, "f"), return_type=str)]


# Times without an offset are read as UTC; all are answered in UTC.
UtcDatetime = UtcMoment


def check_meter(meter: str) -> str:
    """A canonical meter or a custom meter name as spans report them."""
    if is_meter_name(meter):
        return meter
    raise ValueError(
        f"unknown meter {meter!r}: use one of {', '.join(CANONICAL_METERS)} or a custom "
        f"meter name matching {METER_NAME_PATTERN}"
    )


Meter = Annotated[str, AfterValidator(check_meter)]
Pattern = Annotated[str, Field(min_length=1, max_length=256)]


def _check_currency(code: str) -> str:
    try:
        return normalize_currency(code)
    except UnknownCurrencyError as error:
        raise ValueError(str(error)) from None


Currency = Annotated[str, AfterValidator(_check_currency)]


# --- Components ------------------------------------------------------------------------


class TierIn(BaseModel):
    """Units up to `up_to` (null: no upper bound, last tier only) at `unit_price` per the
    component's `per_units`, plus `flat_fee` once when the tier is reached."""

    model_config = ConfigDict(extra="forbid")

    up_to: int | None = Field(gt=0)
    unit_price: Price
    flat_fee: Price = Decimal(0)


# Per charge model: the fields it requires, and the optional ones it also accepts.
_REQUIRED: dict[ChargeModel, tuple[str, ...]] = {
    ChargeModel.PER_UNIT: ("meter", "unit_price"),
    ChargeModel.GRADUATED: ("meter", "tiers"),
    ChargeModel.VOLUME: ("meter", "tiers"),
    ChargeModel.PACKAGE: ("meter", "package_size", "unit_price"),
    ChargeModel.FLAT_FEE: ("amount",),
    ChargeModel.ALLOWANCE: ("meter", "included_quantity", "unit_price"),
    ChargeModel.MINIMUM: ("amount",),
    ChargeModel.COST_PLUS: ("meter", "markup"),
}
_OPTIONAL: dict[ChargeModel, tuple[str, ...]] = {
    ChargeModel.PER_UNIT: ("per_units", "filters"),
    ChargeModel.GRADUATED: ("per_units", "filters"),
    ChargeModel.VOLUME: ("per_units", "filters"),
    ChargeModel.PACKAGE: ("filters",),
    ChargeModel.FLAT_FEE: (),
    ChargeModel.ALLOWANCE: ("per_units", "filters"),
    ChargeModel.MINIMUM: (),
    ChargeModel.COST_PLUS: ("unit_price", "per_units", "filters"),
}
# Fields whose presence depends on the charge model; name, charge and priority always apply.
_CHARGE_FIELDS = (
    "meter",
    "filters",
    "unit_price",
    "per_units",
    "tiers",
    "package_size",
    "included_quantity",
    "amount",
    "markup",
)


class ComponentIn(BaseModel):
    """One priced thing: the usage it matches (`meter`, `filters`) and its charge model.

    - `per_unit`: meter, unit_price per `per_units` (e.g. "2.50" per 1000000 tokens)
    - `graduated` / `volume`: meter, tiers, per_units
    - `package`: meter, package_size, unit_price per package
    - `flat_fee`: amount per period (no meter)
    - `allowance`: meter, included_quantity, unit_price per `per_units` of overage
    - `minimum`: amount > 0, the minimum commitment per period (no meter)
    - `cost_plus`: meter, markup (0.2 = provider cost + 20 %), optional unit_price fee
    """

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        default=None,
        description="ignored: ids are assigned on write; accepted so that a component "
        "read from the API can be sent back unchanged",
    )
    name: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")
    meter: Meter | None = None
    filters: dict[str, Pattern] = Field(default_factory=dict)
    charge: ChargeModel
    unit_price: Price | None = None
    per_units: int = Field(default=1, ge=1, le=_MAX_PER_UNITS, description=PER_UNITS_RULE)
    tiers: list[TierIn] | None = Field(default=None, min_length=1, max_length=100)
    package_size: int | None = Field(default=None, ge=1, le=_MAX_PER_UNITS)
    included_quantity: Price | None = None
    amount: Price | None = None
    markup: Price | None = None
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)

    @field_validator("filters")
    @classmethod
    def _known_dimensions(cls, filters: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(filters) - set(FILTER_DIMENSIONS))
        if unknown:
            raise ValueError(
                f"unknown filter key(s) {', '.join(unknown)}; use {', '.join(FILTER_DIMENSIONS)}"
            )
        return filters

    @field_validator("tiers")
    @classmethod
    def _ordered_tiers(cls, tiers: list[TierIn] | None) -> list[TierIn] | None:
        if tiers is None:
            return None
        for index, tier in enumerate(tiers[:-1], start=1):
            if tier.up_to is None:
                raise ValueError(f"tier {index} has no up_to: only the last tier may be unbounded")
        if tiers[-1].up_to is not None:
            raise ValueError("the last tier must have up_to null so every quantity has a price")
        bounds = [tier.up_to for tier in tiers if tier.up_to is not None]
        for index, (low, high) in enumerate(pairwise(bounds), start=2):
            if high <= low:
                raise ValueError(
                    f"tiers overlap or are out of order: tier {index} up_to {high} must be "
                    f"greater than tier {index - 1} up_to {low}"
                )
        return tiers

    @model_validator(mode="after")
    def _fields_of_charge(self) -> ComponentIn:
        required = _REQUIRED[self.charge]
        missing = [name for name in required if not self._given(name)]
        if missing:
            raise ValueError(f"{self.charge} component {self.name!r} requires {', '.join(missing)}")
        allowed = {*required, *_OPTIONAL[self.charge]}
        extra = [name for name in _CHARGE_FIELDS if name not in allowed and self._given(name)]
        if extra:
            raise ValueError(
                f"{self.charge} component {self.name!r} does not take {', '.join(extra)}"
            )
        if self.charge == ChargeModel.MINIMUM and self.amount is not None and self.amount <= 0:
            raise ValueError(f"minimum component {self.name!r} needs an amount above 0")
        return self

    def component(self) -> Component:
        """The component as the pricing service takes it."""
        return Component(
            name=self.name,
            meter=self.meter,
            filters=Filters(self.filters),
            charge=self.charge,
            unit_price=self.unit_price,
            per_units=self.per_units,
            tiers=tuple(Tier(t.up_to, t.unit_price, t.flat_fee) for t in self.tiers or ()),
            package_size=self.package_size,
            included_quantity=self.included_quantity,
            amount=self.amount,
            markup=self.markup,
            priority=self.priority,
        )

    def _given(self, name: str) -> bool:
        # Defaults count as not given, so a component read back from the API (nulls,
        # per_units 1, empty filters) can be sent again unchanged.
        value = getattr(self, name)
        if name == "per_units":
            return bool(value != 1)
        if name == "filters":
            return bool(value)
        return value is not None


def unique_names(components: list[ComponentIn]) -> list[ComponentIn]:
    """Component names identify components (overrides replace by name): no duplicates."""
    seen: set[str] = set()
    for component in components:
        if component.name in seen:
            raise ValueError(f"component name {component.name!r} is used twice")
        seen.add(component.name)
    return components


Components = Annotated[list[ComponentIn], AfterValidator(unique_names), Field(max_length=500)]


class TierOut(BaseModel):
    up_to: int | None
    unit_price: DecimalOut
    flat_fee: DecimalOut


class ComponentOut(BaseModel):
    id: str
    name: str
    meter: str | None
    filters: dict[str, str]
    charge: str
    unit_price: DecimalOut | None
    per_units: int
    tiers: list[TierOut] | None
    package_size: int | None
    included_quantity: DecimalOut | None
    amount: DecimalOut | None
    markup: DecimalOut | None
    priority: int

    @classmethod
    def of(cls, component: Component) -> ComponentOut:
        """The component as the API shows it (stored components with tiers have at
        least one, so no tiers reads as null)."""
        tiers = [TierOut(up_to=t.up_to, unit_price=t.unit_price, flat_fee=t.flat_fee)
                 for t in component.tiers]  # fmt: skip
        return cls(
            id=component.id,
            name=component.name,
            meter=component.meter,
            filters=dict(component.filters),
            charge=component.charge,
            unit_price=component.unit_price,
            per_units=component.per_units,
            tiers=tiers or None,
            package_size=component.package_size,
            included_quantity=component.included_quantity,
            amount=component.amount,
            markup=component.markup,
            priority=component.priority,
        )


# --- Price books and versions ----------------------------------------------------------


class PriceBookCreate(BaseModel):
    """A price book in one currency. A tenant's first book becomes its default."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")
    currency: Currency
    is_default: bool = False
    usd_rate: Price = Field(
        default=Decimal(1), description="units of the book's currency per USD (provider cost)"
    )

    @field_validator("usd_rate")
    @classmethod
    def _positive_rate(cls, rate: Decimal) -> Decimal:
        if rate <= 0:
            raise ValueError("usd_rate must be above 0")
        return rate


class PriceBookUpdate(BaseModel):
    """Fields to change; the currency of a book is fixed (make a new book instead)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")
    is_default: bool | None = None
    usd_rate: Price | None = None

    @field_validator("usd_rate")
    @classmethod
    def _positive_rate(cls, rate: Decimal | None) -> Decimal | None:
        if rate is not None and rate <= 0:
            raise ValueError("usd_rate must be above 0")
        return rate


class VersionCreate(BaseModel):
    """A new version of a book's prices, in effect from `effective_from`.

    With `copy_from_version`, the components of that version are copied first; components
    given here then replace copied ones of the same name or are added after them.
    """

    model_config = ConfigDict(extra="forbid")

    effective_from: UtcDatetime
    components: Components = Field(default_factory=list)
    copy_from_version: int | None = Field(default=None, ge=1)


class ComponentsReplace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    components: Components


class VersionSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    number: int
    effective_from: datetime
    locked_at: datetime | None
    created_at: datetime


class VersionOut(VersionSummary):
    book_id: str
    components: list[ComponentOut]

    @classmethod
    def of(cls, detail: VersionDetail) -> VersionOut:
        """A version with its components."""
        version = detail.version
        return cls(
            book_id=version.book_id,
            number=version.number,
            effective_from=version.effective_from,
            locked_at=version.locked_at,
            created_at=version.created_at,
            components=[ComponentOut.of(c) for c in detail.components],
        )


class PriceBookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    currency: str
    is_default: bool
    usd_rate: DecimalOut
    created_at: datetime


class PriceBookDetail(PriceBookOut):
    versions: list[VersionSummary]

    @classmethod
    def of(cls, detail: BookDetail) -> PriceBookDetail:
        """A book with a summary of each version."""
        versions = [VersionSummary.model_validate(v) for v in detail.versions]
        return cls(**PriceBookOut.model_validate(detail.book).model_dump(), versions=versions)


# --- Customer terms --------------------------------------------------------------------


class CustomerPriceBookSet(BaseModel):
    """The customer's price book; null puts the customer back on the tenant's default."""

    model_config = ConfigDict(extra="forbid")

    price_book_id: str | None


class CustomerPriceBookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    customer_id: str
    price_book_id: str | None


class OverrideCreate(BaseModel):
    """Contract terms of one customer over [effective_from, effective_until)."""

    model_config = ConfigDict(extra="forbid")

    effective_from: UtcDatetime
    effective_until: UtcDatetime | None = None
    note: str = Field(default="", max_length=2000)
    components: Annotated[Components, Field(min_length=1)]

    @model_validator(mode="after")
    def _ordered(self) -> OverrideCreate:
        if self.effective_until is not None and self.effective_until <= self.effective_from:
            raise ValueError("effective_until must be after effective_from")
        return self


class OverrideOut(BaseModel):
    id: str
    customer_id: str
    effective_from: datetime
    effective_until: datetime | None
    note: str
    created_at: datetime
    components: list[ComponentOut]

    @classmethod
    def of(cls, detail: OverrideDetail) -> OverrideOut:
        """An override with its components."""
        override = detail.override
        return cls(
            id=override.id,
            customer_id=override.customer_id,
            effective_from=override.effective_from,
            effective_until=override.effective_until,
            note=override.note,
            created_at=override.created_at,
            components=[ComponentOut.of(c) for c in detail.components],
        )


# --- Provider costs --------------------------------------------------------------------


class ProviderCostCreate(BaseModel):
    """A negotiated provider rate (USD per `per_units`) replacing the public one from
    `effective_from` on. `provider` and `model` are exact values or globs."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1, max_length=128)
    model: str = Field(min_length=1, max_length=256)
    meter: Meter
    unit_cost_usd: Price
    per_units: int = Field(default=1, ge=1, le=_MAX_PER_UNITS, description=PER_UNITS_RULE)
    effective_from: UtcDatetime


class ProviderCostOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    provider: str
    model: str
    meter: str
    unit_cost_usd: DecimalOut
    per_units: int
    effective_from: datetime
    created_at: datetime
