"""Running background jobs: one queue, one claim/lease, one backoff, for every kind.

Enqueue. A job is a row of `jobs` (kind, key, payload, optional tenant and lane) inserted
by `billing_api.jobs.service.enqueue` in the caller's transaction, so it exists if and only
if its cause committed. Enqueueing a job while one of the same (kind, key) is still
pending (not yet started) is a no-op that returns the pending job's id; once a job has
started, the same enqueue adds a new job, because the running one may have read its inputs
before the new cause committed.

Claim. A worker takes a due job with a compare-and-set UPDATE on (status, attempts) that
marks it running, counts the attempt, names the worker (`holder`) and pushes `due_at` a
lease ahead; it commits, and only then runs the handler. On PostgreSQL the candidates are
read `FOR UPDATE SKIP LOCKED`, so several workers (several `agentmeter serve` replicas on
one database) take different jobs; on SQLite the single writer serializes claims. Either
way two workers never run one attempt. No transaction stays open during a handler: the
handler opens its own short ones. Jobs of one lane (e.g. the recosts of one tenant) run one
at a time, oldest first: a job is not due while an older job of its lane is unfinished.

Lease. While a handler runs, a heartbeat thread renews the lease every quarter of it; a
handler doing long work also calls `ClaimedJob.renew()` between steps, which raises
`LeaseLostError` if another worker took the job over. A worker that dies (SIGKILL, power
loss) stops renewing; once its lease runs out the job is due again and another worker takes
it, as the next attempt. Handlers must therefore be idempotent (converge when re-run).

Outcome, written in a second short transaction, only by the holder of the attempt: the
handler returned → done; it raised `PermanentJobError` → dead at once; any other exception
→ retrying after 30 s, 1 min, 2 min, … (capped at 6 h, `retry_delay`), or dead once the
job has had `max_attempts` attempts (also when the worker of its last attempt died). A dead
job keeps its error in `last_error`; nothing is retried silently forever.

Kinds. A `JobRegistry` maps each kind to its handler `handler(engine, job)`; handlers live
in their domains and are registered once in `billing_api.jobs.kinds.job_registry`. A
worker only claims kinds it knows. `agentmeter serve` runs `run_due_jobs` in its one
background loop; tests call it synchronously.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from billing_api.jobs import repository
from billing_api.jobs.leasing import retry_delay
from billing_api.jobs.states import JobStatus

logger = logging.getLogger("agentmeter.jobs")

LEASE = timedelta(minutes=1)
ERROR_LENGTH = 2000
LOST_WORKER = "worker lost mid-run"


def new_holder() -> str:
    """A name for a worker: host, process and a random part (unique per worker)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PermanentJobError(Exception):
    """Raised by a handler for a job that cannot succeed by retrying: it goes dead now."""


class LeaseLostError(RuntimeError):
    """This worker no longer holds the job: its lease ran out and another worker took it."""


@dataclass(slots=True)
class ClaimedJob:
    """One attempt of a job, held by this worker; what a handler receives."""

    id: int
    kind: str
    key: str
    tenant_id: str | None
    payload: dict[str, Any]
    attempts: int  # including this one
    max_attempts: int
    holder: str
    lease: timedelta
    engine: Engine
    _lost: threading.Event = field(default_factory=threading.Event)

    def renew(self) -> None:
        """Extend the lease now; raise `LeaseLostError` if the job was taken away."""
        with Session(self.engine) as session, session.begin():
            held = repository.renew(
                session, self.id, self.attempts, self.holder, utcnow() + self.lease
            )
        if not held:
            self._lost.set()
        self.check()

    def check(self) -> None:
        """Raise `LeaseLostError` if a renewal found the job taken away."""
        if self._lost.is_set():
            raise LeaseLostError(f"job {self.id} is no longer held by this worker")


class Handler(Protocol):
    """Does one job. Blocking; opens and commits its own transactions (never one across
    slow I/O); idempotent, since a job whose worker died is run again. Raises
    `PermanentJobError` when retrying cannot help, anything else to be retried."""

    def __call__(self, engine: Engine, job: ClaimedJob) -> None: ...


@dataclass(frozen=True, slots=True)
class JobKind:
    name: str
    handler: Handler
    lease: timedelta


class JobRegistry:
    """Job kinds → handlers; a worker claims only the kinds registered here."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, name: str, handler: Handler, *, lease: timedelta = LEASE) -> None:
        """Run jobs of kind `name` with `handler`; `lease` must outlast the gap between
        two renewals (the heartbeat renews every quarter of it)."""
        if name in self._kinds:
            raise ValueError(f"job kind {name!r} is already registered")
        self._kinds[name] = JobKind(name, handler, lease)

    def kind(self, name: str) -> JobKind:
        return self._kinds[name]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._kinds)


@dataclass(slots=True)
class JobReport:
    """What one `run_due_jobs` pass did."""

    done: int = 0
    retrying: int = 0
    dead: int = 0
    lost: int = 0  # taken over by another worker before this one recorded its outcome


def run_due_jobs(
    engine: Engine,
    registry: JobRegistry,
    now: datetime | None = None,
    *,
    limit: int = 100,
) -> JobReport:
    """Run the jobs due at `now` (at most `limit`), one claim at a time; return the counts.

    A job boundary: opens and commits its own short transactions. Blocking; run it in a
    worker thread from async code.
    """
    now = now or utcnow()
    holder = new_holder()
    report = JobReport()
    for _ in range(limit):
        job = _claim_one(engine, registry, now, holder, report)
        if job is None:
            break
        _run(engine, registry.kind(job.kind), job, now, report)
    return report


def _claim_one(
    engine: Engine, registry: JobRegistry, now: datetime, holder: str, report: JobReport
) -> ClaimedJob | None:
    if not registry.names:
        return None
    with Session(engine) as session, session.begin():
        for row in repository.due_jobs(session, registry.names, now, limit=10):
            lease = registry.kind(row.kind).lease
            seen_attempts = row.attempts
            if row.status == JobStatus.RUNNING and seen_attempts >= row.max_attempts:
                # Its last attempt's worker died: no attempt is left to give it.
                repository.finish(
                    session,
                    row.id,
                    seen_attempts,
                    None,
                    status=JobStatus.DEAD,
                    due_at=now,
                    last_error=LOST_WORKER,
                    finished_at=now,
                )
                report.dead += 1
                continue
            if repository.claim(session, row, holder=holder, lease_until=now + lease, now=now):
                return ClaimedJob(
                    id=row.id,
                    kind=row.kind,
                    key=row.key,
                    tenant_id=row.tenant_id,
                    payload=dict(row.payload),
                    attempts=seen_attempts + 1,
                    max_attempts=row.max_attempts,
                    holder=holder,
                    lease=lease,
                    engine=engine,
                )
    return None


@contextmanager
def _heartbeat(job: ClaimedJob) -> Iterator[None]:
    """Renew `job`'s lease every quarter of it while the block runs."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(job.lease.total_seconds() / 4):
            try:
                job.renew()
            except LeaseLostError:
                return
            except Exception:  # a database hiccup: the next beat tries again
                logger.warning("job heartbeat failed", exc_info=True)

    thread = threading.Thread(target=beat, name=f"job-{job.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _run(engine: Engine, kind: JobKind, job: ClaimedJob, now: datetime, report: JobReport) -> None:
    error: str | None = None
    permanent = False
    try:
        with _heartbeat(job):
            kind.handler(engine, job)
    except LeaseLostError:
        logger.warning("job %s (%s) was taken over by another worker", job.id, job.kind)
        report.lost += 1
        return
    except PermanentJobError as failure:
        error, permanent = str(failure) or type(failure).__name__, True
    except Exception as failure:
        logger.exception("job %s (%s) attempt %s failed", job.id, job.kind, job.attempts)
        error = f"{type(failure).__name__}: {failure}"
    if error is None:
        status, due_at, finished_at = JobStatus.DONE, now, utcnow()
    elif permanent or job.attempts >= job.max_attempts:
        status, due_at, finished_at = JobStatus.DEAD, now, utcnow()
    else:
        status, due_at, finished_at = JobStatus.RETRYING, now + retry_delay(job.attempts), None
    with Session(engine) as session, session.begin():
        recorded = repository.finish(
            session,
            job.id,
            job.attempts,
            job.holder,
            status=status,
            due_at=due_at,
            last_error=(error or "")[:ERROR_LENGTH],
            finished_at=finished_at,
        )
    if not recorded:
        logger.warning("job %s was re-claimed before its outcome was recorded", job.id)
        report.lost += 1
    elif status == JobStatus.DONE:
        report.done += 1
    elif status == JobStatus.DEAD:
        logger.warning("job %s (%s) is dead: %s", job.id, job.kind, error)
        report.dead += 1
    else:
        report.retrying += 1
