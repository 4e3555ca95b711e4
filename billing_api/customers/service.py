"""Customer registration. Usage may arrive before its customer is registered: it is kept
under the customer id and belongs to the customer as soon as it exists."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from agentmeter.tables import Customer
from billing_api.customers.repository import CustomerRepository
from billing_api.customers.schemas import CustomerCreate
from billing_api.errors import ConflictError, NotFoundError


def create_customer(session: Session, tenant_id: str, body: CustomerCreate) -> Customer:
    repository = CustomerRepository(session)
    if repository.get(tenant_id, body.id) is not None:
        raise ConflictError(f"customer {body.id!r} already exists")
    customer = Customer(tenant_id=tenant_id, id=body.id, name=body.name, email=body.email)
    repository.add(customer)
    return customer


def get_customer(session: Session, tenant_id: str, customer_id: str) -> Customer:
    customer = CustomerRepository(session).get(tenant_id, customer_id)
    if customer is None:
        raise NotFoundError(f"no customer {customer_id!r}")
    return customer


def list_customers(session: Session, tenant_id: str) -> Sequence[Customer]:
    return CustomerRepository(session).list(tenant_id)
