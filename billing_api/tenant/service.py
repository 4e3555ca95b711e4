"""Tenant settings: read them, change them. The receivers read the customer attribute keys
with each ingest key lookup, so a change applies to the next export."""

from __future__ import annotations

from sqlalchemy.orm import Session

from agentmeter.tables import Tenant
from billing_api.errors import NotFoundError
from billing_api.tenant import repository
from billing_api.tenant.schemas import TenantUpdate


def get_tenant(session: Session, tenant_id: str) -> Tenant:
    """The authenticated tenant."""
    tenant = repository.get_tenant(session, tenant_id)
    if tenant is None:
        raise NotFoundError("tenant not found")
    return tenant


def update_tenant(session: Session, tenant_id: str, update: TenantUpdate) -> Tenant:
    """Apply the fields present in `update`."""
    tenant = repository.get_tenant(session, tenant_id, for_update=True)
    if tenant is None:
        raise NotFoundError("tenant not found")
    if update.customer_attribute_keys is not None:
        tenant.customer_attribute_keys = list(update.customer_attribute_keys)
    session.flush()
    return tenant
