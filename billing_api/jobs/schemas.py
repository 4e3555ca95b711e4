"""Job bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from billing_api.jobs.states import JobStatus


class JobOut(BaseModel):
    """A background job started by an API call (e.g. the recost of a provider cost)."""

    id: int
    kind: str
    status: JobStatus
    attempts: int
    last_error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
