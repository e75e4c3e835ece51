"""Model-based test: random applies, amendments (at, before and after period boundaries), cancels,
voids, one-off grants, debits and clock advances, sent to a real grant server over gRPC, each
followed by a comparison of every grant, ledger entry and balance (now and past) with the
reference model (`reference_model.py`, which encodes DOMAIN.md and issue 13's decisions S1-S6).

Each example is a new customer on a new test clock on the same server (one per backend)."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

import grpc
from dateutil.relativedelta import relativedelta
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from credit_common.grpc.errors import error_details
from credit_common.grpc.timestamps import from_timestamp, to_timestamp
from grant_service.v1 import grant_service_pb2 as pb
from tests.e2e.grant.conftest import all_entries, utc
from tests.e2e.grant.reference_model import Grant, Insufficient, Model, Subscription

CURRENCY, FEATURE, RATE = "model-credits", "model-calls", Decimal("2.5")
ENTITLEMENT = "credits"
US = timedelta(microseconds=1)

# Deterministic (derandomize, no example database) and bounded: each example is one customer of
# up to 25 steps, each step followed by the full comparison (4 to 6 RPCs). PostgreSQL round trips are
# several times slower, so it runs fewer examples of the same machine (the semantics do not depend
# on the backend; its run checks the SQL). Both take well under a minute on a loaded 2-core machine.
SETTINGS = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
EXAMPLES = {"sqlite": 30, "postgresql": 10}


CLOCK_STARTS = [
    utc(2024, 1, 31, 12),
    utc(2024, 2, 29, 12),
    utc(2024, 3, 15, 8, 30, 0, 250000),
    utc(2024, 4, 30, 12),
    utc(2023, 2, 28, 12),
]
# Anchors, relative to the clock's start: now, ordinary days before and after it, month ends (12:00) of
# earlier months (Jan 31, Feb 29, Dec 31 ... depending on the start), the next month end, Feb 29 2024.
ANCHORS = ["now", "now-10d", "now+3d", "end-1", "end-2", "end-3", "end-13", "end0", "feb29"]
AMOUNTS = ["100", "200", "0.5", "75.25", "1234.567891", "50000"]
QUANTITIES = ["0.4", "1", "10", "33.333333", "100", "1000"]
CADENCES = {"MONTHLY": pb.CADENCE_MONTHLY, "YEARLY": pb.CADENCE_YEARLY}

_keys = itertools.count(1)


def _time(message, name: str) -> datetime | None:
    return from_timestamp(message, name)


def _dec(text: str) -> Decimal:
    return Decimal(text)


class GrantModelMachine(RuleBasedStateMachine):
    """One customer on one test clock; `stub` is a channel to a server with test clocks enabled."""

    stub = None  # set by the test

    def __init__(self) -> None:
        super().__init__()
        n = next(_keys)
        self.customer = f"model-{n}"
        self.prefix = f"m{n}"
        self.model: Model | None = None
        self.clock_id = ""
        self.by_id: dict[str, Grant] = {}
        self.usage_requests: list[tuple[str, str]] = []
        self.previous_now: datetime | None = None
        self.counter = itertools.count(1)

    # ------------------------------------------------------------------ helpers

    def _request_id(self, what: str) -> str:
        return f"{self.prefix}-{what}-{next(self.counter)}"

    def _anchor(self, choice: str, now: datetime) -> datetime:
        if choice == "now":
            return now
        if choice == "now-10d":
            return (now - timedelta(days=10)).replace(hour=9, minute=30, second=0, microsecond=0)
        if choice == "now+3d":
            return now + timedelta(days=3)
        if choice == "feb29":
            return utc(2024, 2, 29, 12)
        # end-N: the last day of the N-th month before now's month (end0: of now's month), at 12:00.
        months = -int(choice.removeprefix("end"))
        first = utc(now.year, now.month, 1, 12) - relativedelta(months=months - 1)
        return first - timedelta(days=1)

    def _send(self, sub: Subscription, amounts: list[tuple[Decimal, datetime]], end: datetime | None, revision: int):
        request = pb.ApplySubscriptionRequest(
            subscription_id=sub.subscription_id,
            customer_key=self.customer,
            revision=revision,
            start_time=to_timestamp(sub.anchor),
            end_time=to_timestamp(end),
            test_clock_id=self.clock_id,
            credit_schedules=[
                pb.CreditSchedule(
                    entitlement_key=sub.entitlement_key,
                    currency_key=CURRENCY,
                    cadence=CADENCES[sub.cadence],
                    amounts=[pb.ScheduledAmount(amount=str(a), effective_time=to_timestamp(t)) for a, t in amounts],
                )
            ],
        )
        reply = self.stub.ApplySubscription(request, timeout=30)
        assert reply.outcome == pb.APPLY_OUTCOME_APPLIED, reply
        assert reply.current_revision == revision
        return reply

    def _apply(self, sub_id: str, anchor, cadence, amounts, end) -> None:
        model = self.model
        existing = model.subs.get(sub_id)
        revision = 1 if existing is None else existing.revision + 1
        probe = existing or Subscription(sub_id, ENTITLEMENT, anchor, cadence, amounts, end)
        reply = self._send(probe, amounts, end, revision)
        expected = model.apply(sub_id, ENTITLEMENT, anchor, cadence, amounts, end)
        got = [(c.entitlement_key, _time(c, "requested_time"), _time(c, "applied_time")) for c in reply.clamped_changes]
        want = [(c.entitlement_key, c.requested, c.applied) for c in expected]
        assert sorted(got, key=str) == sorted(want, key=str), f"clamped changes: server {got}, model {want}"
        self._check_subscription(model.subs[sub_id])

    def _subs_open(self, *, started: bool = False) -> list[Subscription]:
        """The subscriptions not ended at now (and started before now, if asked)."""
        now = self.model.now
        return [
            s for s in self.model.subs.values() if (s.end is None or s.end > now) and not (started and s.anchor >= now)
        ]

    # -------------------------------------------------------------------- rules

    @initialize(
        clock_start=st.sampled_from(CLOCK_STARTS),
        anchor=st.sampled_from(ANCHORS),
        cadence=st.sampled_from(["MONTHLY", "MONTHLY", "YEARLY"]),
        amount=st.sampled_from(AMOUNTS),
    )
    def start(self, clock_start, anchor, cadence, amount):
        clock = self.stub.CreateTestClock(
            pb.CreateTestClockRequest(name=self.customer, frozen_time=to_timestamp(clock_start)), timeout=30
        ).test_clock
        self.clock_id = clock.test_clock_id
        self.model = Model(clock_start, RATE)
        self._new(anchor, cadence, amount)

    def _new(self, anchor, cadence, amount) -> None:
        now = self.model.now
        start = self._anchor(anchor, now)
        sub_id = f"{self.prefix}-sub-{len(self.model.subs) + 1}"
        self._apply(sub_id, start, cadence, [(_dec(amount), start)], None)

    @precondition(lambda self: len(self.model.subs) < 3)
    @rule(
        anchor=st.sampled_from(ANCHORS),
        cadence=st.sampled_from(["MONTHLY", "MONTHLY", "YEARLY"]),
        amount=st.sampled_from(AMOUNTS),
    )
    def new_subscription(self, anchor, cadence, amount):
        self._new(anchor, cadence, amount)

    @precondition(lambda self: self._subs_open(started=True))
    @rule(
        which=st.integers(0, 2), when=st.sampled_from(["now", "late", "period_start"]), amount=st.sampled_from(AMOUNTS)
    )
    def amend_now_or_late(self, which, when, amount):
        self.amend(which, when, amount, started=True)

    @precondition(lambda self: self._subs_open())
    @rule(
        which=st.integers(0, 2),
        when=st.sampled_from(["next_boundary", "future_inside", "far_future"]),
        amount=st.sampled_from(AMOUNTS),
    )
    def amend_ahead(self, which, when, amount):
        self.amend(which, when, amount)

    def amend(self, which: int, when: str, amount: str, *, started: bool = False) -> None:
        subs = self._subs_open(started=started)
        sub = subs[which % len(subs)]
        now = self.model.now
        k = sub.current_period(now)
        last = max(t for _, t in sub.amounts if t <= now) if sub.anchor <= now else sub.anchor
        if when == "now":
            t = now
        elif when == "late":
            if last >= now - 2 * US:
                return
            t = last + (now - last) / 2
        elif when == "period_start":
            t = sub.start(max(k, 0))
        elif when == "next_boundary":
            t = sub.start(max(k, 0) + 1)
        elif when == "future_inside":
            t = now + (sub.start(k + 1) - now) / 3 if k >= 0 else sub.anchor + timedelta(days=5)
        else:
            t = sub.start(max(k, 0) + 2 + which) + timedelta(days=1 + AMOUNTS.index(amount), hours=3)
        times = {x for _, x in sub.amounts}
        if t <= sub.anchor or t in times or (t < now and t <= last):
            return
        value = _dec(amount)
        if value == sub.amount_at(t):  # a change, not a repetition: take the next amount
            value = _dec(AMOUNTS[(AMOUNTS.index(amount) + 1) % len(AMOUNTS)])
        amounts = sorted([*sub.amounts, (value, t)], key=lambda item: item[1])
        self._apply(sub.subscription_id, sub.anchor, sub.cadence, amounts, sub.end)

    @precondition(lambda self: any(s.end is None and s.anchor <= self.model.now for s in self.model.subs.values()))
    @rule(which=st.integers(0, 2), when=st.sampled_from(["now", "period_end", "past", "period_start"]))
    def cancel(self, which, when):
        now = self.model.now
        subs = [s for s in self.model.subs.values() if s.end is None and s.anchor <= now]
        sub = subs[which % len(subs)]
        k = sub.current_period(now)
        end = {
            "now": now,
            "period_end": sub.start(k + 1),
            "past": max(sub.anchor, now - timedelta(days=5)),
            "period_start": sub.start(k),
        }[when]
        self._apply(sub.subscription_id, sub.anchor, sub.cadence, list(sub.amounts), end)

    @precondition(lambda self: any(g.status_at(self.model.now) == "ACTIVE" for g in self.model.grants))
    @rule(which=st.integers(0, 50))
    def void(self, which):
        now = self.model.now
        active = [g for g in self.model.grants if g.status_at(now) == "ACTIVE"]
        target = active[which % len(active)]
        assert target.server_id, "an active grant the server never listed"
        reply = self.stub.VoidGrant(
            pb.VoidGrantRequest(grant_id=target.server_id, reason="model", request_id=self._request_id("void")),
            timeout=30,
        )
        self.model.void(target)
        assert reply.grant.status == pb.GRANT_STATUS_VOIDED and _dec(reply.grant.remaining) == 0, reply.grant

    @rule(
        amount=st.sampled_from(AMOUNTS),
        effective=st.sampled_from(["unset", "now", "1h", "3d", "next"]),
        expire=st.sampled_from([None, "1d", "20d", "45d"]),
        priority=st.sampled_from([None, 1, 100, 200]),
    )
    def create_grant(self, amount, effective, expire, priority):
        model = self.model
        now = model.now
        if effective == "unset":
            when = None
        elif effective == "now":
            when = now
        elif effective == "next":
            when = model.next_instant() or now + timedelta(days=1)
        else:
            when = now + {"1h": timedelta(hours=1), "3d": timedelta(days=3)}[effective]
        until = None if expire is None else (when or now) + timedelta(days=int(expire[:-1]))
        request = pb.CreateGrantRequest(
            request_id=self._request_id("grant"),
            customer_key=self.customer,
            currency_key=CURRENCY,
            amount=amount,
            effective_time=to_timestamp(when),
            expire_time=to_timestamp(until),
            reason="model",
        )
        if priority is not None:
            request.priority = priority
        reply = self.stub.CreateGrant(request, timeout=30).grant
        g = model.create_grant(_dec(amount), when, until, priority)
        g.server_id = reply.grant_id
        self.by_id[reply.grant_id] = g
        problems = _grant_problems(g, reply, now)
        assert not problems, f"CreateGrant answered {problems}"

    @rule(quantity=st.sampled_from(QUANTITIES))
    def report_usage(self, quantity):
        self._usage(self._request_id("use"), quantity)

    @precondition(lambda self: self.usage_requests)
    @rule(which=st.integers(0, 50))
    def replay_usage(self, which):
        request_id, quantity = self.usage_requests[which % len(self.usage_requests)]
        self._usage(request_id, quantity)

    def _usage(self, request_id: str, quantity: str) -> None:
        if (request_id, quantity) not in self.usage_requests:
            self.usage_requests.append((request_id, quantity))
        request = pb.ReportUsageRequest(
            request_id=request_id, customer_key=self.customer, feature_key=FEATURE, quantity=quantity
        )
        try:
            expected = self.model.report_usage(request_id, _dec(quantity))
        except Insufficient as short:
            try:
                reply = self.stub.ReportUsage(request, timeout=30)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
                info, _ = error_details(error)
                assert info is not None and info.reason == "INSUFFICIENT_CREDITS"
                assert _dec(info.metadata["available"]) == short.available, (info.metadata, short.available)
                return
            raise AssertionError(f"model: insufficient ({short.available} available); server debited {reply}") from None
        usage = self.stub.ReportUsage(request, timeout=30).usage
        got = [(self._ref(d.grant_id), _dec(d.amount)) for d in usage.debits]
        want = [(g.ref, amount) for g, amount in expected.debits]
        assert got == want, f"debits (grant ref, amount): server {got}, model {want}"
        assert _dec(usage.credits) == expected.credits
        assert _dec(usage.balance_after) == expected.balance_after, (usage.balance_after, expected.balance_after)
        assert _time(usage, "usage_time") == expected.time

    @rule(step=st.sampled_from(["1us", "1h", "1d", "next", "next", "next", "next-1us", "40d", "400d", "3y"]))
    def advance(self, step):
        model = self.model
        now = model.now
        following = model.next_instant()
        if step == "next":
            to = following or now + timedelta(days=1)
        elif step == "next-1us":
            to = following - US if following and following - US > now else now + US
        elif step == "3y":
            to = now + relativedelta(years=3)
        else:
            to = (
                now
                + {
                    "1us": US,
                    "1h": timedelta(hours=1),
                    "1d": timedelta(days=1),
                    "40d": timedelta(days=40),
                    "400d": timedelta(days=400),
                }[step]
            )
        reply = self.stub.AdvanceTestClock(
            pb.AdvanceTestClockRequest(
                test_clock_id=self.clock_id, frozen_time=to_timestamp(to), request_id=self._request_id("adv")
            ),
            timeout=60,
        )
        assert _time(reply.test_clock, "frozen_time") == to
        self.previous_now = now
        model.advance(to)

    # ---------------------------------------------------------------- checking

    def _ref(self, grant_id: str):
        g = self.by_id.get(grant_id)
        return g.ref if g is not None else f"unknown {grant_id}"

    @invariant()
    def matches_model(self):
        if self.model is None:
            return
        for note in self.model.notes:
            event(note)
        self.model.notes.clear()
        self._check_grants()
        self._check_ledger_and_balances()

    def _check_grants(self) -> None:
        model, now = self.model, self.model.now
        served, token = [], ""
        while True:
            reply = self.stub.ListGrants(
                pb.ListGrantsRequest(customer_key=self.customer, page_size=1000, page_token=token), timeout=30
            )
            served.extend(reply.grants)
            token = reply.next_page_token
            if not token:
                break
        live = {id(g) for g in model.grants}
        pairs: list[tuple[Grant, pb.Grant]] = []
        unmatched: list[pb.Grant] = []
        matched: set[int] = set()
        for s in served:
            g = self.by_id.get(s.grant_id)
            if g is not None and id(g) in live:
                pairs.append((g, s))
                matched.add(id(g))
            else:
                unmatched.append(s)
        still: list[pb.Grant] = []
        for s in unmatched:
            candidates = [
                g
                for g in model.grants
                if id(g) not in matched
                and g.server_id is None
                and g.source == "RECURRING"
                and s.source == pb.GRANT_SOURCE_RECURRING
                and g.subscription_id == s.subscription_id
                and g.period_index == s.period_index
                and g.effective == _time(s, "effective_time")
            ]
            candidates.sort(key=lambda g: (g.amount != _dec(s.amount), g.expire != _time(s, "expire_time")))
            if not candidates:
                still.append(s)
                continue
            g = candidates[0]
            matched.add(id(g))
            pairs.append((g, s))
            if s.status != pb.GRANT_STATUS_PENDING:
                g.server_id = s.grant_id
                self.by_id[s.grant_id] = g
        problems = []
        for g, s in pairs:
            for problem in _grant_problems(g, s, now):
                problems.append(f"grant ref {g.ref} ({s.grant_id}): {problem}")
        for s in still:
            problems.append(f"server grant not in the model: {_show(s)}")
        for g in model.grants:
            if id(g) not in matched and not (g.source == "RECURRING" and g.status_at(now) == "PENDING"):
                problems.append(f"model grant missing on the server: {g}")
        assert not problems, f"at {now.isoformat()}:\n" + "\n".join(problems)

    def _check_ledger_and_balances(self) -> None:
        model, now = self.model, self.model.now
        entries = all_entries(self.stub, self.customer)
        times = [_time(e, "effective_time") for e in entries]
        assert times == sorted(times), "ledger not ordered by effective time"
        got = Counter(
            (
                pb.LedgerEntryType.Name(e.type).removeprefix("LEDGER_ENTRY_TYPE_"),
                _dec(e.amount),
                t,
                self._ref(e.grant_id),
            )
            for e, t in zip(entries, times, strict=True)
        )
        want = Counter((e.type, e.amount, e.effective, e.grant.ref) for e in model.entries)
        assert got == want, (
            f"at {now.isoformat()} ledger differs:\n only on the server: {sorted((got - want).elements(), key=str)}"
            f"\n only in the model: {sorted((want - got).elements(), key=str)}"
        )
        for e in entries:
            g = self.by_id.get(e.grant_id)
            assert g is not None and e.subscription_id == g.subscription_id, e
        later = [e for e, t in zip(entries, times, strict=True) if t > now]
        assert not later, f"entries after now ({now}): {later}"
        per_grant = Counter((e.grant_id, e.type) for e in entries)
        for (grant_id, kind), n in per_grant.items():
            if kind != pb.LEDGER_ENTRY_TYPE_DEBIT:
                assert n == 1, f"{n} {pb.LedgerEntryType.Name(kind)} entries for grant {grant_id}"
        for grant_id in {e.grant_id for e in entries}:
            closing = (
                per_grant[(grant_id, pb.LEDGER_ENTRY_TYPE_EXPIRE)] + per_grant[(grant_id, pb.LEDGER_ENTRY_TYPE_VOID)]
            )
            assert closing <= 1, f"grant {grant_id} closed {closing} times"
        balance = self.stub.GetBalance(
            pb.GetBalanceRequest(customer_key=self.customer, currency_key=CURRENCY, view=pb.BALANCE_VIEW_WITH_GRANTS),
            timeout=30,
        ).balance
        ledger_sum = sum((_dec(e.amount) for e in entries), Decimal(0))
        assert _dec(balance.available) == ledger_sum, f"balance {balance.available} != ledger sum {ledger_sum}"
        assert _dec(balance.available) == model.balance_at(now), (balance.available, model.balance_at(now))
        order = [self._ref(g.grant_id) for g in balance.grants]
        assert order == [g.ref for g in model.active_in_burn_order(now)], f"burn-down order {order}"
        t = self._past_instant()
        if t is not None:
            past = self.stub.GetBalance(
                pb.GetBalanceRequest(customer_key=self.customer, currency_key=CURRENCY, as_of_time=to_timestamp(t)),
                timeout=30,
            ).balance
            assert _dec(past.available) == model.balance_at(t), (
                f"balance as of {t}: {past.available}, model {model.balance_at(t)}"
            )
            ledger_sum = sum((_dec(e.amount) for e, when in zip(entries, times, strict=True) if when <= t), Decimal(0))
            assert _dec(past.available) == ledger_sum, f"balance as of {t}: {past.available}, ledger sum {ledger_sum}"

    def _past_instant(self) -> datetime | None:
        """One past instant per step: the time before the last advance of the clock, else just before the
        latest change (history must not have moved)."""
        before, self.previous_now = self.previous_now, None
        if before is not None and before < self.model.now:
            return before
        events = [e.effective for e in self.model.entries if e.effective <= self.model.now]
        return max(events) - US if events else None

    def _check_subscription(self, sub: Subscription) -> None:
        """GetSubscription returns the stored (clamped, S3) schedule and end."""
        got = self.stub.GetSubscription(
            pb.GetSubscriptionRequest(subscription_id=sub.subscription_id), timeout=30
        ).subscription
        assert got.revision == sub.revision
        assert _time(got, "end_time") == sub.end, f"{sub.subscription_id} end {_time(got, 'end_time')}, model {sub.end}"
        (schedule,) = got.credit_schedules
        amounts = [(_dec(a.amount), _time(a, "effective_time")) for a in schedule.amounts]
        assert amounts == sub.amounts, f"{sub.subscription_id} schedule {amounts}, model {sub.amounts}"


def _show(s: pb.Grant) -> str:
    return (
        f"{pb.GrantSource.Name(s.source)} {s.subscription_id} k={s.period_index} amount={s.amount} used={s.used} "
        f"{_time(s, 'effective_time')}..{_time(s, 'expire_time')} {pb.GrantStatus.Name(s.status)}"
    )


def _grant_problems(g: Grant, s: pb.Grant, now: datetime) -> list[str]:
    source = "RECURRING" if s.source == pb.GRANT_SOURCE_RECURRING else "ONE_OFF"
    want = {
        "source": g.source,
        "subscription_id": g.subscription_id,
        "entitlement_key": g.entitlement_key,
        "period_index": g.period_index,
        "amount": g.amount,
        "used": g.used_at(now),
        "remaining": g.remaining_at(now),
        "effective_time": g.effective,
        "expire_time": g.expire,
        "priority": g.priority,
        "status": g.status_at(now),
        "void_time": g.void_time,
    }
    got = {
        "source": source,
        "subscription_id": s.subscription_id,
        "entitlement_key": s.entitlement_key,
        "period_index": s.period_index,
        "amount": _dec(s.amount),
        "used": _dec(s.used),
        "remaining": _dec(s.remaining),
        "effective_time": _time(s, "effective_time"),
        "expire_time": _time(s, "expire_time"),
        "priority": s.priority,
        "status": pb.GrantStatus.Name(s.status).removeprefix("GRANT_STATUS_"),
        "void_time": _time(s, "void_time"),
    }
    return [f"{key}: server {got[key]!r}, model {want[key]!r}" for key in want if got[key] != want[key]]


def test_grant_service_matches_reference_model(grant, backend):
    grant.stub.ApplyCreditCurrency(
        pb.ApplyCreditCurrencyRequest(
            currency_key=CURRENCY, revision=1, rates=[pb.CreditRate(feature_key=FEATURE, credits_per_unit=str(RATE))]
        ),
        timeout=30,
    )

    class Machine(GrantModelMachine):
        stub = grant.stub

    run_state_machine_as_test(Machine, settings=settings(SETTINGS, max_examples=EXAMPLES[backend]))
