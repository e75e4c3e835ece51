"""The one transaction runner of both services, and its retry policy.

A use case hands its work to the runner as a function of a session: `Transactions.write(work)` opens
a write transaction, runs `work(session)`, checks that the call being served still waits for the
answer (credit_common.calls) and commits. When the transaction loses a race with a concurrent one,
the runner rolls it back and runs `work` again from scratch, in a new transaction: nothing of the
failed attempt survives, so `work` sees the database as the winner left it (a request id already
recorded is then replayed, a row already inserted found). That is why the retry is safe; the one
rule for `work` is that it has no effect outside its session (no outbound call, no message sent)
before the commit. The policy (`RetryPolicy`, the shared `RETRY`), documented in
docs/architecture.md (Transactions):

- retried: a constraint violation (IntegrityError: mostly a unique key that a concurrent
  transaction has just committed, e.g. the same request id or the same new row), a serialization
  failure (SQLSTATE 40001) and a deadlock (40P01). Nothing else: a caller's mistake (a DomainError)
  is its answer, and a database that is down is UNAVAILABLE for the caller to retry later
  (credit_common.db.engine.translate_db_error).
- how often: 3 attempts in all; the last attempt's error is raised (a 40001/40P01 then becomes
  ABORTED / CONCURRENT_MODIFICATION, a constraint violation INTERNAL: a bug, not a race).
- backoff: none after a constraint violation (PostgreSQL reports it only once the other
  transaction has committed: the next attempt sees its row); after a serialization failure or a
  deadlock a random pause of up to 5 ms, then up to 10 ms (full jitter), so that two transactions
  that keep colliding (on a serializable engine) do not collide again in lockstep.

Reads (`read`) run in one transaction with no retry: they take no locks that could deadlock.
The runner costs nothing per transaction beyond the loop: its checks run only on a failure.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from credit_common.calls import check_before_commit
from credit_common.db.engine import CONFLICT_SQLSTATES, SessionFactories, sqlstate

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Which failed transactions run again, how many times, and after what pause."""

    attempts: int = 3  # in all, the first one included
    backoff_s: float = 0.005  # the longest pause before the second attempt; doubled for each next one

    def retryable(self, error: BaseException) -> bool:
        """Whether `error` is a lost race that running the work again from scratch may win."""
        if isinstance(error, IntegrityError):
            return True
        return isinstance(error, DBAPIError) and sqlstate(error) in CONFLICT_SQLSTATES

    def pause(self, error: BaseException, failed_attempts: int, rng: Callable[[], float]) -> float:
        """Seconds to wait before the next attempt, after `failed_attempts` attempts failed with `error`."""
        if isinstance(error, IntegrityError):
            return 0.0
        return rng() * self.backoff_s * 2 ** (failed_attempts - 1)


RETRY = RetryPolicy()


class Transactions:
    """Runs work functions in transactions of `write` and `read` sessions, by `policy`.
    `sleep` and `rng` are injected for tests."""

    def __init__(
        self,
        write: sessionmaker[Session],
        read: sessionmaker[Session] | None = None,
        policy: RetryPolicy = RETRY,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._write_sessions = write
        self._read_sessions = read or write
        self.policy = policy
        self._sleep = sleep
        self._rng = rng

    @classmethod
    def of(cls, factories: SessionFactories, policy: RetryPolicy = RETRY) -> Transactions:
        """The runner over a service's session factories: writes on the write sessions (on SQLite
        they take the write lock up front), reads on the read ones."""
        return cls(factories.write, factories.read, policy)

    def write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a write transaction and commit; run it again from scratch, in a new
        transaction, while it loses races (the module's docstring)."""
        policy = self.policy
        attempt = 0
        while True:
            attempt += 1
            try:
                with self._write_sessions() as session, session.begin():
                    result = work(session)
                    check_before_commit()  # a call whose caller gave up does not commit: credit_common.calls
                    return result
            except DBAPIError as error:
                if attempt >= policy.attempts or not policy.retryable(error):
                    raise
                pause = policy.pause(error, attempt, self._rng)
                if pause > 0:
                    self._sleep(pause)

    def read(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one read transaction (no retry)."""
        with self._read_sessions() as session, session.begin():
            return work(session)
