"""Tenant settings: read them, change them. The receivers read the customer attribute keys
with each ingest key lookup, so a change applies to the next export. Staff read them,
admins change them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from agentmeter.tables import Tenant
from billing_api.auth import Caller
from billing_api.errors import NotFoundError
from billing_api.tenant import repository


def get_tenant(session: Session, caller: Caller) -> Tenant:
    """The caller's tenant."""
    caller.require_staff()
    tenant = repository.get_tenant(session, caller.tenant_id)
    if tenant is None:
        raise NotFoundError("tenant not found")
    return tenant


def update_tenant(
    session: Session, caller: Caller, *, customer_attribute_keys: Sequence[str] | None = None
) -> Tenant:
    """Change the settings given (None: unchanged)."""
    caller.require()
    tenant = repository.get_tenant(session, caller.tenant_id, for_update=True)
    if tenant is None:
        raise NotFoundError("tenant not found")
    if customer_attribute_keys is not None:
        tenant.customer_attribute_keys = list(customer_attribute_keys)
    session.flush()
    return tenant
