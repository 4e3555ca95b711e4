"""All SQL of the job queue: insert, due jobs, claim (compare-and-set), renew, finish."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exists, func, or_, select, text
from sqlalchemy.orm import Session, aliased

from agentmeter.clock import utcnow
from agentmeter.db import dialect_insert
from agentmeter.tables import Job
from billing_api.jobs.leasing import LeasedTable
from billing_api.jobs.states import UNFINISHED, JobStatus


def insert_pending(
    session: Session,
    *,
    kind: str,
    key: str,
    lane: str | None,
    tenant_id: str | None,
    payload: dict[str, Any],
    due_at: datetime,
    max_attempts: int,
) -> int | None:
    """Insert a pending job unless one of the same (kind, key) is pending; the id of the
    pending job either way (None if that one was claimed in between)."""
    statement = (
        dialect_insert(session, Job)
        .values(
            kind=kind,
            key=key,
            lane=lane,
            tenant_id=tenant_id,
            payload=payload,
            status=JobStatus.PENDING,
            attempts=0,
            max_attempts=max_attempts,
            due_at=due_at,
            holder="",
            last_error="",
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(
            # A literal predicate: a bound one stops matching the partial index once
            # PostgreSQL prepares the statement.
            index_elements=["kind", "key"],
            index_where=text(f"status = '{JobStatus.PENDING}'"),
        )
    )
    session.execute(statement)
    return session.scalar(
        select(Job.id).where(Job.kind == kind, Job.key == key, Job.status == JobStatus.PENDING)
    )


JOBS = LeasedTable(Job, Job.id, Job.status, Job.attempts, Job.due_at, JobStatus.RUNNING)


def due_jobs(session: Session, kinds: Collection[str], now: datetime, limit: int) -> Sequence[Job]:
    """Jobs of `kinds` that may start at `now`: pending or retrying ones whose time has
    come, and running ones whose lease ran out (their worker died). A job waits while an
    older job of its lane is unfinished. Rows another worker has locked are skipped on
    PostgreSQL."""
    older = aliased(Job)
    blocked = exists().where(
        older.lane == Job.lane, older.id < Job.id, older.status.in_(UNFINISHED)
    )
    query = (
        JOBS.due(UNFINISHED, now)
        .where(Job.kind.in_(sorted(kinds)), or_(Job.lane.is_(None), ~blocked))
        .order_by(Job.due_at, Job.id)
        .limit(limit)
    )
    return session.scalars(query).all()


def claim(
    session: Session,
    job: Job,
    *,
    holder: str,
    lease_until: datetime,
    now: datetime,
) -> bool:
    """Take `job` for one attempt if nobody changed it since it was read (`JOBS.claim`)."""
    return JOBS.claim(
        session,
        job.id,
        job.status,
        job.attempts,
        lease_until,
        holder=holder,
        started_at=func.coalesce(Job.started_at, now),
    )


def renew(session: Session, job_id: int, attempts: int, holder: str, lease_until: datetime) -> bool:
    """Extend the lease of the attempt this worker holds; False if it was taken away."""
    return JOBS.update_held(session, job_id, attempts, Job.holder == holder, due_at=lease_until)


def finish(
    session: Session,
    job_id: int,
    attempts: int,
    holder: str | None,
    *,
    status: JobStatus,
    due_at: datetime,
    last_error: str,
    finished_at: datetime | None,
) -> bool:
    """Record the outcome of the attempt `holder` holds (None: whoever holds it, for a
    lost worker's attempt); no-op if the claim was lost."""
    conditions = () if holder is None else (Job.holder == holder,)
    return JOBS.update_held(
        session,
        job_id,
        attempts,
        *conditions,
        status=status,
        due_at=due_at,
        last_error=last_error[:2000],
        finished_at=finished_at,
    )


def get(session: Session, job_id: int) -> Job | None:
    return session.get(Job, job_id)


def of_tenant(
    session: Session, tenant_id: str, kind: str | None, status: JobStatus | None, limit: int
) -> Sequence[Job]:
    """The tenant's jobs, newest first."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if status is not None:
        query = query.where(Job.status == status)
    return session.scalars(query.order_by(Job.id.desc()).limit(limit)).all()
