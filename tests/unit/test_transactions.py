"""The shared transaction runner (credit_common.db.transactions) and its retry policy, with
failures injected into fake sessions: what is retried, how many times, after what pause, and that
each attempt is a new transaction that runs the work from scratch."""

from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from credit_common import calls
from credit_common.db.transactions import RETRY, RetryPolicy, Transactions
from credit_common.errors import DeadlineExceeded, NotFound


class _DriverError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def unique_violation() -> IntegrityError:
    return IntegrityError("INSERT", {}, _DriverError("23505"))


def serialization_failure() -> OperationalError:
    return OperationalError("UPDATE", {}, _DriverError("40001"))


def deadlock() -> OperationalError:
    return OperationalError("UPDATE", {}, _DriverError("40P01"))


class FakeSessions:
    """A sessionmaker whose sessions record what happened to their transaction."""

    def __init__(self, fail_commit: list[Exception] | None = None) -> None:
        self.transactions: list[str] = []  # "committed" or "rolled back", one per transaction
        self._fail_commit = list(fail_commit or [])

    def __call__(self) -> FakeSession:
        return FakeSession(self)


class FakeSession:
    def __init__(self, sessions: FakeSessions) -> None:
        self._sessions = sessions
        self.number = len(sessions.transactions) + 1

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc) -> None:
        return None

    @contextmanager
    def begin(self):
        try:
            yield
        except BaseException:
            self._sessions.transactions.append("rolled back")
            raise
        if self._sessions._fail_commit:
            self._sessions.transactions.append("rolled back")
            raise self._sessions._fail_commit.pop(0)
        self._sessions.transactions.append("committed")


def failing(*errors: Exception):
    """Work that raises `errors` in its first attempts, then returns the session it ran in."""
    pending = list(errors)
    seen: list[FakeSession] = []

    def work(session: FakeSession) -> FakeSession:
        seen.append(session)
        if pending:
            raise pending.pop(0)
        return session

    work.seen = seen  # type: ignore[attr-defined]
    return work


@pytest.fixture
def pauses() -> list[float]:
    return []


def runner(sessions: FakeSessions, pauses: list[float], policy: RetryPolicy = RETRY) -> Transactions:
    return Transactions(sessions, policy=policy, sleep=pauses.append, rng=lambda: 1.0)  # type: ignore[arg-type]


def test_the_policy_is_three_attempts():
    assert RETRY.attempts == 3


@pytest.mark.parametrize("error", [unique_violation, serialization_failure, deadlock])
def test_a_lost_race_runs_the_work_again_from_scratch_in_a_new_transaction(error, pauses):
    sessions = FakeSessions()
    work = failing(error(), error())
    result = runner(sessions, pauses).write(work)
    assert sessions.transactions == ["rolled back", "rolled back", "committed"]
    assert len({id(s) for s in work.seen}) == 3  # three sessions: each attempt a new transaction
    assert result is work.seen[-1]


@pytest.mark.parametrize("error", [unique_violation, serialization_failure, deadlock])
def test_the_third_loss_is_raised(error, pauses):
    sessions = FakeSessions()
    third = error()
    with pytest.raises(type(third)) as raised:
        runner(sessions, pauses).write(failing(error(), error(), third))
    assert raised.value is third
    assert sessions.transactions == ["rolled back"] * 3


def test_a_failure_at_commit_is_retried_too(pauses):
    sessions = FakeSessions(fail_commit=[serialization_failure()])
    work = failing()
    runner(sessions, pauses).write(work)
    assert sessions.transactions == ["rolled back", "committed"]
    assert len(work.seen) == 2


@pytest.mark.parametrize(
    "error",
    [
        NotFound("no such thing", reason="THING_NOT_FOUND"),  # a caller's mistake is its answer
        OperationalError("SELECT", {}, _DriverError("08006")),  # the database is gone: UNAVAILABLE, not here
        OperationalError("SELECT", {}, _DriverError("55P03")),  # lock timeout
        DataError("INSERT", {}, _DriverError("22003")),  # a bug
        RuntimeError("a bug"),
    ],
    ids=["domain-error", "connection", "lock-timeout", "data-error", "bug"],
)
def test_anything_else_is_raised_at_once(error, pauses):
    sessions = FakeSessions()
    with pytest.raises(type(error)):
        runner(sessions, pauses).write(failing(error))
    assert sessions.transactions == ["rolled back"]
    assert pauses == []


def test_no_pause_after_a_constraint_violation(pauses):
    runner(FakeSessions(), pauses).write(failing(unique_violation(), unique_violation()))
    assert pauses == []


def test_a_jittered_growing_pause_after_a_serialization_failure_or_deadlock(pauses):
    runner(FakeSessions(), pauses).write(failing(serialization_failure(), deadlock()))
    assert pauses == [0.005, 0.010]  # rng() == 1.0: the longest pauses
    drawn: list[float] = []
    Transactions(FakeSessions(), sleep=drawn.append, rng=lambda: 0.5).write(failing(deadlock()))  # type: ignore[arg-type]
    assert drawn == [0.0025]


def test_the_number_of_attempts_is_the_policys(pauses):
    sessions = FakeSessions()
    with pytest.raises(IntegrityError):
        runner(sessions, pauses, RetryPolicy(attempts=1)).write(failing(unique_violation()))
    assert sessions.transactions == ["rolled back"]


def test_a_call_whose_caller_is_gone_does_not_commit_and_is_not_retried(pauses):
    class Gone:
        def gone(self):
            return DeadlineExceeded("the deadline passed")

    sessions = FakeSessions()
    with calls.serving(Gone()), pytest.raises(DeadlineExceeded):  # type: ignore[arg-type]
        runner(sessions, pauses).write(failing())
    assert sessions.transactions == ["rolled back"]


def test_reads_run_once_in_a_transaction_of_the_read_sessions(pauses):
    writes, reads = FakeSessions(), FakeSessions()
    transactions = Transactions(writes, reads, sleep=pauses.append)  # type: ignore[arg-type]
    assert transactions.read(lambda session: "read") == "read"
    with pytest.raises(OperationalError):
        transactions.read(failing(deadlock()))
    assert (writes.transactions, reads.transactions) == ([], ["committed", "rolled back"])


def test_the_runner_of_a_services_session_factories_writes_and_reads_on_each(pauses):
    writes, reads = FakeSessions(), FakeSessions()
    factories = SimpleNamespace(write=writes, read=reads)
    transactions = Transactions.of(factories, RetryPolicy(attempts=2))  # type: ignore[arg-type]
    transactions.write(failing(unique_violation()))  # retried with no pause
    transactions.read(lambda session: None)
    assert transactions.policy == RetryPolicy(attempts=2)
    assert (writes.transactions, reads.transactions) == (["rolled back", "committed"], ["committed"])
