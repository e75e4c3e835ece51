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

    def __init__(self, item: Any) -> None:
        self.item = item
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = RuntimeError("the batch ended before answering this item")
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
    """`submit(item)` -> the result `run` gave its item. `run(take)` runs one batch: `take()` gives it
    the batch's slots, every item queued at that moment, and it answers each slot (`succeed` or
    `fail`); a slot it leaves unanswered fails, and so does every slot of a batch whose `run` raises.
    A `run` that must wait for something before it can work (a lock of the database) calls `take()`
    once it holds it: the items that arrive while it waits join this batch, not the next.

    Each waiting submitter is woken once: when its item is answered, or when it is to lead the next
    batch (the leader hands over to the first item queued), never to find that it has to wait again."""

    def __init__(self, run: Callable[[Callable[[], list[Slot]]], None], max_items: int = 64) -> None:
        self._run = run
        self._max_items = max_items
        self._queue: list[Slot] = []
        self._leading = False  # a batch is running, or its leader is handing over to the next one
        self._mutex = threading.Lock()

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
        if follow:
            slot._wake.acquire()
        while not slot.done:  # lead: a batch of every item queued (this one among them, unless too many)
            batch = _Batch(self._queue, self._mutex, self._max_items)
            try:
                self._run(batch.take)
            except Exception as error:
                for member in batch.take():
                    member.fail(error)
            finally:
                batch.take()  # a `run` that returned without taking: its items fail, unanswered
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


class _Batch:
    """The items of one batch, taken from the queue on the first `take()`."""

    __slots__ = ("_max_items", "_mutex", "_queue", "slots", "taken")

    def __init__(self, queue: list[Slot], mutex: threading.Lock, max_items: int) -> None:
        self._queue, self._mutex, self._max_items = queue, mutex, max_items
        self.slots: list[Slot] = []
        self.taken = False

    def take(self) -> list[Slot]:
        if not self.taken:
            self.taken = True
            with self._mutex:
                self.slots = self._queue[: self._max_items]
                del self._queue[: self._max_items]
        return self.slots
