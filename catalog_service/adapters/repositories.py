"""Repositories: domain objects in, domain objects out, over one SQLAlchemy
session (the unit of work's). Lists are keyset-paginated: `after` is the sort
key of the last item of the previous page."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog_service.adapters import grant_payloads, outbox_sql
from catalog_service.adapters.late_changes import late_changes_of
from catalog_service.adapters.orm import (
    CreditCurrencyRow,
    CreditRateRow,
    CustomerRow,
    FeatureRow,
    IdempotencyRow,
    OutboxDeliveryRow,
    PlanRow,
    PlanVersionRow,
    SubscriptionRow,
)
from catalog_service.domain.model import (
    AmountChange,
    Cadence,
    CancelMode,
    CreditCurrency,
    CreditEntitlement,
    CreditRate,
    Customer,
    Feature,
    FeatureEntitlement,
    FeatureType,
    Plan,
    PlanContent,
    PlanStatus,
    PlanVersion,
    ResolvedCreditEntitlement,
    ResolvedFeatureEntitlement,
    Subscription,
    VariableValue,
)
from catalog_service.domain.outbox import DeliveryRecord, HandoffState, OutboxEntry
from credit_common.db.keyset import keyset_after
from credit_common.decimals import format_decimal
from credit_common.idempotency import SeenRequest

# ------------------------------------------------------------ JSON snapshots


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else format_decimal(value)


def _undec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _variable_to_json(v: VariableValue | None) -> dict[str, Any] | None:
    return None if v is None else {"min": _dec(v.min), "max": _dec(v.max), "default": _dec(v.default)}


def _variable_from_json(d: dict[str, Any] | None) -> VariableValue | None:
    return None if d is None else VariableValue(_undec(d["min"]), _undec(d["max"]), _undec(d["default"]))


def content_to_json(c: PlanContent) -> dict[str, Any]:
    return {
        "display_name": c.display_name,
        "description": c.description,
        "custom": c.custom,
        "credit_entitlements": [
            {
                "key": e.key,
                "currency_key": e.currency_key,
                "cadence": e.cadence.value if e.cadence else None,
                "fixed_amount": _dec(e.fixed_amount),
                "variable": _variable_to_json(e.variable),
            }
            for e in c.credit_entitlements
        ],
        "feature_entitlements": [
            {
                "key": e.key,
                "feature_key": e.feature_key,
                "access": e.access,
                "fixed_limit": _dec(e.fixed_limit),
                "variable": _variable_to_json(e.variable),
            }
            for e in c.feature_entitlements
        ],
    }


def content_from_json(d: dict[str, Any]) -> PlanContent:
    return PlanContent(
        display_name=d["display_name"],
        description=d["description"],
        custom=d["custom"],
        credit_entitlements=tuple(
            CreditEntitlement(
                e["key"],
                e["currency_key"],
                Cadence(e["cadence"]) if e["cadence"] else None,
                _undec(e["fixed_amount"]),
                _variable_from_json(e["variable"]),
            )
            for e in d["credit_entitlements"]
        ),
        feature_entitlements=tuple(
            FeatureEntitlement(
                e["key"], e["feature_key"], e["access"], _undec(e["fixed_limit"]), _variable_from_json(e["variable"])
            )
            for e in d["feature_entitlements"]
        ),
    )


# ------------------------------------------------------------- repositories


class SqlFeatureRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    @staticmethod
    def _to_domain(row: FeatureRow) -> Feature:
        return Feature(row.key, row.display_name, FeatureType(row.type), row.unit_name, row.create_time)

    def add(self, feature: Feature) -> None:
        self.session.add(
            FeatureRow(
                key=feature.key,
                display_name=feature.display_name,
                type=feature.type.value,
                unit_name=feature.unit_name,
                create_time=feature.create_time,
            )
        )
        self.session.flush()

    def get(self, key: str) -> Feature | None:
        row = self.session.get(FeatureRow, key)
        return self._to_domain(row) if row else None

    def types_of(self, keys: Collection[str]) -> dict[str, FeatureType]:
        if not keys:
            return {}
        rows = self.session.execute(select(FeatureRow.key, FeatureRow.type).where(FeatureRow.key.in_(list(keys))))
        return {key: FeatureType(type_) for key, type_ in rows}

    def list(self, after: Sequence[Any] | None, limit: int) -> list[Feature]:
        rows = self.session.scalars(
            select(FeatureRow).where(keyset_after((FeatureRow.key,), after)).order_by(FeatureRow.key).limit(limit)
        )
        return [self._to_domain(r) for r in rows]


@dataclass(frozen=True)
class RateSet:
    """One entry of a currency's rate history."""

    revision: int
    effective_time: datetime
    rates: tuple[CreditRate, ...]


class SqlCreditCurrencyRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _rates(self, key: str, revision: int) -> tuple[CreditRate, ...]:
        rows = self.session.scalars(
            select(CreditRateRow)
            .where(CreditRateRow.currency_key == key, CreditRateRow.revision == revision)
            .order_by(CreditRateRow.feature_key)
        )
        return tuple(CreditRate(r.feature_key, r.credits_per_unit) for r in rows)

    def _to_domain(self, row: CreditCurrencyRow) -> CreditCurrency:
        return CreditCurrency(
            row.key,
            row.display_name,
            row.unit_name,
            self._rates(row.key, row.rates_revision),
            row.revision,
            row.create_time,
            row.update_time,
        )

    def get(self, key: str, *, for_update: bool = False) -> CreditCurrency | None:
        row = self.session.get(CreditCurrencyRow, key, with_for_update=for_update or None)
        return self._to_domain(row) if row else None

    def existing_keys(self, keys: Collection[str]) -> set[str]:
        if not keys:
            return set()
        return set(self.session.scalars(select(CreditCurrencyRow.key).where(CreditCurrencyRow.key.in_(list(keys)))))

    def save(self, currency: CreditCurrency, *, rates_changed: bool) -> None:
        """Insert (revision 1) or update the currency; a rate change records a
        new rate set effective at the currency's update_time."""
        row = self.session.get(CreditCurrencyRow, currency.key)
        if row is None:
            row = CreditCurrencyRow(key=currency.key, create_time=currency.create_time, rates_revision=0)
            self.session.add(row)
        row.display_name = currency.display_name
        row.unit_name = currency.unit_name
        row.revision = currency.revision
        row.update_time = currency.update_time
        if rates_changed:
            row.rates_revision = currency.revision
            for rate in currency.rates:
                self.session.add(
                    CreditRateRow(
                        currency_key=currency.key,
                        revision=currency.revision,
                        feature_key=rate.feature_key,
                        credits_per_unit=rate.credits_per_unit,
                        effective_time=currency.update_time,
                    )
                )
        self.session.flush()

    def rate_history(self, key: str) -> list[RateSet]:
        """Every rate set the currency has had, oldest first (an empty set is not recorded)."""
        rows = self.session.scalars(
            select(CreditRateRow)
            .where(CreditRateRow.currency_key == key)
            .order_by(CreditRateRow.revision, CreditRateRow.feature_key)
        )
        history: dict[int, RateSet] = {}
        for r in rows:
            previous = history.get(r.revision)
            rates = (
                (*previous.rates, CreditRate(r.feature_key, r.credits_per_unit))
                if previous
                else (CreditRate(r.feature_key, r.credits_per_unit),)
            )
            history[r.revision] = RateSet(r.revision, r.effective_time, rates)
        return list(history.values())

    def list(self, after: Sequence[Any] | None, limit: int) -> list[CreditCurrency]:
        rows = self.session.scalars(
            select(CreditCurrencyRow)
            .where(keyset_after((CreditCurrencyRow.key,), after))
            .order_by(CreditCurrencyRow.key)
            .limit(limit)
        )
        return [self._to_domain(r) for r in rows]


class PublishedVersions:
    """Plan versions already read from one database. Published versions are only ever inserted,
    never changed: a version read once, committed by another transaction, is the same forever
    (in every replica), so it need not be read and parsed again for every subscription
    provisioned. Bounded: past `limit` versions it starts over. Thread-safe (dict operations)."""

    def __init__(self, limit: int = 1024) -> None:
        self._versions: dict[tuple[str, int], PlanVersion] = {}
        self._limit = limit

    def get(self, key: str, version: int) -> PlanVersion | None:
        return self._versions.get((key, version))

    def keep(self, found: PlanVersion) -> None:
        if len(self._versions) >= self._limit:
            self._versions.clear()
        self._versions[(found.plan_key, found.version)] = found


class SqlPlanRepository:
    def __init__(self, session: Session, published: PublishedVersions | None = None) -> None:
        self.session = session
        self._published = published or PublishedVersions()
        self._added_versions: set[tuple[str, int]] = set()  # inserted by this (uncommitted) transaction

    @staticmethod
    def _to_domain(row: PlanRow) -> Plan:
        return Plan(
            row.key,
            content_from_json(row.draft),
            row.latest_version,
            row.create_time,
            row.update_time,
            row.archive_time,
        )

    def get(self, key: str, *, for_update: bool = False) -> Plan | None:
        stmt = select(PlanRow).where(PlanRow.key == key)
        if for_update:
            stmt = stmt.with_for_update()
        row = self.session.scalars(stmt).one_or_none()
        return self._to_domain(row) if row else None

    def save(self, plan: Plan) -> None:
        row = self.session.get(PlanRow, plan.key)
        if row is None:
            row = PlanRow(key=plan.key, create_time=plan.create_time)
            self.session.add(row)
        row.draft = content_to_json(plan.draft)
        row.latest_version = plan.latest_version
        row.update_time = plan.update_time
        row.archive_time = plan.archive_time
        self.session.flush()

    def add_version(self, version: PlanVersion) -> None:
        self._added_versions.add((version.plan_key, version.version))
        self.session.add(
            PlanVersionRow(
                plan_key=version.plan_key,
                version=version.version,
                content=content_to_json(version.content),
                publish_time=version.publish_time,
            )
        )
        self.session.flush()

    def get_version(self, key: str, version: int) -> PlanVersion | None:
        committed = (key, version) not in self._added_versions
        cached = self._published.get(key, version) if committed else None
        if cached is not None:
            return cached
        row = self.session.get(PlanVersionRow, (key, version))
        if row is None:
            return None
        found = PlanVersion(row.plan_key, row.version, content_from_json(row.content), row.publish_time)
        if committed:
            self._published.keep(found)
        return found

    def list(self, status: PlanStatus | None, after: Sequence[Any] | None, limit: int) -> list[Plan]:
        stmt = select(PlanRow).where(keyset_after((PlanRow.key,), after))
        if status is PlanStatus.ARCHIVED:
            stmt = stmt.where(PlanRow.archive_time.is_not(None))
        elif status is PlanStatus.PUBLISHED:
            stmt = stmt.where(PlanRow.archive_time.is_(None), PlanRow.latest_version > 0)
        elif status is PlanStatus.DRAFT:
            stmt = stmt.where(PlanRow.archive_time.is_(None), PlanRow.latest_version == 0)
        rows = self.session.scalars(stmt.order_by(PlanRow.key).limit(limit))
        return [self._to_domain(r) for r in rows]


class SqlCustomerRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    @staticmethod
    def _to_domain(row: CustomerRow) -> Customer:
        return Customer(row.key, row.display_name, row.test_clock_id, row.create_time)

    def add(self, customer: Customer) -> None:
        self.session.add(
            CustomerRow(
                key=customer.key,
                display_name=customer.display_name,
                test_clock_id=customer.test_clock_id,
                create_time=customer.create_time,
            )
        )
        self.session.flush()

    def get(self, key: str) -> Customer | None:
        row = self.session.get(CustomerRow, key)
        return self._to_domain(row) if row else None

    def list(self, after: Sequence[Any] | None, limit: int) -> list[Customer]:
        rows = self.session.scalars(
            select(CustomerRow).where(keyset_after((CustomerRow.key,), after)).order_by(CustomerRow.key).limit(limit)
        )
        return [self._to_domain(r) for r in rows]


def _entitlements_to_json(s: Subscription) -> dict[str, Any]:
    return {
        "credit": [
            {
                "key": e.key,
                "currency_key": e.currency_key,
                "cadence": e.cadence.value,
                "amount": format_decimal(e.amount),
                "negotiated": e.negotiated,
                "changes": [[format_decimal(c.amount), c.effective_time.isoformat()] for c in e.changes],
            }
            for e in s.credit_entitlements
        ],
        "feature": [
            {
                "key": e.key,
                "feature_key": e.feature_key,
                "access": e.access,
                "limit": _dec(e.limit),
                "negotiated": e.negotiated,
            }
            for e in s.feature_entitlements
        ],
    }


class SqlSubscriptionRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    @staticmethod
    def _to_domain(row: SubscriptionRow) -> Subscription:
        ents = row.entitlements
        return Subscription(
            subscription_id=row.subscription_id,
            customer_key=row.customer_key,
            plan_key=row.plan_key,
            plan_version=row.plan_version,
            start_time=row.start_time,
            end_time=row.end_time,
            credit_entitlements=tuple(
                ResolvedCreditEntitlement(
                    e["key"],
                    e["currency_key"],
                    Cadence(e["cadence"]),
                    Decimal(e["amount"]),
                    e["negotiated"],
                    tuple(AmountChange(Decimal(a), datetime.fromisoformat(t)) for a, t in e.get("changes", ())),
                )
                for e in ents["credit"]
            ),
            feature_entitlements=tuple(
                ResolvedFeatureEntitlement(e["key"], e["feature_key"], e["access"], _undec(e["limit"]), e["negotiated"])
                for e in ents["feature"]
            ),
            test_clock_id=row.test_clock_id,
            revision=row.revision,
            create_time=row.create_time,
            cancel_time=row.cancel_time,
            cancel_mode=CancelMode(row.cancel_mode) if row.cancel_mode else None,
        )

    def add(self, s: Subscription) -> None:
        self.session.add(
            SubscriptionRow(
                subscription_id=s.subscription_id,
                customer_key=s.customer_key,
                plan_key=s.plan_key,
                plan_version=s.plan_version,
                start_time=s.start_time,
                end_time=s.end_time,
                test_clock_id=s.test_clock_id,
                revision=s.revision,
                entitlements=_entitlements_to_json(s),
                create_time=s.create_time,
                cancel_time=s.cancel_time,
                cancel_mode=s.cancel_mode.value if s.cancel_mode else None,
            )
        )
        self.session.flush()

    def get(self, subscription_id: str, *, for_update: bool = False) -> Subscription | None:
        stmt = select(SubscriptionRow).where(SubscriptionRow.subscription_id == subscription_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = self.session.scalars(stmt).one_or_none()
        return self._to_domain(row) if row else None

    def save_revision(self, s: Subscription) -> None:
        """Store the next revision of an existing subscription (what a cancel or
        an amendment may change); the caller read it `for_update`."""
        row = self.session.get(SubscriptionRow, s.subscription_id)
        assert row is not None and row.revision == s.revision - 1
        row.end_time = s.end_time
        row.entitlements = _entitlements_to_json(s)
        row.revision = s.revision
        row.cancel_time = s.cancel_time
        row.cancel_mode = s.cancel_mode.value if s.cancel_mode else None
        self.session.flush()

    def list(self, customer_key: str, plan_key: str, after: Sequence[Any] | None, limit: int) -> list[Subscription]:
        """Newest first: by (create_time, subscription_id) descending."""
        stmt = select(SubscriptionRow)
        if customer_key:
            stmt = stmt.where(SubscriptionRow.customer_key == customer_key)
        if plan_key:
            stmt = stmt.where(SubscriptionRow.plan_key == plan_key)
        stmt = stmt.where(
            keyset_after((SubscriptionRow.create_time, SubscriptionRow.subscription_id), after, descending=True)
        )
        stmt = stmt.order_by(SubscriptionRow.create_time.desc(), SubscriptionRow.subscription_id.desc()).limit(limit)
        return [self._to_domain(r) for r in self.session.scalars(stmt)]


class SqlRequestIdRepository:
    """The catalog's `RequestStore` (credit_common.idempotency): the first response of each request_id."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, method: str, request_id: str) -> SeenRequest[bytes] | None:
        row = self.session.get(IdempotencyRow, (method, request_id))
        return SeenRequest(row.fingerprint, row.response) if row else None

    def add(self, method: str, request_id: str, fingerprint: str, response: bytes, now: datetime) -> None:
        self.session.add(
            IdempotencyRow(
                method=method, request_id=request_id, fingerprint=fingerprint, response=response, create_time=now
            )
        )
        self.session.flush()


# ------------------------------------------------------------------- outbox


class SqlHandoffRepository:
    """The port `OutboxRepository` (service_layer/ports.py), the unit of work's side of the outbox
    (`outbox_deliveries`): queue an Apply request in the transaction of the change it describes, and
    read the handoff state of subscriptions. The dispatcher's side (claims, outcomes) is
    `outbox_sql.SqlOutboxRepository`; both go through `outbox_sql`."""

    table = OutboxDeliveryRow.__table__

    def __init__(self, session: Session) -> None:
        self.session = session

    def add_subscription(self, subscription: Subscription, now: datetime) -> DeliveryRecord:
        return outbox_sql.add_apply_request(
            self.session, self.table, grant_payloads.apply_subscription_request(subscription), now=now
        )

    def add_credit_currency(self, currency: CreditCurrency, now: datetime) -> None:
        outbox_sql.add_apply_request(
            self.session, self.table, grant_payloads.apply_credit_currency_request(currency), now=now
        )

    def handoff_states(self, subscription_ids: Collection[str]) -> dict[str, HandoffState]:
        states = outbox_sql.handoff_states(self.session, self.table, subscription_ids)
        late = late_changes_of(self.session, states)
        return {key: replace(state, late_changes=late.get(key, ())) for key, state in states.items()}

    def list(
        self, *, status: str | None, kind: str | None, aggregate_key: str | None, after_id: int | None, limit: int
    ) -> list[OutboxEntry]:
        return outbox_sql.list_entries(
            self.session,
            self.table,
            status=status,
            kind=kind,
            aggregate_key=aggregate_key,
            after_id=after_id,
            limit=limit,
        )

    def requeue_failed(self, kind: str | None, aggregate_key: str | None, now: datetime) -> int:
        return outbox_sql.requeue_failed(self.session, self.table, kind, aggregate_key, now)
