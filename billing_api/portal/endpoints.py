"""HTTP surface of the portal's JSON: portal sessions and the brand for the builder (admin
key), and the customer's own API under `/portal/api` (portal token)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from agentmeter.clock import utcnow
from agentmeter.settings import Settings
from billing_api.auth import AdminCaller
from billing_api.deps import DbSession
from billing_api.portal import branding, service
from billing_api.portal.auth import PortalApiCaller, tokens
from billing_api.portal.schemas import (
    BrandingIn,
    BrandingOut,
    PortalDailyOut,
    PortalEstimateOut,
    PortalInvoiceOut,
    PortalSessionCreate,
    PortalSessionOut,
    PortalUsageOut,
)
from billing_api.portal.service import SeriesBy, UsageRange
from billing_api.portal.sessions import revoke
from billing_api.usage.schemas import usage_row

admin = APIRouter(prefix="/api/v1", tags=["portal"])
customer_api = APIRouter(prefix="/portal/api", tags=["portal"])


def public_base(request: Request) -> str:
    """Where links point: `AGENTMETER_PUBLIC_URL`, else the address this request reached."""
    settings: Settings = request.app.state.settings
    return (settings.public_url or str(request.base_url)).rstrip("/")


def portal_link(request: Request, token: str) -> str:
    """The link that opens the portal with `token` (the API and the dashboard hand it out)."""
    return f"{public_base(request)}/portal/open?token={token}"


@admin.post("/customers/{customer_id}/portal-sessions", status_code=201)
def create_portal_session(
    customer_id: str,
    request: Request,
    session: DbSession,
    caller: AdminCaller,
    body: PortalSessionCreate | None = None,
) -> PortalSessionOut:
    """A signed portal link for the customer, valid `expires_in` seconds (default 24 h)."""
    body = body or PortalSessionCreate()
    issued = tokens(request).issue(
        session, caller, customer_id, timedelta(seconds=body.expires_in), utcnow()
    )
    return PortalSessionOut(
        id=issued.id,
        url=portal_link(request, issued.token),
        token=issued.token,
        expires_at=issued.expires_at,
    )


@admin.delete("/portal-sessions/{session_id}", status_code=204)
def revoke_portal_session(session_id: str, session: DbSession, caller: AdminCaller) -> Response:
    """Revoke a portal link: its pages and API answer 401 from now on."""
    revoke(session, caller, session_id, utcnow())
    return Response(status_code=204)


@admin.get("/branding")
def get_branding(session: DbSession, caller: AdminCaller) -> BrandingOut:
    """The brand as set (fields not set are null)."""
    return BrandingOut.of(branding.get_settings(session, caller))


@admin.put("/branding")
def put_branding(body: BrandingIn, session: DbSession, caller: AdminCaller) -> BrandingOut:
    """Replace the brand the portal shows; fields left out are cleared."""
    return BrandingOut.of(branding.put_settings(session, caller, body.settings()))


@customer_api.get("/estimate")
def portal_estimate(session: DbSession, caller: PortalApiCaller) -> PortalEstimateOut:
    """The current period so far, line by line as the invoice will read."""
    return PortalEstimateOut.of(service.current_period(session, caller, utcnow()))


@customer_api.get("/usage")
def portal_usage(
    session: DbSession,
    caller: PortalApiCaller,
    range: Annotated[UsageRange, Query()] = UsageRange.THIS_PERIOD,
) -> PortalUsageOut:
    """The customer's usage per day, meter, model, step, tool and source in the range."""
    window = service.usage_window(session, caller, range, utcnow())
    return PortalUsageOut(rows=[usage_row(a) for a in service.usage_rows(session, caller, window)])


@customer_api.get("/usage/daily")
def portal_daily_usage(
    session: DbSession,
    caller: PortalApiCaller,
    range: Annotated[UsageRange, Query()] = UsageRange.THIS_PERIOD,
    by: Annotated[SeriesBy, Query()] = SeriesBy.METER,
    meter: Annotated[str | None, Query(max_length=128)] = None,
) -> PortalDailyOut:
    """The daily chart's data: one series per meter, or per model of one meter."""
    window = service.usage_window(session, caller, range, utcnow())
    daily = service.daily_usage(session, caller, window, by, meter)
    return PortalDailyOut.of(window.start, window.end, by.value, meter, daily)


@customer_api.get("/invoices")
def portal_invoices(session: DbSession, caller: PortalApiCaller) -> list[PortalInvoiceOut]:
    """The customer's issued invoices, newest first."""
    return [PortalInvoiceOut.of(i) for i in service.list_invoices(session, caller)]


@customer_api.get("/invoices/{invoice_id}")
def portal_invoice(
    invoice_id: str, session: DbSession, caller: PortalApiCaller
) -> PortalInvoiceOut:
    """One of the customer's issued invoices, lines as billed."""
    return PortalInvoiceOut.of(service.get_invoice(session, caller, invoice_id))
