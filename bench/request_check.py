"""Micro-benchmark of the generic request check (credit_common.grpc.validation):
its cost per request of the hot methods, beside the cost of decoding the same
request. `python -m bench.request_check`; the figures are in docs/hostile-input.md."""

from __future__ import annotations

import timeit
from datetime import UTC, datetime

from credit_common.grpc.timestamps import to_timestamp
from credit_common.grpc.validation import check_request
from grant_service.v1 import grant_service_pb2 as pb

NOW = to_timestamp(datetime(2026, 6, 1, tzinfo=UTC))


def _apply(schedules: int, amounts: int) -> pb.ApplySubscriptionRequest:
    return pb.ApplySubscriptionRequest(
        subscription_id="sub_01M8534WGVBJEJBB5NSTY0444Z",
        customer_key="customer-123",
        revision=3,
        start_time=NOW,
        credit_schedules=[
            pb.CreditSchedule(
                entitlement_key=f"credits-{i}",
                currency_key="ai-credits",
                cadence=pb.CADENCE_MONTHLY,
                amounts=[pb.ScheduledAmount(amount="50000", effective_time=NOW) for _ in range(amounts)],
            )
            for i in range(schedules)
        ],
    )


REQUESTS = {
    "GetBalance": pb.GetBalanceRequest(customer_key="customer-123", currency_key="ai-credits", as_of_time=NOW),
    "ReportUsage": pb.ReportUsageRequest(
        request_id="0b8f3a52-2d7e-4c1b-9a55-3f1f0c6c7d10",
        customer_key="customer-123",
        feature_key="calls",
        quantity="3",
    ),
    "ApplySubscription (1 schedule, 3 amounts)": _apply(1, 3),
    "ApplySubscriptions (500 x 1 schedule, 1 amount)": pb.ApplySubscriptionsRequest(
        requests=[_apply(1, 1) for _ in range(500)]
    ),
}


def main() -> None:
    print(f"{'request':<50} {'check (us)':>11} {'decode (us)':>12}")
    for name, request in REQUESTS.items():
        data = request.SerializeToString()
        parse = type(request).FromString
        number = max(20, 200_000 // max(1, len(data) // 50))
        check = min(timeit.repeat(lambda r=request: check_request(r), number=number, repeat=5)) / number
        decode = min(timeit.repeat(lambda d=data, p=parse: p(d), number=number, repeat=5)) / number
        print(f"{name:<50} {check * 1e6:>11.2f} {decode * 1e6:>12.2f}")


if __name__ == "__main__":
    main()
