"""The handoff from the catalog to the grant service, with both services as
real processes: a backlog built while the grant service is down, a grant
service that fails every other call, and catalog restarts (SIGTERM, SIGKILL) in
the middle of the backlog. Each subscription must reach the grant service
exactly once: revision 1 there, one period-0 GRANT, handoff DELIVERED."""

from __future__ import annotations

import signal

import pytest

from catalog_service.v1 import catalog_service_pb2 as pb
from tests.e2e.handoff.conftest import (
    applied_revision,
    assert_delivered_exactly_once,
    handoff_states,
    provision_many,
    setup_catalog,
    wait_for,
)

pytestmark = pytest.mark.slow

COUNT = 60


def all_delivered(d, subscriptions):
    def check():
        states = handoff_states(d.catalog_stub)
        return all(states[s.subscription_id].status == pb.HANDOFF_STATUS_DELIVERED for s in subscriptions)

    return check


def test_backlog_built_while_the_grant_service_is_down_is_delivered_once(deployment):
    d = deployment()
    d.catalog.start()  # the grant service is not running
    stub = d.catalog_stub
    setup_catalog(stub)
    subscriptions = provision_many(stub, COUNT)
    assert len({s.subscription_id for s in subscriptions}) == COUNT  # every provisioning succeeded
    assert {s.handoff.status for s in subscriptions} == {pb.HANDOFF_STATUS_PENDING}
    retried = wait_for(
        lambda: next((st for st in handoff_states(stub).values() if st.failure_reason), None),
        "a failed attempt",
        (d.catalog,),
    )
    assert retried.status == pb.HANDOFF_STATUS_PENDING and "UNAVAILABLE" in retried.failure_reason
    assert retried.HasField("next_attempt_time") and retried.delivered_revision == 0

    d.grant.start()
    wait_for(all_delivered(d, subscriptions), "all delivered", (d.catalog, d.grant))
    assert_delivered_exactly_once(d, subscriptions)


def test_grant_service_failing_every_other_call(deployment):
    d = deployment(proxy={"fail_every": 2})
    d.grant.start()
    d.catalog.start()
    stub = d.catalog_stub
    setup_catalog(stub)
    subscriptions = provision_many(stub, COUNT)
    wait_for(all_delivered(d, subscriptions), "all delivered", (d.catalog, d.grant))
    assert d.proxy.failed >= COUNT // 2  # it really failed every other call
    assert_delivered_exactly_once(d, subscriptions)
    states = handoff_states(stub)
    assert max(states[s.subscription_id].attempts for s in subscriptions) >= 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_catalog_restarted_in_the_middle_of_the_backlog(deployment, sig):
    # Deliveries take 0.2 s each (4 at a time), so 60 take about 3 s; a short
    # lease makes the deliveries a killed catalog had claimed due again soon.
    d = deployment(
        catalog_args=["--grant-deadline-ms", "1000", "--outbox-lease-s", "3", "--outbox-batch-size", "4"],
        proxy={"delay_s": 0.2, "paused": True},
    )
    d.grant.start()
    d.catalog.start()
    stub = d.catalog_stub
    setup_catalog(stub)
    subscriptions = provision_many(stub, COUNT)  # the backlog: the proxy answers UNAVAILABLE
    d.proxy.paused = False
    wait_for(lambda: d.proxy.forwarded >= 10, "some deliveries", (d.catalog, d.grant))
    exit_code = d.catalog.stop(sig)
    if sig == signal.SIGTERM:
        assert exit_code == 0  # drained, dispatcher stopped, channel closed
    grant_stub = d.grant_stub
    delivered_at_stop = sum(applied_revision(grant_stub, s.subscription_id) == 1 for s in subscriptions)
    assert 10 <= delivered_at_stop < COUNT  # it really stopped in the middle of the backlog
    d.catalog.start()
    wait_for(all_delivered(d, subscriptions), "all delivered after the restart", (d.catalog, d.grant))
    assert_delivered_exactly_once(d, subscriptions)
