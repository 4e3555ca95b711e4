"""The append-only audit log, shared by every domain that changes billing data by hand.

Each entry says who (the caller's actor), what (entity, id, action), when, the state
before and after, and why. Entries are only ever added; nothing updates or deletes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentmeter.tables import AuditEntry


def record(
    session: Session,
    tenant_id: str,
    *,
    entity: str,
    entity_id: str,
    action: str,
    actor: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> None:
    """Add an entry to the log (in the caller's transaction)."""
    session.add(
        AuditEntry(
            tenant_id=tenant_id,
            entity=entity,
            entity_id=entity_id,
            action=action,
            actor=actor,
            before=before,
            after=after,
            reason=reason,
        )
    )


def trail(session: Session, tenant_id: str, entity_id: str) -> Sequence[AuditEntry]:
    """The entries about one entity, oldest first."""
    return session.scalars(
        select(AuditEntry)
        .where(AuditEntry.tenant_id == tenant_id, AuditEntry.entity_id == entity_id)
        .order_by(AuditEntry.id)
    ).all()
