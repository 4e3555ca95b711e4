"""All SQL of budgets: the budgets and the thresholds already alerted per period."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from agentmeter.db import dialect_insert
from agentmeter.tables import Budget, BudgetAlert


def get(session: Session, tenant_id: str, customer_id: str) -> Budget | None:
    return session.get(Budget, (tenant_id, customer_id), populate_existing=True)


def limits_of_tenant(session: Session, tenant_id: str) -> dict[str, tuple[str, int]]:
    """Customer id → (currency, limit in minor units) of every budget of a tenant (one
    query of three columns, for pages over all customers)."""
    query = select(Budget.customer_id, Budget.currency, Budget.limit_minor).where(
        Budget.tenant_id == tenant_id
    )
    return {
        customer_id: (currency, limit) for customer_id, currency, limit in session.execute(query)
    }


def upsert(
    session: Session,
    tenant_id: str,
    customer_id: str,
    *,
    currency: str,
    limit_minor: int,
    thresholds: list[int],
    now: datetime,
) -> Budget:
    """Create or replace the customer's budget (one statement, safe under concurrent PUTs)."""
    insert = dialect_insert(session, Budget).values(
        tenant_id=tenant_id,
        customer_id=customer_id,
        currency=currency,
        limit_minor=limit_minor,
        thresholds=thresholds,
        created_at=now,
    )
    session.execute(
        insert.on_conflict_do_update(
            index_elements=["tenant_id", "customer_id"],
            set_={
                "currency": insert.excluded.currency,
                "limit_minor": insert.excluded.limit_minor,
                "thresholds": insert.excluded.thresholds,
            },
        )
    )
    budget = get(session, tenant_id, customer_id)
    assert budget is not None
    return budget


def delete_budget(session: Session, tenant_id: str, customer_id: str) -> bool:
    result = session.execute(
        delete(Budget)
        .where(Budget.tenant_id == tenant_id, Budget.customer_id == customer_id)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_alert(
    session: Session,
    budget: Budget,
    period_start: datetime,
    threshold: int,
    spend_minor: int,
    now: datetime,
) -> bool:
    """Record that `threshold` was crossed in the period; False if it already was.

    INSERT … ON CONFLICT DO NOTHING on (tenant, customer, period start, threshold): of two
    concurrent evaluations exactly one records (and so alerts) each threshold.
    """
    inserted = session.execute(
        dialect_insert(session, BudgetAlert)
        .values(
            tenant_id=budget.tenant_id,
            customer_id=budget.customer_id,
            period_start=period_start,
            threshold=threshold,
            spend_minor=spend_minor,
            limit_minor=budget.limit_minor,
            created_at=now,
        )
        .on_conflict_do_nothing(
            index_elements=["tenant_id", "customer_id", "period_start", "threshold"]
        )
        .returning(BudgetAlert.id)
    ).first()
    return inserted is not None


def all_budgets(session: Session) -> Sequence[tuple[str, str]]:
    """(tenant id, customer id) of every budget, for the background sweep."""
    rows = session.execute(
        select(Budget.tenant_id, Budget.customer_id).order_by(Budget.tenant_id, Budget.customer_id)
    )
    return [(t, c) for t, c in rows]


def limits_of(
    session: Session, tenant_id: str, customer_ids: Sequence[str]
) -> dict[tuple[str, str], int]:
    """(customer, currency) → budget limit in minor units, for these customers."""
    rows = session.execute(
        select(Budget.customer_id, Budget.currency, Budget.limit_minor).where(
            Budget.tenant_id == tenant_id, Budget.customer_id.in_(customer_ids)
        )
    )
    return {(customer_id, currency): limit for customer_id, currency, limit in rows}
