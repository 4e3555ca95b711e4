"""Running queued jobs promptly in the API's own process, for work a person waits for.

`agentmeter serve`'s background loop runs due jobs every interval (30 s by default); a
billing run started from the API or the dashboard should not wait for it. Each app has one
`JobWaker`: a daemon thread, started on first use, that runs `run_due_jobs` whenever it is
woken, which the request that enqueued a job does once its transaction has committed
(`BackgroundTasks`, after the answer). Wakes while a pass runs make one more pass. The
waker is only a trigger: jobs are claimed and leased as every worker's are, so it, the
background loop and other replicas never run one attempt twice.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from billing_api.jobs.worker import JobRegistry, run_due_jobs

logger = logging.getLogger("agentmeter.jobs")


class JobWaker:
    """Runs the due jobs of `registry` on `engine` in its own thread when woken."""

    def __init__(self, engine: Engine, registry: JobRegistry) -> None:
        self._engine = engine
        self._registry = registry
        self._woken = threading.Event()
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """Run the due jobs soon, in the waker's thread; never blocks."""
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="job-waker", daemon=True)
                self._thread.start()
        self._woken.set()

    def _loop(self) -> None:
        while True:
            self._woken.wait()
            self._woken.clear()
            try:
                run_due_jobs(self._engine, self._registry)
            except Exception:  # logged; the next wake (or the background loop) tries again
                logger.exception("running woken jobs failed")
