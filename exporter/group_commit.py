"""Group commit: writes that wait at the same moment share one transaction.

Committing is the fixed cost of a write (an fsync on SQLite, a round trip and a WAL flush on
PostgreSQL). Callers `submit` their write and block; one of them, the *leader*, takes every
write queued so far and hands the whole group to `commit_group`, which writes them (one
transaction when it can) and returns one outcome per write. Then each caller is woken with
its own outcome: a result once its transaction has committed, or the exception its own
write raised. While a leader commits, new writes queue up and form the next group, led by
one of their callers. There is no thread of its own: nothing to start, stop or leak.

At most one group is committed at a time, so the writes of one process never compete for
the store with each other (SQLite has one writer anyway).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

_Write = TypeVar("_Write")
_Result = TypeVar("_Result")


@dataclass(slots=True)
class _Pending(Generic[_Write, _Result]):
    write: _Write
    done: bool = False
    result: _Result | None = None
    error: BaseException | None = None


class GroupCommit(Generic[_Write, _Result]):
    """Runs `commit_group` on the writes submitted while the previous group committed.

    `commit_group(writes)` returns, in order, each write's result or the exception that
    failed that write alone; if it raises, every write of the group fails with that error.
    `submit` is thread-safe and blocks until its write's group is done.
    """

    def __init__(
        self, commit_group: Callable[[Sequence[_Write]], Sequence[_Result | BaseException]]
    ) -> None:
        self._commit_group = commit_group
        self._changed = threading.Condition()
        self._queue: list[_Pending[_Write, _Result]] = []
        self._leading = False

    @property
    def queued(self) -> int:
        """Writes waiting for the next group (the one committing now not counted)."""
        with self._changed:
            return len(self._queue)

    def submit(self, write: _Write) -> _Result:
        """Queue `write`, wait for the group it joins to commit; its result, or raise its
        error."""
        pending: _Pending[_Write, _Result] = _Pending(write)
        with self._changed:
            self._queue.append(pending)
            while not pending.done and self._leading:
                self._changed.wait()
            if not pending.done:
                # No leader: this caller commits the queue (its own write among it).
                self._leading = True
                group, self._queue = self._queue, []
        if not pending.done:
            self._lead(group)
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]  # done without error: set

    def _lead(self, group: list[_Pending[_Write, _Result]]) -> None:
        try:
            outcomes: Sequence[_Result | BaseException] = self._commit_group(
                [p.write for p in group]
            )
            if len(outcomes) != len(group):
                raise RuntimeError(f"{len(outcomes)} outcomes for {len(group)} writes")
        except BaseException as error:  # every write of the group shares the failure
            outcomes = [error] * len(group)
        with self._changed:
            for pending, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    pending.error = outcome
                else:
                    pending.result = outcome
                pending.done = True
            self._leading = False
            # Waiting callers: their own write is done, or one of them leads the next group.
            self._changed.notify_all()
