"""Fuzz: hostile values in every field of every request of every RPC of both
services (enumerated from the service descriptors, so a new RPC or field is
covered without touching this file), against real servers on SQLite and
PostgreSQL. Whatever the value, the answer is never INTERNAL or UNKNOWN, every
error carries an ErrorInfo, and nothing logs a traceback.

Each request starts from a plausible base (fields named like the keys of a
small world set up first: a customer, a feature, a currency, a published plan,
a subscription, test clocks), so a hostile value reaches the code past the
checks of the other fields. A deterministic systematic pass sets, one field at
a time, every hostile value of the field's type; a hypothesis pass (bounded,
derandomized) sets random values in a few fields at once; random bytes go to
every method as the request."""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog_service.v1 import catalog_service_pb2 as cpb
from credit_common.grpc.errors import error_details
from credit_common.grpc.timestamps import to_timestamp
from grant_service.v1 import grant_service_pb2 as gpb
from tests.e2e.hostile.conftest import Services, tracebacks

SERVICES: tuple[ServiceDescriptor, ...] = (
    cpb.DESCRIPTOR.services_by_name["CatalogService"],
    gpb.DESCRIPTOR.services_by_name["GrantService"],
)
FORBIDDEN = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED)
CALL_TIMEOUT_S = 30
CONCURRENCY = 8
MAX_DEPTH = 4
T = datetime(2026, 5, 1, tzinfo=UTC)  # every base Timestamp: start and effective times agree
T_LATER = datetime(2027, 5, 1, tzinfo=UTC)

# ---------------------------------------------------------------------- hostile values by type

STRINGS: tuple[str, ...] = (
    "",
    "\x00",
    "x" * 1_000_000,
    " ",
    "\u202eevil\u202c",
    "e\u0301",
    "\U0010ffff",
    "\U0001d518\U0001d52b\U0001d526",  # mathematical fraktur
    "\u03a9" * 300,
    "NaN",
    "1e999999",
    "-0",
    "1" + "0" * 400,
    "-1",
    "0.0000001",
    "\u0661\u0662",  # Arabic-Indic digits
    "' OR '1'='1",
)
SECONDS_MIN, SECONDS_MAX = -62_135_596_800, 253_402_300_799
TIMESTAMPS: tuple[tuple[int, int], ...] = (
    (SECONDS_MAX + 1, 0),
    (SECONDS_MIN - 1, 0),
    (2**63 - 1, 0),
    (-(2**63), 0),
    (0, -1),
    (0, 1_000_000_000),
    (0, 2**31 - 1),
    (0, 0),  # 1970
    (SECONDS_MAX, 999_999_999),  # the last valid instant
)
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
}


def _ints(fd: FieldDescriptor) -> tuple[int, ...]:
    low, high = _INT_RANGES[fd.type]
    values = {low, high, 0, 1, min(max(-1, low), high)}
    if fd.type == FieldDescriptor.TYPE_ENUM:
        values.add(max(v.number for v in fd.enum_type.values) + 1)
    return tuple(sorted(values))


# ---------------------------------------------------------------------- the world and the base requests


@dataclass
class World:
    """What the base requests refer to, and page tokens of every list method."""

    clock_id: str  # a test clock nothing is attached to (advanced, deleted, ... by the fuzz)
    catalog_subscription_id: str
    grant_id: str
    tokens: dict[str, str]  # list method name -> a next_page_token it returned
    serial: Iterator[int] = field(default_factory=itertools.count)

    def string(self, method: MethodDescriptor, name: str) -> str:
        if name == "request_id":
            return f"fuzz-{next(self.serial)}"
        if name == "test_clock_id":
            return "" if method.name.startswith("Apply") or method.name == "CreateCustomer" else self.clock_id
        if name == "key":
            return _KEYS.get(method.name) or f"fuzz-new-{next(self.serial)}"  # Create*: a new key each time
        if name == "subscription_id" and method.containing_service is SERVICES[0]:
            return self.catalog_subscription_id
        if name == "subscription_id" and method.name.startswith("Apply"):
            return f"fuzz-sub-new-{next(self.serial)}"  # a new subscription: the whole first apply runs
        if name == "grant_id":
            return self.grant_id
        if name == "customer_key" and method.name.startswith("Apply"):
            return "fuzz-customer-2"  # the subscriptions the fuzz applies (some from 1970) burden no other method
        return _BASE_STRINGS.get(name, "fuzz")


_BASE_STRINGS = {
    "customer_key": "fuzz-customer",
    "currency_key": "fuzz-credits",
    "feature_key": "fuzz-calls",
    "plan_key": "fuzz-plan",
    "subscription_id": "fuzz-sub",
    "entitlement_key": "credits",
    "key": "fuzz-key",
    "amount": "100",
    "quantity": "1",
    "credits_per_unit": "1",
    "fixed_amount": "100",
    "min": "1",
    "max": "1000000",
    "default_value": "10",
    "page_token": "",
    "paths": "display_name",
    "fixed_limit": "10",
}
_KEYS = {
    "GetFeature": "fuzz-calls",
    "GetCreditCurrency": "fuzz-credits",
    "UpdateCreditCurrency": "fuzz-credits",
    "GetCustomer": "fuzz-customer",
    "GetPlan": "fuzz-plan",
    "UpdatePlan": "fuzz-draft",
    "PublishPlan": "fuzz-draft",
    "ArchivePlan": "fuzz-plan-2",
}
_BASE_MAPS = {"entitlement_values": ("credits", "5000")}
_LATER_TIMES = ("end_time", "expire_time")  # one year after the other times
_PREFERRED_ONEOF_MEMBERS = {"fixed_limit"}
TIMESTAMP = "google.protobuf.Timestamp"


def _message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def _base_scalar(world: World, method: MethodDescriptor, fd: FieldDescriptor) -> Any:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return world.string(method, fd.name)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return b"fuzz"
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return True
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return next((v.number for v in fd.enum_type.values if v.number), 0)
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return 1.0
    return 1 if fd.name in ("revision", "plan_version", "priority") else 0


def _oneof_member(oneof) -> str:
    names = [fd.name for fd in oneof.fields]
    return next((n for n in names if n in _PREFERRED_ONEOF_MEMBERS), names[0])


def _fill(message: Message, world: World, method: MethodDescriptor, depth: int = 0) -> None:
    for fd in message.DESCRIPTOR.fields:
        if fd.containing_oneof is not None and fd.name != _oneof_member(fd.containing_oneof):
            continue  # one member of a oneof is enough for a base
        if _is_map(fd):
            key, value = _BASE_MAPS.get(fd.name, ("fuzz", "1"))
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                _fill(getattr(message, fd.name)[key], world, method, depth + 1)
            else:
                getattr(message, fd.name)[key] = value if value_fd.type == FieldDescriptor.TYPE_STRING else 1
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.message_type.full_name == TIMESTAMP:
                target = getattr(message, fd.name).add() if fd.is_repeated else getattr(message, fd.name)
                target.CopyFrom(to_timestamp(T_LATER if fd.name in _LATER_TIMES else T))
            elif depth < MAX_DEPTH:
                target = getattr(message, fd.name).add() if fd.is_repeated else getattr(message, fd.name)
                target.SetInParent()
                _fill(target, world, method, depth + 1)
        elif fd.is_repeated:
            getattr(message, fd.name).append(_base_scalar(world, method, fd))
        else:
            setattr(message, fd.name, _base_scalar(world, method, fd))


def base_request(world: World, method: MethodDescriptor) -> Message:
    message = _message_class(method.input_type)()
    _fill(message, world, method)
    return message


# ---------------------------------------------------------------------- where a hostile value can go


@dataclass(frozen=True)
class Site:
    """One field of a request (a path into the base request) and how to set a value there."""

    path: str
    kind: str  # "string", "int", "bool", "timestamp", "bytes", "float"
    fd: FieldDescriptor
    set: Callable[[Message, Any], None]


def _scalar_kind(fd: FieldDescriptor) -> str:
    if fd.type == FieldDescriptor.TYPE_STRING:
        return "string"
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return "bytes"
    if fd.type == FieldDescriptor.TYPE_BOOL:
        return "bool"
    if fd.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return "float"
    return "int"


def _sites(descriptor: Descriptor, get: Callable[[Message], Message], prefix: str, depth: int) -> Iterator[Site]:
    for fd in descriptor.fields:
        path = prefix + fd.name
        if _is_map(fd):
            key_fd, value_fd = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
            base_key = _BASE_MAPS.get(fd.name, ("fuzz", "1"))[0]

            def set_key(m, v, get=get, name=fd.name, base_key=base_key):
                entries = getattr(get(m), name)
                old = entries[base_key]
                del entries[base_key]
                entries[v] = old

            yield Site(f"{path}{{key}}", _scalar_kind(key_fd), key_fd, set_key)
            if value_fd.type != FieldDescriptor.TYPE_MESSAGE:

                def set_value(m, v, get=get, name=fd.name, base_key=base_key):
                    getattr(get(m), name)[base_key] = v

                yield Site(f"{path}[{base_key}]", _scalar_kind(value_fd), value_fd, set_value)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if fd.is_repeated:

                def sub(m, get=get, name=fd.name):
                    return getattr(get(m), name)[0]

                sub_path = f"{path}[0]"
            else:

                def sub(m, get=get, name=fd.name):
                    return getattr(get(m), name)

                sub_path = path
            if fd.message_type.full_name == TIMESTAMP:

                def set_timestamp(m, v, sub=sub):
                    ts = sub(m)
                    ts.seconds, ts.nanos = v

                yield Site(sub_path, "timestamp", fd, set_timestamp)
            elif depth < MAX_DEPTH:
                yield from _sites(fd.message_type, sub, sub_path + ".", depth + 1)
        elif fd.is_repeated:

            def set_item(m, v, get=get, name=fd.name):
                getattr(get(m), name)[0] = v

            yield Site(f"{path}[0]", _scalar_kind(fd), fd, set_item)
        else:

            def set_scalar(m, v, get=get, name=fd.name):
                setattr(get(m), name, v)

            yield Site(path, _scalar_kind(fd), fd, set_scalar)


def sites(method: MethodDescriptor) -> list[Site]:
    return list(_sites(method.input_type, lambda m: m, "", 0))


def hostile_values(site: Site, world: World, method: MethodDescriptor) -> tuple[Any, ...]:
    if site.kind == "string":
        if site.fd.name == "page_token":
            return STRINGS + tuple(t for m, t in world.tokens.items() if m != method.name)
        return STRINGS
    if site.kind == "timestamp":
        return TIMESTAMPS
    if site.kind == "int":
        return _ints(site.fd)
    if site.kind == "bool":
        return (True, False)
    if site.kind == "bytes":
        return (b"", b"\x00", b"\xff" * 1024)
    return (0.0, -1.0, float("inf"), float("nan"))


# ---------------------------------------------------------------------- calling and judging


def _methods() -> list[tuple[ServiceDescriptor, MethodDescriptor]]:
    """Every RPC; the ones that end or remove something last, so the others see the world whole."""
    methods = [(s, m) for s in SERVICES for m in s.methods]
    last = ("Delete", "Archive", "Cancel", "Void")
    return sorted(methods, key=lambda sm: sm[1].name.startswith(last))


@dataclass
class Fuzzer:
    """Sends requests and keeps what must never happen (`findings`) and how many of each code came back."""

    services: Services
    world: World
    calls: int = 0
    findings: list[str] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    _callables: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _callable(self, service: ServiceDescriptor, method: MethodDescriptor):
        name = f"/{service.full_name}/{method.name}"
        with self._lock:
            call = self._callables.get(name)
            if call is None:
                channel = self.services.catalog_channel if service is SERVICES[0] else self.services.grant_channel
                if method.server_streaming:  # WatchEvents: its first message (or its error) is the answer
                    call = _first_message(
                        channel.unary_stream(name, request_serializer=None, response_deserializer=None)
                    )
                else:
                    call = channel.unary_unary(name, request_serializer=None, response_deserializer=None)
                self._callables[name] = call
            return call

    def send(self, service: ServiceDescriptor, method: MethodDescriptor, payload: bytes, what: str) -> None:
        finding = None
        try:
            self._callable(service, method)(payload, timeout=CALL_TIMEOUT_S)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
            info, _ = error_details(error)
            if code in FORBIDDEN:
                finding = f"{method.name} {what}: {code.name} {error.details()[:200]}"
            elif info is None or not info.reason:
                finding = f"{method.name} {what}: {code.name} without ErrorInfo: {error.details()[:200]}"
        with self._lock:
            self.calls += 1
            self.codes[code.name] += 1
            if finding is not None:
                self.findings.append(finding)

    def send_message(self, service, method, request: Message, what: str) -> None:
        self.send(service, method, request.SerializeToString(), what)

    def send_all(self, service, method, requests: Iterator[tuple[Message, str]]) -> None:
        """Send concurrently (as a busy server sees them); return when every answer is in."""
        with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="fuzz") as pool:
            for done in [pool.submit(self.send_message, service, method, r, what) for r, what in requests]:
                done.result()


def _first_message(call):
    """A server-streaming call as a unary one: its first message, then hang up."""

    def first(payload: bytes, timeout: float) -> bytes | None:
        stream = call(payload, timeout=timeout)
        try:
            return next(stream, None)
        finally:
            stream.cancel()

    return first


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} chars)"


@pytest.fixture(scope="module")
def world(services: Services) -> World:
    c, g = services.catalog, services.grant
    for key in ("fuzz-calls", "fuzz-calls-2"):
        feature = cpb.Feature(key=key, display_name="Calls", type=cpb.FEATURE_TYPE_METERED, unit_name="call")
        c.CreateFeature(cpb.CreateFeatureRequest(feature=feature), timeout=30)
    for key, feature_key in (("fuzz-credits", "fuzz-calls"), ("fuzz-credits-2", "fuzz-calls-2")):
        currency = cpb.CreditCurrency(
            key=key,
            display_name="Credits",
            unit_name="credit",
            rates=[cpb.CreditRate(feature_key=feature_key, credits_per_unit="1")],
        )
        c.CreateCreditCurrency(cpb.CreateCreditCurrencyRequest(credit_currency=currency), timeout=30)
    for key in ("fuzz-customer", "fuzz-customer-2"):
        c.CreateCustomer(cpb.CreateCustomerRequest(customer=cpb.Customer(key=key, display_name="Fuzz")), timeout=30)
    for key in ("fuzz-plan", "fuzz-plan-2", "fuzz-draft"):
        plan = cpb.Plan(
            key=key,
            display_name="Fuzz",
            custom=True,
            credit_entitlements=[
                cpb.CreditEntitlement(
                    key="credits",
                    currency_key="fuzz-credits",
                    cadence=cpb.CADENCE_MONTHLY,
                    variable_amount=cpb.VariableValue(min="1", max="1000000"),
                )
            ],
        )
        c.CreatePlan(cpb.CreatePlanRequest(plan=plan), timeout=30)
        if key != "fuzz-draft":
            c.PublishPlan(cpb.PublishPlanRequest(key=key), timeout=30)
    provisioned = c.ProvisionSubscription(
        cpb.ProvisionSubscriptionRequest(
            customer_key="fuzz-customer", plan_key="fuzz-plan", entitlement_values={"credits": "5000"}
        ),
        timeout=30,
    )
    g.ApplyCreditCurrency(
        gpb.ApplyCreditCurrencyRequest(
            currency_key="fuzz-credits",
            revision=1,
            rates=[gpb.CreditRate(feature_key="fuzz-calls", credits_per_unit="1")],
        ),
        timeout=30,
    )
    schedule = gpb.CreditSchedule(
        entitlement_key="credits",
        currency_key="fuzz-credits",
        cadence=gpb.CADENCE_MONTHLY,
        amounts=[gpb.ScheduledAmount(amount="1000", effective_time=to_timestamp(T))],
    )
    for sub in ("fuzz-sub", "fuzz-sub-2"):
        g.ApplySubscription(
            gpb.ApplySubscriptionRequest(
                subscription_id=sub,
                customer_key="fuzz-customer",
                revision=1,
                start_time=to_timestamp(T),
                credit_schedules=[schedule],
            ),
            timeout=30,
        )
    g.ReportUsage(
        gpb.ReportUsageRequest(request_id="seed", customer_key="fuzz-customer", feature_key="fuzz-calls", quantity="1")
    )
    g.ReportUsage(
        gpb.ReportUsageRequest(
            request_id="seed-2", customer_key="fuzz-customer", feature_key="fuzz-calls", quantity="1"
        )
    )
    clocks = [
        g.CreateTestClock(gpb.CreateTestClockRequest(name="fuzz", frozen_time=to_timestamp(T)), timeout=30)
        for _ in range(2)
    ]
    tokens = {
        "ListFeatures": c.ListFeatures(cpb.ListFeaturesRequest(page_size=1)).next_page_token,
        "ListCreditCurrencies": c.ListCreditCurrencies(cpb.ListCreditCurrenciesRequest(page_size=1)).next_page_token,
        "ListPlans": c.ListPlans(cpb.ListPlansRequest(page_size=1)).next_page_token,
        "ListCustomers": c.ListCustomers(cpb.ListCustomersRequest(page_size=1)).next_page_token,
        "ListGrants": g.ListGrants(gpb.ListGrantsRequest(customer_key="fuzz-customer", page_size=1)).next_page_token,
        "ListLedgerEntries": g.ListLedgerEntries(
            gpb.ListLedgerEntriesRequest(customer_key="fuzz-customer", page_size=1)
        ).next_page_token,
        "ListTestClocks": g.ListTestClocks(gpb.ListTestClocksRequest(page_size=1)).next_page_token,
    }
    assert all(tokens.values()), tokens
    grants = g.ListGrants(gpb.ListGrantsRequest(customer_key="fuzz-customer")).grants
    grant = next(g for g in grants if g.status == gpb.GRANT_STATUS_ACTIVE)
    return World(
        clock_id=clocks[0].test_clock.test_clock_id,
        catalog_subscription_id=provisioned.subscription.subscription_id,
        grant_id=grant.grant_id,
        tokens=tokens,
    )


@pytest.fixture
def fuzzer(services: Services, world: World, caplog) -> Iterator[Fuzzer]:
    caplog.set_level(logging.INFO)
    fuzzer = Fuzzer(services, world)
    started = time.perf_counter()
    yield fuzzer
    elapsed = time.perf_counter() - started
    print(f"\n{services.backend}: {fuzzer.calls} calls in {elapsed:.1f}s; codes {sorted(fuzzer.codes.items())}")
    assert fuzzer.findings == [], "\n".join(fuzzer.findings[:100])
    assert tracebacks(caplog.records) == []


def test_every_field_of_every_rpc_with_every_hostile_value(fuzzer: Fuzzer):
    for service, method in _methods():

        def requests(method=method) -> Iterator[tuple[Message, str]]:
            yield base_request(fuzzer.world, method), "the base request"
            for site in sites(method):
                for value in hostile_values(site, fuzzer.world, method):
                    request = base_request(fuzzer.world, method)
                    site.set(request, value)
                    yield request, f"{site.path}={_show(value)}"

        fuzzer.send_all(service, method, requests())


def test_random_bytes_as_the_request_of_every_rpc(fuzzer: Fuzzer):
    rng = random.Random(13)
    for service, method in _methods():
        base = base_request(fuzzer.world, method).SerializeToString()
        for size in (1, 7, 64, 512):
            fuzzer.send(service, method, rng.randbytes(size), f"random {size} bytes")
        for _ in range(4 if base else 0):  # the base request with a few bytes flipped
            flipped = bytearray(base)
            for _ in range(3):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            fuzzer.send(service, method, bytes(flipped), "flipped bytes")


def _value(site: Site) -> st.SearchStrategy[Any]:
    if site.kind == "string":
        return st.one_of(st.sampled_from(STRINGS), st.text(max_size=40))
    if site.kind == "timestamp":
        return st.one_of(
            st.sampled_from(TIMESTAMPS),
            st.tuples(st.integers(SECONDS_MIN - 10, SECONDS_MAX + 10), st.integers(-(2**31), 2**31 - 1)),
        )
    if site.kind == "int":
        low, high = _INT_RANGES[site.fd.type]
        return st.one_of(st.sampled_from(_ints(site.fd)), st.integers(low, high))
    if site.kind == "bool":
        return st.booleans()
    if site.kind == "bytes":
        return st.binary(max_size=64)
    return st.floats()


_ALL_SITES = [(s, m, sites(m)) for s, m in _methods()]


@st.composite
def _mutations(draw):
    service, method, method_sites = draw(st.sampled_from(_ALL_SITES))
    chosen = draw(st.lists(st.sampled_from(method_sites), min_size=1, max_size=3, unique_by=lambda s: s.path))
    return service, method, [(site, draw(_value(site))) for site in chosen]


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=_mutations())
def test_random_hostile_values_in_a_few_fields_at_once(fuzzer: Fuzzer, mutation):
    service, method, changes = mutation
    request = base_request(fuzzer.world, method)
    for site, value in changes:
        site.set(request, value)
    fuzzer.send_message(service, method, request, ", ".join(f"{s.path}={_show(v)}" for s, v in changes))
    assert fuzzer.findings == [], fuzzer.findings
