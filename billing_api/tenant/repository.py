"""All SQL of the tenant settings domain."""

from __future__ import annotations

from sqlalchemy.orm import Session

from agentmeter.tables import Tenant


def get_tenant(session: Session, tenant_id: str, *, for_update: bool = False) -> Tenant | None:
    """The tenant row (locked for update when asked)."""
    return session.get(Tenant, tenant_id, with_for_update=for_update)
