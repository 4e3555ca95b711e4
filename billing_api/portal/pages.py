"""The portal's pages (`/portal/…`): thin routes that read through `service`, as the JSON
API does, and render through the shared page layer under the tenant's brand."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from billing_api.auth import Caller
from billing_api.deps import DbSession
from billing_api.errors import NotFoundError
from billing_api.portal import branding, service
from billing_api.portal.auth import (
    COOKIE,
    COOKIE_MAX_AGE_SECONDS,
    COOKIE_PATH,
    INVALID,
    PortalPageCaller,
    tokens,
)
from billing_api.portal.endpoints import public_base
from billing_api.portal.service import BREAKDOWNS, SeriesBy, UsageRange
from billing_api.portal.sessions import InvalidPortalToken
from billing_api.usage.schemas import usage_row
from billing_api.web import PageError, Pages
from billing_api.web.formatting import LocaleFormat
from billing_api.web.security import page_headers

router = APIRouter(prefix="/portal", include_in_schema=False)

USAGE_CSV_COLUMNS = ("day", "meter", *BREAKDOWNS, "quantity")
_Choice = TypeVar("_Choice", bound=StrEnum)


def _choice(kind: type[_Choice], value: str | None, default: _Choice) -> _Choice:
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(c.value for c in kind)
        raise PageError(400, "Not a valid choice", f"Choose one of {choices}.") from None


def _render(
    request: Request,
    session: Session,
    caller: Caller,
    template: str,
    page: str,
    title: str,
    context: Mapping[str, Any],
) -> HTMLResponse:
    pages: Pages = request.app.state.pages
    brand = branding.get_brand(session, caller)
    return pages.render(
        request,
        f"portal/{template}",
        body_class=f"portal portal-{page}",
        title=f"{title} · {brand.name}",
        fmt=LocaleFormat(brand.locale),
        context={
            "brand": brand,
            "page": page,
            "customer_name": service.customer_name(session, caller),
            **context,
        },
        frame_ancestors=brand.frame_ancestors,
    )


@router.get("/open")
def open_link(request: Request, session: DbSession, token: str = "") -> Response:
    """Trade the link's token for a short-lived session cookie, then redirect to a URL
    without the token, so it stays out of history, address bars and referrers."""
    try:
        caller, expires_at = tokens(request).caller(session, token, utcnow())
    except InvalidPortalToken:
        raise PageError(401, "Link not valid", INVALID) from None
    brand = branding.get_brand(session, caller)
    secure = public_base(request).startswith("https://") or request.url.scheme == "https"
    embedded = bool(brand.frame_ancestors) and secure
    response = RedirectResponse(
        f"{COOKIE_PATH}/", status_code=303, headers=page_headers(brand.frame_ancestors)
    )
    response.set_cookie(
        COOKIE,
        token,
        max_age=min(COOKIE_MAX_AGE_SECONDS, int((expires_at - utcnow()).total_seconds())),
        path=COOKIE_PATH,
        httponly=True,
        secure=secure,
        # Inside the builder's app (a cross-site frame) the cookie must be SameSite=None,
        # partitioned to that site; otherwise Lax, so other sites' requests carry nothing.
        samesite="none" if embedded else "lax",
        partitioned=embedded,
    )
    return response


@router.post("/sign-out")
def sign_out() -> Response:
    """Forget the session cookie (the link itself stays valid until it expires)."""
    response = RedirectResponse(f"{COOKIE_PATH}/signed-out", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


@router.get("/signed-out")
def signed_out(request: Request) -> HTMLResponse:
    """Where signing out lands: says so, shows nothing else."""
    pages: Pages = request.app.state.pages
    return pages.error(
        request,
        PageError(200, "Signed out", "You are signed out. Open your link again to come back."),
    )


@router.get("/brand.css")
def brand_css(session: DbSession, caller: PortalPageCaller) -> Response:
    """The brand's colour as a CSS variable (validated as #rrggbb, so it is only that)."""
    brand = branding.get_brand(session, caller)
    css = f":root {{ --brand: {brand.primary_color}; }}\n"
    return Response(css, media_type="text/css", headers={"cache-control": "private, max-age=300"})


@router.get("/")
def current_period(request: Request, session: DbSession, caller: PortalPageCaller) -> HTMLResponse:
    """Usage and estimated charges of the current period, budget progress and credit."""
    current = service.current_period(session, caller, utcnow())
    return _render(
        request, session, caller, "current.html", "current", "Current period", {"current": current}
    )


@router.get("/usage")
def usage(
    request: Request,
    session: DbSession,
    caller: PortalPageCaller,
    range: str | None = None,
    by: str | None = None,
    meter: str | None = None,
) -> HTMLResponse:
    """The daily chart (by meter or by model of one meter), breakdown tables, CSV link."""
    which = _choice(UsageRange, range, UsageRange.THIS_PERIOD)
    series_by = _choice(SeriesBy, by, SeriesBy.METER)
    window = service.usage_window(session, caller, which, utcnow())
    breakdowns = service.usage_breakdowns(session, caller, window)
    # Every usage row has a source, so that breakdown names every meter there is.
    meters = sorted({total.meter for total in breakdowns["source"]})
    if meter not in meters:
        meter = "input_tokens" if "input_tokens" in meters else (meters[0] if meters else None)
    daily = (
        service.daily_usage(session, caller, window, series_by, meter)
        if series_by is SeriesBy.METER or meter is not None
        else None
    )
    query = {"range": which.value, "by": series_by.value, "meter": meter or ""}
    return _render(
        request,
        session,
        caller,
        "usage.html",
        "usage",
        "Usage",
        {
            "ranges": list(UsageRange),
            "series_kinds": list(SeriesBy),
            "which": which,
            "series_by": series_by,
            "meter": meter,
            "meters": meters,
            "window": window,
            "daily": daily,
            "breakdowns": breakdowns,
            "query": query,
        },
    )


@router.get("/usage.csv")
def usage_csv(session: DbSession, caller: PortalPageCaller, range: str | None = None) -> Response:
    """The customer's usage in the range, per day, meter, model, step, tool and source."""
    which = _choice(UsageRange, range, UsageRange.THIS_PERIOD)
    window = service.usage_window(session, caller, which, utcnow())
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(USAGE_CSV_COLUMNS)
    for amount in service.usage_rows(session, caller, window):
        row = usage_row(amount)
        writer.writerow([row[column] for column in USAGE_CSV_COLUMNS])
    name = f"usage-{window.start.date()}-{window.end.date()}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.get("/invoices")
def invoices(request: Request, session: DbSession, caller: PortalPageCaller) -> HTMLResponse:
    """The customer's issued invoices with status and payment status."""
    found = service.list_invoices(session, caller)
    return _render(
        request, session, caller, "invoices.html", "invoices", "Invoices", {"invoices": found}
    )


def _invoice(session: Session, caller: Caller, invoice_id: str) -> service.InvoiceView:
    try:
        return service.get_invoice(session, caller, invoice_id)
    except NotFoundError:
        raise PageError(404, "Not found", "There is no such invoice.") from None


@router.get("/invoices/{invoice_id}")
def invoice(
    invoice_id: str, request: Request, session: DbSession, caller: PortalPageCaller
) -> HTMLResponse:
    """An invoice with its lines as billed, and its printable and download links."""
    found = _invoice(session, caller, invoice_id)
    title = f"Invoice {found.number or ''}".strip()
    return _render(request, session, caller, "invoice.html", "invoice", title, {"invoice": found})


@router.get("/invoices/{invoice_id}/print")
def printable_invoice(
    invoice_id: str, request: Request, session: DbSession, caller: PortalPageCaller
) -> HTMLResponse:
    """The invoice alone under the brand, laid out for paper."""
    found = _invoice(session, caller, invoice_id)
    title = f"Invoice {found.number or ''}".strip()
    return _render(
        request, session, caller, "invoice_print.html", "invoice-print", title, {"invoice": found}
    )


@router.get("/invoices/{invoice_id}/download.{kind}")
def download_invoice(
    invoice_id: str, kind: str, session: DbSession, caller: PortalPageCaller
) -> Response:
    """The invoice as CSV or JSON, exactly as the REST export gives it."""
    if kind not in ("csv", "json"):
        raise PageError(404, "Not found", "Invoices download as csv or json.")
    try:
        document = service.export_invoice(session, caller, invoice_id, kind)
    except NotFoundError:
        raise PageError(404, "Not found", "There is no such invoice.") from None
    return Response(
        document.content,
        media_type=document.media_type,
        headers={"content-disposition": f'attachment; filename="{document.filename}"'},
    )
