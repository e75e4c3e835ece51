"""An independent reference model of one customer of the grant service, one currency.

It encodes DOMAIN.md and the lead's decisions S1-S6 of issue 13 (not the service's code): periods
are computed with dateutil's relativedelta from the anchor every time; grants, ledger entries,
debits and balances are kept as plain Python values, exactly (Decimal). `test_model.py` drives the
real service and this model with the same steps and compares them after every step.

The model is operational: the state after a step depends on the order of events (S4: a change never
rewrites the past), so each operation mutates the state the way the decisions say:
- catch_up(t): every period whose start has come is issued with the segments of the schedule then
  stored (S1); a grant becomes effective (GRANT entry at its effective time) once effective <= now
  and expires (EXPIRE of its remainder at its expiry) once expiry <= now (S2);
- apply: a new revision of an existing subscription is clamped (S3: before now the old schedule,
  from now on the new one) and reconciled with the grants already stored (S4);
- void, create_grant, report_usage as DOMAIN.md says (burn-down order, RESOURCE_EXHAUSTED whole).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from dateutil.relativedelta import relativedelta

RECURRING_PRIORITY = 100
CADENCE_MONTHS = {"MONTHLY": 1, "YEARLY": 12}


def period_start(anchor: datetime, cadence: str, k: int) -> datetime:
    """start(k) = anchor + k*P, from the anchor every time (relativedelta clamps the day)."""
    return anchor + relativedelta(months=k * CADENCE_MONTHS[cadence])


def period_index_at(anchor: datetime, cadence: str, t: datetime) -> int:
    """k with start(k) <= t < start(k+1); -1 before the anchor."""
    if t < anchor:
        return -1
    k = 0
    while period_start(anchor, cadence, k + 1) <= t:
        k += 1
    return k


@dataclass
class Segment:
    period_index: int
    amount: Decimal
    effective: datetime
    expire: datetime


@dataclass
class Subscription:
    subscription_id: str
    entitlement_key: str
    anchor: datetime
    cadence: str
    amounts: list[tuple[Decimal, datetime]]  # the stored (effective, clamped) schedule
    end: datetime | None
    revision: int = 1
    issued_until: int = 0  # first period not issued yet

    def amount_at(self, t: datetime, amounts: list[tuple[Decimal, datetime]] | None = None) -> Decimal:
        amounts = self.amounts if amounts is None else amounts
        current = amounts[0][0]
        for amount, effective in amounts:
            if effective <= t:
                current = amount
        return current

    def start(self, k: int) -> datetime:
        return period_start(self.anchor, self.cadence, k)

    def has_period(self, k: int) -> bool:
        return self.end is None or self.start(k) < self.end

    def segments(self, k: int) -> list[Segment]:
        """S1: the grants of period k: a new segment at every amount effective strictly inside it,
        everything cut at the end time."""
        start, stop = self.start(k), self.start(k + 1)
        if self.end is not None:
            if start >= self.end:
                return []
            stop = min(stop, self.end)
        bounds = [start, *sorted({t for _, t in self.amounts if start < t < stop})]
        ends = [*bounds[1:], stop]
        return [Segment(k, self.amount_at(b), b, e) for b, e in zip(bounds, ends, strict=True)]

    def current_period(self, now: datetime) -> int:
        return period_index_at(self.anchor, self.cadence, now)


@dataclass
class Grant:
    ref: int
    source: str  # RECURRING or ONE_OFF
    amount: Decimal
    effective: datetime
    expire: datetime | None
    priority: int
    subscription_id: str = ""
    entitlement_key: str = ""
    period_index: int = 0
    void_time: datetime | None = None
    debits: list[tuple[datetime, Decimal]] = field(default_factory=list)
    opened: bool = False  # its GRANT entry is written
    was_pending: bool = False  # stored before it was effective
    closed: bool = False  # its EXPIRE or VOID entry is written
    server_id: str | None = None

    def used_at(self, t: datetime) -> Decimal:
        return sum((amount for when, amount in self.debits if when <= t), Decimal(0))

    def active_at(self, t: datetime) -> bool:
        return (
            self.effective <= t
            and (self.expire is None or t < self.expire)
            and (self.void_time is None or t < self.void_time)
        )

    def status_at(self, t: datetime) -> str:
        if self.void_time is not None and self.void_time <= t:
            return "VOIDED"
        if self.effective > t:
            return "PENDING"
        if self.expire is not None and self.expire <= t:
            return "EXPIRED"
        return "ACTIVE"

    def remaining_at(self, t: datetime) -> Decimal:
        return self.amount - self.used_at(t) if self.status_at(t) in ("ACTIVE", "PENDING") else Decimal(0)

    def burn_key(self) -> tuple:
        """DOMAIN.md: lower priority first, then soonest expiry (never last), then oldest
        (effective time, then creation: the server's time-ordered id)."""
        return (
            self.priority,
            self.expire is None,
            self.expire or self.effective,
            self.effective,
            self.server_id or "",
        )


@dataclass
class Entry:
    type: str
    amount: Decimal
    effective: datetime
    grant: Grant


@dataclass
class Clamped:
    entitlement_key: str  # empty for the end time
    requested: datetime
    applied: datetime


@dataclass
class UsageResult:
    credits: Decimal
    debits: list[tuple[Grant, Decimal]]
    balance_after: Decimal
    time: datetime


class Insufficient(Exception):
    def __init__(self, available: Decimal) -> None:
        super().__init__(f"{available} available")
        self.available = available


class Model:
    """One customer on one test clock, one currency."""

    def __init__(self, now: datetime, rate: Decimal) -> None:
        self.now = now
        self.rate = rate
        self.subs: dict[str, Subscription] = {}
        self.grants: list[Grant] = []  # withdrawn grants are removed
        self.entries: list[Entry] = []
        self.usages: dict[str, tuple[Decimal, UsageResult]] = {}  # request_id -> (quantity, result)
        self._refs = itertools.count(1)
        self.notes: list[str] = []  # what the last operations did, for the test's statistics

    # ---------------------------------------------------------------- time

    def catch_up(self) -> None:
        """S2: issue every period started at now; open what is effective; expire what is over."""
        now = self.now
        for sub in self.subs.values():
            while sub.has_period(sub.issued_until) and sub.start(sub.issued_until) <= now:
                for seg in sub.segments(sub.issued_until):
                    self._recurring(sub, seg)
                    self.notes.append("period issued" if seg.expire > now else "period issued already over")
                sub.issued_until += 1
        for g in self.grants:
            if not g.opened and g.effective <= now:
                if g.was_pending:
                    self.notes.append(f"pending {g.source} grant opened")
                g.opened = True
                self.entries.append(Entry("GRANT", g.amount, g.effective, g))
            if g.opened and not g.closed and g.expire is not None and g.expire <= now:
                self._close(g, "EXPIRE", g.expire)

    def advance(self, to: datetime) -> None:
        assert to >= self.now
        self.now = to
        self.catch_up()

    def _recurring(self, sub: Subscription, seg: Segment) -> Grant:
        g = Grant(
            ref=next(self._refs),
            source="RECURRING",
            amount=seg.amount,
            effective=seg.effective,
            expire=seg.expire,
            priority=RECURRING_PRIORITY,
            subscription_id=sub.subscription_id,
            entitlement_key=sub.entitlement_key,
            period_index=seg.period_index,
            was_pending=seg.effective > self.now,
        )
        self.grants.append(g)
        return g

    def _close(self, g: Grant, kind: str, at: datetime) -> None:
        g.closed = True
        self.entries.append(Entry(kind, -(g.amount - g.used_at(at)), at, g))

    def next_instant(self) -> datetime | None:
        """The next instant after now at which something happens (a period starts, a grant opens or expires)."""
        candidates = []
        for sub in self.subs.values():
            if sub.has_period(sub.issued_until):
                candidates.append(sub.start(sub.issued_until))
        for g in self.grants:
            if not g.opened:
                candidates.append(g.effective)
            elif not g.closed and g.expire is not None:
                candidates.append(g.expire)
        later = [t for t in candidates if t > self.now]
        return min(later) if later else None

    # ------------------------------------------------------- subscriptions

    def apply(
        self,
        subscription_id: str,
        entitlement_key: str,
        anchor: datetime,
        cadence: str,
        amounts: list[tuple[Decimal, datetime]],
        end: datetime | None,
    ) -> list[Clamped]:
        """ApplySubscription of the next revision; the clamped changes it must report (S3)."""
        now = self.now
        sub = self.subs.get(subscription_id)
        if sub is None:  # revision 1 is not a change: a start in the past is issued as history (S2)
            self.subs[subscription_id] = Subscription(subscription_id, entitlement_key, anchor, cadence, amounts, end)
            self.catch_up()
            return []
        clamped: list[Clamped] = []
        old = list(sub.amounts)
        # S3: the old schedule before now, the new one from now on.
        effective = [(a, t) for a, t in old if t < now]
        if sub.amount_at(now, amounts) != sub.amount_at(now, old) and all(t != now for _, t in amounts):
            effective.append((sub.amount_at(now, amounts), now))
        effective += [(a, t) for a, t in amounts if t >= now]
        clamped += [Clamped(entitlement_key, t, now) for a, t in amounts if t < now and (a, t) not in old]
        new_end = end
        if end != sub.end and end is not None and end < now:
            new_end = now
            clamped.append(Clamped("", end, now))
        self.notes += ["clamped end" if c.entitlement_key == "" else "clamped amount" for c in clamped]
        sub.amounts, sub.end, sub.revision = effective, new_end, sub.revision + 1
        self._reconcile(sub)
        self.catch_up()
        return clamped

    def _reconcile(self, sub: Subscription) -> None:
        """S4: bring the grants already stored in line with the (clamped) schedule at now."""
        now = self.now
        for g in [g for g in self.grants if g.subscription_id == sub.subscription_id]:
            if g.closed:
                continue  # history
            if not g.opened:
                self.grants.remove(g)  # pending: re-derived from the new schedule
                self.notes.append("pending segment re-derived")
                continue
            containing = [d for d in sub.segments(g.period_index) if d.effective <= g.effective < d.expire]
            d = containing[0] if containing else None
            if d is not None and d.effective == g.effective and d.amount == g.amount:
                if g.expire != d.expire:
                    self.notes.append("open grant cut at now" if d.expire <= now else "open grant expiry moved")
                g.expire = d.expire
                if g.expire <= now:
                    self._close(g, "EXPIRE", g.expire)
                continue
            # The change lands exactly where the grant starts: a zero-length grant.
            assert g.effective == now, (g, d, now)
            g.expire = now
            self.notes.append("zero-length grant kept (debited)" if g.debits else "zero-length grant withdrawn")
            if g.debits:
                self._close(g, "EXPIRE", now)
            else:  # withdrawn: it never counted anywhere
                self.grants.remove(g)
                self.entries = [e for e in self.entries if e.grant is not g]
        k = sub.current_period(now)
        if 0 <= k < sub.issued_until:
            for d in sub.segments(k):
                if d.effective < now:
                    continue
                # The segment is already there (open, or voided: a void is not a change) unless its
                # amount changes at its start (or its old grant was withdrawn or cut to zero length).
                same = [
                    g
                    for g in self.grants
                    if g.subscription_id == sub.subscription_id
                    and g.period_index == k
                    and g.effective == d.effective
                    and g.amount == d.amount
                    and g.expire != g.effective
                ]
                if not same:
                    self._recurring(sub, d)
                    voided = any(
                        g.void_time is not None and g.subscription_id == sub.subscription_id for g in self.grants
                    )
                    self.notes.append(
                        ("segment issued at now" if d.effective == now else "pending segment issued")
                        + (" after a void" if voided else "")
                    )

    # ----------------------------------------------------------- operators

    def void(self, g: Grant) -> None:
        assert g.status_at(self.now) == "ACTIVE"
        g.void_time = self.now
        self._close(g, "VOID", self.now)
        self.notes.append(f"void of a {g.source} grant")

    def create_grant(
        self, amount: Decimal, effective: datetime | None, expire: datetime | None, priority: int | None
    ) -> Grant:
        g = Grant(
            ref=next(self._refs),
            source="ONE_OFF",
            amount=amount,
            effective=effective or self.now,
            expire=expire,
            priority=RECURRING_PRIORITY if priority is None else priority,
            was_pending=effective is not None and effective > self.now,
        )
        self.grants.append(g)
        self.notes.append("one-off grant " + ("pending" if g.effective > self.now else "effective now"))
        self.catch_up()
        return g

    # --------------------------------------------------------------- usage

    def report_usage(self, request_id: str, quantity: Decimal) -> UsageResult:
        """The debit of `quantity` units; Insufficient (nothing debited) if the balance does not cover it.
        The same request_id again returns the first accepted result (S6: a rejected one records nothing)."""
        seen = self.usages.get(request_id)
        if seen is not None:
            assert seen[0] == quantity
            self.notes.append("debit replayed")
            return seen[1]
        now = self.now
        credits = quantity * self.rate
        active = sorted((g for g in self.grants if g.active_at(now)), key=Grant.burn_key)
        total = sum((g.amount - g.used_at(now) for g in active), Decimal(0))
        if total < credits:
            self.notes.append("debit exceeds balance")
            raise Insufficient(total)
        left, taken = credits, []
        for g in active:
            if left <= 0:
                break
            take = min(g.amount - g.used_at(now), left)
            if take > 0:
                taken.append((g, take))
                left -= take
        self.notes.append(f"debit over {len(taken)} grant(s)")
        for g, take in taken:
            g.debits.append((now, take))
            self.entries.append(Entry("DEBIT", -take, now, g))
        result = UsageResult(credits, taken, total - credits, now)
        self.usages[request_id] = (quantity, result)
        return result

    # ------------------------------------------------------------ balances

    def balance_at(self, t: datetime) -> Decimal:
        return sum((g.amount - g.used_at(t) for g in self.grants if g.active_at(t)), Decimal(0))

    def active_in_burn_order(self, t: datetime) -> list[Grant]:
        return sorted((g for g in self.grants if g.active_at(t)), key=Grant.burn_key)
