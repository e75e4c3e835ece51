"""SIGTERM under load, over real processes (one, and `--processes 2`): every call either is answered
or refused with UNAVAILABLE (none CANCELLED, UNKNOWN or INTERNAL), and the process exits 0. Each
caller, once refused, stops calling this server, as a client with another replica to go to would."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import grpc
import pytest

from grant_service.v1 import grant_service_pb2 as pb
from grant_service.v1 import grant_service_pb2_grpc
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.slow

CALLERS = 8


def _load(grant: ServiceProcess, stop: threading.Event, codes: Counter, lock: threading.Lock) -> None:
    with grant.channel() as channel:
        stub = grant_service_pb2_grpc.GrantServiceStub(channel)
        request = pb.GetBalanceRequest(customer_key="nobody", currency_key="ai")
        while not stop.is_set():
            try:
                stub.GetBalance(request, timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
            with lock:
                codes[code] += 1
            if code != grpc.StatusCode.NOT_FOUND:
                return


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_under_load(database_url_factory, tmp_path, processes):
    grant = ServiceProcess.grant(
        database_url_factory("grant"),
        log_dir=tmp_path,
        args=["--processes", str(processes), "--catch-up-interval", "0"],
        shutdown_grace_s=10,
    )
    grant.start()
    assert grant.api_key  # made once, before the callers ask for channels
    codes: Counter = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    callers = [threading.Thread(target=_load, args=(grant, stop, codes, lock)) for _ in range(CALLERS)]
    for caller in callers:
        caller.start()
    try:
        give_up = time.monotonic() + 60
        while sum(codes.values()) < 300:  # under load
            assert time.monotonic() < give_up, codes
            time.sleep(0.01)
        process = grant.process
        assert grant.stop(signal.SIGTERM, timeout_s=60) == 0, grant.log_tail()
        assert process is not None
    finally:
        stop.set()
        for caller in callers:
            caller.join(30)
    assert set(codes) <= {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE}, codes
    assert codes[grpc.StatusCode.NOT_FOUND] >= 300
    assert codes[grpc.StatusCode.UNAVAILABLE] == CALLERS  # every caller was told to go elsewhere
