"""Leader/follower batching of what the threads of one process ask for at the same time.

Whoever submits an item while no batch is running leads: it takes every item queued (up to
`max_items`, its own among them), runs them as one batch, and hands each submitter its item's
result or error; items submitted meanwhile queue for the next batch. So a batch is as large as the
load makes it (one item when there is no concurrency, and then it costs nothing more), and one
thread does the batch's work while the others wait for their answer, instead of all of them
contending for the GIL and the database (see credit_common.db.group_commit, and GetBalance)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Slot(Generic[T]):
    """One submitted item and, once its batch has run, its result or error."""

    __slots__ = ("_wake", "done", "error", "item", "result")

    def __init__(self, item: Any, *, waited: bool = True) -> None:
        """`waited`: a submitter waits for it (`Batcher.submit`); a slot that its own thread runs and
        reads (GroupCommit.run_together) needs no lock to be woken by (docs/performance.md)."""
        self.item = item
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = RuntimeError("the batch ended before answering this item")
        if waited:
            self._wake = threading.Lock()  # held until the submitter is to wake: answered, or to lead
            self._wake.acquire()

    def succeed(self, result: T) -> None:
        self.result, self.error = result, None

    def fail(self, error: BaseException) -> None:
        self.result, self.error = None, error

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.result  # type: ignore[return-value]


class Batcher:
    """`submit(item)` -> the result `run` gave its item. `run(batch)` runs one batch: `batch()` gives it
    the batch's slots, every item queued at that moment, and it answers each slot (`succeed` or
    `fail`); a slot it leaves unanswered fails, and so does every slot of a batch whose `run` raises.
    A `run` that must wait for something before it can work (a lock of the database) calls `batch()`
    once it holds it: the items that arrive while it waits join this batch, not the next.

    Each waiting submitter is woken once: when its item is answered, or when it is to lead the next
    batch (the leader hands over to the first item queued), never to find that it has to wait again.

    `linger_s`: when fewer items are queued than the previous batch had, `batch()` waits up to this
    long for as many. Under steady load the callers of a batch come back one after the other once it
    is answered: the first to come back would lead a batch of its own, and the others the next one,
    so every other batch would be a single item. Waiting a few milliseconds for the callers of the
    last batch keeps the batches whole (the measurements: docs/performance.md). The price: a leader
    waits for the slowest of the callers it waits for, and when fewer come back than the last batch
    had (the load falls), it waits the whole linger once. With no concurrency the batches are single
    items and nobody waits."""

    def __init__(self, run: Callable[[Batch], None], max_items: int = 64, linger_s: float = 0.0) -> None:
        self._run = run
        self._max_items = max_items
        self._linger_s = linger_s
        self._queue: list[Slot] = []
        self._leading = False  # a batch is running, or its leader is handing over to the next one
        self._mutex = threading.Lock()
        self._grown = threading.Condition(self._mutex)  # notified when the queue reaches `_awaited`
        self._awaited = 0  # items a lingering leader waits for; 0: none lingers
        self._last_size = 0

    @property
    def waiting(self) -> int:
        """Items queued for the next batch."""
        with self._mutex:
            return len(self._queue)

    def submit(self, item: Any) -> Any:
        slot: Slot = Slot(item)
        with self._mutex:
            self._queue.append(slot)
            follow = self._leading
            self._leading = True
            if self._awaited and len(self._queue) >= self._awaited:
                self._grown.notify()
        if follow:
            slot._wake.acquire()
        while not slot.done:  # lead: a batch of every item queued (this one among them, unless too many)
            batch = Batch(self)
            try:
                self._run(batch)
            except Exception as error:
                for member in batch():
                    member.fail(error)
            finally:
                batch()  # a `run` that returned without taking: its items fail, unanswered
                for member in batch.slots:
                    member.done = True
                    if member is not slot:
                        member._wake.release()
                with self._mutex:
                    if self._queue and slot.done:
                        self._queue[0]._wake.release()  # the next batch's leader
                    elif not self._queue:
                        self._leading = False
        return slot.outcome()


class Batch:
    """The items of one batch: `batch()` takes them from the batcher's queue (once; later calls give the
    same list), after lingering if the batcher lingers."""

    __slots__ = ("_batcher", "slots", "taken")

    def __init__(self, batcher: Batcher) -> None:
        self._batcher = batcher
        self.slots: list[Slot] = []
        self.taken = False

    def __call__(self) -> list[Slot]:
        if not self.taken:
            self.taken = True
            b = self._batcher
            with b._mutex:
                wanted = min(b._last_size, b._max_items)
                if b._linger_s and len(b._queue) < wanted:
                    b._awaited = wanted
                    b._grown.wait_for(lambda: len(b._queue) >= wanted, b._linger_s)
                    b._awaited = 0
                self.slots = b._queue[: b._max_items]
                del b._queue[: b._max_items]
                b._last_size = len(self.slots)
        return self.slots
