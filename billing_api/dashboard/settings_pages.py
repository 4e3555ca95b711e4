"""Settings (admins): ingest keys (a new key is shown once; revoke), the attribute keys
that name the customer on spans, the webhook endpoint (a new secret shown once), the
portal's brand (as `PUT /api/v1/branding`) and the Stripe connection (as
`/api/v1/stripe/account`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from agentmeter.tenants import KeyKind, create_key, list_keys, revoke_key_id
from billing_api.auth import Caller
from billing_api.dashboard.forms import parse
from billing_api.dashboard.http import PREFIX, DashboardRoute, StaffCaller, render, see_other
from billing_api.deps import DbSession
from billing_api.errors import NotFoundError
from billing_api.invoicing import repository as invoicing
from billing_api.portal import branding
from billing_api.portal.schemas import BrandingIn
from billing_api.stripe import service as stripe
from billing_api.stripe.endpoints import Gateway, stripe_gateway
from billing_api.stripe.schemas import AccountConnect
from billing_api.tenant.schemas import TenantUpdate
from billing_api.tenant.service import update_tenant
from billing_api.webhooks import service as webhooks
from billing_api.webhooks.schemas import WebhookEndpointSet

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)


BRAND_FIELDS = (
    "name",
    "logo_url",
    "primary_color",
    "support_email",
    "support_url",
    "locale",
    "frame_ancestors",
)


def _brand_input(session: Session, caller: Caller) -> dict[str, str]:
    """The brand as set, as the form shows it (frame ancestors one a line)."""
    brand = branding.get_settings(session, caller)
    shown = {name: getattr(brand, name) or "" for name in BRAND_FIELDS}
    shown["frame_ancestors"] = "\n".join(brand.frame_ancestors)
    return shown


def _page(
    request: Request, session: Session, caller: Caller, status: int = 200, **extra: Any
) -> Response:
    tenant = invoicing.tenant(session, caller.tenant_id)
    context = {
        "keys": [k for k in list_keys(session, caller.tenant_id) if k.kind == KeyKind.INGEST],
        "customer_keys": tenant.customer_attribute_keys,
        "webhook_url": webhooks.get_endpoint(session, caller),
        "deliveries": webhooks.list_deliveries(session, caller, limit=20),
        "new_key": None,
        "new_secret": None,
        "errors": {},
        "brand": _brand_input(session, caller),
        "brand_errors": {},
        "stripe": stripe.get_connection(session, caller, stripe_gateway(request)),
        "stripe_errors": {},
        "stripe_input": {},
        **extra,
    }
    return render(request, caller, "settings.html", page="settings", title="Settings",
                  context=context, status=status)  # fmt: skip


@router.get("/settings", response_class=HTMLResponse)
def settings(request: Request, session: DbSession, caller: StaffCaller) -> Response:
    """Keys, attribute keys and webhooks (admins only: they hold secrets)."""
    caller.require()
    return _page(request, session, caller)


@router.post("/settings/ingest-keys", response_model=None)
def new_ingest_key(request: Request, session: DbSession, caller: StaffCaller) -> Response:
    """A new ingest key, shown on this response only (no redirect: it is never stored)."""
    caller.require()
    key = create_key(session, caller.tenant_id, KeyKind.INGEST)
    session.flush()
    return _page(request, session, caller, new_key=key)


@router.post("/settings/ingest-keys/{key_id}/revoke")
def revoke(session: DbSession, caller: StaffCaller, key_id: str) -> Response:
    """Revoke an ingest key: exports with it are refused from now on."""
    caller.require()
    kinds = {k.id: k.kind for k in list_keys(session, caller.tenant_id)}
    if kinds.get(key_id) != KeyKind.INGEST or not revoke_key_id(session, caller.tenant_id, key_id):
        raise NotFoundError(f"no active ingest key {key_id!r}")
    return see_other("/settings#keys")


@router.post("/settings/customer-keys", response_model=None)
def customer_keys(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    keys: Annotated[str, Form(max_length=6000)] = "",
) -> Response:
    """Replace the attribute keys that name the customer (one a line, first match wins)."""
    caller.require()
    lines = [line.strip() for line in keys.splitlines() if line.strip()]
    update, errors = parse(TenantUpdate, {"customer_attribute_keys": lines})
    if update is None:
        return _page(
            request, session, caller, status=422, errors={"keys": "; ".join(errors.values())}
        )
    update_tenant(session, caller, customer_attribute_keys=update.customer_attribute_keys)
    return see_other("/settings#customer-keys")


@router.post("/settings/webhook", response_model=None)
def webhook(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    url: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Point events at `url`; the new signing secret is shown on this response only."""
    caller.require()
    body, errors = parse(WebhookEndpointSet, {"url": url})
    if body is None:
        return _page(request, session, caller, status=422, errors=errors)
    secret = webhooks.set_endpoint(
        session,
        caller,
        body.url,
        allow_private=request.app.state.settings.webhook_allow_private,
    )
    return _page(request, session, caller, new_secret=secret)


@router.post("/settings/branding", response_model=None)
def brand(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    name: Annotated[str, Form(max_length=400)] = "",
    logo_url: Annotated[str, Form(max_length=4000)] = "",
    primary_color: Annotated[str, Form(max_length=40)] = "",
    support_email: Annotated[str, Form(max_length=640)] = "",
    support_url: Annotated[str, Form(max_length=4000)] = "",
    locale: Annotated[str, Form(max_length=70)] = "",
    frame_ancestors: Annotated[str, Form(max_length=8000)] = "",
) -> Response:
    """Replace the portal's brand, checked as `PUT /api/v1/branding` checks it (empty
    fields are cleared); refusals show next to the field."""
    caller.require()
    entered = {"name": name, "logo_url": logo_url, "primary_color": primary_color,
               "support_email": support_email, "support_url": support_url, "locale": locale,
               "frame_ancestors": frame_ancestors}  # fmt: skip
    sources = [line.strip() for line in frame_ancestors.splitlines() if line.strip()]
    body, errors = parse(BrandingIn, {**entered, "frame_ancestors": sources})
    if body is None:
        per_field = {key.split(".", 1)[0]: message for key, message in reversed(errors.items())}
        return _page(request, session, caller, status=422, brand=entered, brand_errors=per_field)
    branding.put_settings(session, caller, body.settings())
    return see_other("/settings#branding")


@router.post("/settings/stripe", response_model=None)
def connect_stripe(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    gateway: Gateway,
    account_id: Annotated[str, Form(max_length=100)] = "",
    application_fee_percent: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Connect a Stripe account onboarded elsewhere (checked with Stripe first), as
    `PUT /api/v1/stripe/account` does."""
    caller.require()
    entered = {"account_id": account_id, "application_fee_percent": application_fee_percent}
    body, errors = parse(AccountConnect, entered)
    if body is None:
        return _page(request, session, caller, status=422, stripe_errors=errors,
                     stripe_input=entered)  # fmt: skip
    stripe.connect_account(session, caller, gateway, body.account_id, body.application_fee_percent)
    return see_other("/settings#stripe")


@router.post("/settings/stripe/disconnect")
def disconnect_stripe(session: DbSession, caller: StaffCaller) -> Response:
    """Forget the Stripe connection; invoices finalized later are not pushed."""
    caller.require()
    stripe.disconnect_account(session, caller)
    return see_other("/settings#stripe")
