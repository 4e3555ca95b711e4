"""Settings (admins): ingest keys (a new key is shown once; revoke), the attribute keys
that name the customer on spans, and the webhook endpoint (a new secret shown once)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from agentmeter.tenants import KeyKind, create_key, list_keys, revoke_key_id
from billing_api.auth import Caller
from billing_api.dashboard.access import require
from billing_api.dashboard.forms import parse
from billing_api.dashboard.http import PREFIX, DashboardRoute, StaffCaller, render, see_other
from billing_api.deps import DbSession
from billing_api.errors import NotFoundError
from billing_api.invoicing import repository as invoicing
from billing_api.tenant.schemas import TenantUpdate
from billing_api.tenant.service import update_tenant
from billing_api.webhooks import service as webhooks
from billing_api.webhooks.schemas import WebhookEndpointSet

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)


def _page(
    request: Request, session: Session, caller: Caller, status: int = 200, **extra: Any
) -> Response:
    tenant = invoicing.tenant(session, caller.tenant_id)
    context = {
        "keys": [k for k in list_keys(session, caller.tenant_id) if k.kind == KeyKind.INGEST],
        "customer_keys": tenant.customer_attribute_keys,
        "webhook_url": webhooks.get_endpoint(session, caller.tenant_id),
        "deliveries": webhooks.list_deliveries(session, caller.tenant_id, limit=20),
        "new_key": None,
        "new_secret": None,
        "errors": {},
        **extra,
    }
    return render(request, caller, "settings.html", page="settings", title="Settings",
                  context=context, status=status)  # fmt: skip


@router.get("/settings", response_class=HTMLResponse)
def settings(request: Request, session: DbSession, caller: StaffCaller) -> Response:
    """Keys, attribute keys and webhooks (admins only: they hold secrets)."""
    require(caller)
    return _page(request, session, caller)


@router.post("/settings/ingest-keys", response_model=None)
def new_ingest_key(request: Request, session: DbSession, caller: StaffCaller) -> Response:
    """A new ingest key, shown on this response only (no redirect: it is never stored)."""
    require(caller)
    key = create_key(session, caller.tenant_id, KeyKind.INGEST)
    session.flush()
    return _page(request, session, caller, new_key=key)


@router.post("/settings/ingest-keys/{key_id}/revoke")
def revoke(session: DbSession, caller: StaffCaller, key_id: str) -> Response:
    """Revoke an ingest key: exports with it are refused from now on."""
    require(caller)
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
    require(caller)
    lines = [line.strip() for line in keys.splitlines() if line.strip()]
    update, errors = parse(TenantUpdate, {"customer_attribute_keys": lines})
    if update is None:
        return _page(
            request, session, caller, status=422, errors={"keys": "; ".join(errors.values())}
        )
    update_tenant(session, caller.tenant_id, update)
    return see_other("/settings#customer-keys")


@router.post("/settings/webhook", response_model=None)
def webhook(
    request: Request,
    session: DbSession,
    caller: StaffCaller,
    url: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Point events at `url`; the new signing secret is shown on this response only."""
    require(caller)
    body, errors = parse(WebhookEndpointSet, {"url": url})
    if body is None:
        return _page(request, session, caller, status=422, errors=errors)
    secret = webhooks.set_endpoint(
        session,
        caller.tenant_id,
        body.url,
        allow_private=request.app.state.settings.webhook_allow_private,
    )
    return _page(request, session, caller, new_secret=secret)
