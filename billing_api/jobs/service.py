"""Enqueueing jobs and reading their state; running them is `billing_api.jobs.worker`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.tables import Job
from billing_api.errors import NotFoundError
from billing_api.jobs import repository
from billing_api.jobs.states import JobStatus

MAX_ATTEMPTS = 10


def enqueue(
    session: Session,
    kind: str,
    key: str,
    payload: dict[str, Any] | None = None,
    *,
    tenant_id: str | None = None,
    lane: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int = MAX_ATTEMPTS,
) -> int:
    """Add a job of `kind` in the caller's transaction (it exists iff that commits) and
    return its id. While a job of the same (kind, key) is pending, nothing is added and
    that job's id is returned. `payload` must be JSON; jobs of one `lane` run one at a
    time, oldest first; `run_at` delays the first attempt. Never commits."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    for _ in range(3):  # the pending twin may be claimed between our insert and read
        job_id = repository.insert_pending(
            session,
            kind=kind,
            key=key,
            lane=lane,
            tenant_id=tenant_id,
            payload=payload or {},
            due_at=run_at or utcnow(),
            max_attempts=max_attempts,
        )
        if job_id is not None:
            return job_id
    raise RuntimeError(f"could not enqueue job {kind} {key}")


@dataclass(frozen=True, slots=True)
class JobState:
    """What a client may know of a job: where it stands, never its payload."""

    id: int
    kind: str
    status: JobStatus
    attempts: int
    last_error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def job_state(session: Session, tenant_id: str, job_id: int) -> JobState:
    """The state of one of the tenant's jobs; `NotFoundError` for another tenant's."""
    job = repository.get(session, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFoundError(f"no job {job_id}")
    return _state(job)


def list_jobs(
    session: Session,
    tenant_id: str,
    *,
    kind: str | None = None,
    status: JobStatus | None = None,
    limit: int = 100,
) -> list[JobState]:
    """The tenant's jobs, newest first."""
    return [_state(job) for job in repository.of_tenant(session, tenant_id, kind, status, limit)]


def _state(job: Job) -> JobState:
    return JobState(
        id=job.id,
        kind=job.kind,
        status=JobStatus(job.status),
        attempts=job.attempts,
        last_error=job.last_error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
