"""HTTP surface of the pricing domain: price books and versions, customer terms, provider
costs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from billing_api.auth import TenantId
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
    body: PriceBookCreate, session: DbSession, tenant_id: TenantId
) -> PriceBookOut:
    """A price book in one ISO 4217 currency. The tenant's first book is its default;
    `is_default: true` makes this book the default in place of the previous one."""
    return service.create_price_book(session, tenant_id, body)


@router.get("/price-books")
def list_price_books(session: DbSession, tenant_id: TenantId) -> list[PriceBookOut]:
    return service.list_price_books(session, tenant_id)


@router.get("/price-books/{book_id}")
def get_price_book(book_id: str, session: DbSession, tenant_id: TenantId) -> PriceBookDetail:
    """The book with a summary of each of its versions."""
    return service.get_price_book(session, tenant_id, book_id)


@router.patch("/price-books/{book_id}")
def update_price_book(
    book_id: str, body: PriceBookUpdate, session: DbSession, tenant_id: TenantId
) -> PriceBookOut:
    return service.update_price_book(session, tenant_id, book_id, body)


# --- Versions --------------------------------------------------------------------------


@router.post("/price-books/{book_id}/versions", status_code=201)
def create_version(
    book_id: str, body: VersionCreate, session: DbSession, tenant_id: TenantId
) -> VersionOut:
    """The next version of the book's prices, in effect from `effective_from`."""
    return service.create_version(session, tenant_id, book_id, body)


@router.get("/price-books/{book_id}/versions")
def list_versions(book_id: str, session: DbSession, tenant_id: TenantId) -> list[VersionSummary]:
    return service.list_versions(session, tenant_id, book_id)


@router.get("/price-books/{book_id}/versions/{number}")
def get_version(
    book_id: str, number: VersionNumber, session: DbSession, tenant_id: TenantId
) -> VersionOut:
    """The version with its components in position order."""
    return service.get_version(session, tenant_id, book_id, number)


@router.put("/price-books/{book_id}/versions/{number}/components")
def replace_components(
    book_id: str,
    number: VersionNumber,
    body: ComponentsReplace,
    session: DbSession,
    tenant_id: TenantId,
) -> VersionOut:
    """Replace every component of the version; 409 once the version is locked."""
    return service.replace_components(session, tenant_id, book_id, number, body.components)


@router.delete("/price-books/{book_id}/versions/{number}", status_code=204)
def delete_version(
    book_id: str, number: VersionNumber, session: DbSession, tenant_id: TenantId
) -> Response:
    """Delete the version and its components; 409 once the version is locked."""
    service.delete_version(session, tenant_id, book_id, number)
    return Response(status_code=204)


# --- Customer terms --------------------------------------------------------------------


@router.get("/customers/{customer_id}/price-book")
def get_customer_price_book(
    customer_id: str, session: DbSession, tenant_id: TenantId
) -> CustomerPriceBookOut:
    """The customer's own book, or null when the tenant's default book applies."""
    return service.get_customer_price_book(session, tenant_id, customer_id)


@router.put("/customers/{customer_id}/price-book")
def set_customer_price_book(
    customer_id: str, body: CustomerPriceBookSet, session: DbSession, tenant_id: TenantId
) -> CustomerPriceBookOut:
    return service.set_customer_price_book(session, tenant_id, customer_id, body.price_book_id)


@router.post("/customers/{customer_id}/overrides", status_code=201)
def create_override(
    customer_id: str, body: OverrideCreate, session: DbSession, tenant_id: TenantId
) -> OverrideOut:
    """Contract terms: components that replace the book's components of the same name, or
    add to them, from `effective_from` until `effective_until` (open-ended if null)."""
    return service.create_override(session, tenant_id, customer_id, body)


@router.get("/customers/{customer_id}/overrides")
def list_overrides(customer_id: str, session: DbSession, tenant_id: TenantId) -> list[OverrideOut]:
    return service.list_overrides(session, tenant_id, customer_id)


@router.delete("/customers/{customer_id}/overrides/{override_id}", status_code=204)
def delete_override(
    customer_id: str, override_id: str, session: DbSession, tenant_id: TenantId
) -> Response:
    service.delete_override(session, tenant_id, customer_id, override_id)
    return Response(status_code=204)


# --- Provider costs --------------------------------------------------------------------


@router.post("/provider-costs", status_code=201)
def create_provider_cost(
    body: ProviderCostCreate, session: DbSession, tenant_id: TenantId
) -> ProviderCostOut:
    """A negotiated provider rate in USD per `per_units`, replacing the public price of
    matching usage from `effective_from` on."""
    return service.create_provider_cost(session, tenant_id, body)


@router.get("/provider-costs")
def list_provider_costs(session: DbSession, tenant_id: TenantId) -> list[ProviderCostOut]:
    return service.list_provider_costs(session, tenant_id)


@router.delete("/provider-costs/{cost_id}", status_code=204)
def delete_provider_cost(cost_id: str, session: DbSession, tenant_id: TenantId) -> Response:
    service.delete_provider_cost(session, tenant_id, cost_id)
    return Response(status_code=204)
