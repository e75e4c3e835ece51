"""What the service layer needs of storage, as protocols: the repositories of a
unit of work (unit_of_work.py). Their SQL implementations are in
grant_service/adapters/repositories.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from credit_common.idempotency import SeenRequest
from grant_service.domain.model import Customer, Grant, LedgerEntry, TestClock
from grant_service.domain.schedules import Pending


class TestClockRepository(Protocol):
    __test__ = False  # not a pytest test class

    def get(self, test_clock_id: str, *, for_update: bool = False) -> TestClock | None:
        """The clock (locked for the transaction with `for_update`), None if there is none."""
        ...

    def frozen_time(self, test_clock_id: str) -> datetime | None: ...

    def add(self, clock: TestClock) -> None: ...

    def set_frozen_time(self, test_clock_id: str, frozen_time: datetime) -> None: ...

    def list(self, after: tuple[datetime, str] | None, limit: int) -> list[TestClock]:
        """Up to `limit` clocks, newest first (create_time, then id, descending), after `after`."""
        ...

    def delete(self, test_clock_id: str) -> None:
        """Delete the clock and everything attached to it: customers, subscriptions, schedules,
        grants, their ledger entries, usages."""
        ...


class CustomerRepository(Protocol):
    def get(self, customer_key: str) -> Customer | None: ...

    def lock(self, customer_key: str) -> Customer | None:
        """The customer, locked for the transaction (what serializes its debits, voids and
        grants), None if there is none."""
        ...

    def pending(self, customer_key: str) -> Pending:
        """What a catch-up owes the customer: its earliest period to issue, grant to expire, grant to open."""
        ...


class CurrencyRepository(Protocol):
    def exists(self, currency_key: str) -> bool:
        """Known from ApplyCreditCurrency, a credit schedule or a grant."""
        ...


class GrantRepository(Protocol):
    def get(self, grant_id: str, *, for_update: bool = False) -> Grant | None: ...

    def customer_of(self, grant_id: str) -> str | None: ...

    def active_at(self, customer_key: str, currency_key: str, at: datetime) -> list[Grant]:
        """The customer's grants in `currency_key` active at `at`, in id order."""
        ...

    def list(
        self, customer_key: str, currency_key: str, subscription_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[Grant]:
        """Up to `limit` of the customer's grants (of a currency, of a subscription: empty is any), by
        effective time then id, after `after`."""
        ...

    def add(self, grant: Grant) -> None: ...

    def void(self, grant_id: str, void_time: datetime, reason: str) -> None:
        """Mark the grant voided at `void_time` (closed; a pending grant no longer opens)."""
        ...


class LedgerRepository(Protocol):
    def add(self, entry: dict[str, Any]) -> None:
        """Append one entry (the columns of `ledger_entries`, see issuance.ledger_entry)."""
        ...

    def debits_by_grant(self, grant_ids: Sequence[str], at: datetime | None = None) -> dict[str, Decimal]:
        """Credits debited from each grant (at or before `at`, if given)."""
        ...

    def list(
        self,
        customer_key: str,
        currency_key: str,
        start: datetime | None,
        end: datetime | None,
        entry_type: str | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[LedgerEntry]:
        """Up to `limit` of the customer's entries (of a currency: empty is any; effective in [start,
        end); of a type), by effective time then ledger order (`seq`), after `after`."""
        ...


class RequestIdRepository(Protocol):
    """The grant service's `RequestStore` (credit_common.idempotency): the id of the resource each
    request_id created or changed."""

    def get(self, scope: str, request_id: str) -> SeenRequest[str] | None: ...

    def add(self, scope: str, request_id: str, fingerprint: str, result: str, now: datetime) -> None: ...
