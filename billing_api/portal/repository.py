"""All SQL of the portal: its sessions and the tenant's brand fields."""

from __future__ import annotations

from sqlalchemy.orm import Session

from agentmeter.tables import PortalSession, Tenant


def add_session(session: Session, row: PortalSession) -> None:
    """Store a new portal session."""
    session.add(row)
    session.flush()


def get_session(session: Session, tenant_id: str, session_id: str) -> PortalSession | None:
    """A portal session of the tenant, or None."""
    row = session.get(PortalSession, session_id)
    return row if row is not None and row.tenant_id == tenant_id else None


def find_session(session: Session, session_id: str) -> PortalSession | None:
    """A portal session by id alone (its token names the tenant to check against)."""
    return session.get(PortalSession, session_id)


def tenant(session: Session, tenant_id: str) -> Tenant:
    """The tenant row, which holds the brand fields."""
    row = session.get(Tenant, tenant_id)
    assert row is not None, "authenticated callers belong to an existing tenant"
    return row
