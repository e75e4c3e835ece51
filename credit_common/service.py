"""What a service declares about itself: its names, its contract's roles, its database, its flags,
and the parts that are its own (`assemble`). The shared kit (credit_common.runtime) does the rest:
`python -m <service>`, the server, the process's life, several server processes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Table

from credit_common.clock import Clock
from credit_common.config import ServiceFlags
from credit_common.metrics import GaugeSource

if TYPE_CHECKING:
    import grpc

    from credit_common.grpc.server import RunningServer

Stop = Callable[[], None]


@dataclass(frozen=True)
class ServiceParts:
    """A service's own parts, as its `assemble` made them: `register` adds its servicers to the
    server; `started`, if any, starts what must wait for the server (a timer, a dispatcher) and
    returns their stops. Whatever `assemble` started before (clients, workers) it has handed to
    the `on_stop` it was given."""

    register: Callable[[grpc.Server], None]
    started: Callable[[RunningServer], Sequence[Stop]] | None = None


# assemble(settings, engine, clock, on_stop) -> ServiceParts; on_stop(stop) hands over something
# started, stopped after the server drained, in reverse order (and at once if the start fails).
Assemble = Callable[[Any, Engine, Clock, Callable[[Stop], None]], ServiceParts]


@dataclass(frozen=True)
class ServiceDefinition:
    name: str  # "catalog_service": the package, `python -m <name>`
    error_domain: str  # ErrorInfo.domain, e.g. "catalog.credit-grants"
    service_names: Sequence[str]  # full gRPC service names
    migrations: str  # Alembic script location, e.g. "catalog_service.adapters:migrations"
    method_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # credit_common.auth.method_roles
    read_methods: frozenset[str] = frozenset()  # full paths of the methods that change nothing (not audited)
    api_keys: Table | None = None  # the service's api_keys table (credit_common.auth.store)
    flags: ServiceFlags | None = None  # the service's own flags and its typed settings (credit_common.config)
    # Gauges of the database's state, computed when /metrics is scraped (credit_common.metrics). Another
    # part of a service adds its own here (e.g. the webhooks' backlog and lag).
    gauges: Sequence[GaugeSource] = ()
    env_prefix: str = ""  # of its environment variables: "CATALOG" reads CATALOG_DATABASE_URL ...
    default_port: int = 0  # of --listen
    database_file: str = ""  # the SQLite file of the default --database-url
    assemble: Assemble | None = None  # its own parts (credit_common.runtime.build)
