"""The pricing editor: price books, their versions and components, and a new version
drafted in a form, previewed what-if for every customer, then published."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from billing_api.auth import Caller, Role
from billing_api.dashboard import price_drafts, what_if
from billing_api.dashboard.forms import parse
from billing_api.dashboard.http import PREFIX, DashboardRoute, StaffCaller, render, see_other
from billing_api.dashboard.price_drafts import Draft
from billing_api.deps import DbSession
from billing_api.errors import ConflictError, NotFoundError
from billing_api.periods import period_containing
from billing_api.pricing import service as pricing
from billing_api.pricing.components import ChargeModel
from billing_api.pricing.schemas import PriceBookCreate, PriceBookDetail, VersionOut

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)


def _books_page(
    request: Request,
    session: Session,
    caller: Caller,
    errors: dict[str, str] | None = None,
    entered: dict[str, str] | None = None,
) -> Response:
    context = {"books": pricing.list_price_books(session, caller),
               "errors": errors or {}, "entered": entered or {}}  # fmt: skip
    return render(request, caller, "pricing.html", page="pricing", title="Pricing",
                  context=context, status=422 if errors else 200)  # fmt: skip


@router.get("/pricing", response_class=HTMLResponse)
def books(request: Request, session: DbSession, caller: StaffCaller) -> Response:
    """Every price book, and a form for a new one."""
    return _books_page(request, session, caller)


@router.post("/pricing/books", response_model=None)
def create_book(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    name: Annotated[str, Form(max_length=200)] = "",
    currency: Annotated[str, Form(max_length=3)] = "",
    is_default: Annotated[str, Form(max_length=5)] = "",
) -> Response:
    """Create a book (its first version is drafted on its page)."""
    caller.require(Role.BILLING)  # before the form is read: a viewer learns nothing from it
    entered = {"name": name, "currency": currency}
    body, errors = parse(PriceBookCreate, {**entered, "is_default": bool(is_default)})
    if body is None:
        return _books_page(request, session, caller, errors, entered)
    try:
        book = pricing.create_price_book(session, caller, body.name, body.currency,
                                         is_default=body.is_default)  # fmt: skip
    except ConflictError as error:
        return _books_page(request, session, caller, {"name": error.message}, entered)
    return see_other(f"/pricing/books/{book.id}")


def _book_page(
    request: Request,
    session: Session,
    caller: Caller,
    book_id: str,
    draft: Draft,
    comparisons: list[what_if.Comparison] | None = None,
    status: int = 200,
) -> Response:
    book = PriceBookDetail.of(pricing.get_price_book(session, caller, book_id))
    versions = [VersionOut.of(pricing.get_version(session, caller, book_id, v.number))
                for v in book.versions]  # fmt: skip
    context: dict[str, Any] = {
        "book": book,
        "versions": list(reversed(versions)),
        "draft": draft.with_blank_rows(),
        "charge_models": tuple(ChargeModel),
        "comparisons": comparisons,
    }
    return render(request, caller, "price_book.html", page="price-book", title=book.name,
                  context=context, status=status)  # fmt: skip


@router.get("/pricing/books/{book_id}", response_class=HTMLResponse)
def book_page(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    book_id: str,
    start: int | None = None,
) -> Response:
    """A book's versions; the editor starts from version `start` (default: the newest)."""
    detail = pricing.get_price_book(session, caller, book_id)
    book, numbers = detail.book, [v.number for v in detail.versions]
    number = start if start is not None else (numbers[-1] if numbers else None)
    effective = period_containing(utcnow()).start.date().isoformat()
    draft = Draft(effective_from=effective)
    if number is not None:
        if number not in numbers:
            raise NotFoundError(f"price book {book.name!r} has no version {number}")
        version = VersionOut.of(pricing.get_version(session, caller, book_id, number))
        draft = price_drafts.from_components(version.components, effective)
    return _book_page(request, session, caller, book_id, draft)


async def form_fields(request: Request) -> dict[str, str]:
    """The text fields of a posted form whose field names vary (the editor's rows)."""
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


@router.post("/pricing/books/{book_id}/versions", response_model=None)
def draft_version(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    book_id: str,
    fields: Annotated[dict[str, str], Depends(form_fields)],
) -> Response:
    """The editor's buttons: `intent` "rows" (more empty rows), "preview" (what-if, nothing
    written) or "publish" (create the version)."""
    caller.require(Role.BILLING)  # before the form is read: a viewer learns nothing from it
    draft = price_drafts.from_form(fields)
    intent = fields.get("intent", "preview")
    if intent == "rows":
        return _book_page(request, session, caller, book_id, draft)
    version, draft.errors = price_drafts.to_version(draft)
    if version is None:
        return _book_page(request, session, caller, book_id, draft, status=422)
    try:
        if intent == "publish":
            pricing.create_version(session, caller, book_id, version.effective_from,
                                   [c.component() for c in version.components],
                                   copy_from_version=version.copy_from_version)  # fmt: skip
            return see_other(f"/pricing/books/{book_id}#versions")
        comparisons = what_if.preview_version(session, caller, book_id, version, utcnow())
    except ConflictError as error:
        draft.errors = {"effective_from": error.message}
        return _book_page(request, session, caller, book_id, draft, status=409)
    return _book_page(request, session, caller, book_id, draft, comparisons)
