"""All SQL of rating: the tenant's price terms, and usage aggregated by the database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from agentmeter.tables import (
    Customer,
    CustomerOverride,
    PriceBook,
    PriceComponent,
    PriceVersion,
    UsageRow,
    to_unix_nano,
)
from billing_api.pricing.components import FILTER_DIMENSIONS, component_from_row
from billing_api.rating.terms import (
    BookTerms,
    OverrideTerms,
    TenantPricing,
    UsageGroup,
    VersionTerms,
)


def load_pricing(
    session: Session, tenant_id: str, customer_ids: Sequence[str] | None = None
) -> TenantPricing:
    """Every book, version, component and customer override of a tenant, in memory, and
    its customers' books and billing days: all of them, or only `customer_ids`'.

    Overrides are always the whole tenant's: they decide where a period is sliced and which
    dimensions usage is grouped by, so one customer's estimate slices its period exactly as
    the billing run of every customer does. Customers are the part that grows (a tenant of
    10,000 customers made a one-customer estimate spend most of its time loading them)."""
    books = session.scalars(select(PriceBook).where(PriceBook.tenant_id == tenant_id)).all()
    book_ids = [b.id for b in books]
    versions = session.scalars(
        select(PriceVersion)
        .where(PriceVersion.book_id.in_(book_ids))
        .order_by(PriceVersion.effective_from)
    ).all()
    overrides = session.scalars(
        select(CustomerOverride)
        .where(CustomerOverride.tenant_id == tenant_id)
        .order_by(CustomerOverride.created_at, CustomerOverride.id)
    ).all()
    version_ids = [v.id for v in versions]
    override_ids = [o.id for o in overrides]
    rows = session.scalars(
        select(PriceComponent)
        .where(
            PriceComponent.version_id.in_(version_ids)
            | PriceComponent.override_id.in_(override_ids)
        )
        .order_by(PriceComponent.position)
    ).all()
    by_owner: dict[str, list[PriceComponent]] = defaultdict(list)
    for row in rows:
        by_owner[row.version_id or row.override_id or ""].append(row)
    book_versions: dict[str, list[VersionTerms]] = defaultdict(list)
    for version in versions:
        book_versions[version.book_id].append(
            VersionTerms(
                id=version.id,
                number=version.number,
                effective_from=version.effective_from,
                components=tuple(component_from_row(r) for r in by_owner[version.id]),
            )
        )
    customer_overrides: dict[str, list[OverrideTerms]] = defaultdict(list)
    for override in overrides:
        customer_overrides[override.customer_id].append(
            OverrideTerms(
                id=override.id,
                effective_from=override.effective_from,
                effective_until=override.effective_until,
                components=tuple(component_from_row(r) for r in by_owner[override.id]),
            )
        )
    customer_query = select(Customer.id, Customer.price_book_id, Customer.billing_day).where(
        Customer.tenant_id == tenant_id
    )
    if customer_ids is not None:
        customer_query = customer_query.where(Customer.id.in_(customer_ids))
    customers = session.execute(customer_query).all()
    return TenantPricing(
        books={
            b.id: BookTerms(
                id=b.id,
                name=b.name,
                currency=b.currency,
                usd_rate=b.usd_rate,
                versions=tuple(book_versions[b.id]),
            )
            for b in books
        },
        default_book_id=next((b.id for b in books if b.is_default), None),
        assigned_books={c.id: c.price_book_id for c in customers if c.price_book_id},
        overrides={k: tuple(v) for k, v in customer_overrides.items()},
        registered=frozenset(c.id for c in customers),
        billing_days={c.id: c.billing_day for c in customers},
    )


def aggregate_usage(
    session: Session,
    tenant_id: str,
    start: datetime,
    end: datetime,
    customer_ids: Sequence[str] | None,
    dimensions: Sequence[str] = FILTER_DIMENSIONS,
) -> list[tuple[str, UsageGroup]]:
    """(customer id, usage group) per customer, meter and `dimensions` in [start, end):
    quantities and known provider costs summed by the database. Grouping only by the
    dimensions some price component filters on keeps the result small."""
    dims = [getattr(UsageRow, d) for d in dimensions]
    statement = (
        select(
            UsageRow.customer_id,
            UsageRow.meter,
            *dims,
            func.sum(UsageRow.quantity_micros),
            func.coalesce(func.sum(UsageRow.provider_cost_pico), 0),
            func.sum(case((UsageRow.provider_cost_pico.is_(None), 1), else_=0)),
        )
        .where(
            UsageRow.tenant_id == tenant_id,
            UsageRow.time_unix_nano >= to_unix_nano(start),
            UsageRow.time_unix_nano < to_unix_nano(end),
            UsageRow.billed(),
        )
        .group_by(UsageRow.customer_id, UsageRow.meter, *dims)
    )
    if customer_ids is not None:
        statement = statement.where(UsageRow.customer_id.in_(customer_ids))
    groups = []
    for row in session.execute(statement):
        customer_id, meter, *values = row
        dim_values = tuple(zip(dimensions, values[: len(dimensions)], strict=True))
        quantity_micros, cost_pico, unknown = values[len(dimensions) :]
        groups.append(
            (
                customer_id,
                UsageGroup(
                    meter=meter,
                    dims=dim_values,
                    quantity_micros=int(quantity_micros),
                    cost_pico=int(cost_pico),
                    unknown_cost_records=int(unknown),
                ),
            )
        )
    return groups
