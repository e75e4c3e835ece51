"""The generic request check: NUL characters and out-of-range Timestamps anywhere in a request."""

from __future__ import annotations

import pytest
from google.protobuf import timestamp_pb2

from catalog_service.v1 import catalog_service_pb2 as cpb
from credit_common.errors import InvalidArgument
from credit_common.grpc.validation import MAX_SECONDS, MIN_SECONDS, check_request
from grant_service.v1 import grant_service_pb2 as pb


def _violations(message) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as raised:
        check_request(message)
    assert raised.value.reason == "INVALID_ARGUMENT"
    return {v.field: v.reason for v in raised.value.violations}


def _ts(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def test_valid_requests_pass():
    check_request(pb.GetBalanceRequest(customer_key="acme", currency_key="c", as_of_time=_ts(MAX_SECONDS, 999_999_999)))
    check_request(pb.GetBalanceRequest(as_of_time=_ts(MIN_SECONDS)))
    check_request(pb.ApplySubscriptionRequest())


def test_every_bad_field_is_reported_with_its_path():
    request = pb.ApplySubscriptionRequest(
        subscription_id="s\x00",
        start_time=_ts(MAX_SECONDS + 1),
        end_time=_ts(0, -1),
        credit_schedules=[
            pb.CreditSchedule(entitlement_key="ok", amounts=[pb.ScheduledAmount(amount="1")]),
            pb.CreditSchedule(
                currency_key="\x00",
                amounts=[
                    pb.ScheduledAmount(amount="1", effective_time=_ts(0)),
                    pb.ScheduledAmount(amount="1\x00", effective_time=_ts(MIN_SECONDS - 1)),
                ],
            ),
        ],
    )
    assert _violations(request) == {
        "subscription_id": "NUL_CHARACTER",
        "start_time": "TIMESTAMP_OUT_OF_RANGE",
        "end_time": "TIMESTAMP_OUT_OF_RANGE",
        "credit_schedules[1].currency_key": "NUL_CHARACTER",
        "credit_schedules[1].amounts[1].amount": "NUL_CHARACTER",
        "credit_schedules[1].amounts[1].effective_time": "TIMESTAMP_OUT_OF_RANGE",
    }


def test_nanos_of_a_billion_is_out_of_range():
    assert _violations(pb.GetBalanceRequest(as_of_time=_ts(0, 1_000_000_000))) == {
        "as_of_time": "TIMESTAMP_OUT_OF_RANGE"
    }


def test_maps_repeated_strings_and_field_masks_are_checked():
    request = cpb.ProvisionSubscriptionRequest(entitlement_values={"seats\x00": "1", "ok": "2\x00"})
    assert _violations(request) == {
        "entitlement_values[seats\\0]": "NUL_CHARACTER",
        "entitlement_values[ok]": "NUL_CHARACTER",
    }
    update = cpb.UpdatePlanRequest()
    update.update_mask.paths.append("display\x00name")
    assert _violations(update) == {"update_mask.paths[0]": "NUL_CHARACTER"}
