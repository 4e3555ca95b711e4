"""All SQL of the customers domain."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from agentmeter.tables import Customer


class CustomerRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, tenant_id: str, customer_id: str) -> Customer | None:
        return self._session.get(Customer, (tenant_id, customer_id))

    def add(self, customer: Customer) -> None:
        self._session.add(customer)
        self._session.flush()

    def list(self, tenant_id: str) -> Sequence[Customer]:
        query = select(Customer).where(Customer.tenant_id == tenant_id).order_by(Customer.id)
        return self._session.scalars(query).all()

    def names(self, tenant_id: str) -> dict[str, str]:
        """Id → name of every customer of the tenant (two columns, no objects)."""
        query = select(Customer.id, Customer.name).where(Customer.tenant_id == tenant_id)
        return dict(self._session.execute(query).tuples().all())

    def count_containing(self, tenant_id: str, text: str) -> int:
        """How many customers `page_containing` pages through."""
        query = select(func.count()).select_from(Customer).where(_containing(tenant_id, text))
        return self._session.scalar(query) or 0

    def page_containing(
        self, tenant_id: str, text: str, *, offset: int, limit: int
    ) -> Sequence[Customer]:
        """Customers whose id, name or e-mail contains `text` (case-insensitive; every
        character literal, `%` and `_` too), by id, `limit` of them from `offset`."""
        query = (
            select(Customer)
            .where(_containing(tenant_id, text))
            .order_by(Customer.id)
            .offset(offset)
            .limit(limit)
        )
        return self._session.scalars(query).all()


def _containing(tenant_id: str, text: str) -> ColumnElement[bool]:
    of_tenant = Customer.tenant_id == tenant_id
    if not text:
        return of_tenant
    # autoescape: LIKE's wildcards in `text` match themselves. SQLite folds the case of
    # ASCII letters only; PostgreSQL's ILIKE folds every letter.
    fields = (Customer.id, Customer.name, Customer.email)
    return and_(of_tenant, or_(*(f.icontains(text, autoescape=True) for f in fields)))
