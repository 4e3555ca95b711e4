"""Every job kind and its handler, registered once; each handler lives in its domain."""

from __future__ import annotations

from billing_api.invoicing import leases, runs
from billing_api.jobs.worker import JobRegistry
from billing_api.pricing import recost


def job_registry() -> JobRegistry:
    """The registry `agentmeter serve` (and `agentmeter jobs run`) works from."""
    registry = JobRegistry()
    registry.register(recost.RECOST, recost.run_recost, lease=recost.LEASE)
    registry.register(runs.RUN_JOB, runs.run_billing_run, lease=leases.lease_duration())
    return registry
