"""HTTP surface of the tenant settings domain."""

from __future__ import annotations

from fastapi import APIRouter

from billing_api.auth import AdminCaller
from billing_api.deps import DbSession
from billing_api.tenant import service
from billing_api.tenant.schemas import TenantOut, TenantUpdate

router = APIRouter(prefix="/api/v1/tenant", tags=["tenant"])


@router.get("")
def get_tenant(session: DbSession, caller: AdminCaller) -> TenantOut:
    return TenantOut.model_validate(service.get_tenant(session, caller))


@router.patch("")
def update_tenant(body: TenantUpdate, session: DbSession, caller: AdminCaller) -> TenantOut:
    tenant = service.update_tenant(
        session, caller, customer_attribute_keys=body.customer_attribute_keys
    )
    return TenantOut.model_validate(tenant)
