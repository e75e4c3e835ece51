"""Group commit: the units of work that the threads of one process submit at the same time run one
after the other in one transaction, committed once.

Each unit that a thread runs in a transaction of its own pays the transaction itself (BEGIN, COMMIT,
a pooled connection and a session; on PostgreSQL their round trips) and, on a busy server, the GIL
and the database lock handed from thread to thread between its statements. In a group those costs
are paid once per group, and one thread does all of the group's database work.

Whoever submits a unit while no group is running leads: it takes every unit queued (up to
`max_units`), runs them in key order in one transaction, commits, and hands each submitter its
unit's result or error; units submitted meanwhile wait for the next group. Alone, a unit runs in a
transaction of its own, as without grouping.

A unit's own answer is a `DomainError` raised before it writes anything it would not commit on its
own: the group goes on and commits the others. Any other error of a unit (a constraint violation,
a deadlock, a lost connection) leaves the transaction unusable: the group is rolled back, nothing of
it committed, and each of its units is run again in a transaction of its own (`single`, with its own
retries), so that one unit's failure is never another's. If the COMMIT itself fails, every unit of
the group gets that error, as each would have alone.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from credit_common.errors import DomainError

T = TypeVar("T")


class _Unit(Generic[T]):
    __slots__ = ("done", "error", "key", "result", "subject", "work")

    def __init__(self, work: Callable[[Session], T], key: str, subject: Any) -> None:
        self.work = work
        self.key = key
        self.subject = subject
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = RuntimeError("the unit's group ended before running it")

    def succeed(self, result: T) -> None:
        self.result, self.error = result, None

    def fail(self, error: BaseException) -> None:
        self.result, self.error = None, error

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class GroupCommit:
    """Runs units of work (`Callable[[Session], T]`) of many threads in shared write transactions.

    `sessions` opens the write sessions of the groups; `single(work)` runs one unit in a
    transaction of its own (with the caller's usual retries). A unit's `key` orders the units of a
    group (stably: two units of one key keep their order): units that lock rows by that key then
    lock them in one order in every group, so that two groups (of two processes) never wait for each
    other in a cycle. A group's units run inside `within(session, subjects)` (if given; `subjects`:
    each unit's `subject`, in key order), e.g. to read what they all need at once and send their
    writes together at its end; if it fails, the units run alone."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        single: Callable[[Callable[[Session], Any]], Any],
        within: Callable[[Session, list[Any]], AbstractContextManager[object]] | None = None,
        max_units: int = 64,
    ) -> None:
        self._sessions = sessions
        self._single = single
        self._within = within
        self._max_units = max_units
        self._queue: list[_Unit] = []
        self._leading = False
        self._changed = threading.Condition()

    @property
    def waiting(self) -> int:
        """Units queued for the next group."""
        with self._changed:
            return len(self._queue)

    def run(self, work: Callable[[Session], T], key: str = "", subject: Any = None) -> T:
        """Run `work` in a group's transaction; its result (or error) once that group is committed.
        `subject` is what `within` is told of the unit."""
        unit: _Unit[T] = _Unit(work, key, subject)
        with self._changed:
            self._queue.append(unit)
            while True:
                while self._leading and not unit.done:
                    self._changed.wait()
                if unit.done:
                    return unit.outcome()
                # Lead a group: every unit queued (this one among them, unless more than max_units wait).
                self._leading = True
                group = self._queue[: self._max_units]
                del self._queue[: self._max_units]
                self._changed.release()
                try:
                    self._run_group(group)
                finally:
                    self._changed.acquire()
                    for member in group:
                        member.done = True
                    self._leading = False
                    self._changed.notify_all()

    def _run_group(self, group: list[_Unit]) -> None:
        if len(group) == 1:
            self._run_alone(group[0])
            return
        ordered = sorted(group, key=lambda member: member.key)
        broken = False
        with self._sessions() as session:
            session.begin()
            subjects = [member.subject for member in ordered]
            try:
                with self._within(session, subjects) if self._within else contextlib.nullcontext():
                    for member in ordered:
                        try:
                            member.succeed(member.work(session))
                        except DomainError as error:
                            member.fail(error)
            except Exception:  # the transaction is unusable: see the module's docstring
                broken = True
            if broken:
                with contextlib.suppress(Exception):  # a lost connection: the units run again below
                    session.rollback()
            else:
                try:
                    session.commit()
                except Exception as error:
                    for member in ordered:
                        member.fail(error)
                    return
        if broken:
            for member in ordered:
                self._run_alone(member)

    def _run_alone(self, unit: _Unit) -> None:
        try:
            unit.succeed(self._single(unit.work))
        except Exception as error:
            unit.fail(error)
