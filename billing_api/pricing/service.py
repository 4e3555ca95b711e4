"""Price books, their versions and components, customer terms and provider costs.

Prices live outside the agents' code and change over time: a book holds numbered versions,
each in effect from its `effective_from` until the next one starts. A version that priced a
finalized invoice is locked, so the invoice can always be explained by the prices it used;
changing prices then means a new version. The rating engine reads what is stored here.

Every function takes the caller: staff read, the billing role (and admins) write, and a
customer-scoped caller gets nothing here (prices, provider costs and internal ids are the
tenant's own). Results are the domain's rows and the frozen values below.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from agentmeter.money import exact_minor
from agentmeter.tables import (
    CustomerOverride,
    PriceBook,
    PriceComponent,
    PriceVersion,
    ProviderCostOverride,
)
from billing_api.auth import Caller, Role
from billing_api.customers.service import get_customer
from billing_api.errors import ConflictError, NotFoundError
from billing_api.meters.service import check_known
from billing_api.pricing import repository as pricing_sql
from billing_api.pricing.components import Component, component_from_row, tier_to_json
from billing_api.pricing.recost import enqueue_recost
from billing_api.pricing.repository import PricingRepository


@dataclass(frozen=True, slots=True)
class BookDetail:
    """A price book and its versions, oldest first."""

    book: PriceBook
    versions: Sequence[PriceVersion]


@dataclass(frozen=True, slots=True)
class VersionDetail:
    """A version of a book's prices with its components in position order."""

    version: PriceVersion
    components: tuple[Component, ...]


@dataclass(frozen=True, slots=True)
class OverrideDetail:
    """A customer's contract terms with their components in position order."""

    override: CustomerOverride
    components: tuple[Component, ...]


@dataclass(frozen=True, slots=True)
class CustomerBook:
    """The book a customer is priced by; None: the tenant's default book."""

    customer_id: str
    price_book_id: str | None


def _new_id() -> str:
    return uuid.uuid4().hex


# --- Components ------------------------------------------------------------------------


def _component_row(component: Component) -> PriceComponent:
    """An unattached row for a validated component (position and owner set by the caller)."""
    tiers = [tier_to_json(t) for t in component.tiers] if component.tiers else None
    return PriceComponent(
        id=_new_id(),
        name=component.name,
        meter=component.meter,
        filters=dict(component.filters),
        charge=component.charge,
        unit_price=component.unit_price,
        per_units=component.per_units,
        tiers=tiers,
        package_size=component.package_size,
        included_quantity=component.included_quantity,
        amount=component.amount,
        markup=component.markup,
        priority=component.priority,
    )


def _exact_fees(components: Iterable[Component], currency: str) -> None:
    """Fees and commitments are money entered by hand: exact in the currency they bill
    in (`exact_minor`), unlike unit prices, which may be finer than its minor unit."""
    for component in components:
        if component.amount is not None:
            exact_minor(component.amount, currency, f"{component.name!r} amount")
        for index, tier in enumerate(component.tiers, start=1):
            exact_minor(tier.flat_fee, currency, f"{component.name!r} tier {index} flat_fee")


def _copied_row(row: PriceComponent) -> PriceComponent:
    return PriceComponent(
        id=_new_id(),
        name=row.name,
        meter=row.meter,
        filters=dict(row.filters),
        charge=row.charge,
        unit_price=row.unit_price,
        per_units=row.per_units,
        tiers=None if row.tiers is None else [dict(t) for t in row.tiers],
        package_size=row.package_size,
        included_quantity=row.included_quantity,
        amount=row.amount,
        markup=row.markup,
        priority=row.priority,
    )


def _layered(
    base: Iterable[PriceComponent], given: Iterable[PriceComponent]
) -> list[PriceComponent]:
    """`given` over `base` by name: a same-named component replaces in place, others follow."""
    rows = list(base)
    index = {row.name: i for i, row in enumerate(rows)}
    for row in given:
        if row.name in index:
            rows[index[row.name]] = row
        else:
            index[row.name] = len(rows)
            rows.append(row)
    return rows


def _positioned(
    rows: Sequence[PriceComponent], *, version_id: str | None = None, override_id: str | None = None
) -> Sequence[PriceComponent]:
    for position, row in enumerate(rows):
        row.position = position
        row.version_id = version_id
        row.override_id = override_id
    return rows


def _components(rows: Iterable[PriceComponent]) -> tuple[Component, ...]:
    return tuple(component_from_row(row) for row in rows)


# --- Price books -----------------------------------------------------------------------


def _book(repository: PricingRepository, caller: Caller, book_id: str) -> PriceBook:
    book = repository.get_book(caller.tenant_id, book_id)
    if book is None:
        raise NotFoundError(f"no price book {book_id!r}")
    return book


def create_price_book(
    session: Session,
    caller: Caller,
    name: str,
    currency: str,
    *,
    is_default: bool = False,
    usd_rate: Decimal = Decimal(1),
) -> PriceBook:
    """A new book; the tenant's first book, or one created with is_default, is the default."""
    caller.require(Role.BILLING)
    repository = PricingRepository(session)
    if repository.find_book_by_name(caller.tenant_id, name) is not None:
        raise ConflictError(f"a price book named {name!r} already exists")
    is_default = is_default or repository.default_book(caller.tenant_id) is None
    if is_default:
        repository.clear_default(caller.tenant_id)
    book = PriceBook(
        id=_new_id(),
        tenant_id=caller.tenant_id,
        name=name,
        currency=currency,
        is_default=is_default,
        usd_rate=usd_rate,
    )
    try:
        repository.add(book)
    except IntegrityError:
        raise ConflictError(f"a price book named {name!r} already exists") from None
    return book


def list_price_books(session: Session, caller: Caller) -> Sequence[PriceBook]:
    """The tenant's books."""
    caller.require_staff()
    return PricingRepository(session).list_books(caller.tenant_id)


def get_price_book(session: Session, caller: Caller, book_id: str) -> BookDetail:
    """One book with its versions."""
    caller.require_staff()
    repository = PricingRepository(session)
    book = _book(repository, caller, book_id)
    return BookDetail(book, repository.list_versions(book.id))


def update_price_book(
    session: Session,
    caller: Caller,
    book_id: str,
    *,
    name: str | None = None,
    is_default: bool | None = None,
    usd_rate: Decimal | None = None,
) -> PriceBook:
    """Rename a book, change its USD rate or make it the default (None: unchanged)."""
    caller.require(Role.BILLING)
    repository = PricingRepository(session)
    book = _book(repository, caller, book_id)
    if name is not None and name != book.name:
        if repository.find_book_by_name(caller.tenant_id, name) is not None:
            raise ConflictError(f"a price book named {name!r} already exists")
        book.name = name
    if usd_rate is not None:
        book.usd_rate = usd_rate
    if is_default is True and not book.is_default:
        repository.clear_default(caller.tenant_id)
        book.is_default = True
    elif is_default is False and book.is_default:
        # Customers without a book of their own are priced by the default: keep one.
        raise ConflictError(
            f"price book {book.name!r} is the default; make another book the default instead"
        )
    try:
        repository.flush()
    except IntegrityError:
        raise ConflictError(f"a price book named {name!r} already exists") from None
    return book


# --- Versions --------------------------------------------------------------------------


def _version(repository: PricingRepository, book: PriceBook, number: int) -> PriceVersion:
    version = repository.get_version(book.id, number)
    if version is None:
        raise NotFoundError(f"price book {book.name!r} has no version {number}")
    return version


def _check_unlocked(book: PriceBook, version: PriceVersion) -> None:
    if version.locked_at is not None:
        raise ConflictError(
            f"version {version.number} of price book {book.name!r} is locked: it priced a "
            f"finalized invoice. Create a new version instead (POST "
            f"/api/v1/price-books/{book.id}/versions with copy_from_version={version.number})"
        )


def create_version(
    session: Session,
    caller: Caller,
    book_id: str,
    effective_from: datetime,
    components: Sequence[Component] = (),
    *,
    copy_from_version: int | None = None,
) -> VersionDetail:
    """Version max + 1 of the book. With `copy_from_version`, that version's components
    come first and the given ones replace same-named ones or are added."""
    caller.require(Role.BILLING)
    check_known(session, caller.tenant_id, (c.meter for c in components))
    repository = PricingRepository(session)
    book = _book(repository, caller, book_id)
    _exact_fees(components, book.currency)
    if repository.version_starting_at(book.id, effective_from) is not None:
        raise ConflictError(
            f"price book {book.name!r} already has a version effective from "
            f"{effective_from.isoformat()}"
        )
    base: list[PriceComponent] = []
    if copy_from_version is not None:
        source = _version(repository, book, copy_from_version)
        base = [_copied_row(row) for row in repository.version_components(source.id)]
    version = PriceVersion(
        id=_new_id(),
        book_id=book.id,
        number=repository.max_version_number(book.id) + 1,
        effective_from=effective_from,
    )
    rows = _layered(base, (_component_row(c) for c in components))
    try:
        repository.add(version)
        repository.add(*_positioned(rows, version_id=version.id))
    except IntegrityError:
        # Another request created a version of this book at the same moment.
        raise ConflictError(
            f"a concurrent change to price book {book.name!r} won; retry the request"
        ) from None
    return VersionDetail(version, _components(rows))


def list_versions(session: Session, caller: Caller, book_id: str) -> Sequence[PriceVersion]:
    """The book's versions, oldest first."""
    caller.require_staff()
    repository = PricingRepository(session)
    book = _book(repository, caller, book_id)
    return repository.list_versions(book.id)


def get_version(session: Session, caller: Caller, book_id: str, number: int) -> VersionDetail:
    """One version of the book with its components."""
    caller.require_staff()
    repository = PricingRepository(session)
    version = _version(repository, _book(repository, caller, book_id), number)
    return VersionDetail(version, _components(repository.version_components(version.id)))


def replace_components(
    session: Session,
    caller: Caller,
    book_id: str,
    number: int,
    components: Sequence[Component],
) -> VersionDetail:
    """All components of an unlocked version, replaced by `components`."""
    caller.require(Role.BILLING)
    check_known(session, caller.tenant_id, (c.meter for c in components))
    repository = PricingRepository(session)
    book = _book(repository, caller, book_id)
    version = _version(repository, book, number)
    _check_unlocked(book, version)
    _exact_fees(components, book.currency)
    repository.delete_version_components(version.id)
    rows = _positioned([_component_row(c) for c in components], version_id=version.id)
    repository.add(*rows)
    return VersionDetail(version, _components(rows))


def delete_version(session: Session, caller: Caller, book_id: str, number: int) -> None:
    """Delete an unlocked version and its components."""
    caller.require(Role.BILLING)
    repository = PricingRepository(session)
    book = _book(repository, caller, book_id)
    version = _version(repository, book, number)
    _check_unlocked(book, version)
    repository.delete_version(version)


# --- Customer terms --------------------------------------------------------------------


def get_customer_price_book(session: Session, caller: Caller, customer_id: str) -> CustomerBook:
    """The customer's own book, if any."""
    caller.require_staff()
    customer = get_customer(session, caller, customer_id)
    return CustomerBook(customer.id, customer.price_book_id)


def set_customer_price_book(
    session: Session, caller: Caller, customer_id: str, book_id: str | None
) -> CustomerBook:
    """Assign a book of the tenant to the customer; None puts them on the default book."""
    caller.require(Role.BILLING)
    customer = get_customer(session, caller, customer_id)
    repository = PricingRepository(session)
    if book_id is not None:
        _book(repository, caller, book_id)
    customer.price_book_id = book_id
    repository.flush()
    return CustomerBook(customer.id, customer.price_book_id)


def create_override(
    session: Session,
    caller: Caller,
    customer_id: str,
    effective_from: datetime,
    components: Sequence[Component],
    *,
    effective_until: datetime | None = None,
    note: str = "",
) -> OverrideDetail:
    """Contract terms of a customer. Overrides may overlap in time; where two define the
    same component, rating applies the later one."""
    caller.require(Role.BILLING)
    customer = get_customer(session, caller, customer_id)
    check_known(session, caller.tenant_id, (c.meter for c in components))
    repository = PricingRepository(session)
    book = (
        repository.get_book(caller.tenant_id, customer.price_book_id)
        if customer.price_book_id
        else repository.default_book(caller.tenant_id)
    )
    # In the currency of the customer's book, as rating bills them (USD without a book).
    _exact_fees(components, book.currency if book else "USD")
    override = CustomerOverride(
        id=_new_id(),
        tenant_id=caller.tenant_id,
        customer_id=customer.id,
        effective_from=effective_from,
        effective_until=effective_until,
        note=note,
    )
    repository.add(override)
    rows = _positioned([_component_row(c) for c in components], override_id=override.id)
    repository.add(*rows)
    return OverrideDetail(override, _components(rows))


def list_overrides(session: Session, caller: Caller, customer_id: str) -> list[OverrideDetail]:
    """The customer's contract terms."""
    caller.require_staff()
    customer = get_customer(session, caller, customer_id)
    repository = PricingRepository(session)
    overrides = repository.list_overrides(caller.tenant_id, customer.id)
    components_of = repository.override_components([o.id for o in overrides])
    return [OverrideDetail(o, _components(components_of[o.id])) for o in overrides]


def delete_override(session: Session, caller: Caller, customer_id: str, override_id: str) -> None:
    """Remove one of the customer's contract terms."""
    caller.require(Role.BILLING)
    customer = get_customer(session, caller, customer_id)
    repository = PricingRepository(session)
    override = repository.get_override(caller.tenant_id, customer.id, override_id)
    if override is None:
        raise NotFoundError(f"customer {customer.id!r} has no override {override_id!r}")
    repository.delete_override(override)


# --- Provider costs --------------------------------------------------------------------


def create_provider_cost(
    session: Session,
    caller: Caller,
    *,
    provider: str,
    model: str,
    meter: str,
    unit_cost_usd: Decimal,
    per_units: int = 1,
    effective_from: datetime,
) -> ProviderCostOverride:
    """A negotiated provider rate; usage from `effective_from` on is re-costed with it."""
    caller.require(Role.BILLING)
    check_known(session, caller.tenant_id, [meter])
    repository = PricingRepository(session)
    duplicate = repository.find_provider_cost(
        caller.tenant_id, provider, model, meter, effective_from
    )
    if duplicate is not None:
        raise ConflictError(
            f"provider cost {duplicate.id} already prices {provider}/{model} "
            f"{meter} from {effective_from.isoformat()}; delete it first"
        )
    cost = ProviderCostOverride(
        id=_new_id(),
        tenant_id=caller.tenant_id,
        provider=provider,
        model=model,
        meter=meter,
        unit_cost_usd=unit_cost_usd,
        per_units=per_units,
        effective_from=effective_from,
    )
    repository.add(cost)
    _recost(session, caller.tenant_id, cost.effective_from)
    return cost


def list_provider_costs(session: Session, caller: Caller) -> Sequence[ProviderCostOverride]:
    """The tenant's negotiated provider rates."""
    caller.require_staff()
    return PricingRepository(session).list_provider_costs(caller.tenant_id)


def delete_provider_cost(session: Session, caller: Caller, cost_id: str) -> None:
    """Remove a negotiated rate; usage from its `effective_from` on is re-costed."""
    caller.require(Role.BILLING)
    repository = PricingRepository(session)
    cost = repository.get_provider_cost(caller.tenant_id, cost_id)
    if cost is None:
        raise NotFoundError(f"no provider cost {cost_id!r}")
    start = cost.effective_from
    repository.delete_provider_cost(cost)
    _recost(session, caller.tenant_id, start)


def _recost(session: Session, tenant_id: str, start: datetime) -> None:
    """Provider cost of stored usage from `start` on, recomputed with the current rates by
    a job queued in the request's transaction (it runs once the rate change commits)."""
    enqueue_recost(session, tenant_id, start)


def lock_versions_of_components(
    session: Session, tenant_id: str, component_ids: Sequence[str]
) -> None:
    """Lock the price versions that priced a finalized invoice (by its lines' components):
    from then on their prices change only through a new version."""
    pricing_sql.lock_versions_of_components(session, tenant_id, component_ids)
