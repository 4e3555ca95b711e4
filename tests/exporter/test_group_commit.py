"""Group commit: exports that wait at the same moment share one transaction, each answered
only after that commit; one batch's bad data fails only its own export."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pytest
from sqlalchemy import Connection, Engine, event

from exporter.group_commit import GroupCommit
from exporter.sql_sink import SqlUsageSink
from otel_processor.usage import UsageBatch, WriteResult
from tests.exporter.test_sql_sink import TENANT, span_id, stored, trace_id, usage

WAIT_SECONDS = 10.0


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def _start(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


class TestGroupCommit:
    def test_writes_queued_while_a_group_commits_form_the_next_group(self) -> None:
        groups: list[list[int]] = []
        release = threading.Event()

        def commit_group(writes: Sequence[int]) -> list[int]:
            groups.append(list(writes))
            if len(groups) == 1:
                release.wait(WAIT_SECONDS)
            return [w * 10 for w in writes]

        commits: GroupCommit[int, int] = GroupCommit(commit_group)
        results: dict[int, int] = {}

        def submit(n: int) -> Callable[[], None]:
            return lambda: results.__setitem__(n, commits.submit(n))

        first = _start(submit(1))
        _until(lambda: len(groups) == 1)
        others = [_start(submit(n)) for n in (2, 3)]
        _until(lambda: commits.queued == 2)
        assert results == {}
        release.set()
        for thread in (first, *others):
            thread.join(WAIT_SECONDS)
        assert groups[0] == [1]
        assert sorted(groups[1]) == [2, 3]
        assert len(groups) == 2
        assert results == {1: 10, 2: 20, 3: 30}

    def test_an_error_returned_for_one_write_is_raised_to_that_caller_only(self) -> None:
        def commit_group(writes: Sequence[int]) -> list[int | BaseException]:
            return [ValueError(f"bad {w}") if w < 0 else w for w in writes]

        commits: GroupCommit[int, int] = GroupCommit(commit_group)
        assert commits.submit(4) == 4
        with pytest.raises(ValueError, match="bad -1"):
            commits.submit(-1)
        assert commits.submit(5) == 5

    def test_a_failing_group_fails_each_of_its_writes_and_the_next_group_runs(self) -> None:
        calls: list[Sequence[int]] = []

        def commit_group(writes: Sequence[int]) -> list[int]:
            calls.append(writes)
            if len(calls) == 1:
                raise RuntimeError("store down")
            return list(writes)

        commits: GroupCommit[int, int] = GroupCommit(commit_group)
        with pytest.raises(RuntimeError, match="store down"):
            commits.submit(1)
        assert commits.submit(2) == 2


class _HeldFirstCommit:
    """Holds the engine's first commit until `queued` writes wait behind it; records the
    order of commits and of the writers' returns."""

    def __init__(self, engine: Engine, sink: SqlUsageSink, queued: int) -> None:
        self.events: list[str] = []
        self.first_commit = threading.Event()
        self._sink = sink
        self._queued = queued
        self._engine = engine
        event.listen(engine, "commit", self._on_commit)

    def _on_commit(self, connection: Connection) -> None:
        self.events.append("commit")
        if not self.first_commit.is_set():
            self.first_commit.set()
            _until(lambda: self._sink._commits.queued == self._queued)

    def remove(self) -> None:
        event.remove(self._engine, "commit", self._on_commit)


def _record(n: int) -> UsageBatch:
    # With a customer on every record, PostgreSQL needs no second, attributing transaction.
    return UsageBatch([usage(n, n, customer="acme")])


def _create_month(sink: SqlUsageSink) -> None:
    """Have `sink` create (PostgreSQL) the month partition of the test records, with a write of
    another tenant: its transaction's commit is then not the held one, with later writes
    waiting behind its DDL and never queueing."""
    sink.write("warm-up", _record(99))


class TestSqlSinkGroupCommit:
    def test_concurrent_exports_share_one_commit_and_return_only_after_it(
        self, engine: Engine
    ) -> None:
        sink = SqlUsageSink(engine)
        _create_month(sink)
        held = _HeldFirstCommit(engine, sink, queued=2)
        results: dict[int, WriteResult] = {}
        visible: dict[int, bool] = {}

        def write(n: int) -> Callable[[], None]:
            def run() -> None:
                results[n] = sink.write(TENANT, _record(n))
                held.events.append(f"returned {n}")
                # Committed: another connection sees it the moment `write` returns.
                visible[n] = (trace_id(n), span_id(n), "input_tokens") in stored(engine)

            return run

        try:
            first = _start(write(1))
            assert held.first_commit.wait(WAIT_SECONDS)
            others = [_start(write(n)) for n in (2, 3)]
            for thread in (first, *others):
                thread.join(WAIT_SECONDS)
        finally:
            held.remove()
        assert results == {n: WriteResult(inserted=1, duplicates=0) for n in (1, 2, 3)}
        assert visible == {1: True, 2: True, 3: True}
        # Writes 2 and 3 waited together: one commit for both, before either returned.
        assert held.events.count("commit") == 2
        second_commit = held.events.index("commit", 1)
        assert second_commit < held.events.index("returned 2")
        assert second_commit < held.events.index("returned 3")

    def test_a_bad_batch_does_not_fail_the_export_it_was_grouped_with(self, engine: Engine) -> None:
        sink = SqlUsageSink(engine)
        _create_month(sink)
        held = _HeldFirstCommit(engine, sink, queued=2)
        results: dict[int, WriteResult] = {}
        errors: dict[int, Exception] = {}

        def write(n: int, batch: UsageBatch) -> Callable[[], None]:
            def run() -> None:
                try:
                    results[n] = sink.write(TENANT, batch)
                except Exception as error:
                    errors[n] = error

            return run

        try:
            first = _start(write(1, _record(1)))
            assert held.first_commit.wait(WAIT_SECONDS)
            # A quantity past what a 64-bit integer column holds: the database refuses the
            # row. (Not a time: on PostgreSQL its month's partition is created, and fails,
            # before the write joins a group.)
            too_much = UsageBatch([usage(2, 2, quantity=2**63, customer="acme")])
            others = [
                _start(write(2, too_much)),
                _start(write(3, _record(3))),
            ]
            for thread in (first, *others):
                thread.join(WAIT_SECONDS)
        finally:
            held.remove()
        assert results == {n: WriteResult(inserted=1, duplicates=0) for n in (1, 3)}
        assert list(errors) == [2]
        assert set(stored(engine)) == {(trace_id(n), span_id(n), "input_tokens") for n in (1, 3)}
