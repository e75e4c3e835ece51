"""Group commit: the units of work that the threads of one process submit at the same time run one
after the other in one transaction, committed once.

Each unit that a thread runs in a transaction of its own pays the transaction itself (BEGIN, COMMIT,
a pooled connection and a session; on PostgreSQL their round trips) and, on a busy server, the GIL
and the database lock handed from thread to thread between its statements. In a group those costs
are paid once per group, and one thread does all of the group's database work.

Groups are made by credit_common.batching: whoever submits a unit while no group is running leads
it, taking every unit queued (up to `max_units`); it runs them in key order in one transaction,
commits, and hands each submitter its unit's result or error. The leader takes the group once its
transaction holds a connection (on SQLite, the write lock), so that the units queued while it waited
for the lock are in it. A group may be one unit: its transaction is then its own, as without grouping.

A unit's own answer is a `DomainError` raised before it writes anything it would not commit on its
own: the group goes on and commits the others. Any other error of a unit (a constraint violation,
a deadlock, a lost connection) leaves the transaction unusable: the group is rolled back, nothing of
it committed, and each of its units is run again in a transaction of its own (`single`, with its own
retries), so that one unit's failure is never another's. If the COMMIT itself fails with a lost race
(the runner's retry policy: the database rolled the group back), the units run alone the same way;
any other failure of the COMMIT (a lost connection: the outcome is unknown) is every unit's answer, as
it would have been alone.

Why the group runs its own transaction and not on the shared runner (credit_common.db.transactions):
the runner runs one caller's work, answers that caller and runs it again whole after a lost race. A
group is many callers' units in one transaction: each gets its own answer (a unit's DomainError does
not roll back the others), a unit whose caller is gone must not commit while the others do, and one
unit's failure must not become the others'. Running the group again whole would repeat those
decisions with none of them isolated; so a group that fails for any reason falls back to the runner,
unit by unit, and the runner's policy decides the retries (docs/architecture.md, Transactions).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from credit_common import calls
from credit_common.batching import Batch, Batcher, Slot
from credit_common.db.transactions import RETRY
from credit_common.errors import DomainError

T = TypeVar("T")


@dataclass(slots=True)  # not frozen: a batch call makes one per item, and a frozen one costs several times more
class _Unit:
    work: Callable[[Session], Any]
    key: str
    subject: Any
    call: calls.Call | None = None  # the RPC it serves: a unit whose caller is gone does not commit


class GroupCommit:
    """Runs units of work (`Callable[[Session], T]`) of many threads in shared write transactions.

    `sessions` opens the write sessions of the groups; `single(work)` runs one unit in a
    transaction of its own (with the caller's usual retries: the shared runner's `write`);
    `retryable` tells a COMMIT that lost a race (the runner's policy) from one whose outcome is
    unknown. A unit's `key` orders the units of a group (stably: two units of one key keep their
    order): units that lock rows by that key then lock them in one order in every group, so that two
    groups (of two processes) never wait for each other in a cycle. A group's units run inside
    `within(session, subjects, skip_held)` (if given; `subjects`: each unit's `subject`, in key
    order), e.g. to lock and read what they all need at once and send their writes together at its
    end; if it fails, the units run alone. What it yields is the keys it did not take: with
    `skip_held` (`run_together`'s first transaction) it may skip the keys whose rows another
    transaction holds, and their units are left for the next transaction; without, it yields
    nothing to skip."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        single: Callable[[Callable[[Session], Any]], Any],
        within: Callable[[Session, list[Any], bool], AbstractContextManager[Collection[str] | None]] | None = None,
        max_units: int = 64,
        linger_s: float = 0.0,
        observe_size: Callable[[int], None] | None = None,
        retryable: Callable[[BaseException], bool] = RETRY.retryable,
    ) -> None:
        """`observe_size`: told the number of units of each group committed (a metric)."""
        self._sessions = sessions
        self._retryable = retryable
        self._observe_size = observe_size
        self._single = single
        self._within = within
        self._batcher = Batcher(self._run_group, max_units, linger_s)

    @property
    def waiting(self) -> int:
        """Units queued for the next group."""
        return self._batcher.waiting

    def run(self, work: Callable[[Session], T], key: str = "", subject: Any = None) -> T:
        """Run `work` in a group's transaction; its result (or error) once that group is committed.
        `subject` is what `within` is told of the unit."""
        return self._batcher.submit(_Unit(work, key, subject, calls.current()))

    def run_together(
        self, units: Sequence[tuple[Callable[[Session], Any], str, Any]], skip_held: bool = False
    ) -> list[Slot]:
        """Run `units` (each (work, key, subject), as `run` takes them) as groups of their own, now, in
        the calling thread: in key order (stably: a key's units in the order given), with the group's
        rules (a DomainError is a unit's own answer; any other failure runs each unit of its group
        alone). One slot per unit, in the order given: its `outcome()` is the unit's result, or raises
        its error. For a caller that has many units at once (a batch call), so that they share
        transactions however many they are (`run`'s groups are at most `max_units`).

        `skip_held`: each transaction takes only the keys that no other transaction holds (the
        `within` skips the others and says which), leaving the units of the keys skipped to the
        next; once one finds all of them held, the next waits for them, in key order. A key's units
        are never split between two transactions. Two callers whose units share keys then never wait
        for each other's whole call (each first does what the other is not holding), and the call
        pays a transaction or two, not one per part of it (docs/performance.md, "Held customers
        skipped")."""
        call = calls.current()
        slots: list[Slot] = [Slot(_Unit(work, key, subject, call), waited=False) for work, key, subject in units]
        waiting = sorted(slots, key=lambda slot: slot.item.key)
        while waiting:
            left = self._run_group(lambda waiting=waiting: waiting, skip_held)
            if len(left) == len(waiting):  # none of them free: the next waits for their keys
                skip_held = False
            waiting = left
        return slots

    def _run_group(self, take: Batch, skip_held: bool = False) -> list[Slot]:
        """Run a group; the units it left for another transaction (`within` skipped their keys)."""
        broken = False
        left: list[Slot] = []
        with self._sessions() as session:
            session.begin()
            try:
                # The transaction's connection first, then the group: on SQLite that is the write lock,
                # which another process may hold for a while, and the units that arrive meanwhile join
                # this group. (Taken the other way round, under two processes every other group was
                # a single unit that had arrived just after the previous group was taken.)
                session.connection()
            except Exception:  # a lost connection, a locked database: each unit alone, with its retries
                broken = True
            group = take()
            ordered = sorted(group, key=lambda member: member.item.key)
            if not broken:
                subjects = [member.item.subject for member in ordered]
                try:
                    within = self._within(session, subjects, skip_held) if self._within else contextlib.nullcontext()
                    with within as skipped:
                        if skip_held and skipped:
                            left = [member for member in ordered if member.item.key in skipped]
                            ordered = [member for member in ordered if member.item.key not in skipped]
                        for member in ordered:
                            try:
                                member.succeed(member.item.work(session))
                            except DomainError as error:
                                member.fail(error)
                except Exception:  # the transaction is unusable: see the module's docstring
                    broken = True
            if not broken:
                # A unit whose caller gave up (deadline, cancel) must not commit; its writes are in the
                # group's transaction, so the group is rolled back and each unit runs alone, where that
                # one fails with DeadlineExceeded or Cancelled (credit_common.calls) and the others commit.
                calls.check_before_commit(None)
                if any(member.item.call is not None and member.item.call.gone() for member in ordered):
                    broken = True
            if broken:
                with contextlib.suppress(Exception):  # a lost connection: the units run again below
                    session.rollback()
            else:
                try:
                    session.commit()
                except Exception as error:
                    if not self._retryable(error):  # the outcome is unknown: each unit's answer, as alone
                        for member in ordered:
                            member.fail(error)
                        return left
                    broken = True  # a lost race: the database rolled the group back; each unit alone below
                else:
                    if self._observe_size is not None:
                        self._observe_size(len(ordered))
        if broken:
            for member in ordered:
                self._run_alone(member)
        return left

    def _run_alone(self, slot: Slot) -> None:
        try:
            with calls.serving(slot.item.call):
                slot.succeed(self._single(slot.item.work))
        except Exception as error:
            slot.fail(error)

