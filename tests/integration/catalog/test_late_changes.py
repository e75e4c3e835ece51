"""The late changes' record (catalog_service.adapters.late_changes) on both backends: recorded once
however often the same answer is recorded, and on the shared runner (credit_common.db.transactions),
so a record that loses a race (a deadlock, a serialization failure) runs again instead of losing the
changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from catalog_service.adapters.late_changes import LateChangeRecorder, late_changes_of
from catalog_service.domain.outbox import LateChange
from catalog_service.entrypoints.app import DEFINITION
from credit_common.db.engine import DatabaseSettings, create_db_engine, session_factories
from credit_common.db.migrations import upgrade
from tests.support.lost_race import DEADLOCK, SERIALIZATION_FAILURE, lose_race

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CHANGES = (
    LateChange(2, "", T0, T0 + timedelta(minutes=5)),
    LateChange(2, "api-calls", T0, T0 + timedelta(minutes=5)),
)


@pytest.fixture
def engine(database_url_factory):
    engine = create_db_engine(DatabaseSettings(url=database_url_factory("late_changes")))
    upgrade(DEFINITION.migrations, engine)
    yield engine
    engine.dispose()


def _recorded(engine) -> dict[str, tuple[LateChange, ...]]:
    with session_factories(engine).read() as session:
        return late_changes_of(session, ["sub-1"])


def test_the_same_changes_recorded_twice_are_recorded_once(engine):
    recorder = LateChangeRecorder(session_factories(engine))
    recorder.record("sub-1", CHANGES)
    recorder.record("sub-1", CHANGES)  # the revision sent again, answered ALREADY_APPLIED with them
    assert _recorded(engine) == {"sub-1": CHANGES}


@pytest.mark.parametrize("sqlstate", [SERIALIZATION_FAILURE, DEADLOCK], ids=["serialization-failure", "deadlock"])
def test_a_record_that_loses_a_race_runs_again(engine, sqlstate):
    recorder = LateChangeRecorder(session_factories(engine))
    with lose_race(engine, "INSERT INTO late_changes", sqlstate) as race:
        recorder.record("sub-1", CHANGES)
    assert race.count == 1
    assert _recorded(engine) == {"sub-1": CHANGES}
