"""HTTP surface of webhooks: the tenant's endpoint and its outbox."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from billing_api.auth import AdminCaller
from billing_api.deps import AppSettings, DbSession
from billing_api.webhooks import service
from billing_api.webhooks.delivery import SIGNATURE_HEADER
from billing_api.webhooks.schemas import (
    DeliveryStatus,
    WebhookDeliveryOut,
    WebhookEndpointOut,
    WebhookEndpointSet,
    WebhookSecretOut,
)

router = APIRouter(prefix="/api/v1/webhook", tags=["webhooks"])


@router.put("")
def set_webhook(
    body: WebhookEndpointSet, session: DbSession, caller: AdminCaller, settings: AppSettings
) -> WebhookSecretOut:
    """Send events to `url`. Answers a new signing secret, shown only this once; PUT again
    to rotate it. Deliveries carry `AgentMeter-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
    "<t>.<body>">`, verified like Stripe's. Only https URLs of public addresses: others
    answer 400."""
    secret = service.set_endpoint(
        session, caller, body.url, allow_private=settings.webhook_allow_private
    )
    return WebhookSecretOut(url=body.url, secret=secret, signature_header=SIGNATURE_HEADER)


@router.get("")
def get_webhook(session: DbSession, caller: AdminCaller) -> WebhookEndpointOut:
    """The configured URL (never the secret)."""
    return WebhookEndpointOut(url=service.get_endpoint(session, caller))


@router.get("/deliveries")
def list_deliveries(
    session: DbSession,
    caller: AdminCaller,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[WebhookDeliveryOut]:
    """The outbox, newest first: each event, its status, attempts and last error."""
    return [
        WebhookDeliveryOut.model_validate(d)
        for d in service.list_deliveries(session, caller, status, limit)
    ]
