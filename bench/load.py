"""Load generators: separate processes (spawned) running caller threads, each caller with a gRPC
channel (a connection) of its own, against a real server over 127.0.0.1, for a fixed time or a
fixed amount of work. Each process sends back its raw latencies and outcomes; the parent merges them."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field

import grpc

from tests.support.auth import keyed_channel

# Codes after which a mutation's fate is unknown: the same request (same request_id) is sent again.
_AMBIGUOUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
RPC_TIMEOUT_S = 30.0


@dataclass
class LoadResult:
    ok: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    accepted: Counter = field(default_factory=Counter)  # usage: accepted units per customer
    retries: int = 0
    units: int = 0  # what the ok calls carried: 1 each, a batch call its items

    @property
    def qps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def units_per_s(self) -> float:
        return self.units / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def run_load(
    address: str,
    kind: str,
    *,
    callers: int,
    processes: int,
    duration_s: float | None = None,
    params: dict | None = None,
    work: list | None = None,
    api_key: str | None = None,
) -> LoadResult:
    """`callers` threads over `processes` processes call `kind` for `duration_s` seconds, or until
    `work` (split over the callers) is done; every call carries `api_key`. All processes start
    together, once every one of them has spawned and connected its channels (a barrier: on a busy
    machine spawning can take longer than any fixed head start)."""
    processes = max(1, min(processes, callers))
    per_process = [callers // processes + (1 if p < callers % processes else 0) for p in range(processes)]
    jobs = []
    caller = 0
    for p, threads in enumerate(per_process):
        job_work = None
        if work is not None:
            job_work = [work[i::callers] for i in range(caller, caller + threads)]
        jobs.append(
            {
                "address": address,
                "api_key": api_key,
                "kind": kind,
                "threads": threads,
                "first_caller": caller,
                "duration_s": duration_s,
                "params": params or {},
                "work": job_work,
                "seed": p,
            }
        )
        caller += threads
    ctx = multiprocessing.get_context("spawn")
    # Each worker process takes one job: it blocks on the barrier until all have theirs.
    with ctx.Pool(processes, initializer=_set_barrier, initargs=(ctx.Barrier(processes),)) as pool:
        parts = pool.map(_worker, jobs, chunksize=1)
    result = LoadResult()
    ends = []
    start_at = min(part["start"] for part in parts)
    for part in parts:
        result.ok += part["ok"]
        result.latencies_ms.extend(part["latencies"])
        result.errors.update(part["errors"])
        result.accepted.update(part["accepted"])
        result.retries += part["retries"]
        result.units += part["units"]
        ends.append(part["end"])
    result.elapsed_s = max(ends) - start_at
    return result


# ---------------------------------------------------------------------------------- in the worker

_barrier = None
START_SLACK_S = 0.2  # after the barrier, until the callers' first calls


def _set_barrier(barrier) -> None:
    global _barrier
    _barrier = barrier


def _worker(job: dict) -> dict:
    # Each caller has a connection of its own, as separate clients would: the server's processes
    # (--processes) each take the connections the kernel gives them, and one shared connection
    # would put every caller of this process on one of them.
    channels = [
        keyed_channel(job["address"], job["api_key"], options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(job["threads"])
    ]
    for channel in channels:
        grpc.channel_ready_future(channel).result(timeout=60)
    calls = [_CALLERS[job["kind"]](channel, job["params"]) for channel in channels]
    lock = threading.Lock()
    latencies = array("d")
    errors: Counter = Counter()
    accepted: Counter = Counter()
    state = {"ok": 0, "retries": 0, "units": 0}
    if _barrier is not None:
        _barrier.wait(timeout=600)
    start_at = time.time() + START_SLACK_S
    deadline = start_at + job["duration_s"] if job["duration_s"] is not None else None

    def run(thread: int) -> None:
        caller = job["first_caller"] + thread
        call = calls[thread]
        rng = random.Random(job["seed"] * 1000 + thread)
        items = iter(job["work"][thread]) if job["work"] is not None else None
        sequence = 0
        mine = array("d")
        my_errors: Counter = Counter()
        my_accepted: Counter = Counter()
        ok = retries = units = 0
        while True:
            if deadline is not None and time.time() >= deadline:
                break
            if items is not None:
                item = next(items, None)
                if item is None:
                    break
            else:
                item = None
            sequence += 1
            request = call.request(rng, item, f"c{caller}-{sequence}")
            started = time.perf_counter()
            for _attempt in range(20):
                try:
                    reply = call.send(request)
                    mine.append((time.perf_counter() - started) * 1000)
                    ok += 1
                    if hasattr(call, "accepted_keys"):  # a batch call: its items' outcomes
                        my_accepted.update(call.accepted_keys(request, reply, my_errors))
                        units += len(call.items(request))
                    else:
                        key = call.accepted_key(request)
                        if key is not None:
                            my_accepted[key] += 1
                        units += 1
                    break
                except grpc.RpcError as error:
                    code = error.code().name
                    if call.retry_ambiguous and code in _AMBIGUOUS:
                        retries += 1
                        time.sleep(0.05)
                        continue
                    my_errors[code] += 1
                    break
            else:
                my_errors["GAVE_UP_RETRYING"] += 1
        with lock:
            latencies.extend(mine)
            errors.update(my_errors)
            accepted.update(my_accepted)
            state["ok"] += ok
            state["retries"] += retries
            state["units"] += units

    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    threads = [threading.Thread(target=run, args=(t,)) for t in range(job["threads"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.time()
    for channel in channels:
        channel.close()
    return {
        "ok": state["ok"],
        "latencies": latencies.tolist(),
        "errors": dict(errors),
        "accepted": dict(accepted),
        "retries": state["retries"],
        "units": state["units"],
        "start": start_at,
        "end": end,
    }


class _Health:
    retry_ambiguous = False

    def __init__(self, channel: grpc.Channel, params: dict) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        self._stub = health_pb2_grpc.HealthStub(channel)
        self._request = health_pb2.HealthCheckRequest(service="")

    def request(self, rng, item, request_id):
        return self._request

    def send(self, request) -> None:
        self._stub.Check(request, timeout=RPC_TIMEOUT_S)

    def accepted_key(self, request):
        return None


class _Balance:
    retry_ambiguous = False

    def __init__(self, channel: grpc.Channel, params: dict) -> None:
        from grant_service.v1 import grant_service_pb2, grant_service_pb2_grpc

        self._pb = grant_service_pb2
        self._stub = grant_service_pb2_grpc.GrantServiceStub(channel)
        self._prefix, self._n, self._currency = params["prefix"], params["customers"], params["currency"]

    def request(self, rng, item, request_id):
        return self._pb.GetBalanceRequest(
            customer_key=f"{self._prefix}{rng.randrange(self._n)}", currency_key=self._currency
        )

    def send(self, request) -> None:
        self._stub.GetBalance(request, timeout=RPC_TIMEOUT_S)

    def accepted_key(self, request):
        return None


class _Usage:
    """ReportUsage of 1 unit for a random customer (or always the hot one). An ambiguous failure
    is retried with the same request_id, so every request ends accepted or definitely rejected."""

    retry_ambiguous = True

    def __init__(self, channel: grpc.Channel, params: dict) -> None:
        from grant_service.v1 import grant_service_pb2, grant_service_pb2_grpc

        self._pb = grant_service_pb2
        self._stub = grant_service_pb2_grpc.GrantServiceStub(channel)
        self._prefix, self._n, self._feature = params["prefix"], params["customers"], params["feature"]
        self._hot = params.get("hot")
        self._tag = params["tag"]

    def request(self, rng, item, request_id):
        customer = self._hot if self._hot else f"{self._prefix}{rng.randrange(self._n)}"
        return self._pb.ReportUsageRequest(
            request_id=f"{self._tag}-{request_id}", customer_key=customer, feature_key=self._feature, quantity="1"
        )

    def send(self, request) -> None:
        self._stub.ReportUsage(request, timeout=RPC_TIMEOUT_S)

    def accepted_key(self, request):
        return request.customer_key


class _UsageBatch:
    """ReportUsageBatch of `batch` usages of 1 unit, each for a random customer (or the hot one), each
    with its own request_id. An ambiguous failure of the call is retried with the same usages: those
    that were accepted answer as replayed, and count once."""

    retry_ambiguous = True

    def __init__(self, channel: grpc.Channel, params: dict) -> None:
        from grant_service.v1 import grant_service_pb2, grant_service_pb2_grpc

        self._pb = grant_service_pb2
        self._stub = grant_service_pb2_grpc.GrantServiceStub(channel)
        self._prefix, self._n, self._feature = params["prefix"], params["customers"], params["feature"]
        self._hot = params.get("hot")
        self._tag, self._size = params["tag"], params["batch"]

    def request(self, rng, item, request_id):
        usages = [
            self._pb.ReportUsageRequest(
                request_id=f"{self._tag}-{request_id}-{i}",
                customer_key=self._hot if self._hot else f"{self._prefix}{rng.randrange(self._n)}",
                feature_key=self._feature,
                quantity="1",
            )
            for i in range(self._size)
        ]
        return self._pb.ReportUsageBatchRequest(usages=usages)

    def send(self, request):
        return self._stub.ReportUsageBatch(request, timeout=RPC_TIMEOUT_S)

    def items(self, request) -> list:
        return list(request.usages)

    def accepted_keys(self, request, reply, errors: Counter) -> list[str]:
        """The customers of the usages accepted (or replayed: accepted by a first attempt whose answer
        was lost); a rejected usage counts as an error by its reason."""
        keys = []
        for usage, result in zip(request.usages, reply.results, strict=True):
            if result.outcome == self._pb.USAGE_OUTCOME_REJECTED:
                errors[result.rejection.reason] += 1
            else:
                keys.append(usage.customer_key)
        return keys


class _Provision:
    retry_ambiguous = True

    def __init__(self, channel: grpc.Channel, params: dict) -> None:
        from catalog_service.v1 import catalog_service_pb2, catalog_service_pb2_grpc

        self._pb = catalog_service_pb2
        self._stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
        self._plan, self._values = params["plan"], params["values"]

    def request(self, rng, item, request_id):
        return self._pb.ProvisionSubscriptionRequest(
            request_id=f"bench-provision-{item}",
            customer_key=item,
            plan_key=self._plan,
            entitlement_values=self._values,
        )

    def send(self, request) -> None:
        self._stub.ProvisionSubscription(request, timeout=RPC_TIMEOUT_S)

    def accepted_key(self, request):
        return request.customer_key


_CALLERS = {
    "health": _Health,
    "balance": _Balance,
    "usage": _Usage,
    "usage-batch": _UsageBatch,
    "provision": _Provision,
}
