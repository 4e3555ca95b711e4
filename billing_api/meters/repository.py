"""All SQL of the meter registry: declared meters, and meters found in usage."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from agentmeter.tables import Meter, UsageRow


def registered(session: Session, tenant_id: str) -> Sequence[Meter]:
    """The tenant's meter rows (declared, or recorded when first priced from usage)."""
    return session.scalars(
        select(Meter).where(Meter.tenant_id == tenant_id).order_by(Meter.name)
    ).all()


def get(session: Session, tenant_id: str, name: str) -> Meter | None:
    return session.get(Meter, (tenant_id, name))


def add(session: Session, meter: Meter) -> None:
    session.add(meter)
    session.flush()


def in_usage(session: Session, tenant_id: str, names: Iterable[str]) -> set[str]:
    """Which of `names` occur in the tenant's usage (a scan of the tenant's usage: run
    only for names the registry does not know)."""
    wanted = sorted(set(names))
    if not wanted:
        return set()
    query = (
        select(UsageRow.meter)
        .where(UsageRow.tenant_id == tenant_id, UsageRow.meter.in_(wanted))
        .distinct()
    )
    return set(session.scalars(query))


def usage_meters(session: Session, tenant_id: str) -> set[str]:
    """Every meter name in the tenant's usage."""
    query = select(UsageRow.meter).where(UsageRow.tenant_id == tenant_id).distinct()
    return set(session.scalars(query))
