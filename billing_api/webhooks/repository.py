"""All SQL of webhooks: the tenant's endpoint and the outbox of deliveries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentmeter.tables import Tenant, WebhookDelivery
from billing_api.jobs.leasing import LeasedTable

PENDING = "pending"
SENDING = "sending"
DELIVERED = "delivered"
FAILED = "failed"
SKIPPED = "skipped"


def tenant(session: Session, tenant_id: str) -> Tenant:
    found = session.get(Tenant, tenant_id)
    assert found is not None, f"no tenant {tenant_id}"
    return found


def endpoints(session: Session, tenant_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """(url, secret) of each given tenant that has an endpoint configured."""
    ids = sorted(set(tenant_ids))
    if not ids:
        return {}
    rows = session.execute(
        select(Tenant.id, Tenant.webhook_url, Tenant.webhook_secret).where(
            Tenant.id.in_(ids), Tenant.webhook_url.is_not(None), Tenant.webhook_secret.is_not(None)
        )
    )
    return {tenant_id: (url, secret) for tenant_id, url, secret in rows if url and secret}


def add_delivery(session: Session, delivery: WebhookDelivery) -> None:
    session.add(delivery)
    session.flush()


def list_deliveries(
    session: Session, tenant_id: str, status: str | None, limit: int
) -> Sequence[WebhookDelivery]:
    query = select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    query = query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit)
    return session.scalars(query).all()


DELIVERIES = LeasedTable(
    WebhookDelivery,
    WebhookDelivery.id,
    WebhookDelivery.status,
    WebhookDelivery.attempts,
    WebhookDelivery.next_attempt_at,
    SENDING,
)


def due_deliveries(session: Session, now: datetime, limit: int) -> Sequence[WebhookDelivery]:
    """Pending deliveries whose time has come, and claims whose lease ran out (a worker
    died mid-send). Rows another worker has locked are skipped on PostgreSQL."""
    query = (
        DELIVERIES.due((PENDING, SENDING), now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    return session.scalars(query).all()


def claim(
    session: Session, delivery_id: str, seen_status: str, seen_attempts: int, lease_until: datetime
) -> bool:
    """Take a delivery for one attempt, if nobody changed it since it was read
    (`LeasedTable.claim`)."""
    return DELIVERIES.claim(session, delivery_id, seen_status, seen_attempts, lease_until)


def finish_attempt(
    session: Session,
    delivery_id: str,
    attempts: int,
    *,
    status: str,
    next_attempt_at: datetime,
    last_error: str,
    delivered_at: datetime | None,
) -> bool:
    """Record the outcome of the attempt this worker claimed (no-op if the claim was lost)."""
    return DELIVERIES.update_held(
        session,
        delivery_id,
        attempts,
        status=status,
        next_attempt_at=next_attempt_at,
        last_error=last_error[:2000],
        delivered_at=delivered_at,
    )
