"""HTTP surface of the customers domain."""

from __future__ import annotations

from fastapi import APIRouter

from billing_api.auth import TenantId
from billing_api.customers import service
from billing_api.customers.schemas import CustomerCreate, CustomerOut
from billing_api.deps import DbSession

router = APIRouter(prefix="/api/v1/customers", tags=["customers"])


@router.post("", status_code=201)
def create_customer(body: CustomerCreate, session: DbSession, tenant_id: TenantId) -> CustomerOut:
    return CustomerOut.model_validate(service.create_customer(session, tenant_id, body))


@router.get("")
def list_customers(session: DbSession, tenant_id: TenantId) -> list[CustomerOut]:
    return [CustomerOut.model_validate(c) for c in service.list_customers(session, tenant_id)]


@router.get("/{customer_id}")
def get_customer(customer_id: str, session: DbSession, tenant_id: TenantId) -> CustomerOut:
    return CustomerOut.model_validate(service.get_customer(session, tenant_id, customer_id))
