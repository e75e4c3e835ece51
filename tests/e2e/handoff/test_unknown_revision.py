"""Both real services (in this process): someone who reaches the grant service's ApplySubscription
writes a revision of a subscription the catalog delivered; the catalog's next revision is answered
STALE, and the catalog parks it (handoff FAILED, the reason says why) instead of counting it as
delivered. A revision further ahead than --max-revision-step is refused outright."""

from __future__ import annotations

import grpc

from catalog_service.entrypoints import app as catalog_app
from catalog_service.v1 import catalog_service_pb2 as pb
from catalog_service.v1 import catalog_service_pb2_grpc as pb_grpc
from credit_common.auth.keys import SYNC
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2 as grant_pb2
from grant_service.v1 import grant_service_pb2_grpc as grant_pb2_grpc
from tests.e2e.handoff.conftest import DEADLINE_S, provision_many, setup_catalog, wait_for
from tests.support.auth import create_key_at
from tests.support.servers import serving


def test_the_catalog_parks_a_revision_answered_stale_by_a_revision_it_never_issued(database_url_factory):
    grant_url = database_url_factory("grant")
    sync_key = create_key_at(grant_app.DEFINITION, grant_url, (SYNC,), label="catalog")
    with (
        serving(grant_app.DEFINITION, grant_app.build, grant_url, args=["--catch-up-interval", "0"]) as (
            grant_running,
            grant_channel,
        ),
        serving(
            catalog_app.DEFINITION,
            catalog_app.build,
            database_url_factory("catalog"),
            args=[
                "--grant-service-address",
                f"127.0.0.1:{grant_running.port}",
                "--grant-service-api-key",
                sync_key,
                "--outbox-backoff-base-ms",
                "50",
            ],
        ) as (_catalog_running, channel),
    ):
        catalog = pb_grpc.CatalogServiceStub(channel)
        grant = grant_pb2_grpc.GrantServiceStub(grant_channel)
        setup_catalog(catalog)
        [sub] = provision_many(catalog, 1)

        def handoff() -> pb.HandoffState:
            request = pb.GetSubscriptionRequest(subscription_id=sub.subscription_id)
            return catalog.GetSubscription(request, timeout=DEADLINE_S).subscription.handoff

        wait_for(lambda: handoff().status == pb.HANDOFF_STATUS_DELIVERED, "revision 1 delivered")

        def rogue(revision: int) -> grant_pb2.ApplySubscriptionResponse:  # drops every credit schedule
            request = grant_pb2.ApplySubscriptionRequest(
                subscription_id=sub.subscription_id,
                customer_key=sub.customer_key,
                revision=revision,
                start_time=sub.start_time,
            )
            return grant.ApplySubscription(request, timeout=DEADLINE_S)

        try:
            rogue(2**63 - 1)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            raise AssertionError("a revision 2^63-1 was applied")
        assert rogue(500).outcome == grant_pb2.APPLY_OUTCOME_APPLIED  # within the bound: nothing tells it apart

        catalog.CancelSubscription(
            pb.CancelSubscriptionRequest(
                subscription_id=sub.subscription_id, mode=pb.CANCEL_MODE_IMMEDIATELY, request_id="cancel"
            ),
            timeout=DEADLINE_S,
        )
        state = wait_for(lambda: (s := handoff()).status == pb.HANDOFF_STATUS_FAILED and s, "revision 2 parked")
        assert state.delivered_revision == 1
        assert state.failure_reason.startswith("STALE: the grant service holds revision 500")
        assert "UNKNOWN_REVISION_HELD" in state.failure_reason
