"""What provisioning no longer reads from the database: published plan versions (kept by the
process once committed) and the handoff state of a brand-new subscription."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete

from catalog_service.adapters.orm import PlanVersionRow
from catalog_service.adapters.unit_of_work import SqlCatalogTransactions
from catalog_service.domain.model import Plan, PlanContent, PlanVersion, Subscription
from catalog_service.domain.outbox import summarize
from catalog_service.entrypoints.app import DEFINITION
from credit_common.db.engine import DatabaseSettings, create_db_engine
from credit_common.db.migrations import upgrade

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def transactions(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("catalog_reads")))
    upgrade(DEFINITION.migrations, engine)
    units = SqlCatalogTransactions(engine)
    units.write(lambda uow: uow.plans.save(Plan("pro", PlanContent(), 0, NOW, NOW, None)))
    yield units
    engine.dispose()


def version(key: str, number: int, name: str) -> PlanVersion:
    return PlanVersion(key, number, PlanContent(display_name=name), NOW)


def test_a_committed_plan_version_is_read_from_the_database_once(transactions):
    transactions.write(lambda uow: uow.plans.add_version(version("pro", 1, "Pro")))
    assert transactions.read(lambda uow: uow.plans.get_version("pro", 1)).content.display_name == "Pro"
    # Versions are never changed or deleted; were the row gone, the units of work would still know it.
    transactions.write(lambda uow: uow.session.execute(delete(PlanVersionRow).where(PlanVersionRow.plan_key == "pro")))
    assert transactions.read(lambda uow: uow.plans.get_version("pro", 1)) == version("pro", 1, "Pro")
    assert transactions.read(lambda uow: uow.plans.get_version("pro", 2)) is None


class _RolledBack(Exception):
    pass


def test_a_version_read_in_the_transaction_that_inserts_it_is_not_kept(transactions):
    def publish_then_fail(uow):
        uow.plans.add_version(version("pro", 1, "Rolled back"))
        assert uow.plans.get_version("pro", 1).content.display_name == "Rolled back"
        raise _RolledBack  # no commit: the publish is rolled back

    with pytest.raises(_RolledBack):
        transactions.write(publish_then_fail)
    transactions.write(lambda uow: uow.plans.add_version(version("pro", 1, "Pro")))
    assert transactions.read(lambda uow: uow.plans.get_version("pro", 1)).content.display_name == "Pro"


def test_the_queued_delivery_of_a_new_subscription_is_its_handoff_state(transactions):
    subscription = Subscription(
        subscription_id="sub_new",
        customer_key="acme",
        plan_key="pro",
        plan_version=1,
        start_time=NOW,
        end_time=None,
        credit_entitlements=(),
        feature_entitlements=(),
        test_clock_id="",
        revision=1,
        create_time=NOW,
    )

    def queue(uow):
        queued = uow.outbox.add_subscription(subscription, NOW)
        assert summarize([queued]) == uow.outbox.handoff_states(["sub_new"])["sub_new"]

    transactions.write(queue)
