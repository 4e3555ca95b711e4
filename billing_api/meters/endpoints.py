"""HTTP surface of the meter registry."""

from __future__ import annotations

from fastapi import APIRouter

from billing_api.auth import TenantId
from billing_api.deps import DbSession
from billing_api.meters import service
from billing_api.meters.schemas import MeterCreate, MeterOut

router = APIRouter(prefix="/api/v1/meters", tags=["meters"])


@router.get("")
def list_meters(session: DbSession, tenant_id: TenantId) -> list[MeterOut]:
    """Meters prices may use: canonical, declared, and found in usage."""
    return service.list_meters(session, tenant_id)


@router.post("", status_code=201)
def declare_meter(body: MeterCreate, session: DbSession, tenant_id: TenantId) -> MeterOut:
    """Declare a custom meter before any usage for it arrives."""
    return service.declare_meter(session, tenant_id, body)
