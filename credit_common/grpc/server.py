"""Building and running a gRPC server: health (per service name), reflection,
the service interceptor, TLS (or plaintext) and the limits of the listener,
graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection as reflection_service

from credit_common.config import ServerLimits, TlsSettings, read_file
from credit_common.drain import Drain
from credit_common.grpc.documented_pool import documented_pool
from credit_common.grpc.health import HealthServicer
from credit_common.grpc.interceptors import ServiceInterceptor
from credit_common.grpc.observe import ObservingInterceptor
from credit_common.signals import StopSignals

log = logging.getLogger("credit_grants.server")
INT_MAX = 2**31 - 1
PLAINTEXT = TlsSettings()
DEFAULT_LIMITS = ServerLimits()
DRAIN_NOTICE_S = 1.0  # on SIGTERM, new calls are refused this long at least before the listener closes


@dataclass
class RunningServer:
    """A started server. `stop()` runs the shutdown in the documented order:
    health NOT_SERVING, the drain (new calls refused with UNAVAILABLE, streams ended with UNAVAILABLE:
    credit_common.drain), stop accepting and let the RPCs in flight finish within `grace`, then the
    background work (`on_stop`, in reverse order)."""

    server: grpc.Server
    port: int
    health: HealthServicer
    service_names: Sequence[str]
    on_stop: list[Callable[[], None]] = field(default_factory=list)
    drain: Drain = field(default_factory=Drain)
    observer: ObservingInterceptor | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self, grace: float = 5.0, notice_s: float = 0.0) -> None:
        """`notice_s`: refuse new calls for at least this long before the listener closes, even with no
        call in flight, so that clients and load balancers see NOT_SERVING or UNAVAILABLE and move away
        (a call that reaches a server already closing gets CANCELLED from gRPC itself, not UNAVAILABLE)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.drain.begin()
        # The listener keeps answering (new calls: UNAVAILABLE, health: NOT_SERVING) while the calls in
        # flight finish: a call that reaches a server already stopping gets CANCELLED from gRPC itself.
        started = time.monotonic()
        self.drain.wait_idle(grace)
        notice = min(notice_s, grace) - (time.monotonic() - started)
        if notice > 0:
            time.sleep(notice)
        self.server.stop(max(grace - (time.monotonic() - started), 0.0)).wait()
        if self.observer is not None:
            self.observer.stop()  # the last RPCs' metrics recorded
        for callback in reversed(self.on_stop):
            try:
                callback()
            except Exception:
                log.exception("error during shutdown")

    def wait_for_termination(self) -> None:
        self.server.wait_for_termination()


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials | None:
    """The listener's credentials: None for plaintext (no certificate configured), TLS with the
    configured chain and key, and with a client CA, mTLS: a client must present a certificate
    signed by it (gRPC Python has no "verify if presented")."""
    if not tls.enabled:
        return None
    client_ca = read_file(tls.client_ca_file)
    return grpc.ssl_server_credentials(
        [(read_file(tls.key_file), read_file(tls.cert_file))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def server_options(limits: ServerLimits, *, share_port: bool) -> list[tuple[str, int]]:
    """The channel arguments of the listener (see docs/security.md, Transport and hardening)."""

    def ms(seconds: float) -> int:  # gRPC's arguments are C ints; INT_MAX means "never"
        return min(int(seconds * 1000), INT_MAX)

    return [
        ("grpc.so_reuseport", 1 if share_port else 0),
        ("grpc.max_connection_idle_ms", ms(limits.max_connection_idle_s)),
        ("grpc.max_connection_age_ms", ms(limits.max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", ms(limits.max_connection_age_grace_s)),
        ("grpc.keepalive_time_ms", ms(limits.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Clients may ping while they have calls in flight, no more often than the interval.
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", ms(limits.keepalive_min_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_receive_message_length", min(limits.max_receive_message_bytes, INT_MAX)),
    ]


def start_server(
    *,
    address: str,
    service_names: Sequence[str],
    register: Callable[[grpc.Server], None],
    interceptor: ServiceInterceptor,
    max_workers: int = 16,
    share_port: bool = False,
    tls: TlsSettings = PLAINTEXT,
    limits: ServerLimits = DEFAULT_LIMITS,
    reflection: bool = True,
    drain: Drain | None = None,
    tracing: grpc.ServerInterceptor | None = None,
    record_metrics: bool = True,
) -> RunningServer:
    """Start a server on `address` ("host:port"; port 0 picks a free one).

    `register` adds the service implementations; `service_names` are their
    full names, used for the health service and reflection. `interceptor` checks keys, budgets
    streams, maps errors and logs every call (its stream threads are shut down with the server).
    `reflection`: serve server reflection (who may use it is the interceptor's key check). `share_port`: listen
    with SO_REUSEPORT, beside the other server processes of one service
    (credit_common.processes); otherwise a port in use is an error. `tls`: TLS
    or mTLS on the listener (default plaintext); `limits`: what it accepts. Outside them all: the
    drain, the call's deadline and the RPC metrics (credit_common.grpc.observe), then the trace
    spans (`tracing`, credit_common.tracing; None: no tracing).
    """
    credentials = server_credentials(tls)
    drain = drain or Drain()
    observer = ObservingInterceptor(drain, record_metrics=record_metrics)
    outer: list[grpc.ServerInterceptor] = [observer]
    if tracing is not None:
        outer.append(tracing)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[*outer, interceptor],
        options=server_options(limits, share_port=share_port),
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
    )
    register(server)
    health_servicer = HealthServicer(drain)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflection:
        reflection_service.enable_server_reflection(
            (*service_names, health.SERVICE_NAME, reflection_service.SERVICE_NAME),
            server,
            pool=documented_pool(service_names),
        )
    port = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    for name in (*service_names, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningServer(
        server=server, port=port, health=health_servicer, service_names=service_names, drain=drain, observer=observer
    )
    running.on_stop.append(interceptor.streams.close)
    return running


def run_until_signal(running: RunningServer, grace: float, signals: StopSignals) -> None:
    """Block until SIGTERM or SIGINT (perhaps received while starting), then shut down gracefully."""
    signals.wait()
    running.stop(grace, notice_s=min(DRAIN_NOTICE_S, grace / 2))
    log.info("stopped")
