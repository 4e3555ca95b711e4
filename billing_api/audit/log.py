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
from billing_api.auth import Caller


def record(
    session: Session,
    caller: Caller,
    *,
    entity: str,
    entity_id: str,
    action: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> None:
    """Add an entry to the log (in the caller's transaction), by the caller's actor."""
    session.add(
        AuditEntry(
            tenant_id=caller.tenant_id,
            entity=entity,
            entity_id=entity_id,
            action=action,
            actor=caller.actor,
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
