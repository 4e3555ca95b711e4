"""HTTP surface of the meter registry."""

from __future__ import annotations

from fastapi import APIRouter

from billing_api.auth import AdminCaller
from billing_api.deps import DbSession
from billing_api.meters import service
from billing_api.meters.schemas import MeterCreate, MeterOut

router = APIRouter(prefix="/api/v1/meters", tags=["meters"])


@router.get("")
def list_meters(session: DbSession, caller: AdminCaller) -> list[MeterOut]:
    """Meters prices may use: canonical, declared, and found in usage."""
    return [MeterOut.model_validate(m) for m in service.list_meters(session, caller)]


@router.post("", status_code=201)
def declare_meter(body: MeterCreate, session: DbSession, caller: AdminCaller) -> MeterOut:
    """Declare a custom meter before any usage for it arrives."""
    meter = service.declare_meter(session, caller, body.name, body.description)
    return MeterOut.model_validate(meter)
