"""Several grant-service processes (replicas) on one PostgreSQL database, each running its catch-up
timer: due work is shared through FOR UPDATE SKIP LOCKED, and every grant is issued exactly once,
whether all replicas stay up, one is SIGKILLed in the middle, or PostgreSQL itself restarts."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest

from credit_common.grpc.errors import error_details
from grant_service.adapters.orm import GrantRow
from grant_service.v1 import grant_service_pb2 as gpb
from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc
from tests.e2e.grant.conftest import all_entries, subscription
from tests.e2e.replicas.conftest import (
    GRANT_MIGRATIONS,
    assert_each_seeded_subscription_granted_once,
    count_rows,
    migrated_database,
    seed_due_subscriptions,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _replica(services, url: str):
    return services(
        "grant_service", "--database-url", url, "--catch-up-interval", "0.2", "--catch-up-batch-size", "200"
    )


def _issued_by(process) -> int:
    """Grants this process's catch-up issued, from its log ("catch-up" lines, written after each
    run's transactions committed)."""
    return sum(r.get("issued", 0) for r in process.log_records() if r["message"] == "catch-up")


def test_two_replicas_share_10000_due_subscriptions_and_issue_each_once(postgres_server, services):
    url = migrated_database(postgres_server, "grant_replicas", GRANT_MIGRATIONS)
    replicas = [_replica(services, url), _replica(services, url)]
    count = 10_000
    seed_due_subscriptions(url, count)  # due at once, while both timers are running
    wait_until(lambda: count_rows(url, GrantRow) >= count, "every grant", processes=replicas, limit_s=120)
    for replica in replicas:
        assert replica.stop() == 0  # graceful: the timer's run in progress finishes and logs
    assert_each_seeded_subscription_granted_once(url, count)
    issued = [_issued_by(replica) for replica in replicas]
    assert sum(issued) == count, issued
    assert all(n > 0 for n in issued), f"one replica did all the work: {issued}"


def test_a_replica_sigkilled_mid_catch_up_loses_and_doubles_nothing(postgres_server, services):
    url = migrated_database(postgres_server, "grant_kill", GRANT_MIGRATIONS)
    victim, survivor = _replica(services, url), _replica(services, url)
    count = 10_000
    seed_due_subscriptions(url, count)
    wait_until(lambda: count_rows(url, GrantRow) >= 1500, "the catch-up to be under way", processes=[victim, survivor])
    victim.kill()
    halfway = count_rows(url, GrantRow)
    assert halfway < count, "too late: the catch-up was over before the kill"
    wait_until(lambda: count_rows(url, GrantRow) >= count, "the survivor to finish", processes=[survivor])
    assert survivor.stop() == 0
    assert_each_seeded_subscription_granted_once(url, count)


def test_replicas_under_load_ride_out_a_postgres_crash_and_restart(own_postgres, services):
    url = migrated_database(own_postgres, "grant_restart", GRANT_MIGRATIONS)
    replicas = [_replica(services, url), _replica(services, url)]
    pids = [r.process.pid for r in replicas]
    count = 10_000
    seed_due_subscriptions(url, count)

    # RPC load next to the catch-up: balance reads (each catches its customer up) on both replicas
    codes: list[tuple[int, grpc.StatusCode]] = []  # (phase, code); phase 1 = after the restart
    phase = [0]
    balances: list[str] = []  # every read counts the due grant, issued by the timer yet or not
    stop = threading.Event()

    def read_balances(replica, offset: int) -> None:
        with replica.channel() as channel:
            stub = gpb_grpc.GrantServiceStub(channel)
            i = offset
            while not stop.is_set():
                request = gpb.GetBalanceRequest(customer_key=f"c{i % count}", currency_key="ai-credits")
                current = phase[0]
                try:
                    balances.append(stub.GetBalance(request, timeout=10).balance.available)
                    codes.append((current, grpc.StatusCode.OK))
                except grpc.RpcError as error:
                    codes.append((current, error.code()))
                i += 7919

    readers = [threading.Thread(target=read_balances, args=(r, n)) for n, r in enumerate(replicas)]
    for reader in readers:
        reader.start()
    try:
        wait_until(lambda: count_rows(url, GrantRow) >= 1500, "the catch-up to be under way", processes=replicas)
        own_postgres.stop("immediate")  # a crash, in the middle of the replicas' transactions
        own_postgres.start()
        phase[0] = 1
        wait_until(lambda: count_rows(url, GrantRow) >= count, "the catch-up to finish", processes=replicas)
        wait_until(
            lambda: (1, grpc.StatusCode.OK) in codes,
            "an RPC to succeed after the restart",
            processes=replicas,
            limit_s=30,
        )
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=30)
    assert [r.process.pid for r in replicas] == pids and all(r.running for r in replicas)  # never restarted
    unexpected = {code for _, code in codes} - {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert not unexpected, f"RPCs failed with {unexpected} (only UNAVAILABLE is expected during the restart)"
    assert balances and set(balances) == {"1000"}
    for replica in replicas:
        assert replica.stop() == 0
    assert_each_seeded_subscription_granted_once(url, count)


def test_debits_spread_over_two_replicas_never_overdraw_and_replay_across_them(postgres_server, services):
    url = migrated_database(postgres_server, "grant_debits", GRANT_MIGRATIONS)
    # no timers: the first debits race, on both replicas, to issue the period that is due
    replicas = [services("grant_service", "--database-url", url, "--catch-up-interval", "0") for _ in range(2)]
    channels = [r.channel() for r in replicas]
    stubs = [gpb_grpc.GrantServiceStub(c) for c in channels]
    try:
        stubs[0].ApplyCreditCurrency(
            gpb.ApplyCreditCurrencyRequest(
                currency_key="ai-credits",
                revision=1,
                rates=[gpb.CreditRate(feature_key="gpt-call", credits_per_unit="2.5")],
            ),
            timeout=30,
        )
        start = datetime.now(UTC) - timedelta(hours=1)
        stubs[1].ApplySubscription(subscription("sub_d", "acme", start, [("1000", None)]), timeout=30)

        def report(job: tuple[int, int]):
            n, replica = job
            request = gpb.ReportUsageRequest(
                request_id=f"u-{n}", customer_key="acme", feature_key="gpt-call", quantity="14"
            )
            try:
                return stubs[replica].ReportUsage(request, timeout=60).usage.usage_id
            except grpc.RpcError as error:
                info, _ = error_details(error)
                assert (error.code(), info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "INSUFFICIENT_CREDITS")
                return None

        # 40 usages of 35 credits (28 fit in 1000), each sent to both replicas, interleaved
        jobs = [(n, replica) for n in range(40) for replica in ((0, 1) if n % 2 else (1, 0))]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(report, jobs))
        by_request: dict[int, set] = {}
        for (n, _), answer in zip(jobs, answers, strict=True):
            by_request.setdefault(n, set()).add(answer)
        assert all(len(seen) == 1 for seen in by_request.values()), "the two replicas answered one request differently"
        accepted = [seen.pop() for seen in by_request.values()]
        assert len([a for a in accepted if a is not None]) == 28
        debits = [e for e in all_entries(stubs[0], "acme") if e.type == gpb.LEDGER_ENTRY_TYPE_DEBIT]
        assert len(debits) == 28 and sum(-Decimal(e.amount) for e in debits) == Decimal("980")
        grants = [e for e in all_entries(stubs[1], "acme") if e.type == gpb.LEDGER_ENTRY_TYPE_GRANT]
        assert [e.amount for e in grants] == ["1000"]
        balance = stubs[1].GetBalance(gpb.GetBalanceRequest(customer_key="acme", currency_key="ai-credits"), timeout=30)
        assert balance.balance.available == "20"
    finally:
        for channel in channels:
            channel.close()
