"""What an audit record names as the resource: ids and keys only, never amounts or secrets."""

from __future__ import annotations

from credit_common.grpc.audit import MAX_ITEMS, resource_of
from grant_service.v1 import grant_service_pb2 as pb


def test_ids_and_keys_of_the_request_and_one_level_down():
    request = pb.CreateGrantRequest(request_id="r", customer_key="acme", currency_key="ai", amount="100", reason="x")
    assert resource_of(request) == {"customer_key": "acme", "currency_key": "ai"}
    response = pb.CreateGrantResponse(grant=pb.Grant(grant_id="grt_1", customer_key="acme", amount="100"))
    assert resource_of(response) == {"grant.grant_id": "grt_1", "grant.customer_key": "acme"}


def test_a_batch_is_counted_and_its_first_items_listed():
    items = [pb.ApplySubscriptionRequest(subscription_id=f"sub_{i}", customer_key="acme") for i in range(30)]
    found = resource_of(pb.ApplySubscriptionsRequest(requests=items))
    assert found["requests.count"] == 30
    assert len(found["requests"]) == MAX_ITEMS
    assert found["requests"][0] == {"subscription_id": "sub_0", "customer_key": "acme"}


def test_what_is_no_message_has_no_resource():
    assert resource_of(None) == {} and resource_of(b"raw") == {}
