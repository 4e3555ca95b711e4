"""HTTP surface of the customers domain."""

from __future__ import annotations

from fastapi import APIRouter

from billing_api.auth import AdminCaller
from billing_api.customers import service
from billing_api.customers.schemas import CustomerCreate, CustomerOut
from billing_api.deps import DbSession

router = APIRouter(prefix="/api/v1/customers", tags=["customers"])


@router.post("", status_code=201)
def create_customer(body: CustomerCreate, session: DbSession, caller: AdminCaller) -> CustomerOut:
    customer = service.create_customer(session, caller, body.id, body.name, body.email)
    return CustomerOut.model_validate(customer)


@router.get("")
def list_customers(session: DbSession, caller: AdminCaller) -> list[CustomerOut]:
    return [CustomerOut.model_validate(c) for c in service.list_customers(session, caller)]


@router.get("/{customer_id}")
def get_customer(customer_id: str, session: DbSession, caller: AdminCaller) -> CustomerOut:
    return CustomerOut.model_validate(service.get_customer(session, caller, customer_id))
