"""Billing runs hold a lease, so a run whose worker died is seen to have stopped.

The worker executing a run claims it (`holder`, a name unique to this worker) and renews
`heartbeat_at` every quarter of the lease (`AGENTMETER_RUN_LEASE_SECONDS`) from a
background thread, and again with each chunk it commits. A run still `running` whose
heartbeat is older than the lease is reported `interrupted`: its worker was killed (SIGKILL,
power loss) or is stuck. An interrupted run can be resumed (`POST …/resume`: a new worker
claims it and redoes it; drafting converges, so nothing is billed twice) or superseded by a
new run for the same period, which marks it `superseded`. A worker that finds its lease
taken away stops before writing another chunk.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.settings import Settings
from agentmeter.tables import BillingRun
from billing_api.invoicing import repository
from billing_api.invoicing.states import RunStatus

logger = logging.getLogger("agentmeter.billing")


class LeaseLostError(RuntimeError):
    """This worker no longer holds the run: it was superseded or resumed elsewhere."""


def lease_duration(settings: Settings | None = None) -> timedelta:
    """How long a run may go without a heartbeat before it counts as interrupted."""
    return timedelta(seconds=(settings or Settings()).run_lease_seconds)


def new_holder() -> str:
    """A name for this worker: host, process and a random part (unique per claim)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def observed_status(run: BillingRun, now: datetime, lease: timedelta) -> RunStatus:
    """The run's status as a client should see it: `interrupted` once a running run's
    heartbeat (or, before its first one, its creation) is older than `lease`."""
    last_sign_of_life = run.heartbeat_at or run.created_at
    if run.status == RunStatus.RUNNING and last_sign_of_life < now - lease:
        return RunStatus.INTERRUPTED
    return RunStatus(run.status)


class Heartbeat:
    """Renews a run's lease from a daemon thread while the `with` block runs.

    `check()` raises `LeaseLostError` once a renewal found the lease gone. Each renewal is
    its own short transaction; on SQLite it waits for the run's own chunk to commit.
    """

    def __init__(
        self, engine: Engine, tenant_id: str, run_id: str, holder: str, lease: timedelta
    ) -> None:
        self._engine = engine
        self._tenant_id = tenant_id
        self._run_id = run_id
        self._holder = holder
        self._interval = lease.total_seconds() / 4
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{run_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        """Raise `LeaseLostError` if the run was taken away from this worker."""
        if self._lost.is_set():
            raise LeaseLostError(f"billing run {self._run_id} is no longer held by this worker")

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with Session(self._engine) as session, session.begin():
                    held = repository.renew_run_lease(
                        session, self._tenant_id, self._run_id, self._holder, utcnow()
                    )
            except Exception:  # a database hiccup: the next beat tries again
                logger.warning("billing run heartbeat failed", exc_info=True)
                continue
            if not held:
                self._lost.set()
                return
