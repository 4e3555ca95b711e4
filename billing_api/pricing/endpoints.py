"""HTTP surface of the pricing domain: price books and versions, customer terms, provider
costs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from billing_api.auth import AdminCaller
from billing_api.deps import DbSession
from billing_api.pricing import service
from billing_api.pricing.schemas import (
    ComponentsReplace,
    CustomerPriceBookOut,
    CustomerPriceBookSet,
    OverrideCreate,
    OverrideOut,
    PriceBookCreate,
    PriceBookDetail,
    PriceBookOut,
    PriceBookUpdate,
    ProviderCostCreate,
    ProviderCostOut,
    VersionCreate,
    VersionOut,
    VersionSummary,
)

router = APIRouter(prefix="/api/v1", tags=["pricing"])

# Version numbers count up from 1; the bound keeps an absurd one a 404, not a database error.
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]


# --- Price books -----------------------------------------------------------------------


@router.post("/price-books", status_code=201)
def create_price_book(
    body: PriceBookCreate, session: DbSession, caller: AdminCaller
) -> PriceBookOut:
    """A price book in one ISO 4217 currency. The tenant's first book is its default;
    `is_default: true` makes this book the default in place of the previous one."""
    book = service.create_price_book(
        session,
        caller,
        body.name,
        body.currency,
        is_default=body.is_default,
        usd_rate=body.usd_rate,
    )
    return PriceBookOut.model_validate(book)


@router.get("/price-books")
def list_price_books(session: DbSession, caller: AdminCaller) -> list[PriceBookOut]:
    return [PriceBookOut.model_validate(b) for b in service.list_price_books(session, caller)]


@router.get("/price-books/{book_id}")
def get_price_book(book_id: str, session: DbSession, caller: AdminCaller) -> PriceBookDetail:
    """The book with a summary of each of its versions."""
    return PriceBookDetail.of(service.get_price_book(session, caller, book_id))


@router.patch("/price-books/{book_id}")
def update_price_book(
    book_id: str, body: PriceBookUpdate, session: DbSession, caller: AdminCaller
) -> PriceBookOut:
    book = service.update_price_book(
        session,
        caller,
        book_id,
        name=body.name,
        is_default=body.is_default,
        usd_rate=body.usd_rate,
    )
    return PriceBookOut.model_validate(book)


# --- Versions --------------------------------------------------------------------------


@router.post("/price-books/{book_id}/versions", status_code=201)
def create_version(
    book_id: str, body: VersionCreate, session: DbSession, caller: AdminCaller
) -> VersionOut:
    """The next version of the book's prices, in effect from `effective_from`."""
    version = service.create_version(
        session,
        caller,
        book_id,
        body.effective_from,
        [c.component() for c in body.components],
        copy_from_version=body.copy_from_version,
    )
    return VersionOut.of(version)


@router.get("/price-books/{book_id}/versions")
def list_versions(book_id: str, session: DbSession, caller: AdminCaller) -> list[VersionSummary]:
    return [
        VersionSummary.model_validate(v) for v in service.list_versions(session, caller, book_id)
    ]


@router.get("/price-books/{book_id}/versions/{number}")
def get_version(
    book_id: str, number: VersionNumber, session: DbSession, caller: AdminCaller
) -> VersionOut:
    """The version with its components in position order."""
    return VersionOut.of(service.get_version(session, caller, book_id, number))


@router.put("/price-books/{book_id}/versions/{number}/components")
def replace_components(
    book_id: str,
    number: VersionNumber,
    body: ComponentsReplace,
    session: DbSession,
    caller: AdminCaller,
) -> VersionOut:
    """Replace every component of the version; 409 once the version is locked."""
    components = [c.component() for c in body.components]
    return VersionOut.of(service.replace_components(session, caller, book_id, number, components))


@router.delete("/price-books/{book_id}/versions/{number}", status_code=204)
def delete_version(
    book_id: str, number: VersionNumber, session: DbSession, caller: AdminCaller
) -> Response:
    """Delete the version and its components; 409 once the version is locked."""
    service.delete_version(session, caller, book_id, number)
    return Response(status_code=204)


# --- Customer terms --------------------------------------------------------------------


@router.get("/customers/{customer_id}/price-book")
def get_customer_price_book(
    customer_id: str, session: DbSession, caller: AdminCaller
) -> CustomerPriceBookOut:
    """The customer's own book, or null when the tenant's default book applies."""
    return CustomerPriceBookOut.model_validate(
        service.get_customer_price_book(session, caller, customer_id)
    )


@router.put("/customers/{customer_id}/price-book")
def set_customer_price_book(
    customer_id: str, body: CustomerPriceBookSet, session: DbSession, caller: AdminCaller
) -> CustomerPriceBookOut:
    book = service.set_customer_price_book(session, caller, customer_id, body.price_book_id)
    return CustomerPriceBookOut.model_validate(book)


@router.post("/customers/{customer_id}/overrides", status_code=201)
def create_override(
    customer_id: str, body: OverrideCreate, session: DbSession, caller: AdminCaller
) -> OverrideOut:
    """Contract terms: components that replace the book's components of the same name, or
    add to them, from `effective_from` until `effective_until` (open-ended if null)."""
    override = service.create_override(
        session,
        caller,
        customer_id,
        body.effective_from,
        [c.component() for c in body.components],
        effective_until=body.effective_until,
        note=body.note,
    )
    return OverrideOut.of(override)


@router.get("/customers/{customer_id}/overrides")
def list_overrides(customer_id: str, session: DbSession, caller: AdminCaller) -> list[OverrideOut]:
    return [OverrideOut.of(o) for o in service.list_overrides(session, caller, customer_id)]


@router.delete("/customers/{customer_id}/overrides/{override_id}", status_code=204)
def delete_override(
    customer_id: str, override_id: str, session: DbSession, caller: AdminCaller
) -> Response:
    service.delete_override(session, caller, customer_id, override_id)
    return Response(status_code=204)


# --- Provider costs --------------------------------------------------------------------


@router.post("/provider-costs", status_code=201)
def create_provider_cost(
    body: ProviderCostCreate, session: DbSession, caller: AdminCaller
) -> ProviderCostOut:
    """A negotiated provider rate in USD per `per_units`, replacing the public price of
    matching usage from `effective_from` on."""
    cost = service.create_provider_cost(
        session,
        caller,
        provider=body.provider,
        model=body.model,
        meter=body.meter,
        unit_cost_usd=body.unit_cost_usd,
        per_units=body.per_units,
        effective_from=body.effective_from,
    )
    return ProviderCostOut.model_validate(cost)


@router.get("/provider-costs")
def list_provider_costs(session: DbSession, caller: AdminCaller) -> list[ProviderCostOut]:
    return [ProviderCostOut.model_validate(c) for c in service.list_provider_costs(session, caller)]


@router.delete("/provider-costs/{cost_id}", status_code=204)
def delete_provider_cost(cost_id: str, session: DbSession, caller: AdminCaller) -> Response:
    service.delete_provider_cost(session, caller, cost_id)
    return Response(status_code=204)
