"""Balance alerts: their levels set over RPC (SetBalanceAlerts, GetBalanceAlerts,
ClearBalanceAlerts) and their evaluation in the transaction of every change of a balance
(grant_service.domain.alerts; docs/grant-semantics.md#balance-alerts).

A (customer, currency) with levels in force is evaluated after a change once its state at the
change's instant is final: always for a debit, a void, a one-off grant and an applied revision
(their customer is caught up first); for the catch-up, in the transaction that leaves nothing of
the customer due at the catch-up's now (an expiry and the next period's grant at the same instant
are then one evaluation: no spurious low-then-recovered pair). The state evaluated is stored;
the next evaluation compares with it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from credit_common.errors import FieldViolation, InvalidArgument
from credit_common.ids import new_ids
from grant_service.domain.alerts import MAX_LEVELS, AlertLevel, BalanceState, alert_event, below, crossings
from grant_service.domain.clocks import ClockKey
from grant_service.domain.events import NewEvent
from grant_service.service_layer.unit_of_work import GrantUnitOfWork

if TYPE_CHECKING:
    from grant_service.service_layer.context import GrantContext

Pair = tuple[str, str]


def crossed_by_debit(
    uow: GrantUnitOfWork,
    clock_key: ClockKey,
    now: datetime,
    pair: Pair,
    before: BalanceState,
    after: BalanceState,
    version: int,
) -> list[NewEvent]:
    """The alert events of a debit of `pair` from `before` to `after` (not written: the debit writes
    them with its own statement). A debit that crosses no level (the common case) reads and writes
    nothing: the stored state is then still that of `before` (every change is evaluated once final)."""
    levels = uow.alerts.in_force(pair[0], pair[1], version)
    if levels is None or below(levels, before) == below(levels, after):
        return []
    return evaluate(
        uow,
        clock_key,
        now,
        [pair[0]],
        version=version,
        after={pair: after},
        write=False,
        previous_balance=before.balance,
    )


def evaluate(
    uow: GrantUnitOfWork,
    clock_key: ClockKey,
    now: datetime,
    customer_keys: Iterable[str],
    *,
    version: int | None = None,
    after: Mapping[Pair, BalanceState] | None = None,
    only_if_complete: bool = False,
    write: bool = True,
    previous_balance: Decimal | None = None,
    occurred: Mapping[str, datetime] | None = None,
) -> list[NewEvent]:
    """Evaluate at `now` the alerts of the customers' currencies that have levels, and write their
    events. `after`: the only pairs that changed and their states now, if the caller knows them
    (else every currency of the customers, read from their open grants); `only_if_complete`: skip
    the customers with something still due at `now` (a catch-up under way); `write`: False leaves
    writing the events to the caller (the states are saved either way); `occurred`: per customer,
    the instant of the last change evaluated if before `now` (a catch-up's), the events' occurred
    time (default: `now`)."""
    version = uow.alerts.version() if version is None else version
    customers = sorted(set(customer_keys))
    if not version or not customers:
        return []
    if only_if_complete:
        pending = uow.customers.pending_many(customers)
        customers = [c for c in customers if c in pending and not pending[c].due(now)]
        if not customers:
            return []
    stored = uow.alerts.states_of(customers)
    if after is not None:
        current = dict(after)
    else:
        current = uow.alerts.current_of(customers)
        for pair in stored:
            current.setdefault(pair, _NOTHING)  # no open grant left in that currency

    def at(customer_key: str) -> datetime:
        return (occurred or {}).get(customer_key, now)

    events: list[NewEvent] = []
    changed: dict[Pair, frozenset[str]] = {}
    for pair in sorted(current):
        levels = uow.alerts.in_force(pair[0], pair[1], version)
        if levels is None:
            continue
        before, state = stored.get(pair), current[pair]
        found = crossings(levels, before, state)
        events.extend(
            alert_event(c, pair[0], pair[1], clock_key, at(pair[0]), state, event_id, previous_balance)
            for c, event_id in zip(found, new_ids("evt", len(found)), strict=True)
        )
        flags = below(levels, state)
        if before != flags:
            changed[pair] = flags
    if write:
        uow.events.add(events)
    uow.alerts.save_states(changed)
    return events


_NOTHING = BalanceState(Decimal(0), Decimal(0))


# ------------------------------------------------------------------------------ the RPCs


@dataclass(frozen=True)
class AlertSettings:
    """What GetBalanceAlerts answers: the customer's own levels, the currency's default, and the
    levels in force (own, else default; None: none)."""

    customer_key: str
    currency_key: str
    own: tuple[AlertLevel, ...] | None
    default: tuple[AlertLevel, ...] | None

    @property
    def in_force(self) -> tuple[AlertLevel, ...] | None:
        return self.own if self.own is not None else self.default


def check_levels(levels: Sequence[AlertLevel], field: str = "levels") -> None:
    violations = []
    if len(levels) > MAX_LEVELS:
        violations.append(FieldViolation(field, f"at most {MAX_LEVELS} levels"))
    for i, level in enumerate(levels):
        if level.value < 0:
            violations.append(FieldViolation(f"{field}[{i}]", "must not be negative", "NEGATIVE_THRESHOLD"))
        elif level.kind == "percent" and level.value > 100:
            violations.append(FieldViolation(f"{field}[{i}].percent", "must be at most 100", "PERCENT_OVER_100"))
    if violations:
        raise InvalidArgument("the request has invalid fields", violations=violations)


def _read(uow: GrantUnitOfWork, customer_key: str, currency_key: str) -> AlertSettings:
    own, default = uow.alerts.configured(customer_key, currency_key)
    return AlertSettings(customer_key, currency_key, own, default)


def set_balance_alerts(
    ctx: GrantContext, customer_key: str, currency_key: str, levels: Sequence[AlertLevel] | None
) -> AlertSettings:
    """Set (None: clear) the levels of a customer ('': the currency's default) in a currency. Takes
    effect at the next change of a balance: nothing fires at the time of setting."""
    if levels is not None:
        check_levels(levels)

    def work(uow: GrantUnitOfWork) -> AlertSettings:
        uow.alerts.set(customer_key, currency_key, tuple(levels) if levels is not None else None, ctx.clock.now())
        return _read(uow, customer_key, currency_key)

    return ctx.transactions.write(work)


def get_balance_alerts(ctx: GrantContext, customer_key: str, currency_key: str) -> AlertSettings:
    return ctx.transactions.read(lambda uow: _read(uow, customer_key, currency_key))


def last_changes(changes: Iterable[tuple[str, datetime | None]]) -> dict[str, datetime]:
    """Per customer, the latest of the instants of its changes (customer_key, instant)."""
    latest: dict[str, datetime] = {}
    for customer_key, instant in changes:
        if instant is not None and (customer_key not in latest or instant > latest[customer_key]):
            latest[customer_key] = instant
    return latest
