"""The states of a background job, one definition."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job stands (see `billing_api/jobs/worker.py` for the transitions)."""

    PENDING = "pending"  # enqueued, never started: an identical enqueue is a no-op
    RUNNING = "running"  # claimed by a worker whose lease runs until `due_at`
    RETRYING = "retrying"  # an attempt failed; runs again from `due_at`
    DONE = "done"
    DEAD = "dead"  # failed for good (out of attempts, or a permanent error): see last_error


# Not finished: a worker may still run it (and it holds back younger jobs of its lane).
UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.RETRYING)
