"""Several server processes on one port (`--processes N`).

A service runs Python under one GIL: one process uses about one core, however many threads it has.
With `--processes N` the process started becomes a supervisor: it migrates or checks the schema,
reserves the address, and starts N server processes (spawned: new interpreters, nothing forked)
that all listen on it with SO_REUSEPORT; the kernel spreads the incoming connections over them. Each
is a whole service (its own pools, timer, health service), as a replica on another machine would be:
the database keeps them consistent (see docs/operations.md, "Several replicas"). With `--cpus`, server process i
runs on the i-th of those CPUs (round robin), so that each keeps its GIL on a core of its own.

The supervisor forwards SIGTERM and SIGINT to the server processes and waits for them. If one of them
exits on its own (a crash, a failure to start), the supervisor stops the others and exits with an
error, for the system's supervisor (systemd, Kubernetes) to start the service again. A server process
whose supervisor dies gets SIGTERM (Linux's parent-death signal).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import replace

from credit_common import metrics
from credit_common.config import ServiceSettings, split_address
from credit_common.service import ServiceDefinition
from credit_common.signals import StopSignals

__all__ = ["reserve_port", "server_settings", "split_address", "supervise"]

log = logging.getLogger("credit_grants.processes")

_PR_SET_PDEATHSIG = 1


def reserve_port(address: str) -> tuple[socket.socket, int]:
    """A socket bound to `address` with SO_REUSEPORT, never listening: it holds the port (port 0: a free
    one) for the server processes, which bind it too, and fails at once if another program has it."""
    host, port = split_address(address)
    family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(sockaddr)
    except OSError:
        sock.close()
        raise
    return sock, sock.getsockname()[1]


def server_settings(settings: ServiceSettings, listen: str, index: int) -> ServiceSettings:
    """The settings of server process `index` of `settings.processes`."""
    cpus = sorted(settings.cpus) if settings.cpus else None
    return replace(
        settings,
        listen=listen,
        migrate_on_start=False,  # done once, by the supervisor
        processes=1,
        process_index=index,
        cpus=frozenset({cpus[index % len(cpus)]}) if cpus else None,
        metrics_listen=None,  # the supervisor serves the metrics of them all
    )


Serve = Callable[[ServiceDefinition, ServiceSettings], int]


def supervise(definition: ServiceDefinition, settings: ServiceSettings, serve: Serve, signals: StopSignals) -> int:
    """Start `settings.processes` server processes, each running `serve(definition, its settings)`
    (credit_common.runtime.main), and supervise them until SIGTERM/SIGINT or until one of them exits.
    The exit code."""
    try:
        reserved, port = reserve_port(settings.listen)
    except (OSError, ValueError) as error:
        message = f"cannot listen on {settings.listen}: {getattr(error, 'strerror', None) or error}"
        log.error(message)
        print(f"{definition.name}: {message}", file=sys.stderr)
        return 2
    host, _ = split_address(settings.listen)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    exposition = None
    multiprocess_dir, created_dir = None, False
    if settings.metrics_listen:
        # Before the server processes start: they inherit PROMETHEUS_MULTIPROC_DIR (credit_common.metrics).
        multiprocess_dir, created_dir = metrics.prepare_multiprocess_dir(definition.name)
        try:
            exposition = metrics.start_metrics(
                settings.metrics_listen, settings.database, definition.gauges, multiprocess_dir=multiprocess_dir
            )
        except (OSError, ValueError) as error:
            reserved.close()
            message = f"cannot serve metrics on {settings.metrics_listen}: {getattr(error, 'strerror', None) or error}"
            log.error(message)
            print(f"{definition.name}: {message}", file=sys.stderr)
            return 2
    try:
        return _supervise(definition, settings, serve, reserved, listen, port, signals, multiprocess_dir)
    finally:
        if exposition is not None:
            exposition[0].stop()
            exposition[1].dispose()
        if created_dir and multiprocess_dir is not None:
            metrics.remove_multiprocess_dir(multiprocess_dir)


def _supervise(definition, settings, serve, reserved, listen, port, signals, multiprocess_dir) -> int:
    context = multiprocessing.get_context("spawn")
    children = []
    with reserved:
        for index in range(settings.processes):
            child = context.Process(
                target=_serve_child,
                args=(os.getpid(), serve, definition, server_settings(settings, listen, index)),
                name=f"{definition.name}-{index}",
            )
            child.start()
            children.append(child)
        log.info(
            "supervising",
            extra={"address": listen, "port": port, "processes": [child.pid for child in children]},
        )
        failed = None
        while failed is None and not signals.received():
            ended = multiprocessing.connection.wait([child.sentinel for child in children], timeout=0.2)
            for child in children:
                if child.sentinel in ended:
                    failed = child
                    break
        if signals.received():  # a server process that ended on the same signal (Ctrl-C reaches them all) is no failure
            failed = None
        if failed is not None:
            failed.join(10)  # its sentinel can fire a moment before its exit status is there
            metrics.process_ended(failed.pid, multiprocess_dir)
            log.error(
                "a server process exited: stopping the others",
                extra={"server_process": failed.name, "pid": failed.pid, "exit_code": failed.exitcode},
            )
        codes = _stop_all(children, settings.shutdown_grace_s + 10)
        for child in children:
            metrics.process_ended(child.pid, multiprocess_dir)
    if failed is not None:
        return failed.exitcode if failed.exitcode and failed.exitcode > 0 else 1
    log.info("stopped")
    return max(codes, default=0) if all(code >= 0 for code in codes) else 1


def _stop_all(children: list, timeout_s: float) -> list[int]:
    """SIGTERM to every server process still running; SIGKILL to any still running `timeout_s` later.
    Their exit codes (negative: ended by that signal)."""
    for child in children:
        if child.exitcode is None:
            child.terminate()
    for child in children:
        child.join(timeout_s)
        if child.exitcode is None:
            log.error("a server process did not stop in time: killed", extra={"pid": child.pid})
            child.kill()
            child.join()
    return [child.exitcode for child in children]


def _serve_child(parent: int, serve: Serve, definition: ServiceDefinition, settings: ServiceSettings) -> None:
    _die_with_parent(parent)
    sys.exit(serve(definition, settings))


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent dies (Linux); at once if it already has."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own signals still stop it
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
