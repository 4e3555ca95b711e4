"""Usage queries: totals per customer, meter and the dimensions asked for, as exact decimals.

A customer-scoped caller sees only its own usage: the service narrows the selection to the
caller's customer and refuses unattributed usage, whatever the entry point asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from billing_api.auth import Caller, Role
from billing_api.errors import ForbiddenError, UnprocessableError
from billing_api.usage import repository
from otel_processor.usage import from_micros

_EPOCH_DAY = date(1970, 1, 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageSelection:
    """Which usage to total: filters, the half-open UTC range [start, end), the dimensions
    to group by besides customer and meter, and `by_day` for one total per UTC day."""

    customer_id: str | None = None
    unattributed: bool = False
    meter: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    group_by: tuple[str, ...] = ()
    by_day: bool = False


@dataclass(frozen=True, slots=True)
class UsageAmount:
    """The total quantity of one meter for one customer and group (and day, if asked)."""

    customer_id: str
    meter: str
    quantity: Decimal
    dimensions: Mapping[str, str] = field(default_factory=dict)
    day: date | None = None


def query_usage(session: Session, caller: Caller, selection: UsageSelection) -> list[UsageAmount]:
    """Usage totals of the caller's tenant, ordered by customer, meter, group and day."""
    if caller.customer_id is not None:
        if selection.unattributed:
            raise ForbiddenError("a customer sees only its own usage")
        selection = replace(selection, customer_id=caller.customer(selection.customer_id))
    return [
        UsageAmount(
            customer_id=values["customer_id"],
            meter=values["meter"],
            quantity=from_micros(int(values["quantity_micros"])),
            dimensions={dimension: values[dimension] for dimension in selection.group_by},
            day=_EPOCH_DAY + timedelta(days=int(values["day_number"]))
            if selection.by_day
            else None,
        )
        for values in repository.aggregate_usage(session, caller.tenant_id, selection)
    ]


def move_customer_usage(session: Session, caller: Caller, from_id: str, to_id: str) -> int:
    """Usage recorded under a wrong customer id belongs to `to_id`: move all of it, and
    the traces attributed to it, so later spans of those traces follow. Returns how many
    usage records moved."""
    caller.require(Role.BILLING)
    return repository.move_customer_usage(session, caller.tenant_id, from_id, to_id)


def attribute_traces(
    session: Session, caller: Caller, trace_ids: Sequence[str], customer_id: str
) -> int:
    """Attribute the customer-less usage of these traces to `customer_id` (usage that
    already has a customer keeps it). Returns how many usage records were attributed."""
    caller.require(Role.BILLING)
    if not trace_ids:
        raise UnprocessableError("name the trace ids to attribute")
    return repository.attribute_traces(session, caller.tenant_id, trace_ids, customer_id)
