"""credit_common.batching: items submitted while a batch runs make the next batch, each submitter gets
its own item's answer, errors stay with their batch, and nothing is left waiting."""

from __future__ import annotations

import threading
import time

import pytest

from credit_common.batching import Batcher, Slot


def _wait_queued(batcher: Batcher, n: int) -> None:
    deadline = time.monotonic() + 20
    while batcher.waiting < n:
        assert time.monotonic() < deadline, "the items did not queue"
        time.sleep(0.002)


def test_items_submitted_during_a_batch_make_the_next_batch_and_each_gets_its_answer():
    batches: list[list[int]] = []
    running, release = threading.Event(), threading.Event()

    def run(take) -> None:
        slots = take()
        batches.append([slot.item for slot in slots])
        if slots[0].item == 0:
            running.set()
            release.wait(20)
        for slot in slots:
            slot.succeed(slot.item * 10)

    batcher = Batcher(run)
    answers: dict[int, int] = {}
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, batcher.submit(i))) for i in range(6)]
    threads[0].start()
    assert running.wait(20)
    for i, t in enumerate(threads[1:], start=1):
        t.start()
        _wait_queued(batcher, i)
    release.set()
    for t in threads:
        t.join(20)
    assert batches == [[0], [1, 2, 3, 4, 5]]
    assert answers == {i: i * 10 for i in range(6)}


def test_a_failing_batch_fails_its_items_only_and_an_unanswered_item_fails():
    def run(take) -> None:
        slots = take()
        if any(slot.item == "boom" for slot in slots):
            raise ValueError("boom")
        for slot in slots:
            if slot.item != "forgotten":
                slot.succeed(slot.item)

    batcher = Batcher(run)
    with pytest.raises(ValueError):
        batcher.submit("boom")
    with pytest.raises(RuntimeError):
        batcher.submit("forgotten")
    assert batcher.submit("fine") == "fine"


def test_many_threads_get_every_answer_and_batches_never_exceed_their_size():
    sizes: list[int] = []

    def run(take) -> None:
        slots: list[Slot] = take()
        sizes.append(len(slots))
        time.sleep(0.0005)  # a batch takes a while: others queue meanwhile
        for slot in slots:
            slot.succeed(-slot.item)

    batcher = Batcher(run, max_items=5)
    wrong: list[int] = []

    def caller(base: int) -> None:
        for i in range(base, base + 200):
            if batcher.submit(i) != -i:
                wrong.append(i)

    threads = [threading.Thread(target=caller, args=(k * 1000,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a submitter was left waiting"
    assert wrong == [] and sum(sizes) == 16 * 200
    assert max(sizes) <= 5 and len(sizes) < 16 * 200  # batched, within the limit


def test_a_batch_is_what_is_queued_when_run_takes_it():
    """`run` takes its batch when it is ready (e.g. holding a lock): the items submitted before then
    are in it; a `run` that fails before taking fails every item queued, the leader's too."""
    ready = threading.Event()
    batches: list[list[str]] = []

    def run(take) -> None:
        ready.wait(20)
        slots = take()
        batches.append([slot.item for slot in slots])
        for slot in slots:
            slot.succeed(slot.item.upper())

    batcher = Batcher(run)
    answers: dict[str, str] = {}
    threads = [threading.Thread(target=lambda x=x: answers.__setitem__(x, batcher.submit(x))) for x in "abc"]
    for i, t in enumerate(threads):
        t.start()
        _wait_queued(batcher, i + 1)  # the leader's own item waits in the queue until taken
    ready.set()
    for t in threads:
        t.join(20)
    assert batches == [["a", "b", "c"]]
    assert answers == {"a": "A", "b": "B", "c": "C"}

    def broken(take) -> None:
        raise OSError("no connection")

    failing = Batcher(broken)
    with pytest.raises(OSError):
        failing.submit("x")
    assert failing.waiting == 0


@pytest.mark.timeout(20)
def test_a_leader_lingers_for_as_many_items_as_the_previous_batch_had_and_no_longer():
    """Callers of a batch come back one by one: with `linger_s`, the first back waits (up to linger_s)
    until as many are queued as the previous batch had, instead of leading a batch of one. Lone
    submitters (a previous batch of one) never wait: with a linger of 60 s, the test would time out."""
    batches: list[list[int]] = []

    def run(take) -> None:
        slots = take()
        batches.append([slot.item for slot in slots])
        for slot in slots:
            slot.succeed(slot.item)

    batcher = Batcher(run, linger_s=60)
    for i in range(3):
        assert batcher.submit(i) == i  # alone: no wait
    assert batches == [[0], [1], [2]]
    answers: dict[int, int] = {}

    def submit(i: int) -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.__setitem__(i, batcher.submit(i)))
        thread.start()
        return thread

    # A batch of three (0 leads it and lingers for nobody: the previous batch had one).
    batches.clear()
    holding, release = threading.Event(), threading.Event()
    first = Batcher(lambda take: (holding.set(), release.wait(20), run(take)), linger_s=60)
    batcher = first
    threads = [submit(10)]
    assert holding.wait(20)
    threads += [submit(11), submit(12)]
    _wait_queued(batcher, 3)
    release.set()
    for t in threads:
        t.join(20)
    assert batches == [[10, 11, 12]]
    # The next leader finds itself alone but the previous batch had three: it waits for two more.
    threads = [submit(20)]
    _wait_queued(batcher, 1)
    threads += [submit(21)]
    _wait_queued(batcher, 2)
    threads += [submit(22)]
    for t in threads:
        t.join(20)
    assert batches == [[10, 11, 12], [20, 21, 22]]
    assert answers == {i: i for i in (10, 11, 12, 20, 21, 22)}
