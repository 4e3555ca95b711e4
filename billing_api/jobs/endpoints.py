"""HTTP surface of jobs: a client polls the job its call started."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query

from billing_api.auth import TenantId
from billing_api.deps import DbSession
from billing_api.jobs import service
from billing_api.jobs.schemas import JobOut
from billing_api.jobs.states import JobStatus

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])

# Job ids are 64-bit integers on both backends.
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/{job_id}")
def get_job(job_id: JobId, session: DbSession, tenant_id: TenantId) -> JobOut:
    """Where a background job stands: pending, running, retrying, done or dead (with the
    error in `last_error`)."""
    return JobOut(**asdict(service.job_state(session, tenant_id, job_id)))


@router.get("")
def list_jobs(
    session: DbSession,
    tenant_id: TenantId,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    """The tenant's background jobs, newest first (e.g. `kind=pricing.recost` to see
    whether stored usage has been recosted after a provider cost change)."""
    states = service.list_jobs(session, tenant_id, kind=kind, status=status, limit=limit)
    return [JobOut(**asdict(state)) for state in states]
