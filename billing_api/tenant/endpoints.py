"""HTTP surface of the tenant settings domain."""

from __future__ import annotations

from fastapi import APIRouter

from billing_api.auth import TenantId
from billing_api.deps import DbSession
from billing_api.tenant import service
from billing_api.tenant.schemas import TenantOut, TenantUpdate

router = APIRouter(prefix="/api/v1/tenant", tags=["tenant"])


@router.get("")
def get_tenant(session: DbSession, tenant_id: TenantId) -> TenantOut:
    return TenantOut.model_validate(service.get_tenant(session, tenant_id))


@router.patch("")
def update_tenant(body: TenantUpdate, session: DbSession, tenant_id: TenantId) -> TenantOut:
    return TenantOut.model_validate(service.update_tenant(session, tenant_id, body))
