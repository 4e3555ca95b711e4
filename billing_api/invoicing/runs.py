"""Billing runs: draft every customer with something to bill for a month, in committed
chunks, under a lease (`leases`) so a run whose worker died is seen and can be resumed.

A run is for a month that has begun. It drafts every customer with usage, fees or
commitments in the period, or late usage of an earlier finalized period; a registered
customer with nothing to bill gets no invoice. Each chunk commits on its own, so progress
is visible and a crash loses at most one chunk, which a re-run redoes (drafting converges).
A new run of a month supersedes its interrupted runs. Findings about the period as a whole
(unattributed usage, unregistered customer ids) are the run's own exceptions.

Started or resumed from the API or the dashboard, a run is executed by a background job
(`RUN_JOB`, handled by `run_billing_run`), never by a thread of the request; `agentmeter
bill` executes it in its own process.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from agentmeter.clock import utcnow
from agentmeter.db import in_chunks
from agentmeter.tables import BillingRun
from billing_api.auth import Caller, Role
from billing_api.errors import ConflictError, NotFoundError, UnprocessableError
from billing_api.invoicing import leases, repository
from billing_api.invoicing.checks import Finding
from billing_api.invoicing.drafts import draft_customers
from billing_api.invoicing.exceptions import sync_exceptions
from billing_api.invoicing.repository import new_id
from billing_api.invoicing.states import ExceptionKind, RunStatus, Severity
from billing_api.jobs.service import enqueue
from billing_api.jobs.worker import ClaimedJob, PermanentJobError
from billing_api.periods import Period, month_period
from billing_api.rating.repository import load_pricing
from billing_api.rating.service import rate_period
from billing_api.rating.terms import TenantPricing

logger = logging.getLogger("agentmeter.billing")

CHUNK = 500
# The job that executes a run started from the API or the dashboard (`run_billing_run`).
RUN_JOB = "invoicing.run"

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class RunView:
    """A billing run's progress, with its status as observed (see `leases`)."""

    id: str
    period: str
    status: RunStatus
    total_customers: int
    processed_customers: int
    drafted: int
    error: str
    created_at: datetime
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, run: BillingRun, status: RunStatus) -> RunView:
        return cls(
            id=run.id,
            period=run.period,
            status=status,
            total_customers=run.total_customers,
            processed_customers=run.processed_customers,
            drafted=run.drafted,
            error=run.error,
            created_at=run.created_at,
            heartbeat_at=run.heartbeat_at,
            finished_at=run.finished_at,
        )


def get_run(
    session: Session, caller: Caller, run_id: str, *, now: datetime, lease: timedelta
) -> RunView:
    """A run's progress; readable while it works (reads never wait for the writer)."""
    run = _run(session, caller.tenant_id, run_id)
    return RunView.of(run, leases.observed_status(run, now, lease))


def run_period(session: Session, caller: Caller, run_id: str) -> str:
    """The month a run bills (what its findings are about)."""
    return _run(session, caller.tenant_id, run_id).period


def _run(session: Session, tenant_id: str, run_id: str) -> BillingRun:
    run = repository.get_run(session, tenant_id, run_id)
    if run is None:
        raise NotFoundError(f"no billing run {run_id!r}")
    return run


def run_findings(
    session: Session, tenant_id: str, period: Period, pricing: TenantPricing, drafted: Iterable[str]
) -> list[Finding]:
    """Findings about the period as a whole: usage nobody can be billed for yet."""
    findings = []
    records, quantity, traces = repository.unattributed_usage(
        session, tenant_id, period.start, period.end
    )
    if records:
        findings.append(
            Finding(
                ExceptionKind.UNATTRIBUTED_USAGE,
                Severity.WARNING,
                "unattributed",
                f"{records} usage records in {period.label} have no customer",
                {"records": records, "quantity_micros": quantity, "trace_ids": traces},
            )
        )
    for customer_id in sorted(set(drafted) - pricing.registered):
        findings.append(
            Finding(
                ExceptionKind.UNREGISTERED_CUSTOMER,
                Severity.WARNING,
                customer_id,
                f"usage for customer id {customer_id!r}, which is not a registered customer: "
                "register it or map the usage to an existing customer",
                {"customer_id": customer_id},
            )
        )
    return findings


def start_run(
    session: Session,
    caller: Caller,
    period_label: str,
    *,
    now: datetime | None = None,
    lease: timedelta | None = None,
    queue: bool = True,
) -> RunView:
    """Record a new run of `period_label` (a month that has begun by `now`); runs of the
    period whose worker died (see `leases`) are marked superseded by it. With `queue`, a
    job executes it once the caller's transaction commits (`run_billing_run`); without,
    the caller executes it (`execute_run`), as `agentmeter bill` does."""
    caller.require(Role.BILLING)
    now = now or utcnow()
    try:
        begins = month_period(period_label).start
    except ValueError as error:
        raise UnprocessableError(str(error)) from None
    if begins > now:
        raise UnprocessableError(f"period {period_label} has not begun; nothing to bill yet")
    lease = lease or leases.lease_duration()
    tenant_id = caller.tenant_id
    run = BillingRun(
        id=new_id(), tenant_id=tenant_id, period=period_label, status=RunStatus.RUNNING
    )
    for stale in repository.running_runs(session, tenant_id, period_label):
        if leases.observed_status(stale, now, lease) == RunStatus.INTERRUPTED:
            stale.status = RunStatus.SUPERSEDED
            stale.holder = ""  # a worker that was only stuck stops at its next chunk
            stale.error = f"interrupted; superseded by run {run.id}"
            stale.finished_at = now
    session.add(run)
    session.flush()
    if queue:
        _queue(session, run, lease)
    return RunView.of(run, RunStatus.RUNNING)


def resume_run(
    session: Session, caller: Caller, run_id: str, *, now: datetime, lease: timedelta
) -> RunView:
    """Make an interrupted run claimable again and queue its job (it runs again from the
    start once the caller's transaction commits; drafting converges)."""
    caller.require(Role.BILLING)
    run = _run(session, caller.tenant_id, run_id)
    status = leases.observed_status(run, now, lease)
    if status != RunStatus.INTERRUPTED:
        raise ConflictError(f"billing run {run_id} is {status}; only an interrupted run resumes")
    run.holder = ""
    run.heartbeat_at = now
    run.error = ""
    session.flush()
    _queue(session, run, lease)
    return RunView.of(run, RunStatus.RUNNING)


def _queue(session: Session, run: BillingRun, lease: timedelta) -> None:
    enqueue(
        session,
        RUN_JOB,
        run.id,
        {"run_id": run.id, "lease_seconds": lease.total_seconds()},
        tenant_id=run.tenant_id,
    )


def run_billing_run(engine: Engine, job: ClaimedJob) -> None:
    """The job's handler: execute the run under its own lease (`execute_run`).

    One attempt only. A run that fails records why (status failed); a run whose worker
    died reads interrupted until a person resumes it or a new run supersedes it, so a job
    re-claimed after its worker died does not run it again by itself. A run already held
    by a live worker, superseded, or finished is left alone."""
    run_id = str(job.payload["run_id"])
    assert job.tenant_id is not None
    if job.attempts > 1:
        logger.warning("billing run %s interrupted: its worker died; resume it", run_id)
        return
    lease = timedelta(seconds=float(job.payload["lease_seconds"]))
    try:
        execute_run(engine, job.tenant_id, run_id, lease=lease)
    except (ConflictError, leases.LeaseLostError):
        return  # another worker holds it, or it was superseded: nothing of this job's
    except Exception as error:  # recorded on the run (failed) and logged by execute_run
        raise PermanentJobError(f"billing run {run_id} failed: {error}") from error


def execute_run(
    engine: Engine,
    tenant_id: str,
    run_id: str,
    progress: Progress | None = None,
    *,
    lease: timedelta | None = None,
) -> BillingRun:
    """Draft the invoice of every customer with something to bill for the run's month
    (usage, fees or commitments in it, or late usage of an earlier finalized period), in
    chunks that each commit, so progress is visible and a crash loses at most one chunk
    (which a re-run redoes). A registered customer with nothing to bill gets no invoice.

    Holds the run's lease meanwhile (`leases`): `ConflictError` if a live worker holds it
    already, `LeaseLostError` if it is taken away (superseded) before the run ends.
    """
    lease = lease or leases.lease_duration()
    holder = leases.new_holder()
    with Session(engine) as session, session.begin():
        if not repository.claim_run(session, tenant_id, run_id, holder, utcnow(), lease):
            raise ConflictError(f"billing run {run_id} is not running or is held by a worker")
    with leases.Heartbeat(engine, tenant_id, run_id, holder, lease) as heartbeat:
        return _execute_held_run(engine, tenant_id, run_id, holder, heartbeat, progress)


def _held(session: Session, tenant_id: str, run_id: str, holder: str) -> BillingRun:
    """The run, if this worker still holds it (checked in the transaction that writes)."""
    run = repository.get_run(session, tenant_id, run_id)
    if run is None or run.holder != holder or run.status != RunStatus.RUNNING:
        raise leases.LeaseLostError(f"billing run {run_id} is no longer held by this worker")
    run.heartbeat_at = utcnow()
    return run


def _execute_held_run(
    engine: Engine,
    tenant_id: str,
    run_id: str,
    holder: str,
    heartbeat: leases.Heartbeat,
    progress: Progress | None,
) -> BillingRun:
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            run = _held(session, tenant_id, run_id, holder)
            label = run.period
            pricing = load_pricing(session, tenant_id)
            # Late usage of all customers in one query, idle or not this month.
            late = repository.late_usage(session, tenant_id, month_period(label).start)
            groups = _billing_day_groups(session, tenant_id, label, pricing, late)
            total = sum(len(ids) for _, ids in groups)
            run.total_customers = total
        done = drafted = 0
        all_drafted: list[str] = []
        for period, customer_ids in groups:
            # Rated once per group: the database sums the whole period in one pass.
            with Session(engine) as session:
                wanted = None if len(groups) == 1 else customer_ids
                rated = rate_period(session, tenant_id, period, wanted, pricing=pricing)
            for chunk in in_chunks(customer_ids, CHUNK):
                heartbeat.check()
                with Session(engine, expire_on_commit=False) as session, session.begin():
                    drafts = draft_customers(
                        session,
                        tenant_id,
                        period,
                        {c: rated[c] for c in chunk if c in rated},
                        late={c: late[c] for c in chunk if c in late},
                        run_id=run_id,
                        pricing=pricing,
                    )
                    drafted += len(drafts)
                    all_drafted.extend(d.customer_id for d in drafts)
                    done += len(chunk)
                    run = _held(session, tenant_id, run_id, holder)
                    run.processed_customers = done
                    run.drafted = drafted
                if progress is not None:
                    progress(done, total)
        with Session(engine, expire_on_commit=False) as session, session.begin():
            # Concurrent runs of one tenant meet here one at a time.
            repository.lock_tenant(session, tenant_id)
            first = groups[0][0] if groups else month_period(label)
            sync_exceptions(
                session,
                tenant_id,
                scope=f"run:{label}",
                period=label,
                customer_id="",
                invoice_id=None,
                findings=run_findings(session, tenant_id, first, pricing, all_drafted),
            )
            run = _held(session, tenant_id, run_id, holder)
            run.status = RunStatus.COMPLETED
            run.finished_at = utcnow()
        return run
    except leases.LeaseLostError:
        logger.warning("billing run taken over", extra={"tenant_id": tenant_id, "run_id": run_id})
        raise
    except Exception as error:
        logger.exception("billing run failed", extra={"tenant_id": tenant_id, "run_id": run_id})
        with Session(engine, expire_on_commit=False) as session, session.begin():
            failed = repository.get_run(session, tenant_id, run_id)
            if failed is not None and failed.holder == holder:
                failed.status = RunStatus.FAILED
                failed.error = str(error)[:2000]
                failed.finished_at = utcnow()
        raise


def _billing_day_groups(
    session: Session, tenant_id: str, label: str, pricing: TenantPricing, late: Iterable[str]
) -> list[tuple[Period, list[str]]]:
    """Customers to consider, grouped by the period their billing day gives in month
    `label`.

    Registered customers, plus ids with usage in the month or late usage that are not
    registered yet (they bill on day 1 until registered)."""
    by_day: dict[int, set[str]] = defaultdict(set)
    for customer_id in pricing.registered:
        by_day[pricing.billing_days.get(customer_id, 1)].add(customer_id)
    calendar = month_period(label)
    for customer_id in {
        *repository.customers_with_usage(session, tenant_id, calendar.start, calendar.end),
        *late,
    }:
        if customer_id not in pricing.registered:
            by_day[1].add(customer_id)
    return [(month_period(label, day), sorted(ids)) for day, ids in sorted(by_day.items())]
