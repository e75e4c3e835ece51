"""What the catalog's service layer needs of the outside world, as protocols: the repositories of a
unit of work (unit_of_work.py), the grant service's test clocks, and the outbox dispatcher's queue and
delivery. Their implementations are in catalog_service/adapters (SQL in repositories.py and
outbox_sql.py, the grant service's client in grant_client.py and grant_delivery.py).

Every repository works inside the transaction of its unit of work: what it writes is seen by the
reads of the same unit at once and committed (or rolled back) with it. A write that collides with a
row a concurrent transaction committed (the same key, the same request id) raises the database's
constraint violation; the transaction runner then runs the whole use case again
(credit_common.db.transactions), so a repository never catches it."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from catalog_service.domain.model import (
    CreditCurrency,
    Customer,
    Feature,
    FeatureType,
    Plan,
    PlanStatus,
    PlanVersion,
    Subscription,
)
from catalog_service.domain.outbox import (
    ClaimedDelivery,
    DeliveryOutcome,
    DeliveryRecord,
    HandoffState,
    OutboxEntry,
    Resolution,
)
from credit_common.idempotency import SeenRequest

# Lists are keyset-paginated: `after` is the sort key of the last item of the previous page (None:
# from the start), `limit` the most items returned (the service layer asks for one more than a page
# to know whether another follows: credit_common.pagination).


class FeatureRepository(Protocol):
    def get(self, key: str) -> Feature | None: ...

    def add(self, feature: Feature) -> None:
        """Insert a new feature (a key already taken: a constraint violation)."""
        ...

    def types_of(self, keys: Collection[str]) -> dict[str, FeatureType]:
        """The type of each of the features that exists (unknown keys are left out)."""
        ...

    def list(self, after: Sequence[Any] | None, limit: int) -> list[Feature]:
        """By key."""
        ...


class CreditCurrencyRepository(Protocol):
    def get(self, key: str, *, for_update: bool = False) -> CreditCurrency | None:
        """The currency with the rates in force; `for_update` locks it for the transaction (what
        makes concurrent updates of one currency take turns)."""
        ...

    def existing_keys(self, keys: Collection[str]) -> set[str]:
        """Those of `keys` that name a currency."""
        ...

    def save(self, currency: CreditCurrency, *, rates_changed: bool) -> None:
        """Insert revision 1 or update the currency to its new revision; with `rates_changed` its
        rates become a new rate set, effective at its update_time (rate sets are append-only)."""
        ...

    def list(self, after: Sequence[Any] | None, limit: int) -> list[CreditCurrency]:
        """By key."""
        ...


class PlanRepository(Protocol):
    def get(self, key: str, *, for_update: bool = False) -> Plan | None:
        """The plan and its draft; `for_update` locks it for the transaction (what serializes the
        edits, publications and archival of one plan)."""
        ...

    def save(self, plan: Plan) -> None:
        """Insert or update the plan row (its draft, latest version, archive time)."""
        ...

    def add_version(self, version: PlanVersion) -> None:
        """Insert a published version. Versions are immutable once committed: an implementation may
        keep the ones it has read (never one this transaction inserted, which may still roll back)."""
        ...

    def get_version(self, key: str, version: int) -> PlanVersion | None: ...

    def list(self, status: PlanStatus | None, after: Sequence[Any] | None, limit: int) -> list[Plan]:
        """By key; only those in `status` (None: all)."""
        ...


class CustomerRepository(Protocol):
    def get(self, key: str) -> Customer | None: ...

    def add(self, customer: Customer) -> None:
        """Insert a new customer (a key already taken: a constraint violation)."""
        ...

    def list(self, after: Sequence[Any] | None, limit: int) -> list[Customer]:
        """By key."""
        ...


class SubscriptionRepository(Protocol):
    def get(self, subscription_id: str, *, for_update: bool = False) -> Subscription | None:
        """The subscription's latest revision; `for_update` locks it for the transaction (what makes
        concurrent cancels and amendments of one subscription take turns). Never deleted."""
        ...

    def add(self, subscription: Subscription) -> None:
        """Insert revision 1 of a new subscription."""
        ...

    def save_revision(self, subscription: Subscription) -> None:
        """Store the next revision of a subscription the transaction read `for_update` (its revision
        is the stored one plus 1)."""
        ...

    def list(self, customer_key: str, plan_key: str, after: Sequence[Any] | None, limit: int) -> list[Subscription]:
        """Newest first, by (create_time, subscription_id) descending; filtered by customer and plan
        when given ('' for any)."""
        ...


class RequestIdRepository(Protocol):
    """The catalog's `RequestStore` (credit_common.idempotency): the first response of each
    (method, request_id), recorded in the transaction of its effect. A concurrent call that recorded
    the same key first makes `add` a constraint violation: the runner runs the use case again, which
    then replays that call's response."""

    def get(self, method: str, request_id: str) -> SeenRequest[bytes] | None: ...

    def add(self, method: str, request_id: str, fingerprint: str, response: bytes, now: datetime) -> None: ...


class OutboxRepository(Protocol):
    """The unit of work's side of the outbox: queue an Apply request of the grant service in the
    transaction of the change it describes (so the change and its handoff commit together, or
    neither), and read the handoff state of subscriptions. The dispatcher's side is `DeliveryQueue`."""

    def add_subscription(self, subscription: Subscription, now: datetime) -> DeliveryRecord:
        """Queue the subscription's revision for delivery; the record of the delivery queued."""
        ...

    def add_credit_currency(self, currency: CreditCurrency, now: datetime) -> None:
        """Queue the currency's revision for delivery."""
        ...

    def handoff_states(self, subscription_ids: Collection[str]) -> dict[str, HandoffState]:
        """The handoff state of each of the subscriptions (one query for all), with the late
        changes the grant service reported for it."""
        ...

    def list(
        self, *, status: str | None, kind: str | None, aggregate_key: str | None, after_id: int | None, limit: int
    ) -> list[OutboxEntry]:
        """Deliveries oldest first (by id, after `after_id`), filtered by what is given."""
        ...

    def requeue_failed(self, kind: str | None, aggregate_key: str | None, now: datetime) -> int:
        """Put the parked deliveries (of one aggregate, or all with `kind` and `aggregate_key` None)
        back in the queue, due at `now`; how many there were."""
        ...


class TestClockReader(Protocol):
    """Reads test clocks (a resource of the grant service)."""

    __test__ = False  # not a pytest test class

    def now_of(self, test_clock_id: str, field: str = "test_clock_id") -> datetime:
        """The clock's current time; raises NotFound for an unknown clock,
        InvalidArgument (on `field`, the caller's name of the id) for an invalid
        id, FailedPrecondition when the grant service refuses (e.g. test clocks
        disabled), Unavailable when it cannot be reached."""
        ...


class DeliveryQueue(Protocol):
    """The dispatcher's side of the outbox (its SQL: adapters/outbox_sql.SqlOutboxRepository).
    Claims are leases: a claimed delivery is not claimed again before `lease_until` (on PostgreSQL by
    several dispatchers at once: `FOR UPDATE SKIP LOCKED`), and the lease is the claim's fencing
    token, so an outcome is written only by the claim that still holds it."""

    def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[ClaimedDelivery]:
        """Lease up to `limit` due pending deliveries, at most one per aggregate
        (its lowest pending revision), until `lease_until`."""
        ...

    def record(self, resolutions: Sequence[Resolution]) -> list[bool]:
        """Write the outcomes; for each, whether it applied (False if the claim was fenced out)."""
        ...


class Delivery(Protocol):
    """Sends queued Apply requests to the grant service (adapters/grant_delivery.GrantDelivery)."""

    deadline: timedelta  # the longest a `deliver_many` call may take

    def deliver_many(self, kind: str, payloads: Sequence[bytes]) -> list[DeliveryOutcome]:
        """Send payloads of one kind; one outcome per payload, in order."""
        ...
