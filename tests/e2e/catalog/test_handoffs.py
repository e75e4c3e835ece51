"""The operators' view of the outbox over gRPC (both backends): ListHandoffs shows each
revision queued for the grant service, a parked one with its last error; RequeueHandoffs puts
parked ones back in the queue, one aggregate's or all of them, and they are delivered once the
grant service accepts them. The fake grant service refuses the keys in `rejected`
(INVALID_ARGUMENT), which the catalog parks."""

from __future__ import annotations

import grpc

from catalog_service.v1 import catalog_service_pb2 as pb
from tests.e2e.catalog.conftest import Catalog, currency, metered_feature, rpc_error, wait_for


def handoffs(catalog: Catalog, **filters) -> list[pb.Handoff]:
    found, token = [], ""
    while True:
        page = catalog.stub.ListHandoffs(pb.ListHandoffsRequest(page_token=token, page_size=2, **filters))
        found.extend(page.handoffs)
        token = page.next_page_token
        if not token:
            return found


def currency_handoff(catalog: Catalog, key: str) -> pb.Handoff:
    [handoff] = handoffs(catalog, kind=pb.HANDOFF_KIND_CREDIT_CURRENCY, key=key)
    return handoff


def parked_currency(catalog: Catalog) -> str:
    """A credit currency whose revision 1 the grant service rejected (parked)."""
    key = catalog.unique("parked")
    catalog.grant.rejected.add(key)
    feature = metered_feature(catalog)
    catalog.stub.CreateCreditCurrency(
        pb.CreateCreditCurrencyRequest(
            credit_currency=pb.CreditCurrency(
                key=key,
                display_name="P",
                unit_name="c",
                rates=[pb.CreditRate(feature_key=feature, credits_per_unit="1")],
            )
        )
    )
    wait_for(lambda: currency_handoff(catalog, key).status == pb.HANDOFF_STATUS_FAILED, f"{key} parked")
    return key


def test_list_shows_each_revision_and_a_parked_one_with_its_error(catalog: Catalog):
    delivered = currency(catalog, metered_feature(catalog))
    wait_for(lambda: currency_handoff(catalog, delivered).status == pb.HANDOFF_STATUS_DELIVERED, "delivered")
    shown = currency_handoff(catalog, delivered)
    assert (shown.kind, shown.revision, shown.attempts, shown.last_error) == (pb.HANDOFF_KIND_CREDIT_CURRENCY, 1, 1, "")
    assert shown.HasField("deliver_time") and shown.HasField("create_time") and not shown.HasField("next_attempt_time")

    key = parked_currency(catalog)
    parked = currency_handoff(catalog, key)
    assert parked.last_error.startswith("INVALID_ARGUMENT: fake:") and parked.attempts == 1
    assert not parked.HasField("deliver_time")
    failed = handoffs(catalog, status=pb.HANDOFF_STATUS_FAILED)
    assert key in {h.key for h in failed} and {h.status for h in failed} == {pb.HANDOFF_STATUS_FAILED}
    assert delivered not in {h.key for h in failed}
    every = handoffs(catalog)  # oldest first, over several pages
    assert [h.handoff_id for h in every] == sorted(h.handoff_id for h in every)
    assert {delivered, key} <= {h.key for h in every}


def test_requeue_one_aggregate_after_the_cause_is_fixed(catalog: Catalog):
    key = parked_currency(catalog)
    other = parked_currency(catalog)
    catalog.grant.rejected.discard(key)
    request = pb.RequeueHandoffsRequest(kind=pb.HANDOFF_KIND_CREDIT_CURRENCY, key=key, request_id=catalog.unique("rq"))
    assert catalog.stub.RequeueHandoffs(request).requeued_count == 1
    assert catalog.stub.RequeueHandoffs(request).requeued_count == 1  # the same request_id: the first answer
    handoff = wait_for(
        lambda: (h := currency_handoff(catalog, key)).status == pb.HANDOFF_STATUS_DELIVERED and h, "requeued delivered"
    )
    assert handoff.attempts == 2 and handoff.last_error == ""
    assert catalog.grant.applied[key].revision == 1
    assert currency_handoff(catalog, other).status == pb.HANDOFF_STATUS_FAILED  # not requeued
    again = pb.RequeueHandoffsRequest(kind=pb.HANDOFF_KIND_CREDIT_CURRENCY, key=key)
    assert catalog.stub.RequeueHandoffs(again).requeued_count == 0  # nothing parked any more


def test_requeue_all_parked(catalog: Catalog):
    keys = [parked_currency(catalog) for _ in range(2)]
    catalog.grant.rejected.difference_update(keys)
    count = catalog.stub.RequeueHandoffs(pb.RequeueHandoffsRequest(all_parked=True)).requeued_count
    assert count >= 2  # other tests' parked ones too
    for key in keys:
        wait_for(lambda k=key: currency_handoff(catalog, k).status == pb.HANDOFF_STATUS_DELIVERED, f"{key} delivered")


def test_requeue_needs_one_target_and_the_filters_are_checked(catalog: Catalog):
    _info, violations = rpc_error(
        lambda: catalog.stub.RequeueHandoffs(pb.RequeueHandoffsRequest()), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert set(violations) == {"kind", "key"}
    _info, violations = rpc_error(
        lambda: catalog.stub.RequeueHandoffs(
            pb.RequeueHandoffsRequest(all_parked=True, kind=pb.HANDOFF_KIND_SUBSCRIPTION, key="x")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(violations) == {"kind", "key"}
    _info, violations = rpc_error(
        lambda: catalog.stub.ListHandoffs(pb.ListHandoffsRequest(status=42)), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert set(violations) == {"status"}
    page = catalog.stub.ListHandoffs(pb.ListHandoffsRequest(page_size=1))
    if page.next_page_token:
        info, _ = rpc_error(
            lambda: catalog.stub.ListHandoffs(
                pb.ListHandoffsRequest(page_size=1, page_token=page.next_page_token, key="other")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert info.reason == "INVALID_PAGE_TOKEN"
