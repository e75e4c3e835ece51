"""GroupCommit (credit_common.db.group_commit) on a real database: units submitted together share one
transaction, a unit's domain error is its own answer, a unit that breaks the transaction makes every
unit of its group run again alone (so does a COMMIT that lost a race), and a group runs its units in
key order."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from functools import partial

import pytest
from sqlalchemy import Column, MetaData, String, Table, event, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.group_commit import GroupCommit
from credit_common.errors import NotFound
from tests.support.batches import one_batch
from tests.support.lost_race import DEADLOCK, SERIALIZATION_FAILURE, lose_race_at_commit

_ROWS = Table("rows", MetaData(), Column("key", String(20), primary_key=True))


@pytest.fixture
def engine(database_url_factory):
    engine = create_db_engine(DatabaseSettings(database_url_factory("group_commit")))
    _ROWS.metadata.create_all(engine)
    yield engine
    engine.dispose()


def _committer(engine, within=None) -> tuple[GroupCommit, list[str]]:
    """A GroupCommit over `engine` (its groups in `within`, if given), and the list of the transactions
    it commits ("group" or "alone")."""
    factories = session_factories(engine)
    commits: list[str] = []
    event.listen(engine, "commit", lambda _conn: commits.append("commit"))

    def single(work: Callable[[Session], object]) -> object:
        with factories.write() as session, session.begin():
            return work(session)

    return GroupCommit(factories.write, single, within), commits


def _insert(key: str) -> Callable[[Session], str]:
    def work(session: Session) -> str:
        session.execute(insert(_ROWS).values(key=key))
        return key

    return work


def _counted_insert(runs: list[str], key: str) -> Callable[[Session], str]:
    """`_insert(key)`, noting `key` in `runs` at each run."""

    def work(session: Session) -> str:
        runs.append(key)
        return _insert(key)(session)

    return work


def _keys(engine) -> list[str]:
    with engine.connect() as c:
        return sorted(c.scalars(select(_ROWS.c.key)))


def _in_one_group(committer: GroupCommit, units: list[tuple[str, Callable[[Session], object]]]) -> list[object]:
    """Each unit's (key, work) result or error, the units having made one group, in this order."""
    return one_batch(
        lambda hold: committer.run(lambda _session: hold()),
        lambda: committer.waiting,
        [partial(committer.run, work, key=key) for key, work in units],
    )


def test_units_submitted_together_are_committed_in_one_transaction(engine):
    committer, commits = _committer(engine)
    outcomes = _in_one_group(committer, [(f"k{i}", _insert(f"k{i}")) for i in range(8)])
    assert outcomes == [f"k{i}" for i in range(8)]
    assert _keys(engine) == [f"k{i}" for i in range(8)]
    assert len(commits) == 2  # one for the eight, after the holding unit's own


def test_a_unit_alone_runs_in_its_own_transaction(engine):
    committer, commits = _committer(engine)
    assert committer.run(_insert("a")) == "a"
    assert _keys(engine) == ["a"] and len(commits) == 1


def test_a_domain_error_is_its_units_answer_and_the_others_commit(engine):
    committer, _ = _committer(engine)

    def not_found(_session: Session) -> None:
        raise NotFound("no such thing", reason="THING_NOT_FOUND")

    outcomes = _in_one_group(committer, [("a", _insert("a")), ("b", not_found), ("c", _insert("c"))])
    assert outcomes[0] == "a" and outcomes[2] == "c"
    assert isinstance(outcomes[1], NotFound)
    assert _keys(engine) == ["a", "c"]


def test_a_unit_that_breaks_the_transaction_makes_each_unit_of_its_group_run_alone(engine):
    committer, commits = _committer(engine)
    committer.run(_insert("taken"))
    commits.clear()
    runs: list[str] = []

    counted = partial(_counted_insert, runs)
    outcomes = _in_one_group(committer, [("a", counted("a")), ("b", counted("taken")), ("c", counted("c"))])
    assert outcomes[0] == "a" and outcomes[2] == "c"
    assert isinstance(outcomes[1], IntegrityError)  # its own error, from its own transaction
    assert _keys(engine) == ["a", "c", "taken"]  # nothing of the broken group was committed twice
    # In the group: a, then the duplicate (the group rolled back); then each alone: a, taken (fails), c.
    assert runs == ["a", "taken", "a", "taken", "c"]
    assert len(commits) == 3  # the holding unit's, then a and c, alone


def test_a_group_runs_its_units_in_key_order_keeping_the_order_of_one_key(engine):
    committer, _ = _committer(engine)
    order: list[str] = []

    def note(name: str) -> Callable[[Session], str]:
        def work(_session: Session) -> str:
            order.append(name)
            return name

        return work

    units = [("c", note("c1")), ("a", note("a1")), ("c", note("c2")), ("b", note("b1")), ("a", note("a2"))]
    assert _in_one_group(committer, units) == ["c1", "a1", "c2", "b1", "a2"]  # each its own answer
    assert order == ["a1", "a2", "b1", "c1", "c2"]


def test_units_queued_while_the_leader_waits_for_the_write_lock_join_its_group(tmp_path):
    """On SQLite another process may hold the write lock: the leader takes its group only once its
    transaction holds the lock, so the units queued while it waited are in that group, not in the next."""
    path = tmp_path / "locked.db"
    engine = create_db_engine(DatabaseSettings(f"sqlite:///{path}"))
    _ROWS.metadata.create_all(engine)
    committer, commits = _committer(engine)
    other = sqlite3.connect(path, isolation_level=None)  # another process's writer
    other.execute("BEGIN IMMEDIATE")
    try:
        threads = []
        for i in range(5):
            threads.append(threading.Thread(target=committer.run, args=(_insert(f"k{i}"),), kwargs={"key": f"k{i}"}))
            threads[-1].start()
            deadline = time.monotonic() + 20
            while committer.waiting < i + 1:  # the first, waiting for the lock, is still queued
                assert time.monotonic() < deadline, "the units did not queue behind the locked database"
                time.sleep(0.002)
    finally:
        other.rollback()
        other.close()
    for t in threads:
        t.join(20)
    assert _keys(engine) == [f"k{i}" for i in range(5)]
    assert len(commits) == 1  # the five in one transaction
    engine.dispose()


def test_run_together_runs_its_units_in_one_transaction_in_key_order_each_with_its_own_answer(engine):
    committer, commits = _committer(engine)
    order: list[str] = []

    def unit(key: str, name: str, fail: bool = False) -> tuple[Callable[[Session], object], str, None]:
        def work(session: Session) -> str:
            order.append(name)
            if fail:
                raise NotFound(f"{name} not found", reason="THING_NOT_FOUND")
            session.execute(insert(_ROWS).values(key=name))
            return name

        return work, key, None

    units = [unit("b", "b1"), unit("a", "a1"), unit("b", "b2", fail=True), unit("a", "a2"), unit("b", "b3")]
    slots = committer.run_together(units)
    assert order == ["a1", "a2", "b1", "b2", "b3"]  # by key, a key's units in the order given
    assert [slot.error is None for slot in slots] == [True, True, False, True, True]
    assert [slot.outcome() for i, slot in enumerate(slots) if i != 2] == ["b1", "a1", "a2", "b3"]
    with pytest.raises(NotFound):
        slots[2].outcome()
    assert _keys(engine) == ["a1", "a2", "b1", "b3"] and commits == ["commit"]


class _HeldKeys:
    """A `within` whose transactions find the keys of `held` (one set per transaction, the last one
    for any after it) held by another: with skip_held it skips them and says so."""

    def __init__(self, *held: set[str]) -> None:
        self._held = list(held)
        self.calls: list[tuple[list[str], bool]] = []  # (the keys it was given, skip_held)

    @contextlib.contextmanager
    def __call__(self, session: Session, subjects: list, skip_held: bool):
        held = self._held.pop(0) if len(self._held) > 1 else self._held[0]
        self.calls.append((list(subjects), skip_held))
        yield set(held).intersection(subjects) if skip_held else None


def test_run_together_leaves_the_held_keys_to_later_transactions_then_waits_for_them(engine):
    """skip_held: each transaction takes the keys that no other holds (a key's units all together, in
    key order), the others wait for the next one; once a transaction could take none, the next waits
    for them (its `within` is not asked to skip)."""
    within = _HeldKeys({"b", "c"}, {"c"}, {"c"})
    committer, commits = _committer(engine, within)
    seen: list[tuple[str, int]] = []  # (unit, the number of commits before it ran)

    def unit(key: str, name: str) -> tuple[Callable[[Session], object], str, str]:
        def work(session: Session) -> str:
            seen.append((name, len(commits)))
            session.execute(insert(_ROWS).values(key=name))
            return name

        return work, key, key

    units = [unit("c", "c1"), unit("a", "a1"), unit("b", "b1"), unit("a", "a2"), unit("b", "b2")]
    slots = committer.run_together(units, skip_held=True)
    assert [slot.outcome() for slot in slots] == ["c1", "a1", "b1", "a2", "b2"]
    assert within.calls == [
        (["a", "a", "b", "b", "c"], True),  # a taken, b and c held
        (["b", "b", "c"], True),  # b taken
        (["c"], True),  # none taken
        (["c"], False),  # waits for c
    ]
    assert seen == [("a1", 0), ("a2", 0), ("b1", 1), ("b2", 1), ("c1", 3)]
    assert _keys(engine) == ["a1", "a2", "b1", "b2", "c1"]


def test_run_together_without_skip_held_takes_every_key_in_one_transaction(engine):
    within = _HeldKeys({"b"})
    committer, _ = _committer(engine, within)
    slots = committer.run_together([(_insert("b1"), "b", "b"), (_insert("a1"), "a", "a")])
    assert [slot.outcome() for slot in slots] == ["b1", "a1"]
    assert within.calls == [(["a", "b"], False)]


def test_a_transaction_that_breaks_runs_its_own_units_alone_and_leaves_the_held_ones_to_the_next(engine):
    within = _HeldKeys({"c"}, set())
    committer, commits = _committer(engine, within)
    runs: list[str] = []
    units = [
        (_counted_insert(runs, "a1"), "a", "a"),
        (_counted_insert(runs, "a1"), "a", "a"),  # breaks its transaction
        (_counted_insert(runs, "c1"), "c", "c"),
    ]
    slots = committer.run_together(units, skip_held=True)
    assert slots[0].outcome() == "a1" and slots[2].outcome() == "c1"
    with pytest.raises(IntegrityError):
        slots[1].outcome()
    assert runs == ["a1", "a1", "a1", "a1", "c1"]  # a's transaction, then each of its units alone; c once
    assert _keys(engine) == ["a1", "c1"] and len(commits) == 2


def test_run_together_runs_each_unit_alone_once_one_breaks_the_transaction(engine):
    committer, commits = _committer(engine)
    units = [(_insert("x"), "k", None), (_insert("x"), "k", None), (_insert("y"), "k", None)]
    slots = committer.run_together(units)
    assert slots[0].outcome() == "x" and slots[2].outcome() == "y"
    with pytest.raises(IntegrityError):
        slots[1].outcome()
    assert _keys(engine) == ["x", "y"] and len(commits) == 2  # x alone, y alone


@pytest.mark.parametrize("sqlstate", [SERIALIZATION_FAILURE, DEADLOCK], ids=["serialization-failure", "deadlock"])
def test_a_commit_that_loses_a_race_makes_each_unit_run_alone(engine, sqlstate):
    """The database rolled the group back at its COMMIT (a serializable engine, a deferred constraint):
    nothing of it committed, so each unit runs alone (on the shared runner, with its retries), as
    after any other failure of the group, and each gets its own answer."""
    committer, _ = _committer(engine)
    runs: list[str] = []

    counted = partial(_counted_insert, runs)
    with lose_race_at_commit(engine, sqlstate) as race:
        slots = committer.run_together([(counted("x"), "k", None), (counted("y"), "k", None)])
    assert race.count == 1
    assert [slot.outcome() for slot in slots] == ["x", "y"]
    assert runs == ["x", "y", "x", "y"]  # in the group, then each alone
    assert _keys(engine) == ["x", "y"]


def test_a_commit_of_unknown_outcome_is_each_units_answer(engine):
    """A COMMIT that failed otherwise (a lost connection: it may have committed) is not run again:
    each unit of the group gets its error, as it would have alone (the runner does not retry it)."""
    committer, _ = _committer(engine)
    runs: list[str] = []

    counted = partial(_counted_insert, runs)
    with lose_race_at_commit(engine, "08006") as race:  # connection_failure
        slots = committer.run_together([(counted("x"), "k", None), (counted("y"), "k", None)])
    assert race.count == 1
    for slot in slots:
        with pytest.raises(OperationalError):
            slot.outcome()
    assert runs == ["x", "y"]
