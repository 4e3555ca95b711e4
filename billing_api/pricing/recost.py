"""Recosting stored usage after a provider cost override changes, as a job.

The change enqueues a `pricing.recost` job in its own transaction (after taking the
tenant's cost overrides lock, see `exporter.recost`), so the API answers at once and no
request holds the database's write lock for a recost. The job recosts the tenant's usage
from the override's `effective_from` on. A tenant's recosts run one at a time, oldest
first (one lane per tenant); while one with the same start is still pending, another
change adds nothing (that job will read the latest overrides when it runs).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from billing_api.jobs.service import enqueue
from billing_api.jobs.worker import ClaimedJob
from exporter.recost import lock_cost_overrides, recost_usage

RECOST = "pricing.recost"
# Each page of a recost commits in well under a minute; the heartbeat renews meanwhile.
LEASE = timedelta(minutes=2)


def enqueue_recost(session: Session, tenant_id: str, start: datetime) -> int:
    """Queue the recost of the tenant's usage from `start` on, in the caller's transaction
    (the one changing the overrides, which this also locks until it commits)."""
    lock_cost_overrides(session.connection(), tenant_id)
    return enqueue(
        session,
        RECOST,
        f"{tenant_id}:{start.isoformat()}",
        {"start": start.isoformat()},
        tenant_id=tenant_id,
        lane=f"{RECOST}:{tenant_id}",
    )


def run_recost(engine: Engine, job: ClaimedJob) -> None:
    """The job's handler: recost, page by page (each page commits)."""
    assert job.tenant_id is not None
    recost_usage(engine, job.tenant_id, start=datetime.fromisoformat(job.payload["start"]))
