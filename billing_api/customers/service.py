"""Customer registration. Usage may arrive before its customer is registered: it is kept
under the customer id and belongs to the customer as soon as it exists.

Staff list and read customers, the billing role registers them; a customer-scoped caller
reads only itself (another id answers 404, as an unknown one does)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from sqlalchemy.orm import Session

from agentmeter.tables import Customer
from billing_api.auth import Caller, Role
from billing_api.customers.repository import CustomerRepository
from billing_api.customers.schemas import CustomerCreate
from billing_api.errors import (
    ConflictError,
    NotFoundError,
    UnprocessableError,
    validation_problems,
)


def create_customer(
    session: Session, caller: Caller, customer_id: str, name: str, email: str | None = None
) -> Customer:
    """Register a customer under the id its agents put on spans."""
    caller.require(Role.BILLING)
    repository = CustomerRepository(session)
    if repository.get(caller.tenant_id, customer_id) is not None:
        raise ConflictError(f"customer {customer_id!r} already exists")
    customer = Customer(tenant_id=caller.tenant_id, id=customer_id, name=name, email=email)
    repository.add(customer)
    return customer


def get_customer(session: Session, caller: Caller, customer_id: str) -> Customer:
    """One customer of the caller's tenant (a scoped caller: only its own)."""
    customer_id = caller.customer(customer_id)
    customer = CustomerRepository(session).get(caller.tenant_id, customer_id)
    if customer is None:
        raise NotFoundError(f"no customer {customer_id!r}")
    return customer


def list_customers(session: Session, caller: Caller) -> Sequence[Customer]:
    """Every registered customer of the tenant (staff only)."""
    caller.require_staff()
    return CustomerRepository(session).list(caller.tenant_id)


def customer_names(session: Session, caller: Caller) -> dict[str, str]:
    """Id → name of every registered customer of the tenant (staff only), for pages over
    all of them."""
    caller.require_staff()
    return CustomerRepository(session).names(caller.tenant_id)


def register_customer(
    session: Session, caller: Caller, customer_id: str, name: str, email: str | None = None
) -> Customer:
    """Register a customer under the rules of `POST /api/v1/customers` (`CustomerCreate`:
    id, name and email as that endpoint checks them), for callers that do not come
    through it, such as registering an id a billing run found. 422 for what it would
    refuse, 409 if the id is taken."""
    try:
        body = CustomerCreate(id=customer_id, name=name, email=email)
    except ValidationError as error:
        raise UnprocessableError(validation_problems(error.errors())) from None
    return create_customer(session, caller, body.id, body.name, body.email)


def count_customers(session: Session, caller: Caller, text: str = "") -> int:
    """How many of the tenant's customers have `text` in their id, name or e-mail (staff
    only); every customer when `text` is empty."""
    caller.require_staff()
    return CustomerRepository(session).count_containing(caller.tenant_id, _searchable(text))


def find_customers(
    session: Session, caller: Caller, text: str = "", *, offset: int, limit: int
) -> Sequence[Customer]:
    """One page of the customers `count_customers` counts, in id order (staff only): `text`
    matches case-insensitively and literally (`%` and `_` are no wildcards)."""
    caller.require_staff()
    repository = CustomerRepository(session)
    text = _searchable(text)
    return repository.page_containing(caller.tenant_id, text, offset=offset, limit=limit)


def _searchable(text: str) -> str:
    # PostgreSQL text cannot hold NUL: refused here rather than failing in the driver.
    if "\x00" in text:
        raise UnprocessableError("a search cannot contain a NUL character")
    return text
