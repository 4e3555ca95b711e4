"""Webhook endpoint settings and the event outbox.

Events are recorded in the outbox (`webhook_deliveries`) in the caller's transaction, so an
event exists if and only if the change that caused it was committed; `delivery` sends them
afterwards. One delivery per event: its id is the event id receivers deduplicate by.

The endpoint and the outbox are an admin's (they lead to the signing secret); other
domains record events with `enqueue_event` in their own transaction.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import WebhookDelivery
from billing_api.auth import Caller
from billing_api.errors import ApiError
from billing_api.webhooks import repository, targets

SECRET_PREFIX = "whsec_"
NO_ENDPOINT = "no webhook URL configured when the event occurred"


def set_endpoint(session: Session, caller: Caller, url: str, *, allow_private: bool) -> str:
    """Point the tenant's events at `url` with a new signing secret, returned this once.

    A URL deliveries must not reach (`targets.check_resolved`) is refused with a 400.
    Setting the endpoint again rotates the secret: later deliveries, retries included, are
    signed with the new one.
    """
    caller.require()
    try:
        targets.check_resolved(url, allow_private=allow_private)
    except targets.TargetRefusedError as error:
        raise ApiError(str(error)) from None
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    tenant = repository.tenant(session, caller.tenant_id)
    tenant.webhook_url = url
    tenant.webhook_secret = secret
    session.flush()
    return secret


def get_endpoint(session: Session, caller: Caller) -> str | None:
    """The URL events go to, if any."""
    caller.require()
    return repository.tenant(session, caller.tenant_id).webhook_url


def enqueue_event(
    session: Session,
    tenant_id: str,
    event_type: str,
    data: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> WebhookDelivery:
    """Record the event `event_type` with `data` for delivery to the tenant's endpoint.

    Written in the caller's transaction (nothing is sent until it commits). `data` must be
    JSON-able; datetimes and decimals become strings. A tenant without an endpoint gets the
    event recorded as "skipped", visible in the outbox, never sent.
    """
    now = now or utcnow()
    delivery_id = uuid.uuid4().hex
    payload = {
        "id": delivery_id,
        "type": event_type,
        "created_at": now.isoformat(),
        "data": to_jsonable_python(dict(data)),
    }
    has_endpoint = repository.tenant(session, tenant_id).webhook_url is not None
    delivery = WebhookDelivery(
        id=delivery_id,
        tenant_id=tenant_id,
        event_type=event_type,
        payload=payload,
        status=repository.PENDING if has_endpoint else repository.SKIPPED,
        attempts=0,
        next_attempt_at=now,
        last_error="" if has_endpoint else NO_ENDPOINT,
        created_at=now,
    )
    repository.add_delivery(session, delivery)
    return delivery


def list_deliveries(
    session: Session, caller: Caller, status: str | None = None, limit: int = 100
) -> Sequence[WebhookDelivery]:
    """The tenant's outbox, newest first."""
    caller.require()
    return repository.list_deliveries(session, caller.tenant_id, status, limit)
