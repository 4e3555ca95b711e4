"""The meter registry: which meter names a tenant's prices may use.

Known meters are the canonical ones (`otel_processor.usage.CANONICAL_METERS`), custom ones
declared with `POST /api/v1/meters`, and custom ones found in the tenant's usage (recorded
in the registry when a price first names them). A price naming any other meter is refused
with the nearest known names as a hint, so a typo (`input_token`) fails when it is written,
not silently at billing time.

Staff read the registry; the billing role (which writes prices) declares meters.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import Meter
from billing_api.auth import Caller, Role
from billing_api.errors import ConflictError, UnprocessableError
from billing_api.meters import repository
from otel_processor.usage import CANONICAL_METERS


class MeterOrigin(StrEnum):
    """Where a known meter comes from."""

    CANONICAL = "canonical"
    DECLARED = "declared"
    USAGE = "usage"


@dataclass(frozen=True, slots=True)
class KnownMeter:
    """A meter name prices may use."""

    name: str
    origin: MeterOrigin
    description: str = ""
    created_at: datetime | None = None


def list_meters(session: Session, caller: Caller) -> list[KnownMeter]:
    """Canonical meters, then the tenant's declared and usage meters, by name."""
    caller.require_staff()
    rows = {m.name: m for m in repository.registered(session, caller.tenant_id)}
    found = [KnownMeter(name, MeterOrigin.CANONICAL) for name in CANONICAL_METERS]
    seen = repository.usage_meters(session, caller.tenant_id) - set(CANONICAL_METERS) - set(rows)
    custom = [
        KnownMeter(m.name, MeterOrigin.DECLARED if m.origin == MeterOrigin.DECLARED
                   else MeterOrigin.USAGE, m.description, m.created_at)
        for m in rows.values()
    ] + [KnownMeter(n, MeterOrigin.USAGE) for n in seen]  # fmt: skip
    return found + sorted(custom, key=lambda m: m.name)


def declare_meter(session: Session, caller: Caller, name: str, description: str = "") -> KnownMeter:
    """Add a custom meter to the registry; 409 if the name is known already."""
    caller.require(Role.BILLING)
    if name in CANONICAL_METERS or repository.get(session, caller.tenant_id, name):
        raise ConflictError(f"meter {name!r} is already known")
    meter = Meter(
        tenant_id=caller.tenant_id,
        name=name,
        origin=MeterOrigin.DECLARED.value,
        description=description,
        created_at=utcnow(),
    )
    repository.add(session, meter)
    return KnownMeter(meter.name, MeterOrigin.DECLARED, meter.description, meter.created_at)


def check_known(session: Session, tenant_id: str, names: Iterable[str | None]) -> None:
    """Refuse (422) meter names the registry does not know, each with a did-you-mean hint;
    names found in usage are recorded in the registry."""
    wanted = {name for name in names if name} - set(CANONICAL_METERS)
    known = {m.name for m in repository.registered(session, tenant_id)}
    unknown = wanted - known
    if not unknown:
        return
    from_usage = repository.in_usage(session, tenant_id, unknown)
    for name in sorted(from_usage):
        repository.add(
            session,
            Meter(
                tenant_id=tenant_id, name=name, origin=MeterOrigin.USAGE.value, created_at=utcnow()
            ),
        )
    missing = sorted(unknown - from_usage)
    if missing:
        candidates = [*CANONICAL_METERS, *known]
        raise UnprocessableError("; ".join(_problem(name, candidates) for name in missing))


def _problem(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return (
        f"unknown meter {name!r}: {hint}Declare a custom meter with POST /api/v1/meters "
        "first, or send usage for it"
    )
