"""All SQL of the customers domain."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
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
