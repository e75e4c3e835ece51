"""The catalog's transactions run on the shared runner (credit_common.db.transactions): on PostgreSQL a
serialization failure or a deadlock runs the use case again from scratch, as the grant service's do
(before, the catalog retried only constraint violations)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from catalog_service.adapters.unit_of_work import SqlCatalogTransactions
from catalog_service.domain.model import CreditCurrency, Feature, FeatureType
from catalog_service.entrypoints.app import DEFINITION
from catalog_service.service_layer import features
from catalog_service.service_layer.context import CatalogContext
from credit_common.clock import ManualClock
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("backend", ["postgresql"])]


class _NoClocks:
    def now_of(self, test_clock_id: str, field: str = "test_clock_id") -> datetime:
        raise AssertionError("no test clock here")


@pytest.fixture
def engine(database_url_factory, backend):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("catalog_retry")))
    upgrade(DEFINITION.migrations, engine)
    yield engine
    engine.dispose()


def _feature(key: str) -> Feature:
    return Feature(key, key, FeatureType.METERED, "calls", NOW)


def test_a_use_case_that_hits_a_serialization_failure_runs_again(engine):
    transactions = SqlCatalogTransactions(engine)
    attempts = []

    class FailingOnce(SqlCatalogTransactions):
        def write(self, work):
            def first_fails(uow):
                attempts.append(1)
                result = work(uow)
                if len(attempts) == 1:  # PostgreSQL itself reports it, as it would a real one
                    uow.session.execute(
                        text("DO $$ BEGIN RAISE EXCEPTION 'could not serialize' USING ERRCODE = '40001'; END $$")
                    )
                return result

            return super().write(first_fails)

    ctx = CatalogContext(FailingOnce(engine), ManualClock(NOW), _NoClocks())
    created = features.create_feature(ctx, "api-calls", "API calls", FeatureType.METERED, "calls", None)
    assert len(attempts) == 2
    assert transactions.read(lambda uow: uow.features.get("api-calls")) == created


def test_the_loser_of_a_deadlock_runs_again_and_both_commit(engine):
    transactions = SqlCatalogTransactions(engine)
    for key in ("a", "b"):
        transactions.write(
            lambda uow, key=key: uow.currencies.save(
                CreditCurrency(key, key, "credits", (), 1, NOW, NOW), rates_changed=False
            )
        )
    both_hold_their_first_lock = threading.Barrier(2, timeout=30)
    attempts = {"a": 0, "b": 0}

    def lock_both(first: str, second: str, feature: str) -> None:
        def work(uow):
            attempts[first] += 1
            uow.currencies.get(first, for_update=True)
            if attempts[first] == 1:
                both_hold_their_first_lock.wait()
            uow.currencies.get(second, for_update=True)  # one of the two is told 40P01
            uow.features.add(_feature(feature))

        transactions.write(work)

    with ThreadPoolExecutor(2) as pool:
        done = [pool.submit(lock_both, "a", "b", "from-a"), pool.submit(lock_both, "b", "a", "from-b")]
        for future in done:
            future.result()
    assert sorted(attempts.values()) == [1, 2]
    assert transactions.read(lambda uow: [f.key for f in uow.features.list(None, 10)]) == ["from-a", "from-b"]
