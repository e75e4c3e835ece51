"""The outbox dispatcher against a real gRPC fake grant service on port 0, with
the outbox table on SQLite and on PostgreSQL.

No timed assertions: tests wait with polling loops bounded by a generous timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import Engine, MetaData, Table, select
from sqlalchemy.exc import IntegrityError, OperationalError

from catalog_service.adapters.grant_client import GrantServiceClient
from catalog_service.adapters.grant_delivery import GrantDelivery
from catalog_service.adapters.outbox_sql import SqlOutboxRepository, add_apply_request, add_pending, outbox_table
from catalog_service.domain.backoff import BackoffPolicy, seeded
from catalog_service.domain.outbox import (
    KIND_CREDIT_CURRENCY,
    KIND_SUBSCRIPTION,
    STATUS_DELIVERED,
    STATUS_FAILED,
    STATUS_PENDING,
    HandoffStatus,
    OutcomeKind,
    Resolution,
)
from catalog_service.entrypoints.outbox_worker import start_outbox_worker
from catalog_service.entrypoints.settings import FLAGS as CATALOG_FLAGS
from catalog_service.service_layer.dispatcher import Dispatcher
from credit_common.clock import ManualClock, SystemClock
from credit_common.config import parse_service_args
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.types import NAMING_CONVENTION
from credit_common.errors import FieldViolation, InvalidArgument
from credit_common.grpc.errors import to_rpc_status
from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.support.lost_race import DEADLOCK, SERIALIZATION_FAILURE, lose_race

WAIT_S = 90.0
FAST_BACKOFF = BackoffPolicy(base=timedelta(milliseconds=10), cap=timedelta(milliseconds=100))
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def wait_until(predicate: Callable[[], object], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# --- the fake grant service ---------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    kind: str
    key: str
    revision: int
    code: grpc.StatusCode
    outcome: int = pb.APPLY_OUTCOME_UNSPECIFIED


@dataclass
class FakeGrantService(grant_service_pb2_grpc.GrantServiceServicer):
    """Applies revisions like the grant service (idempotent by key and revision)
    and records every call. Behaviours: fail every other call with UNAVAILABLE,
    fail given revisions n times, reject given revisions with INVALID_ARGUMENT,
    answer any code for a key, be slow."""

    fail_every_other: bool = False
    delay_s: float = 0.0
    slow_calls: int = 0  # only the first `slow_calls` calls are slow (0: all, when delay_s is set)
    transient: dict[tuple[str, int], int] = field(default_factory=dict)
    reject: set[tuple[str, int]] = field(default_factory=set)
    code_for: dict[str, grpc.StatusCode] = field(default_factory=dict)
    outcome_for: dict[str, int] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # items of each ApplySubscriptions call
    applied: dict[tuple[str, str], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _received: int = 0

    def ApplySubscription(self, request, context):
        outcome, revision = self._apply(KIND_SUBSCRIPTION, request.subscription_id, request.revision, context)
        return pb.ApplySubscriptionResponse(outcome=outcome, current_revision=revision)

    def ApplyCreditCurrency(self, request, context):
        outcome, revision = self._apply(KIND_CREDIT_CURRENCY, request.currency_key, request.revision, context)
        return pb.ApplyCreditCurrencyResponse(outcome=outcome, current_revision=revision)

    def _apply(self, kind: str, key: str, revision: int, context) -> tuple[int, int]:
        with self._lock:
            self._received += 1
            number = self._received
            failure: grpc.StatusCode | None = None
            if self.fail_every_other and number % 2 == 1:
                failure = grpc.StatusCode.UNAVAILABLE
            elif self.transient.get((key, revision), 0) > 0:
                self.transient[(key, revision)] -= 1
                failure = grpc.StatusCode.UNAVAILABLE
            elif key in self.code_for:
                failure = self.code_for[key]
            rejected = (key, revision) in self.reject
            slow = self.delay_s > 0 and (self.slow_calls == 0 or number <= self.slow_calls)
        if failure is not None:
            self._record(Call(kind, key, revision, failure))
            context.abort(failure, f"fake {failure.name}")
        if rejected:
            self._record(Call(kind, key, revision, grpc.StatusCode.INVALID_ARGUMENT))
            error = InvalidArgument(
                "amount must be greater than zero",
                reason="INVALID_AMOUNT",
                violations=[FieldViolation("credit_schedules[0].amounts[0].amount", "must be > 0")],
            )
            context.abort_with_status(to_rpc_status(error, "grant.credit-grants"))
        if slow:
            time.sleep(self.delay_s)
        return self._store(kind, key, revision)

    def ApplySubscriptions(self, request, context):
        """As the grant service: a failure of the call (every other call, a transient, a `code_for`
        code) fails every item, a rejection only its own item. Each item is recorded as a call."""
        items = [(KIND_SUBSCRIPTION, r.subscription_id, r.revision) for r in request.requests]
        with self._lock:
            self._received += 1
            number = self._received
            failure: grpc.StatusCode | None = None
            if self.fail_every_other and number % 2 == 1:
                failure = grpc.StatusCode.UNAVAILABLE
            for _, key, revision in items:
                if self.transient.get((key, revision), 0) > 0:
                    self.transient[(key, revision)] -= 1
                    failure = failure or grpc.StatusCode.UNAVAILABLE
                elif key in self.code_for:
                    failure = failure or self.code_for[key]
            slow = self.delay_s > 0 and (self.slow_calls == 0 or number <= self.slow_calls)
            self.batches.append(len(items))
        if failure is not None:
            for kind, key, revision in items:
                self._record(Call(kind, key, revision, failure))
            context.abort(failure, f"fake {failure.name}")
        if slow:
            time.sleep(self.delay_s)
        results = []
        for kind, key, revision in items:
            if (key, revision) in self.reject:
                self._record(Call(kind, key, revision, grpc.StatusCode.INVALID_ARGUMENT))
                results.append(
                    pb.ApplySubscriptionResult(
                        rejection=pb.ApplyRejection(
                            code="INVALID_ARGUMENT",
                            message="amount must be greater than zero",
                            reason="INVALID_AMOUNT",
                            field_violations=[
                                pb.ApplyFieldViolation(
                                    field="credit_schedules[0].amounts[0].amount", description="must be > 0"
                                )
                            ],
                        )
                    )
                )
            else:
                outcome, current = self._store(kind, key, revision)
                results.append(pb.ApplySubscriptionResult(outcome=outcome, current_revision=current))
        return pb.ApplySubscriptionsResponse(results=results)

    def _store(self, kind: str, key: str, revision: int) -> tuple[int, int]:
        with self._lock:
            if key in self.outcome_for:
                outcome = self.outcome_for[key]
            else:
                stored = self.applied.get((kind, key), 0)
                if revision > stored:
                    self.applied[(kind, key)] = revision
                    outcome = pb.APPLY_OUTCOME_APPLIED
                elif revision == stored:
                    outcome = pb.APPLY_OUTCOME_ALREADY_APPLIED
                else:
                    outcome = pb.APPLY_OUTCOME_STALE
            self.calls.append(Call(kind, key, revision, grpc.StatusCode.OK, outcome))
            return outcome, self.applied.get((kind, key), 0)

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def snapshot_batches(self) -> list[int]:
        with self._lock:
            return list(self.batches)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def ok_counts(self) -> Counter[tuple[str, str, int]]:
        return Counter((c.kind, c.key, c.revision) for c in self.snapshot() if c.code == grpc.StatusCode.OK)

    def ok_order(self, kind: str, key: str) -> list[int]:
        return [c.revision for c in self.snapshot() if c.code == grpc.StatusCode.OK and (c.kind, c.key) == (kind, key)]


class FakeGrantServer:
    """A real gRPC server on 127.0.0.1; `stop()` and `start()` again keep the port."""

    def __init__(self, service: FakeGrantService) -> None:
        self.service = service
        self.port = 0
        self._server: grpc.Server | None = None

    def start(self) -> FakeGrantServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        grant_service_pb2_grpc.add_GrantServiceServicer_to_server(self.service, server)
        port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert port != 0, f"cannot listen on port {self.port}"
        self.port = port
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait()
            self._server = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def grant() -> Iterator[FakeGrantServer]:
    server = FakeGrantServer(FakeGrantService()).start()
    yield server
    server.stop()


def delivery_to(server: FakeGrantServer, deadline: timedelta = timedelta(seconds=5)) -> GrantDelivery:
    return GrantDelivery(server.target, deadline=deadline, max_reconnect_backoff=timedelta(milliseconds=300))


# --- the outbox database ------------------------------------------------------------------------


@dataclass
class Outbox:
    url: str
    engine: Engine
    table: Table
    repo: SqlOutboxRepository
    engines: list[Engine]

    def another_repository(self) -> SqlOutboxRepository:
        """A repository over its own engine, as another catalog replica would have."""
        engine = create_db_engine(DatabaseSettings(url=self.url))
        self.engines.append(engine)
        return SqlOutboxRepository(session_factories(engine), self.table)

    def queue(self, *items: tuple[str, str, int], now: datetime | None = None) -> None:
        """Queue (kind, key, revision) deliveries, each in its own transaction, in the order given."""
        for kind, key, revision in items:
            with session_factories(self.engine).write() as session, session.begin():
                add_pending(
                    session,
                    self.table,
                    kind=kind,
                    aggregate_key=key,
                    revision=revision,
                    payload=payload(kind, key, revision),
                    now=now or SystemClock().now(),
                )

    def rows(self) -> list:
        with self.engine.connect() as connection:
            return list(connection.execute(select(self.table).order_by(self.table.c.id)))

    def statuses(self) -> Counter[str]:
        return Counter(r.status for r in self.rows())


def payload(kind: str, key: str, revision: int) -> bytes:
    if kind == KIND_SUBSCRIPTION:
        return pb.ApplySubscriptionRequest(
            subscription_id=key, customer_key="cus-acme", revision=revision
        ).SerializeToString()
    return pb.ApplyCreditCurrencyRequest(
        currency_key=key,
        revision=revision,
        rates=[pb.CreditRate(feature_key="gpt-call", credits_per_unit="2.5")],
    ).SerializeToString()


@pytest.fixture
def outbox(database_url_factory) -> Iterator[Outbox]:
    url = database_url_factory("outbox")
    engine = create_db_engine(DatabaseSettings(url=url))
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    table = outbox_table(metadata)
    metadata.create_all(engine)  # tests only: production has the catalog's migration
    box = Outbox(url, engine, table, SqlOutboxRepository(session_factories(engine), table), [engine])
    yield box
    for e in box.engines:
        e.dispose()


@pytest.fixture
def started() -> Iterator[Callable[[Dispatcher], Dispatcher]]:
    """Start dispatchers and stop every one of them at the end of the test."""
    running: list[Dispatcher] = []

    def start(dispatcher: Dispatcher) -> Dispatcher:
        running.append(dispatcher)
        dispatcher.start()
        return dispatcher

    yield start
    for dispatcher in running:
        dispatcher.stop()


def dispatcher(repo, delivery, *, clock=None, **options) -> Dispatcher:
    options.setdefault("backoff", FAST_BACKOFF)
    options.setdefault("poll_interval", timedelta(milliseconds=50))
    return Dispatcher(repo, delivery, clock=clock or SystemClock(), rng=seeded(7), **options)


def drain(d: Dispatcher, clock: ManualClock, passes: int = 50) -> None:
    """Run passes with a manual clock, an hour apart, until nothing is claimed."""
    for _ in range(passes):
        report = d.run_once()
        clock.advance(timedelta(hours=1))
        if report.claimed == 0:
            return
    raise AssertionError("the outbox did not drain")


def subscription_items(count: int, revisions: int) -> list[tuple[str, str, int]]:
    return [(KIND_SUBSCRIPTION, f"sub-{i:03d}", rev) for i in range(count) for rev in range(1, revisions + 1)]


# --- tests --------------------------------------------------------------------------------------


def test_server_down_then_up_loses_nothing_and_delivers_each_revision_once(outbox, grant, started):
    grant.stop()
    items = subscription_items(30, 3) + [(KIND_CREDIT_CURRENCY, f"cur-{i}", 1) for i in range(10)]
    outbox.queue(*items)
    assert len(outbox.rows()) == 100
    delivery = delivery_to(grant)
    started(dispatcher(outbox.repo, delivery))

    # Every aggregate's first revision is tried, and fails, while the server is down.
    wait_until(
        lambda: all(
            r.attempts >= 1 and "UNAVAILABLE" in (r.last_error or "") for r in outbox.rows() if r.revision == 1
        ),
        what="failed attempts while the grant service is down",
    )
    assert outbox.statuses() == Counter({STATUS_PENDING: 100})
    assert all(r.attempts == 0 for r in outbox.rows() if r.revision > 1), "a later revision was sent first"
    state = outbox.repo.handoff_state("sub-000")
    assert state.status is HandoffStatus.PENDING
    assert "UNAVAILABLE" in state.reason
    assert state.latest_delivered_revision is None

    grant.start()
    wait_until(lambda: outbox.statuses() == Counter({STATUS_DELIVERED: 100}), what="all delivered")

    counts = grant.service.ok_counts()
    assert set(counts) == set(items)
    assert set(counts.values()) == {1}, "a revision was delivered more than once"
    for i in range(30):
        assert grant.service.ok_order(KIND_SUBSCRIPTION, f"sub-{i:03d}") == [1, 2, 3]
    state = outbox.repo.handoff_state("sub-000")
    assert state.status is HandoffStatus.DELIVERED
    assert state.latest_delivered_revision == 3
    assert state.reason is None
    delivery.close()


def test_failing_every_other_call_still_delivers_everything_once(outbox, grant, started):
    grant.service.fail_every_other = True
    items = subscription_items(20, 2) + [(KIND_CREDIT_CURRENCY, "ai-credits", rev) for rev in (1, 2)]
    outbox.queue(*items)
    started(dispatcher(outbox.repo, delivery_to(grant)))

    wait_until(lambda: outbox.statuses() == Counter({STATUS_DELIVERED: len(items)}), what="all delivered")
    calls = grant.service.snapshot()
    assert any(c.code == grpc.StatusCode.UNAVAILABLE for c in calls)
    assert set(grant.service.ok_counts().values()) == {1}
    assert set(grant.service.ok_counts()) == set(items)
    # Every call, failed or not, is one attempt of a row: nothing was sent unrecorded.
    assert sum(r.attempts for r in outbox.rows()) == len(calls)
    for i in range(20):
        assert grant.service.ok_order(KIND_SUBSCRIPTION, f"sub-{i:03d}") == [1, 2]


def test_invalid_argument_is_parked_with_its_reason_and_never_retried(outbox, grant, caplog):
    clock = ManualClock(T0)
    grant.service.reject = {("sub-bad", 1), ("sub-late", 2), ("ai-credits", 1)}
    outbox.queue(
        (KIND_SUBSCRIPTION, "sub-bad", 1),
        (KIND_SUBSCRIPTION, "sub-bad", 2),
        (KIND_SUBSCRIPTION, "sub-late", 1),
        (KIND_SUBSCRIPTION, "sub-late", 2),
        (KIND_CREDIT_CURRENCY, "ai-credits", 1),
        (KIND_SUBSCRIPTION, "sub-ok", 1),
        now=T0,
    )
    d = dispatcher(outbox.repo, delivery_to(grant), clock=clock)
    with caplog.at_level(logging.INFO, logger="catalog_service.dispatcher"):
        drain(d, clock)
        for _ in range(5):  # later passes, long after: parked rows are not claimed again
            assert d.run_once().claimed == 0
            clock.advance(timedelta(days=1))
    d.stop()

    by_key = {(r.aggregate_key, r.revision): r for r in outbox.rows()}
    for key in (("sub-bad", 1), ("sub-late", 2), ("ai-credits", 1)):
        row = by_key[key]
        assert row.status == STATUS_FAILED
        assert row.attempts == 1
        assert row.last_error.startswith("INVALID_ARGUMENT: amount must be greater than zero")
        assert "[reason=INVALID_AMOUNT]" in row.last_error
        assert "credit_schedules[0].amounts[0].amount: must be > 0" in row.last_error
    calls = Counter((c.key, c.revision) for c in grant.service.snapshot())
    assert calls[("sub-bad", 1)] == calls[("sub-late", 2)] == calls[("ai-credits", 1)] == 1

    # A parked revision does not block the later ones: they carry the complete state.
    assert by_key[("sub-bad", 2)].status == STATUS_DELIVERED
    assert by_key[("sub-ok", 1)].status == STATUS_DELIVERED
    assert grant.service.applied[(KIND_SUBSCRIPTION, "sub-bad")] == 2

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted((r.aggregate_key, r.revision) for r in warnings) == [
        ("ai-credits", 1),
        ("sub-bad", 1),
        ("sub-late", 2),
    ]
    assert all(r.code == "INVALID_ARGUMENT" for r in warnings)

    states = outbox.repo.handoff_states(["sub-bad", "sub-late", "sub-ok", "sub-unknown"])
    assert states["sub-bad"].status is HandoffStatus.DELIVERED
    assert states["sub-bad"].latest_delivered_revision == 2
    assert states["sub-late"].status is HandoffStatus.FAILED
    assert states["sub-late"].latest_delivered_revision == 1
    assert "INVALID_ARGUMENT" in states["sub-late"].reason
    assert states["sub-ok"].status is HandoffStatus.DELIVERED
    assert states["sub-unknown"].status is HandoffStatus.NONE

    # Once the cause is fixed, an operator requeues the parked revisions.
    grant.service.reject = set()
    assert outbox.repo.requeue_failed(KIND_SUBSCRIPTION, "sub-late", clock.now()) == 1
    d2 = dispatcher(outbox.repo, delivery_to(grant), clock=clock)
    drain(d2, clock)
    assert outbox.repo.handoff_state("sub-late").status is HandoffStatus.DELIVERED
    assert grant.service.applied[(KIND_SUBSCRIPTION, "sub-late")] == 2


def test_a_stale_answer_naming_a_revision_the_catalog_never_issued_is_parked(outbox, grant, caplog):
    """Someone else applied revision 900 of a subscription and of a currency before the catalog: the
    grant service answers STALE (current_revision 900) to every revision the catalog sends, and none of
    them counts as delivered."""
    clock = ManualClock(T0)
    grant.service.applied[(KIND_SUBSCRIPTION, "sub-taken")] = 900
    grant.service.applied[(KIND_CREDIT_CURRENCY, "cur-taken")] = 900
    outbox.queue(
        (KIND_SUBSCRIPTION, "sub-taken", 1),
        (KIND_SUBSCRIPTION, "sub-taken", 2),
        (KIND_CREDIT_CURRENCY, "cur-taken", 1),
        (KIND_SUBSCRIPTION, "sub-ok", 1),
        now=T0,
    )
    d = dispatcher(outbox.repo, delivery_to(grant), clock=clock)
    with caplog.at_level(logging.INFO, logger="catalog_service.dispatcher"):
        drain(d, clock)
        assert d.run_once().claimed == 0  # parked: not claimed again
    assert d.totals.parked == 3 and d.totals.delivered == 1

    by_key = {(r.aggregate_key, r.revision): r for r in outbox.rows()}
    for key in (("sub-taken", 1), ("sub-taken", 2), ("cur-taken", 1)):
        row = by_key[key]
        assert (row.status, row.delivered_at) == (STATUS_FAILED, None)
        assert row.last_error.startswith("STALE: the grant service holds revision 900, above the catalog's latest")
        assert "[reason=UNKNOWN_REVISION_HELD]" in row.last_error
    assert by_key[("sub-ok", 1)].status == STATUS_DELIVERED
    state = outbox.repo.handoff_state("sub-taken")
    assert (state.status, state.latest_delivered_revision) == (HandoffStatus.FAILED, None)
    assert "revision the catalog never issued" in state.reason

    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert sorted((r.aggregate_key, r.revision, r.held_revision, r.latest_revision) for r in errors) == [
        ("cur-taken", 1, 900, 1),
        ("sub-taken", 1, 900, 2),
        ("sub-taken", 2, 900, 2),
    ]
    assert {r.getMessage() for r in errors} == {"the grant service holds a revision the catalog never issued; parked"}


def test_a_stale_answer_naming_a_revision_the_catalog_queued_is_delivered(outbox, grant):
    """Revision 1 answered STALE because the grant service already holds the catalog's own revision 2
    (e.g. revision 1 was parked, 2 delivered, and an operator requeued 1): delivered, as before."""
    clock = ManualClock(T0)
    grant.service.applied[(KIND_SUBSCRIPTION, "sub-1")] = 2
    grant.service.applied[(KIND_CREDIT_CURRENCY, "ai-credits")] = 3
    outbox.queue(
        (KIND_SUBSCRIPTION, "sub-1", 1),
        (KIND_SUBSCRIPTION, "sub-1", 2),
        *[(KIND_CREDIT_CURRENCY, "ai-credits", rev) for rev in (1, 2, 3)],
        now=T0,
    )
    d = dispatcher(outbox.repo, delivery_to(grant), clock=clock)
    drain(d, clock)
    assert outbox.statuses() == Counter({STATUS_DELIVERED: 5})
    assert [c.outcome for c in grant.service.snapshot() if c.key == "sub-1"] == [
        pb.APPLY_OUTCOME_STALE,
        pb.APPLY_OUTCOME_ALREADY_APPLIED,
    ]


def test_revisions_of_one_aggregate_are_delivered_in_order(outbox, grant, started):
    # Revision 2 is queued before revision 1, and revision 1 fails twice first.
    grant.service.transient = {("sub-o", 1): 2}
    outbox.queue(
        (KIND_SUBSCRIPTION, "sub-o", 2),
        (KIND_SUBSCRIPTION, "sub-o", 1),
        (KIND_SUBSCRIPTION, "sub-o", 3),
        (KIND_CREDIT_CURRENCY, "ai-credits", 2),
        (KIND_CREDIT_CURRENCY, "ai-credits", 1),
    )
    started(dispatcher(outbox.repo, delivery_to(grant)))
    wait_until(lambda: outbox.statuses() == Counter({STATUS_DELIVERED: 5}), what="all delivered")

    sub_calls = [(c.revision, c.code) for c in grant.service.snapshot() if c.key == "sub-o"]
    assert sub_calls == [
        (1, grpc.StatusCode.UNAVAILABLE),
        (1, grpc.StatusCode.UNAVAILABLE),
        (1, grpc.StatusCode.OK),
        (2, grpc.StatusCode.OK),
        (3, grpc.StatusCode.OK),
    ]
    assert grant.service.ok_order(KIND_CREDIT_CURRENCY, "ai-credits") == [1, 2]
    assert all(c.outcome == pb.APPLY_OUTCOME_APPLIED for c in grant.service.snapshot() if c.code == grpc.StatusCode.OK)
    first = next(r for r in outbox.rows() if (r.aggregate_key, r.revision) == ("sub-o", 1))
    assert first.attempts == 3


def test_two_dispatchers_on_one_database_deliver_each_revision_once(outbox, grant, started):
    items = subscription_items(40, 3) + [(KIND_CREDIT_CURRENCY, f"cur-{i}", rev) for i in range(5) for rev in (1, 2)]
    outbox.queue(*items)
    grant.service.delay_s = 0.05  # so that the first cannot drain everything before the second starts
    first = started(dispatcher(outbox.repo, delivery_to(grant), batch_size=10, name="replica-a"))
    second = started(dispatcher(outbox.another_repository(), delivery_to(grant), batch_size=10, name="replica-b"))
    wait_until(lambda: outbox.statuses() == Counter({STATUS_DELIVERED: len(items)}), what="all delivered")

    counts = grant.service.ok_counts()
    assert set(counts) == set(items)
    duplicates = {key: n for key, n in counts.items() if n > 1}
    assert duplicates == {}
    assert all(c.outcome == pb.APPLY_OUTCOME_APPLIED for c in grant.service.snapshot())
    for i in range(40):
        assert grant.service.ok_order(KIND_SUBSCRIPTION, f"sub-{i:03d}") == [1, 2, 3]
    assert all(r.attempts == 1 for r in outbox.rows())
    assert first.totals.delivered + second.totals.delivered == len(items)
    assert first.totals.delivered > 0 and second.totals.delivered > 0, (first.totals, second.totals)


def test_dispatchers_keep_order_while_new_revisions_are_queued(outbox, grant, started):
    """Two replicas run while the catalog keeps committing revisions 1, 2, 3 of each
    subscription (each in its own transaction, through add_apply_request)."""
    sessions = session_factories(outbox.engine)
    replicas = [
        started(dispatcher(repo, delivery_to(grant), batch_size=5, name=f"replica-{n}"))
        for n, repo in enumerate((outbox.repo, outbox.another_repository()))
    ]
    keys = [f"sub-{i:02d}" for i in range(15)]
    for revision in (1, 2, 3):
        for key in keys:
            request = pb.ApplySubscriptionRequest(subscription_id=key, customer_key="cus-acme", revision=revision)
            with sessions.write() as session, session.begin():
                add_apply_request(session, outbox.table, request, now=SystemClock().now())
            replicas[revision % 2].nudge()
    wait_until(lambda: outbox.statuses() == Counter({STATUS_DELIVERED: 45}), what="all delivered")

    assert set(grant.service.ok_counts().values()) == {1}
    for key in keys:
        assert grant.service.ok_order(KIND_SUBSCRIPTION, key) == [1, 2, 3]
        assert outbox.repo.handoff_state(key).latest_delivered_revision == 3
    assert outbox.rows()[0].payload == pb.ApplySubscriptionRequest(
        subscription_id="sub-00", customer_key="cus-acme", revision=1
    ).SerializeToString(deterministic=True)


def test_add_apply_request_takes_kind_key_and_revision_from_the_request(outbox):
    sessions = session_factories(outbox.engine)
    with sessions.write() as session, session.begin():
        add_apply_request(session, outbox.table, pb.ApplyCreditCurrencyRequest(currency_key="ai", revision=4), now=T0)
    [row] = outbox.rows()
    assert (row.kind, row.aggregate_key, row.revision, row.status, row.attempts) == (
        KIND_CREDIT_CURRENCY,
        "ai",
        4,
        STATUS_PENDING,
        0,
    )
    assert (row.next_attempt_at, row.created_at, row.delivered_at, row.last_error) == (T0, T0, None, None)
    with pytest.raises(ValueError), sessions.write() as session, session.begin():
        add_apply_request(session, outbox.table, pb.ApplySubscriptionRequest(subscription_id="sub-1"), now=T0)
    with pytest.raises(TypeError), sessions.write() as session, session.begin():
        add_apply_request(session, outbox.table, pb.GetBalanceRequest(), now=T0)
    # The unique (kind, aggregate_key, revision) refuses the same revision twice.
    with pytest.raises(IntegrityError), sessions.write() as session, session.begin():
        add_apply_request(session, outbox.table, pb.ApplyCreditCurrencyRequest(currency_key="ai", revision=4), now=T0)
    assert len(outbox.rows()) == 1


def test_a_crashed_dispatchers_claims_are_delivered_once_its_lease_ends(outbox, grant):
    clock = ManualClock(T0)
    outbox.queue((KIND_SUBSCRIPTION, "sub-1", 1), (KIND_SUBSCRIPTION, "sub-2", 1), now=T0)
    lease = timedelta(seconds=60)
    # A dispatcher claims both and dies before sending.
    crashed = outbox.another_repository().claim_due(clock.now(), clock.now() + lease, 10)
    assert len(crashed) == 2

    survivor = dispatcher(outbox.repo, delivery_to(grant), clock=clock, lease=lease)
    assert survivor.run_once().claimed == 0  # still leased
    clock.advance(lease - timedelta(microseconds=1))
    assert survivor.run_once().claimed == 0
    assert grant.service.snapshot() == []

    clock.advance(timedelta(microseconds=1))
    report = survivor.run_once()
    assert (report.claimed, report.delivered) == (2, 2)
    assert outbox.statuses() == Counter({STATUS_DELIVERED: 2})
    assert set(grant.service.ok_counts().values()) == {1}
    assert [r.attempts for r in outbox.rows()] == [2, 2]  # the crashed attempt is counted
    survivor.stop()


def test_a_claim_whose_lease_was_taken_over_cannot_overwrite_the_outcome(outbox, grant):
    clock = ManualClock(T0)
    outbox.queue((KIND_SUBSCRIPTION, "sub-1", 1), now=T0)
    lease = timedelta(seconds=60)
    [stale] = outbox.repo.claim_due(clock.now(), clock.now() + lease, 10)
    clock.advance(lease)
    [fresh] = outbox.repo.claim_due(clock.now(), clock.now() + lease, 10)
    assert fresh.lease_until > stale.lease_until

    retry_from_stale = Resolution(stale, STATUS_PENDING, 1, clock.now() + timedelta(hours=1), "UNAVAILABLE: slow")
    park_from_stale = Resolution(stale, STATUS_FAILED, 1, clock.now(), "INVALID_ARGUMENT: no")
    assert outbox.repo.record([retry_from_stale, park_from_stale]) == [False, False]
    [row] = outbox.rows()
    assert (row.status, row.next_attempt_at, row.attempts) == (STATUS_PENDING, fresh.lease_until, 2)
    assert (stale.attempts, fresh.attempts) == (1, 2)

    delivered = Resolution(fresh, STATUS_DELIVERED, 1, clock.now(), None, delivered_at=clock.now())
    assert outbox.repo.record([delivered]) == [True]
    assert outbox.repo.record([retry_from_stale]) == [False]
    [row] = outbox.rows()
    assert (row.status, row.delivered_at) == (STATUS_DELIVERED, clock.now())


def test_record_answers_in_the_order_given_whatever_the_row_order(outbox):
    clock = ManualClock(T0)
    outbox.queue((KIND_SUBSCRIPTION, "sub-1", 1), (KIND_SUBSCRIPTION, "sub-2", 1), now=T0)
    first, second = outbox.repo.claim_due(clock.now(), clock.now() + timedelta(minutes=1), 10)
    assert first.id < second.id
    stale_first = Resolution(
        replace(first, lease_until=first.lease_until - timedelta(seconds=1)), STATUS_FAILED, 1, T0, "x"
    )
    delivered_second = Resolution(second, STATUS_DELIVERED, 1, T0, None, delivered_at=T0)
    assert outbox.repo.record([delivered_second, stale_first]) == [True, False]
    assert [r.status for r in outbox.rows()] == [STATUS_PENDING, STATUS_DELIVERED]


def test_record_writes_a_pass_of_deliveries_and_each_other_outcome(outbox):
    clock = ManualClock(T0)
    outbox.queue(*[(KIND_SUBSCRIPTION, f"sub-{i}", 1) for i in range(6)], now=T0)
    claims = outbox.repo.claim_due(clock.now(), clock.now() + timedelta(minutes=1), 10)
    done = T0 + timedelta(seconds=1)
    taken_over = replace(claims[4], lease_until=claims[4].lease_until - timedelta(seconds=1))
    resolutions = [
        Resolution(claims[0], STATUS_DELIVERED, 1, done, None, delivered_at=done),
        Resolution(claims[1], STATUS_PENDING, 1, done + timedelta(seconds=5), "UNAVAILABLE: down"),
        Resolution(claims[2], STATUS_DELIVERED, 1, done, None, delivered_at=done),
        Resolution(claims[3], STATUS_FAILED, 1, done, "INVALID_ARGUMENT: no"),
        Resolution(taken_over, STATUS_FAILED, 1, done, "INVALID_ARGUMENT: late"),
        Resolution(claims[5], STATUS_DELIVERED, 1, done, None, delivered_at=done),
    ]
    assert outbox.repo.record(resolutions) == [True, True, True, True, False, True]
    rows = outbox.rows()
    assert [(r.status, r.last_error) for r in rows] == [
        (STATUS_DELIVERED, None),
        (STATUS_PENDING, "UNAVAILABLE: down"),
        (STATUS_DELIVERED, None),
        (STATUS_FAILED, "INVALID_ARGUMENT: no"),
        (STATUS_PENDING, None),
        (STATUS_DELIVERED, None),
    ]
    assert [r.delivered_at for r in rows if r.status == STATUS_DELIVERED] == [done] * 3
    # Recorded again (a dispatcher whose lease ran out): deliveries are not written twice.
    assert outbox.repo.record([resolutions[0], resolutions[2]]) == [False, False]


def test_a_call_past_its_deadline_is_retried_and_answers_already_applied(outbox, grant):
    clock = ManualClock(T0)
    grant.service.delay_s = 1.5
    grant.service.slow_calls = 1
    outbox.queue((KIND_SUBSCRIPTION, "sub-slow", 1), now=T0)
    delivery = delivery_to(grant, deadline=timedelta(milliseconds=300))
    d = dispatcher(outbox.repo, delivery, clock=clock, send_concurrency=1)

    report = d.run_once()
    assert (report.claimed, report.retried) == (1, 1)
    [row] = outbox.rows()
    assert row.status == STATUS_PENDING and row.attempts == 1
    assert row.last_error.startswith("DEADLINE_EXCEEDED")
    assert row.next_attempt_at <= clock.now() + FAST_BACKOFF.ceiling(1)

    # The slow call still completes on the server; the retry is then ALREADY_APPLIED.
    wait_until(lambda: grant.service.ok_counts()[(KIND_SUBSCRIPTION, "sub-slow", 1)] == 1, what="the slow call")
    clock.advance(timedelta(minutes=1))
    delivery.deadline = timedelta(seconds=30)  # read on every call; generous, so a loaded machine cannot fail it
    assert d.run_once().delivered == 1
    outcomes = [c.outcome for c in grant.service.snapshot()]
    assert outcomes == [pb.APPLY_OUTCOME_APPLIED, pb.APPLY_OUTCOME_ALREADY_APPLIED]
    [row] = outbox.rows()
    assert (row.status, row.attempts, row.last_error) == (STATUS_DELIVERED, 2, None)
    d.stop()


def test_retries_back_off_and_are_not_claimed_before_they_are_due(outbox, grant):
    clock = ManualClock(T0)
    grant.service.code_for = {"sub-1": grpc.StatusCode.UNAVAILABLE}
    outbox.queue((KIND_SUBSCRIPTION, "sub-1", 1), now=T0)
    policy = BackoffPolicy(base=timedelta(seconds=1), cap=timedelta(seconds=30))
    d = dispatcher(outbox.repo, delivery_to(grant), clock=clock, backoff=policy)
    previous_attempts = 0
    for attempt in range(1, 9):
        assert d.run_once().retried == 1
        [row] = outbox.rows()
        assert row.attempts == attempt == previous_attempts + 1
        delay = row.next_attempt_at - clock.now()
        assert timedelta(0) <= delay <= policy.ceiling(attempt)
        if delay > timedelta(0):
            clock.advance(delay - timedelta(microseconds=1))
            assert d.run_once().claimed == 0, "claimed before its backoff ended"
            clock.advance(timedelta(microseconds=1))
        previous_attempts = attempt
    assert len(grant.service.snapshot()) == 8
    d.stop()


def test_nudge_wakes_the_worker_and_stop_joins_it(outbox, grant, started):
    d = started(dispatcher(outbox.repo, delivery_to(grant), poll_interval=timedelta(hours=1)))
    wait_until(lambda: d.completed_passes >= 1, what="the first pass")
    outbox.queue((KIND_SUBSCRIPTION, "sub-1", 1))
    d.nudge()
    wait_until(lambda: outbox.statuses() == Counter({STATUS_DELIVERED: 1}), what="delivery after the nudge")
    assert d.running
    d.stop()
    assert not d.running
    d.stop()  # idempotent

    # State is only in the database: a new dispatcher carries on after a restart.
    outbox.queue((KIND_SUBSCRIPTION, "sub-1", 2))
    started(dispatcher(outbox.repo, delivery_to(grant)))
    wait_until(lambda: outbox.statuses() == Counter({STATUS_DELIVERED: 2}), what="delivery after a restart")
    assert grant.service.ok_order(KIND_SUBSCRIPTION, "sub-1") == [1, 2]


def test_the_worker_survives_a_database_outage(outbox, grant, started):
    class FlakyOutbox:
        def __init__(self, inner: SqlOutboxRepository) -> None:
            self.inner = inner
            self.failures = 3

        def claim_due(self, now, lease_until, limit):
            if self.failures > 0:
                self.failures -= 1
                raise OperationalError("SELECT", {}, Exception("could not connect to server"))
            return self.inner.claim_due(now, lease_until, limit)

        def record(self, resolutions):
            return self.inner.record(resolutions)

    flaky = FlakyOutbox(outbox.repo)
    outbox.queue((KIND_SUBSCRIPTION, "sub-1", 1))
    started(dispatcher(flaky, delivery_to(grant)))
    wait_until(lambda: outbox.statuses() == Counter({STATUS_DELIVERED: 1}), what="delivery after the outage")
    assert flaky.failures == 0


def test_lease_shorter_than_a_batch_of_sends_is_refused(outbox, grant):
    def dispatcher_sending(send_batch_size: int) -> Dispatcher:
        """20 deliveries per pass, 4 calls at a time, 5 s each, under a 30 s lease."""
        return Dispatcher(
            outbox.repo,
            delivery_to(grant, deadline=timedelta(seconds=5)),
            clock=SystemClock(),
            batch_size=20,
            send_batch_size=send_batch_size,
            send_concurrency=4,
            lease=timedelta(seconds=30),
        )

    with pytest.raises(ValueError, match="lease"):
        dispatcher_sending(1)  # 20 calls, 5 rounds of 4 x 5 s: longer than the lease
    dispatcher_sending(100)  # the same batch in one call: one round


def test_a_backlog_is_sent_in_batches_of_one_kind_and_each_keeps_its_outcome(outbox, grant, started, caplog):
    grant.service.reject = {("sub-007", 1), ("sub-150", 2)}
    items = subscription_items(240, 2) + [(KIND_CREDIT_CURRENCY, "ai-credits", rev) for rev in (1, 2)]
    outbox.queue(*items)
    d = dispatcher(outbox.repo, delivery_to(grant), batch_size=200, send_batch_size=50)
    with caplog.at_level(logging.WARNING, logger="catalog_service.dispatcher"):
        started(d)
        wait_until(lambda: outbox.statuses()[STATUS_PENDING] == 0, what="the backlog sent")
        d.stop()
    batches = grant.service.snapshot_batches()
    assert max(batches) == 50 and sum(batches) == 480  # every subscription revision once
    assert len(batches) < 20
    assert outbox.statuses() == Counter({STATUS_DELIVERED: len(items) - 2, STATUS_FAILED: 2})
    for i in range(240):
        assert grant.service.ok_order(KIND_SUBSCRIPTION, f"sub-{i:03d}") == (
            [2] if i == 7 else [1] if i == 150 else [1, 2]
        )
    assert grant.service.ok_order(KIND_CREDIT_CURRENCY, "ai-credits") == [1, 2]
    parked = {(r.aggregate_key, r.revision): r.last_error for r in outbox.rows() if r.status == STATUS_FAILED}
    assert set(parked) == {("sub-007", 1), ("sub-150", 2)}
    for error in parked.values():
        assert error == (
            "INVALID_ARGUMENT: amount must be greater than zero [reason=INVALID_AMOUNT] "
            "[credit_schedules[0].amounts[0].amount: must be > 0]"
        )
    assert sorted((r.aggregate_key, r.revision) for r in caplog.records) == [("sub-007", 1), ("sub-150", 2)]
    state = outbox.repo.handoff_state("sub-150")
    assert (state.status, state.latest_delivered_revision) == (HandoffStatus.FAILED, 1)


def test_deliver_many_answers_each_payload_in_order(grant):
    grant.service.reject = {("sub-bad", 1)}
    delivery = delivery_to(grant)
    assert delivery.deliver(KIND_SUBSCRIPTION, payload(KIND_SUBSCRIPTION, "sub-old", 2)).kind is OutcomeKind.DELIVERED
    sent = [
        payload(KIND_SUBSCRIPTION, "sub-new", 1),
        b"\xff\xff\xff",
        payload(KIND_SUBSCRIPTION, "sub-bad", 1),
        payload(KIND_SUBSCRIPTION, "sub-old", 1),
        payload(KIND_SUBSCRIPTION, "sub-old", 2),
    ]
    outcomes = delivery.deliver_many(KIND_SUBSCRIPTION, sent)
    assert [(o.kind, o.code) for o in outcomes] == [
        (OutcomeKind.DELIVERED, "OK"),
        (PARK, ""),
        (PARK, "INVALID_ARGUMENT"),
        (OutcomeKind.DELIVERED, "OK"),
        (OutcomeKind.DELIVERED, "OK"),
    ]
    assert [o.detail for o in outcomes[3:]] == ["STALE current_revision=2", "ALREADY_APPLIED current_revision=2"]
    assert grant.service.snapshot_batches() == [4]  # the unparsable payload was not sent

    # A failure of the call is every item's: retried.
    grant.service.transient = {("sub-x", 1): 1}
    outcomes = delivery.deliver_many(
        KIND_SUBSCRIPTION, [payload(KIND_SUBSCRIPTION, "sub-x", 1), payload(KIND_SUBSCRIPTION, "sub-y", 1)]
    )
    assert [(o.kind, o.code) for o in outcomes] == [(RETRY, "UNAVAILABLE")] * 2
    delivery.close()


class SingleApplyGrantService(FakeGrantService):
    """A grant service from before ApplySubscriptions: the call answers UNIMPLEMENTED."""

    ApplySubscriptions = grant_service_pb2_grpc.GrantServiceServicer.ApplySubscriptions


def test_a_grant_service_without_the_batch_call_gets_one_call_per_revision():
    server = FakeGrantServer(SingleApplyGrantService()).start()
    try:
        server.service.reject = {("sub-bad", 1)}
        delivery = delivery_to(server)
        keys = ["sub-a", "sub-bad", "sub-c"]
        outcomes = delivery.deliver_many(KIND_SUBSCRIPTION, [payload(KIND_SUBSCRIPTION, k, 1) for k in keys])
        assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED, PARK, OutcomeKind.DELIVERED]
        assert server.service.ok_counts() == Counter(
            {(KIND_SUBSCRIPTION, "sub-a", 1): 1, (KIND_SUBSCRIPTION, "sub-c", 1): 1}
        )
        delivery.close()
    finally:
        server.stop()


# --- the delivery client alone ------------------------------------------------------------------

RETRY, PARK = OutcomeKind.RETRY, OutcomeKind.PARKED


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, RETRY),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, RETRY),
        (grpc.StatusCode.ABORTED, RETRY),
        (grpc.StatusCode.INTERNAL, RETRY),
        (grpc.StatusCode.UNKNOWN, RETRY),
        (grpc.StatusCode.UNIMPLEMENTED, RETRY),
        (grpc.StatusCode.INVALID_ARGUMENT, PARK),
        (grpc.StatusCode.FAILED_PRECONDITION, PARK),
        (grpc.StatusCode.NOT_FOUND, PARK),
        (grpc.StatusCode.ALREADY_EXISTS, PARK),
    ],
)
def test_status_codes_are_classified(grant, code, expected):
    grant.service.code_for = {"sub-1": code, "ai-credits": code}
    delivery = delivery_to(grant)
    for kind, key in ((KIND_SUBSCRIPTION, "sub-1"), (KIND_CREDIT_CURRENCY, "ai-credits")):
        outcome = delivery.deliver(kind, payload(kind, key, 1))
        assert outcome.kind is expected
        assert outcome.code == code.name
        assert outcome.detail == f"{code.name}: fake {code.name}"
    delivery.close()


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (pb.APPLY_OUTCOME_APPLIED, OutcomeKind.DELIVERED),
        (pb.APPLY_OUTCOME_ALREADY_APPLIED, OutcomeKind.DELIVERED),
        (pb.APPLY_OUTCOME_STALE, OutcomeKind.DELIVERED),
        (pb.APPLY_OUTCOME_UNSPECIFIED, OutcomeKind.RETRY),
    ],
)
def test_apply_outcomes_are_classified(grant, outcome, expected):
    grant.service.outcome_for = {"sub-1": outcome}
    delivery = delivery_to(grant)
    result = delivery.deliver(KIND_SUBSCRIPTION, payload(KIND_SUBSCRIPTION, "sub-1", 1))
    assert result.kind is expected
    delivery.close()


def test_unknown_kinds_and_unparsable_payloads_are_parked_without_a_call(grant):
    delivery = delivery_to(grant)
    assert delivery.deliver("plan", b"").kind is PARK
    assert delivery.deliver(KIND_SUBSCRIPTION, b"\xff\xff\xff").kind is PARK
    assert grant.service.snapshot() == []
    delivery.close()


def test_a_deadline_is_required_and_set_on_every_call(grant):
    with pytest.raises(ValueError):
        GrantDelivery(grant.target, deadline=timedelta(0))
    grant.service.delay_s = 2.0
    delivery = delivery_to(grant, deadline=timedelta(milliseconds=200))
    outcome = delivery.deliver(KIND_CREDIT_CURRENCY, payload(KIND_CREDIT_CURRENCY, "ai-credits", 1))
    assert (outcome.kind, outcome.code) == (RETRY, "DEADLINE_EXCEEDED")
    delivery.close()


def test_the_channel_is_reused_across_calls_and_a_restarted_server(grant):
    delivery = delivery_to(grant)
    channel = delivery._channel
    assert delivery.deliver(KIND_SUBSCRIPTION, payload(KIND_SUBSCRIPTION, "sub-1", 1)).kind is OutcomeKind.DELIVERED
    grant.stop()
    assert delivery.deliver(KIND_SUBSCRIPTION, payload(KIND_SUBSCRIPTION, "sub-1", 2)).code == "UNAVAILABLE"
    grant.start()
    wait_until(
        lambda: (
            delivery.deliver(KIND_SUBSCRIPTION, payload(KIND_SUBSCRIPTION, "sub-1", 2)).kind is OutcomeKind.DELIVERED
        ),
        what="the channel to reconnect",
    )
    assert delivery._channel is channel
    delivery.close()


# --- the wiring ---------------------------------------------------------------------------------


def test_worker_from_command_line_flags_delivers_and_stops(outbox, grant):
    settings = parse_service_args(
        service="catalog_service",
        env_prefix="UNUSED_IN_TESTS",
        default_port=0,
        database_file="unused.db",
        argv=[
            "--grant-service-address",
            grant.target,
            "--grant-deadline-ms",
            "2000",
            "--outbox-poll-interval-ms",
            "3600000",
        ],
        flags=CATALOG_FLAGS,
    )
    assert (settings.outbox.batch_size, settings.outbox.send_batch_size) == (200, 100)
    assert settings.outbox.lease == timedelta(seconds=60)
    client = GrantServiceClient(settings.grant_service.address)
    worker = start_outbox_worker(
        outbox.engine,
        outbox.table,
        SystemClock(),
        channel=client.channel,
        deadline=settings.grant_service.deadline,
        settings=settings.outbox,
    )
    try:
        assert worker.delivery.deadline == timedelta(seconds=2)
        wait_until(lambda: worker.dispatcher.completed_passes >= 1, what="the first pass")
        outbox.queue((KIND_CREDIT_CURRENCY, "ai-credits", 1))
        worker.nudge()
        wait_until(lambda: outbox.statuses() == Counter({STATUS_DELIVERED: 1}), what="delivery after the nudge")
    finally:
        worker.stop()
        client.close()
    assert not worker.dispatcher.running


# --- lost races: the outbox's transactions on the shared runner ---------------------------------


@pytest.mark.parametrize("sqlstate", [SERIALIZATION_FAILURE, DEADLOCK], ids=["serialization-failure", "deadlock"])
def test_a_pass_whose_claim_and_record_lose_a_race_sends_and_records_each_delivery_once(outbox, grant, sqlstate):
    """The claim and the record of outcomes run on the shared runner (credit_common.db.transactions):
    one that loses a race (a deadlock, a serialization failure) runs again from scratch and the pass
    goes on. Before, the pass failed: a record lost so left the deliveries sent but pending, sent
    again once their lease ended. The record's failure comes after its first write (the retry's),
    so a try not rolled back whole would show (the retry fenced out by its own first try)."""
    clock = ManualClock(T0)
    grant.service.code_for = {"cur-1": grpc.StatusCode.UNAVAILABLE}
    outbox.queue((KIND_SUBSCRIPTION, "sub-1", 1), (KIND_CREDIT_CURRENCY, "cur-1", 1), now=T0)
    d = dispatcher(outbox.repo, delivery_to(grant), clock=clock, send_concurrency=1)
    with (
        lose_race(outbox.engine, "UPDATE outbox_deliveries SET attempts", sqlstate) as claim_race,
        lose_race(outbox.engine, "UPDATE outbox_deliveries SET status", sqlstate, after=1) as record_race,
    ):
        report = d.run_once()
    assert (claim_race.count, record_race.count) == (1, 1)
    assert (report.claimed, report.delivered, report.retried, report.fenced) == (2, 1, 1, 0)
    assert sorted((c.key, c.code) for c in grant.service.snapshot()) == [
        ("cur-1", grpc.StatusCode.UNAVAILABLE),
        ("sub-1", grpc.StatusCode.OK),
    ]  # each sent once
    rows = {r.aggregate_key: r for r in outbox.rows()}
    assert (rows["sub-1"].status, rows["sub-1"].attempts) == (STATUS_DELIVERED, 1)  # the claim counted once
    assert (rows["cur-1"].status, rows["cur-1"].attempts) == (STATUS_PENDING, 1)
    assert rows["cur-1"].last_error.startswith("UNAVAILABLE")
    d.stop()


@pytest.mark.parametrize("sqlstate", [SERIALIZATION_FAILURE, DEADLOCK], ids=["serialization-failure", "deadlock"])
def test_a_requeue_that_loses_a_race_runs_again(outbox, sqlstate):
    clock = ManualClock(T0)
    outbox.queue((KIND_SUBSCRIPTION, "sub-1", 1), now=T0)
    [claim] = outbox.repo.claim_due(clock.now(), clock.now() + timedelta(minutes=1), 10)
    assert outbox.repo.record([Resolution(claim, STATUS_FAILED, 1, T0, "INVALID_ARGUMENT: no")]) == [True]
    with lose_race(outbox.engine, "UPDATE outbox_deliveries SET status", sqlstate) as race:
        assert outbox.repo.requeue_failed(KIND_SUBSCRIPTION, "sub-1", clock.now()) == 1
    assert race.count == 1
    assert outbox.statuses() == Counter({STATUS_PENDING: 1})
