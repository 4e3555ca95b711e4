"""The job queue: enqueue in the cause's transaction, idempotent keys, claim/lease between
workers, retries with backoff, the dead letter, lanes (on SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from agentmeter.tables import Job
from billing_api.jobs import repository
from billing_api.jobs.service import enqueue
from billing_api.jobs.states import JobStatus
from billing_api.jobs.worker import (
    LEASE,
    ClaimedJob,
    JobRegistry,
    LeaseLostError,
    PermanentJobError,
    run_due_jobs,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _enqueue(engine: Engine, kind: str = "test.echo", key: str = "k", **options: object) -> int:
    with Session(engine) as session, session.begin():
        return enqueue(session, kind, key, {"key": key}, run_at=NOW, **options)  # type: ignore[arg-type]


def _job(engine: Engine, job_id: int) -> Job:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def _jobs(engine: Engine) -> list[Job]:
    with Session(engine) as session:
        jobs = list(session.scalars(select(Job).order_by(Job.id)))
        session.expunge_all()
        return jobs


class Recorder:
    """A handler that records each attempt and fails the first `failures` of them."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.seen: list[tuple[int, int, dict[str, object]]] = []
        self.failures = failures
        self.error = error or RuntimeError("provider down")

    def __call__(self, engine: Engine, job: ClaimedJob) -> None:
        self.seen.append((job.id, job.attempts, job.payload))
        if len(self.seen) <= self.failures:
            raise self.error


def _registry(handler: Recorder, kind: str = "test.echo") -> JobRegistry:
    registry = JobRegistry()
    registry.register(kind, handler)
    return registry


class TestEnqueue:
    def test_a_committed_cause_leaves_a_pending_job(self, engine: Engine) -> None:
        job_id = _enqueue(engine, tenant_id=None, lane=None)

        job = _job(engine, job_id)
        assert (job.kind, job.key, job.status, job.attempts) == ("test.echo", "k", "pending", 0)
        assert job.payload == {"key": "k"}

    def test_a_rolled_back_cause_leaves_no_job(self, engine: Engine) -> None:
        with Session(engine) as session:
            session.begin()
            enqueue(session, "test.echo", "k")
            session.rollback()

        assert _jobs(engine) == []

    def test_an_identical_pending_job_makes_enqueue_a_no_op(self, engine: Engine) -> None:
        first = _enqueue(engine)
        second = _enqueue(engine)
        other_key = _enqueue(engine, key="other")

        assert second == first
        assert other_key != first
        assert len(_jobs(engine)) == 2

    def test_stays_a_no_op_once_postgresql_prepares_the_statement(self, engine: Engine) -> None:
        # psycopg prepares a statement from its 5th run; a bound partial-index predicate
        # then no longer matches the unique index and the insert fails.
        ids = {_enqueue(engine) for _ in range(8)}

        assert len(ids) == 1
        assert len(_jobs(engine)) == 1

    def test_concurrent_enqueues_of_one_key_leave_one_job(self, engine: Engine) -> None:
        """Two transactions enqueue the same job at once: the second waits for the first
        (the unique pending index) and, once it commits, gets its id."""
        first = Session(engine)
        first.begin()
        first_id = enqueue(first, "test.echo", "k")
        second_ids: list[int] = []
        errors: list[BaseException] = []

        def second() -> None:
            try:
                with Session(engine) as session, session.begin():
                    second_ids.append(enqueue(session, "test.echo", "k"))
            except BaseException as error:  # surfaced below
                errors.append(error)

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)  # let it reach the insert and wait behind the first transaction
        first.commit()
        first.close()
        thread.join(timeout=60)

        assert errors == []
        assert second_ids == [first_id]
        assert len(_jobs(engine)) == 1

    def test_a_started_job_does_not_absorb_a_new_enqueue(self, engine: Engine) -> None:
        first = _enqueue(engine)
        with Session(engine) as session, session.begin():
            row = session.get(Job, first)
            assert row is not None
            assert repository.claim(session, row, holder="w", lease_until=NOW + LEASE, now=NOW)

        second = _enqueue(engine)

        assert second != first
        assert [j.status for j in _jobs(engine)] == ["running", "pending"]


class TestRun:
    def test_runs_a_due_job_once_with_its_payload(self, engine: Engine) -> None:
        handler = Recorder()
        job_id = _enqueue(engine)

        report = run_due_jobs(engine, _registry(handler), NOW)

        assert (report.done, report.retrying, report.dead) == (1, 0, 0)
        assert handler.seen == [(job_id, 1, {"key": "k"})]
        job = _job(engine, job_id)
        assert job.status == "done" and job.finished_at is not None
        assert run_due_jobs(engine, _registry(handler), NOW + timedelta(days=1)).done == 0

    def test_a_job_is_not_due_before_its_time(self, engine: Engine) -> None:
        handler = Recorder()
        _enqueue(engine)

        assert run_due_jobs(engine, _registry(handler), NOW - timedelta(seconds=1)).done == 0
        assert handler.seen == []

    def test_kinds_this_worker_does_not_know_stay_queued(self, engine: Engine) -> None:
        job_id = _enqueue(engine, kind="test.other")

        assert run_due_jobs(engine, _registry(Recorder()), NOW).done == 0
        assert _job(engine, job_id).status == "pending"

    def test_failures_retry_with_backoff_then_go_dead_with_the_error(self, engine: Engine) -> None:
        handler = Recorder(failures=10)
        registry = _registry(handler)
        job_id = _enqueue(engine, max_attempts=3)

        assert run_due_jobs(engine, registry, NOW).retrying == 1
        job = _job(engine, job_id)
        assert (job.status, job.attempts) == ("retrying", 1)
        assert job.due_at == NOW + timedelta(seconds=30)
        assert job.last_error == "RuntimeError: provider down"
        # Not due again before its backoff.
        assert run_due_jobs(engine, registry, NOW + timedelta(seconds=29)).retrying == 0

        second = NOW + timedelta(seconds=30)
        assert run_due_jobs(engine, registry, second).retrying == 1
        assert _job(engine, job_id).due_at == second + timedelta(minutes=1)

        third = second + timedelta(minutes=1)
        assert run_due_jobs(engine, registry, third).dead == 1
        job = _job(engine, job_id)
        assert (job.status, job.attempts) == ("dead", 3)
        assert job.last_error == "RuntimeError: provider down"
        assert run_due_jobs(engine, registry, third + timedelta(days=1)).dead == 0
        assert [attempt for _, attempt, _ in handler.seen] == [1, 2, 3]

    def test_a_retry_that_succeeds_is_done(self, engine: Engine) -> None:
        handler = Recorder(failures=1)
        registry = _registry(handler)
        job_id = _enqueue(engine)

        run_due_jobs(engine, registry, NOW)
        assert run_due_jobs(engine, registry, NOW + timedelta(seconds=30)).done == 1
        job = _job(engine, job_id)
        assert (job.status, job.attempts) == ("done", 2)

    def test_a_permanent_error_goes_dead_at_once(self, engine: Engine) -> None:
        handler = Recorder(failures=1, error=PermanentJobError("the invoice is gone"))
        job_id = _enqueue(engine)

        assert run_due_jobs(engine, _registry(handler), NOW).dead == 1
        job = _job(engine, job_id)
        assert (job.status, job.attempts, job.last_error) == ("dead", 1, "the invoice is gone")

    def test_a_lane_runs_one_job_at_a_time_oldest_first(self, engine: Engine) -> None:
        handler = Recorder(failures=1)
        registry = _registry(handler)
        first = _enqueue(engine, key="a", lane="tenant-1")
        second = _enqueue(engine, key="b", lane="tenant-1")
        elsewhere = _enqueue(engine, key="c", lane="tenant-2")

        # The first fails and waits for its retry: the second waits behind it.
        report = run_due_jobs(engine, registry, NOW)
        assert (report.retrying, report.done) == (1, 1)
        assert [job_id for job_id, _, _ in handler.seen] == [first, elsewhere]

        run_due_jobs(engine, registry, NOW + timedelta(seconds=30))
        assert [job_id for job_id, _, _ in handler.seen] == [first, elsewhere, first, second]

    def test_registering_a_kind_twice_is_refused(self) -> None:
        registry = _registry(Recorder())
        with pytest.raises(ValueError, match="already registered"):
            registry.register("test.echo", Recorder())


class TestLease:
    def test_a_crashed_workers_job_is_taken_over_once_its_lease_runs_out(
        self, engine: Engine
    ) -> None:
        job_id = _enqueue(engine)
        # A worker claims it and dies before recording anything.
        with Session(engine) as session, session.begin():
            row = session.get(Job, job_id)
            assert row is not None
            assert repository.claim(session, row, holder="dead", lease_until=NOW + LEASE, now=NOW)
        handler = Recorder()
        registry = _registry(handler)

        assert run_due_jobs(engine, registry, NOW + LEASE - timedelta(seconds=1)).done == 0
        assert run_due_jobs(engine, registry, NOW + LEASE).done == 1

        assert handler.seen == [(job_id, 2, {"key": "k"})]
        assert _job(engine, job_id).status == "done"
        # The dead worker, were it to wake up, can no longer record an outcome.
        with Session(engine) as session, session.begin():
            assert not repository.finish(
                session,
                job_id,
                1,
                "dead",
                status=JobStatus.RETRYING,
                due_at=NOW,
                last_error="late",
                finished_at=None,
            )
        assert _job(engine, job_id).status == "done"

    def test_a_job_whose_last_attempts_worker_died_goes_dead(self, engine: Engine) -> None:
        job_id = _enqueue(engine, max_attempts=1)
        with Session(engine) as session, session.begin():
            row = session.get(Job, job_id)
            assert row is not None
            assert repository.claim(session, row, holder="dead", lease_until=NOW + LEASE, now=NOW)
        handler = Recorder()

        report = run_due_jobs(engine, _registry(handler), NOW + LEASE)

        assert handler.seen == []
        assert (report.done, report.dead) == (0, 1)
        job = _job(engine, job_id)
        assert (job.status, job.attempts, job.last_error) == ("dead", 1, "worker lost mid-run")

    def test_a_worker_that_outlived_its_lease_learns_it_and_records_nothing(
        self, engine: Engine
    ) -> None:
        job_id = _enqueue(engine)
        outcome: list[str] = []

        def slow(engine: Engine, job: ClaimedJob) -> None:
            # Meanwhile another worker takes the job over (this one's lease ran out).
            with Session(engine) as session, session.begin():
                row = session.get(Job, job.id)
                assert row is not None
                later = NOW + 2 * LEASE
                assert repository.claim(
                    session, row, holder="other", lease_until=later + LEASE, now=later
                )
            try:
                job.renew()
            except LeaseLostError:
                outcome.append("lost")
                raise

        registry = JobRegistry()
        registry.register("test.echo", slow)
        report = run_due_jobs(engine, registry, NOW)

        assert outcome == ["lost"]
        assert (report.lost, report.done, report.retrying) == (1, 0, 0)
        job = _job(engine, job_id)
        assert (job.status, job.holder, job.attempts) == ("running", "other", 2)

    def test_renew_extends_the_lease(self, engine: Engine) -> None:
        job_id = _enqueue(engine)
        leases: list[datetime] = []

        def renewing(engine: Engine, job: ClaimedJob) -> None:
            before = _job(engine, job.id).due_at
            job.renew()
            leases.extend([before, _job(engine, job.id).due_at])

        registry = JobRegistry()
        registry.register("test.echo", renewing, lease=timedelta(hours=1))
        run_due_jobs(engine, registry, NOW)

        assert leases[0] == NOW + timedelta(hours=1)
        assert leases[1] > datetime.now(UTC) + timedelta(minutes=59)
        assert _job(engine, job_id).status == "done"


class TestConcurrentWorkers:
    def test_several_workers_never_run_one_job_at_once(self, engine: Engine) -> None:
        """Four worker threads drain 40 jobs: each job runs exactly once, and no job is
        ever held by two workers at the same moment."""
        for index in range(40):
            _enqueue(engine, key=f"job-{index}")
        running: set[int] = set()
        overlaps: list[int] = []
        runs: Counter[int] = Counter()
        guard = threading.Lock()

        def handler(engine: Engine, job: ClaimedJob) -> None:
            with guard:
                if job.id in running:
                    overlaps.append(job.id)
                running.add(job.id)
                runs[job.id] += 1
            time.sleep(0.01)  # hold the job so the workers overlap
            with guard:
                running.discard(job.id)

        registry = JobRegistry()
        registry.register("test.echo", handler)
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def worker() -> None:
            start.wait()
            try:
                run_due_jobs(engine, registry, NOW)
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert errors == []
        assert overlaps == []
        assert sorted(runs.values()) == [1] * 40
        assert {job.status for job in _jobs(engine)} == {"done"}
