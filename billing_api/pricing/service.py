"""Price books, their versions and components, customer terms and provider costs.

Prices live outside the agents' code and change over time: a book holds numbered versions,
each in effect from its `effective_from` until the next one starts. A version that priced a
finalized invoice is locked, so the invoice can always be explained by the prices it used;
changing prices then means a new version. The rating engine reads what is stored here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

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
from billing_api.customers.service import get_customer
from billing_api.errors import ConflictError, NotFoundError
from billing_api.meters.service import check_known
from billing_api.pricing import repository as pricing_sql
from billing_api.pricing.components import Tier, component_from_row, tier_to_json
from billing_api.pricing.recost import enqueue_recost
from billing_api.pricing.repository import PricingRepository
from billing_api.pricing.schemas import (
    ComponentIn,
    ComponentOut,
    CustomerPriceBookOut,
    OverrideCreate,
    OverrideOut,
    PriceBookCreate,
    PriceBookDetail,
    PriceBookOut,
    PriceBookUpdate,
    ProviderCostCreate,
    ProviderCostOut,
    TierOut,
    VersionCreate,
    VersionOut,
    VersionSummary,
)


def _new_id() -> str:
    return uuid.uuid4().hex


# --- Components ------------------------------------------------------------------------


def _component_row(component: ComponentIn) -> PriceComponent:
    """An unattached row for a validated component (position and owner set by the caller)."""
    tiers = None
    if component.tiers is not None:
        tiers = [tier_to_json(Tier(t.up_to, t.unit_price, t.flat_fee)) for t in component.tiers]
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


def _exact_fees(components: Iterable[ComponentIn], currency: str) -> None:
    """Fees and commitments are money entered by hand: exact in the currency they bill
    in (`exact_minor`), unlike unit prices, which may be finer than its minor unit."""
    for component in components:
        if component.amount is not None:
            exact_minor(component.amount, currency, f"{component.name!r} amount")
        for index, tier in enumerate(component.tiers or [], start=1):
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


def component_out(row: PriceComponent) -> ComponentOut:
    component = component_from_row(row)
    return ComponentOut(
        id=component.id,
        name=component.name,
        meter=component.meter,
        filters=dict(component.filters),
        charge=component.charge,
        unit_price=component.unit_price,
        per_units=component.per_units,
        tiers=None
        if row.tiers is None
        else [
            TierOut(up_to=t.up_to, unit_price=t.unit_price, flat_fee=t.flat_fee)
            for t in component.tiers
        ],
        package_size=component.package_size,
        included_quantity=component.included_quantity,
        amount=component.amount,
        markup=component.markup,
        priority=component.priority,
    )


# --- Price books -----------------------------------------------------------------------


def _book(repository: PricingRepository, tenant_id: str, book_id: str) -> PriceBook:
    book = repository.get_book(tenant_id, book_id)
    if book is None:
        raise NotFoundError(f"no price book {book_id!r}")
    return book


def create_price_book(session: Session, tenant_id: str, body: PriceBookCreate) -> PriceBookOut:
    """A new book; the tenant's first book, or one created with is_default, is the default."""
    repository = PricingRepository(session)
    if repository.find_book_by_name(tenant_id, body.name) is not None:
        raise ConflictError(f"a price book named {body.name!r} already exists")
    is_default = body.is_default or repository.default_book(tenant_id) is None
    if is_default:
        repository.clear_default(tenant_id)
    book = PriceBook(
        id=_new_id(),
        tenant_id=tenant_id,
        name=body.name,
        currency=body.currency,
        is_default=is_default,
        usd_rate=body.usd_rate,
    )
    try:
        repository.add(book)
    except IntegrityError:
        raise ConflictError(f"a price book named {body.name!r} already exists") from None
    return PriceBookOut.model_validate(book)


def list_price_books(session: Session, tenant_id: str) -> list[PriceBookOut]:
    return [
        PriceBookOut.model_validate(b) for b in PricingRepository(session).list_books(tenant_id)
    ]


def get_price_book(session: Session, tenant_id: str, book_id: str) -> PriceBookDetail:
    repository = PricingRepository(session)
    book = _book(repository, tenant_id, book_id)
    versions = [VersionSummary.model_validate(v) for v in repository.list_versions(book.id)]
    return PriceBookDetail(**PriceBookOut.model_validate(book).model_dump(), versions=versions)


def update_price_book(
    session: Session, tenant_id: str, book_id: str, body: PriceBookUpdate
) -> PriceBookOut:
    repository = PricingRepository(session)
    book = _book(repository, tenant_id, book_id)
    if body.name is not None and body.name != book.name:
        if repository.find_book_by_name(tenant_id, body.name) is not None:
            raise ConflictError(f"a price book named {body.name!r} already exists")
        book.name = body.name
    if body.usd_rate is not None:
        book.usd_rate = body.usd_rate
    if body.is_default is True and not book.is_default:
        repository.clear_default(tenant_id)
        book.is_default = True
    elif body.is_default is False and book.is_default:
        # Customers without a book of their own are priced by the default: keep one.
        raise ConflictError(
            f"price book {book.name!r} is the default; make another book the default instead"
        )
    try:
        repository.flush()
    except IntegrityError:
        raise ConflictError(f"a price book named {body.name!r} already exists") from None
    return PriceBookOut.model_validate(book)


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


def _version_out(version: PriceVersion, components: Sequence[PriceComponent]) -> VersionOut:
    return VersionOut(
        book_id=version.book_id,
        number=version.number,
        effective_from=version.effective_from,
        locked_at=version.locked_at,
        created_at=version.created_at,
        components=[component_out(c) for c in components],
    )


def create_version(
    session: Session, tenant_id: str, book_id: str, body: VersionCreate
) -> VersionOut:
    """Version max + 1 of the book. With `copy_from_version`, that version's components
    come first and the given ones replace same-named ones or are added."""
    check_known(session, tenant_id, (c.meter for c in body.components))
    repository = PricingRepository(session)
    book = _book(repository, tenant_id, book_id)
    _exact_fees(body.components, book.currency)
    if repository.version_starting_at(book.id, body.effective_from) is not None:
        raise ConflictError(
            f"price book {book.name!r} already has a version effective from "
            f"{body.effective_from.isoformat()}"
        )
    base: list[PriceComponent] = []
    if body.copy_from_version is not None:
        source = _version(repository, book, body.copy_from_version)
        base = [_copied_row(row) for row in repository.version_components(source.id)]
    version = PriceVersion(
        id=_new_id(),
        book_id=book.id,
        number=repository.max_version_number(book.id) + 1,
        effective_from=body.effective_from,
    )
    components = _layered(base, (_component_row(c) for c in body.components))
    try:
        repository.add(version)
        repository.add(*_positioned(components, version_id=version.id))
    except IntegrityError:
        # Another request created a version of this book at the same moment.
        raise ConflictError(
            f"a concurrent change to price book {book.name!r} won; retry the request"
        ) from None
    return _version_out(version, components)


def list_versions(session: Session, tenant_id: str, book_id: str) -> list[VersionSummary]:
    repository = PricingRepository(session)
    book = _book(repository, tenant_id, book_id)
    return [VersionSummary.model_validate(v) for v in repository.list_versions(book.id)]


def get_version(session: Session, tenant_id: str, book_id: str, number: int) -> VersionOut:
    repository = PricingRepository(session)
    version = _version(repository, _book(repository, tenant_id, book_id), number)
    return _version_out(version, repository.version_components(version.id))


def replace_components(
    session: Session,
    tenant_id: str,
    book_id: str,
    number: int,
    components: Sequence[ComponentIn],
) -> VersionOut:
    """All components of an unlocked version, replaced by `components`."""
    check_known(session, tenant_id, (c.meter for c in components))
    repository = PricingRepository(session)
    book = _book(repository, tenant_id, book_id)
    version = _version(repository, book, number)
    _check_unlocked(book, version)
    _exact_fees(components, book.currency)
    repository.delete_version_components(version.id)
    rows = _positioned([_component_row(c) for c in components], version_id=version.id)
    repository.add(*rows)
    return _version_out(version, rows)


def delete_version(session: Session, tenant_id: str, book_id: str, number: int) -> None:
    repository = PricingRepository(session)
    book = _book(repository, tenant_id, book_id)
    version = _version(repository, book, number)
    _check_unlocked(book, version)
    repository.delete_version(version)


# --- Customer terms --------------------------------------------------------------------


def get_customer_price_book(
    session: Session, tenant_id: str, customer_id: str
) -> CustomerPriceBookOut:
    customer = get_customer(session, tenant_id, customer_id)
    return CustomerPriceBookOut(customer_id=customer.id, price_book_id=customer.price_book_id)


def set_customer_price_book(
    session: Session, tenant_id: str, customer_id: str, book_id: str | None
) -> CustomerPriceBookOut:
    """Assign a book of the tenant to the customer; None puts them on the default book."""
    customer = get_customer(session, tenant_id, customer_id)
    repository = PricingRepository(session)
    if book_id is not None:
        _book(repository, tenant_id, book_id)
    customer.price_book_id = book_id
    repository.flush()
    return CustomerPriceBookOut(customer_id=customer.id, price_book_id=customer.price_book_id)


def _override_out(override: CustomerOverride, rows: Sequence[PriceComponent]) -> OverrideOut:
    return OverrideOut(
        id=override.id,
        customer_id=override.customer_id,
        effective_from=override.effective_from,
        effective_until=override.effective_until,
        note=override.note,
        created_at=override.created_at,
        components=[component_out(c) for c in rows],
    )


def create_override(
    session: Session, tenant_id: str, customer_id: str, body: OverrideCreate
) -> OverrideOut:
    """Contract terms of a customer. Overrides may overlap in time; where two define the
    same component, rating applies the later one."""
    customer = get_customer(session, tenant_id, customer_id)
    check_known(session, tenant_id, (c.meter for c in body.components))
    repository = PricingRepository(session)
    book = (
        repository.get_book(tenant_id, customer.price_book_id)
        if customer.price_book_id
        else repository.default_book(tenant_id)
    )
    # In the currency of the customer's book, as rating bills them (USD without a book).
    _exact_fees(body.components, book.currency if book else "USD")
    override = CustomerOverride(
        id=_new_id(),
        tenant_id=tenant_id,
        customer_id=customer.id,
        effective_from=body.effective_from,
        effective_until=body.effective_until,
        note=body.note,
    )
    repository.add(override)
    rows = _positioned([_component_row(c) for c in body.components], override_id=override.id)
    repository.add(*rows)
    return _override_out(override, rows)


def list_overrides(session: Session, tenant_id: str, customer_id: str) -> list[OverrideOut]:
    customer = get_customer(session, tenant_id, customer_id)
    repository = PricingRepository(session)
    overrides = repository.list_overrides(tenant_id, customer.id)
    components_of = repository.override_components([o.id for o in overrides])
    return [_override_out(o, components_of[o.id]) for o in overrides]


def delete_override(session: Session, tenant_id: str, customer_id: str, override_id: str) -> None:
    customer = get_customer(session, tenant_id, customer_id)
    repository = PricingRepository(session)
    override = repository.get_override(tenant_id, customer.id, override_id)
    if override is None:
        raise NotFoundError(f"customer {customer.id!r} has no override {override_id!r}")
    repository.delete_override(override)


# --- Provider costs --------------------------------------------------------------------


def create_provider_cost(
    session: Session, tenant_id: str, body: ProviderCostCreate
) -> ProviderCostOut:
    """A negotiated provider rate; usage from `effective_from` on is re-costed with it."""
    check_known(session, tenant_id, [body.meter])
    repository = PricingRepository(session)
    duplicate = repository.find_provider_cost(
        tenant_id, body.provider, body.model, body.meter, body.effective_from
    )
    if duplicate is not None:
        raise ConflictError(
            f"provider cost {duplicate.id} already prices {body.provider}/{body.model} "
            f"{body.meter} from {body.effective_from.isoformat()}; delete it first"
        )
    cost = ProviderCostOverride(
        id=_new_id(),
        tenant_id=tenant_id,
        provider=body.provider,
        model=body.model,
        meter=body.meter,
        unit_cost_usd=body.unit_cost_usd,
        per_units=body.per_units,
        effective_from=body.effective_from,
    )
    repository.add(cost)
    _recost(session, tenant_id, cost.effective_from)
    return ProviderCostOut.model_validate(cost)


def list_provider_costs(session: Session, tenant_id: str) -> list[ProviderCostOut]:
    return [
        ProviderCostOut.model_validate(c)
        for c in PricingRepository(session).list_provider_costs(tenant_id)
    ]


def delete_provider_cost(session: Session, tenant_id: str, cost_id: str) -> None:
    repository = PricingRepository(session)
    cost = repository.get_provider_cost(tenant_id, cost_id)
    if cost is None:
        raise NotFoundError(f"no provider cost {cost_id!r}")
    start = cost.effective_from
    repository.delete_provider_cost(cost)
    _recost(session, tenant_id, start)


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
