"""The incoming call a thread is serving, for what must honour its deadline and cancellation.

The observing interceptor (credit_common.grpc.observe) binds each RPC's `Call` to the thread that
runs it. The transaction runner of both services (credit_common.db.transactions) and the group
commit call `check_before_commit()` right before they commit: a call whose deadline has passed, or
that its client cancelled, does not commit; its transaction rolls back and the call ends with
DEADLINE_EXCEEDED or CANCELLED (a caller that gave up must not find later that its request took
effect after all). Outbound calls made while serving
one use `outbound_timeout(default)`: no later than what is left of the incoming deadline. Work
without a call (the outbox dispatcher, the catch-up timer) is not affected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from credit_common.errors import Cancelled, DeadlineExceeded, DomainError

if TYPE_CHECKING:
    import grpc

    from credit_common.drain import Drain


@dataclass(frozen=True, slots=True)
class Call:
    context: grpc.ServicerContext
    method: str
    drain: Drain | None = None

    def remaining(self) -> float:
        """Seconds left before the caller's deadline (a very large number without a deadline)."""
        return self.context.time_remaining()

    def gone(self) -> DomainError | None:
        """Why the caller no longer waits for the answer (deadline passed, cancelled), or None."""
        remaining = self.context.time_remaining()
        if remaining <= 0:
            return self._deadline_exceeded()
        if not self.context.is_active():
            # gRPC ends a call at its deadline by its own timer, a moment before the wall clock that
            # time_remaining() reads says so: a call ended that close to its deadline ran out of time.
            if remaining < DEADLINE_TOLERANCE_S:
                return self._deadline_exceeded()
            return Cancelled(
                f"the caller cancelled {self.method} before its commit: nothing was committed", reason="CANCELLED"
            )
        return None

    def _deadline_exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the deadline of {self.method} passed before its commit: nothing was committed",
            reason="DEADLINE_EXCEEDED",
        )


DEADLINE_TOLERANCE_S = 0.25

_current: ContextVar[Call | None] = ContextVar("credit_grants_call", default=None)

# Run (in order) by check_before_commit before it looks at the call: tests add one that delays the
# commit, to prove that a call whose deadline passed meanwhile does not commit.
COMMIT_HOOKS: list[Callable[[], None]] = []


def current() -> Call | None:
    return _current.get()


@contextmanager
def serving(call: Call | None) -> Iterator[None]:
    """Run the block as part of `call` (None: of no call)."""
    token = _current.set(call)
    try:
        yield
    finally:
        _current.reset(token)


def check_before_commit(call: Call | None = ...) -> None:  # type: ignore[assignment]
    """Raise DeadlineExceeded or Cancelled if the call (default: the current one) is gone; call it
    right before a commit, inside the transaction, so that the error rolls it back."""
    for hook in COMMIT_HOOKS:
        hook()
    if call is ...:
        call = _current.get()
    if call is None:
        return
    error = call.gone()
    if error is not None:
        raise error


def outbound_timeout(default_s: float) -> float:
    """The timeout of an outbound call: `default_s`, or less if the incoming call has less left."""
    call = _current.get()
    if call is None:
        return default_s
    return max(min(default_s, call.remaining()), 0.0)
