"""`credit-grants`: the operators' command line over credit_client (docs/client.md).

Human tables by default, `--output json` for scripts (one JSON document on stdout: an object, or
a list for list commands). Errors go to stderr in plain words (and as JSON with `--output json`),
and the exit status says what happened (`EXIT_CODES`)."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
import yaml
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from catalog_service.v1 import catalog_service_pb2 as cpb
from credit_client.clients import CatalogClient, GrantClient, enum_value, short_name
from credit_client.errors import ApiError
from credit_client.settings import ClientSettings
from grant_service.v1 import grant_service_pb2 as gpb
from grant_service.v1 import webhooks_pb2 as wpb

# Exit statuses scripts can rely on.
EXIT_OK = 0
EXIT_USAGE = 1  # the command line is wrong, or the server said INVALID_ARGUMENT (a field is wrong)
EXIT_NOT_FOUND = 2  # NOT_FOUND
EXIT_CONFLICT = 3  # ALREADY_EXISTS or FAILED_PRECONDITION: the request conflicts with the current state
EXIT_EXHAUSTED = 4  # RESOURCE_EXHAUSTED: not enough credits (or a server's limit)
EXIT_AUTH = 5  # UNAUTHENTICATED or PERMISSION_DENIED: no key, a bad key, or a key without the role
EXIT_UNAVAILABLE = 6  # UNAVAILABLE or DEADLINE_EXCEEDED (after retries): try again later, same request_id
EXIT_ERROR = 7  # anything else (INTERNAL, UNKNOWN, ...)
EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.OUT_OF_RANGE: EXIT_USAGE,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: EXIT_CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: EXIT_CONFLICT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: EXIT_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED: EXIT_AUTH,
    grpc.StatusCode.PERMISSION_DENIED: EXIT_AUTH,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: EXIT_UNAVAILABLE,
}

# After `make run`, from the repository: its development admin keys, when no key is configured.
DEV_KEY_FILES = {"catalog": Path("data/catalog-admin.key"), "grant": Path("data/grant-admin.key")}


class Output(StrEnum):
    table = "table"
    json = "json"


@dataclass
class State:
    output: Output = Output.table
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict)
    # On a terminal, its width; piped, wide lines (a script's grep sees one row per line).
    console: Console = field(default_factory=lambda: Console(width=None if sys.stdout.isatty() else 400))

    def settings(self, service: str) -> ClientSettings:
        settings = ClientSettings.from_env(service, **self.overrides.get(service, {}))
        if settings.api_key is None and DEV_KEY_FILES[service].is_file():
            settings = settings.with_(api_key=DEV_KEY_FILES[service].read_text().strip())
        return settings

    @property
    def catalog(self) -> CatalogClient:
        if "catalog" not in self._clients:
            self._clients["catalog"] = CatalogClient(self.settings("catalog"))
        return self._clients["catalog"]

    @property
    def grant(self) -> GrantClient:
        if "grant" not in self._clients:
            self._clients["grant"] = GrantClient(self.settings("grant"))
        return self._clients["grant"]

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


_CURRENT: list[State] = []  # the run's state, for main's error output after the context closed


def state() -> State:
    return _CURRENT[0]


# ------------------------------------------------------------------ output


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def when(ts) -> str:
    if ts is None or not (ts.seconds or ts.nanos):
        return "-"
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M:%S")


def show(
    items: Message | Sequence[Message],
    columns: Sequence[tuple[str, Callable[[Any], Any]]],
    title: str | None = None,
) -> None:
    """One message or a list of them: a table (columns: header, value of a message), or JSON."""
    s = state()
    single = isinstance(items, Message)
    rows = [items] if single else list(items)
    if s.output is Output.json:
        document = as_dict(rows[0]) if single else [as_dict(m) for m in rows]
        print(json.dumps(document, indent=2, sort_keys=True))
        return
    if single:
        table = Table(title=title, show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        for header, value in columns:
            table.add_row(header, str(value(rows[0])))
    else:
        table = Table(title=title, box=None, header_style="bold")
        for header, _value in columns:
            table.add_column(header)
        for m in rows:
            table.add_row(*(str(value(m)) for _h, value in columns))
    s.console.print(table)


def show_value(document: dict[str, Any], text: str) -> None:
    if state().output is Output.json:
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        state().console.print(text)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print a usage problem found before calling the server; the caller raises what this returns."""
    if state().output is Output.json:
        print(json.dumps({"error": {"code": "USAGE", "message": message}}), file=sys.stderr)
    else:
        print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code)


# ------------------------------------------------------------------- inputs


def parse_time(text: str | None, option: str) -> datetime | None:
    """ISO 8601 ("2026-01-31T12:00:00Z", "2026-01-31"); without a zone, UTC; "now" is now."""
    if text is None:
        return None
    if text == "now":
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time such as 2026-01-31T12:00:00Z", param_hint=option
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def parse_values(pairs: Iterable[str], option: str) -> dict[str, str]:
    """KEY=VALUE pairs (amounts stay decimal strings)."""
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        values[key.strip()] = value.strip()
    return values


def load_document(path: Path) -> dict[str, Any]:
    """A YAML or JSON file holding one object."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise typer.BadParameter(f"cannot read {path}: {error}", param_hint="FILE") from None
    if not isinstance(document, dict):
        raise typer.BadParameter(f"{path} must hold one object (a plan's fields)", param_hint="FILE")
    return document


# ------------------------------------------------------------------ the app

app = typer.Typer(
    name="credit-grants",
    help="Operate the credit-grants services (catalog and grant service). Exit status: 0 ok, 1 usage or "
    "invalid argument, 2 not found, 3 conflict (already exists, failed precondition), 4 not enough credits, "
    "5 authentication or role, 6 unavailable (try again), 7 other error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    output: Annotated[Output, typer.Option("--output", "-o", help="table for people, json for scripts")] = Output.table,
    catalog: Annotated[
        str | None, typer.Option(help="catalog address (env CREDIT_GRANTS_CATALOG_ADDRESS; 127.0.0.1:50051)")
    ] = None,
    grant: Annotated[
        str | None, typer.Option(help="grant service address (env CREDIT_GRANTS_GRANT_ADDRESS; 127.0.0.1:50052)")
    ] = None,
    catalog_api_key: Annotated[
        str | None, typer.Option(help="catalog API key (env CREDIT_GRANTS_CATALOG_API_KEY or ..._API_KEY_FILE)")
    ] = None,
    grant_api_key: Annotated[
        str | None, typer.Option(help="grant service API key (env CREDIT_GRANTS_GRANT_API_KEY or ..._API_KEY_FILE)")
    ] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(help="CA (PEM) of both services' certificates: TLS (env ..._TLS_CA)")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="client certificate (PEM) for mTLS (env ..._TLS_CERT)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="its private key (PEM) (env ..._TLS_KEY)")] = None,
    deadline: Annotated[float | None, typer.Option(help="seconds per call (env ..._DEADLINE_S; default 10)")] = None,
) -> None:
    """Without a key option or variable, the development keys of `make run` (data/*-admin.key) are used
    when the command runs in the repository."""
    common = {
        "tls_ca_file": str(tls_ca) if tls_ca else None,
        "tls_cert_file": str(tls_cert) if tls_cert else None,
        "tls_key_file": str(tls_key) if tls_key else None,
        "deadline_s": deadline,
    }
    ctx.obj = State(
        output=output,
        overrides={
            "catalog": {"address": catalog, "api_key": catalog_api_key, **common},
            "grant": {"address": grant, "api_key": grant_api_key, **common},
        },
    )
    ctx.call_on_close(ctx.obj.close)
    _CURRENT[:] = [ctx.obj]


def group(name: str, help: str) -> typer.Typer:
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


RequestId = Annotated[str, typer.Option(help="idempotency key (a new one when empty): send it again to retry safely")]

# ---------------------------------------------------------------- features

features = group("features", "Features (catalog).")
FEATURE_COLUMNS = [
    ("key", lambda f: f.key),
    ("name", lambda f: f.display_name),
    ("type", lambda f: short_name(cpb.FeatureType.DESCRIPTOR, f.type)),
    ("unit", lambda f: f.unit_name or "-"),
    ("created (UTC)", lambda f: when(f.create_time)),
]


@features.command("list")
def features_list() -> None:
    show(list(state().catalog.list_features()), FEATURE_COLUMNS)


@features.command("show")
def features_show(key: str) -> None:
    show(state().catalog.get_feature(key), FEATURE_COLUMNS)


@features.command("create")
def features_create(
    key: str,
    name: Annotated[str, typer.Option(help="display name")],
    type: Annotated[str, typer.Option(help="metered or boolean")] = "metered",
    unit: Annotated[str, typer.Option(help="unit of one quantity of a metered feature, e.g. call")] = "",
    request_id: RequestId = "",
) -> None:
    show(state().catalog.create_feature(key, name, type, unit, request_id=request_id), FEATURE_COLUMNS)


# ------------------------------------------------------- credit currencies

currencies = group("currencies", "Credit currencies and their rates (catalog).")
CURRENCY_COLUMNS = [
    ("key", lambda c: c.key),
    ("name", lambda c: c.display_name),
    ("unit", lambda c: c.unit_name),
    ("rates", lambda c: ", ".join(f"{r.feature_key}={r.credits_per_unit}" for r in c.rates) or "-"),
    ("revision", lambda c: c.revision),
]
Rates = Annotated[list[str], typer.Option("--rate", help="FEATURE=CREDITS_PER_UNIT, e.g. gpt-calls=2.5 (repeat)")]


@currencies.command("list")
def currencies_list() -> None:
    show(list(state().catalog.list_credit_currencies()), CURRENCY_COLUMNS)


@currencies.command("show")
def currencies_show(key: str) -> None:
    show(state().catalog.get_credit_currency(key), CURRENCY_COLUMNS)


@currencies.command("create")
def currencies_create(
    key: str,
    name: Annotated[str, typer.Option(help="display name")],
    unit: Annotated[str, typer.Option(help="name of one credit")] = "credit",
    rate: Rates = [],  # noqa: B006 (typer reads the default)
    request_id: RequestId = "",
) -> None:
    rates = parse_values(rate, "--rate")
    show(state().catalog.create_credit_currency(key, name, unit, rates, request_id=request_id), CURRENCY_COLUMNS)


@currencies.command("update")
def currencies_update(
    key: str,
    name: Annotated[str | None, typer.Option(help="new display name")] = None,
    unit: Annotated[str | None, typer.Option(help="new unit name")] = None,
    rate: Annotated[
        list[str] | None, typer.Option("--rate", help="FEATURE=CREDITS_PER_UNIT: replaces every rate (repeat)")
    ] = None,
    request_id: RequestId = "",
) -> None:
    rates = parse_values(rate, "--rate") if rate else None
    if name is None and unit is None and rates is None:
        raise fail("nothing to update: give --name, --unit or --rate")
    currency = state().catalog.update_credit_currency(
        key, display_name=name, unit_name=unit, rates=rates, request_id=request_id
    )
    show(currency, CURRENCY_COLUMNS)


# ------------------------------------------------------------------- plans

plans = group("plans", "Plans: drafts, published versions, archive (catalog).")


def _entitlements(plan: cpb.Plan) -> str:
    parts = []
    for e in plan.credit_entitlements:
        cadence = short_name(cpb.Cadence.DESCRIPTOR, e.cadence)
        if e.WhichOneof("amount") == "fixed_amount":
            parts.append(f"{e.key}: {e.fixed_amount} {e.currency_key} {cadence}")
        else:
            v = e.variable_amount
            parts.append(f"{e.key}: {e.currency_key} {cadence}, negotiated [{v.min or '>0'}..{v.max or 'no max'}]")
    for e in plan.feature_entitlements:
        parts.append(f"{e.key}: {e.feature_key}")
    return "; ".join(parts) or "-"


PLAN_COLUMNS = [
    ("key", lambda p: p.key),
    ("name", lambda p: p.display_name),
    ("status", lambda p: short_name(cpb.PlanStatus.DESCRIPTOR, p.status)),
    ("version", lambda p: p.version or "draft"),
    ("custom", lambda p: "yes" if p.custom else "no"),
    ("entitlements", _entitlements),
]


@plans.command("list")
def plans_list(status: Annotated[str | None, typer.Option(help="draft, published or archived")] = None) -> None:
    show(list(state().catalog.list_plans(status)), PLAN_COLUMNS)


@plans.command("show")
def plans_show(
    key: str,
    version: Annotated[int, typer.Option(help="published version (0: the latest)")] = 0,
    draft: Annotated[bool, typer.Option("--draft", help="the draft instead")] = False,
) -> None:
    show(state().catalog.get_plan(key, version, draft=draft), PLAN_COLUMNS)


@plans.command("create")
def plans_create(
    file: Annotated[Path, typer.Argument(help="YAML or JSON: the Plan's fields as in the proto")],
    publish: Annotated[bool, typer.Option("--publish", help="publish the draft at once")] = False,
    request_id: RequestId = "",
) -> None:
    """Create a draft from a file, e.g. {key: enterprise, display_name: Enterprise, custom: true,
    credit_entitlements: [{key: ai-credits-monthly, currency_key: ai-credits, cadence: CADENCE_MONTHLY,
    variable_amount: {min: "10000", max: "1000000"}}]}."""
    try:
        plan_message = CatalogClient.plan_message(load_document(file))
    except json_format.ParseError as error:
        raise typer.BadParameter(f"{file} is not a Plan: {error}", param_hint="FILE") from None
    plan = state().catalog.create_plan(plan_message, request_id=request_id)
    if publish:
        plan = state().catalog.publish_plan(plan.key, request_id=f"{request_id}-publish" if request_id else "")
    show(plan, PLAN_COLUMNS)


@plans.command("publish")
def plans_publish(key: str, request_id: RequestId = "") -> None:
    show(state().catalog.publish_plan(key, request_id=request_id), PLAN_COLUMNS)


@plans.command("archive")
def plans_archive(key: str, request_id: RequestId = "") -> None:
    show(state().catalog.archive_plan(key, request_id=request_id), PLAN_COLUMNS)


# --------------------------------------------------------------- customers

customers = group("customers", "Customers (catalog).")
CUSTOMER_COLUMNS = [
    ("key", lambda c: c.key),
    ("name", lambda c: c.display_name),
    ("test clock", lambda c: c.test_clock_id or "-"),
    ("created (UTC)", lambda c: when(c.create_time)),
]


@customers.command("list")
def customers_list() -> None:
    show(list(state().catalog.list_customers()), CUSTOMER_COLUMNS)


@customers.command("show")
def customers_show(key: str) -> None:
    show(state().catalog.get_customer(key), CUSTOMER_COLUMNS)


@customers.command("create")
def customers_create(
    key: str,
    name: Annotated[str, typer.Option(help="display name")] = "",
    test_clock: Annotated[str, typer.Option(help="attach to this test clock (immutable)")] = "",
    request_id: RequestId = "",
) -> None:
    customer = state().catalog.create_customer(key, name, test_clock_id=test_clock, request_id=request_id)
    show(customer, CUSTOMER_COLUMNS)


# ----------------------------------------------------------- subscriptions

subscriptions = group("subscriptions", "Subscriptions (catalog): show, amend, cancel.")


def _amounts(s: cpb.Subscription) -> str:
    return "; ".join(f"{e.key}={e.amount} {e.currency_key}" for e in s.credit_entitlements) or "-"


def _handoff(s: cpb.Subscription) -> str:
    h = s.handoff
    text = f"{short_name(cpb.HandoffStatus.DESCRIPTOR, h.status)} (revision {h.delivered_revision})"
    return text + (f": {h.failure_reason}" if h.failure_reason else "")


SUBSCRIPTION_COLUMNS = [
    ("id", lambda s: s.subscription_id),
    ("customer", lambda s: s.customer_key),
    ("plan", lambda s: f"{s.plan_key} v{s.plan_version}"),
    ("status", lambda s: short_name(cpb.SubscriptionStatus.DESCRIPTOR, s.status)),
    ("start (UTC)", lambda s: when(s.start_time)),
    ("end (UTC)", lambda s: when(s.end_time)),
    ("amounts now", _amounts),
    ("revision", lambda s: s.revision),
    ("handoff", _handoff),
]


@subscriptions.command("list")
def subscriptions_list(
    customer: Annotated[str, typer.Option(help="only this customer's")] = "",
    plan: Annotated[str, typer.Option(help="only this plan's")] = "",
) -> None:
    show(list(state().catalog.list_subscriptions(customer, plan)), SUBSCRIPTION_COLUMNS)


@subscriptions.command("show")
def subscriptions_show(subscription_id: str) -> None:
    show(state().catalog.get_subscription(subscription_id), SUBSCRIPTION_COLUMNS)


@subscriptions.command("amend")
def subscriptions_amend(
    subscription_id: str,
    value: Annotated[list[str], typer.Option("--value", help="ENTITLEMENT=AMOUNT (repeat)")],
    immediately: Annotated[bool, typer.Option("--immediately", help="from now, not from the next period")] = False,
    request_id: RequestId = "",
) -> None:
    values = parse_values(value, "--value")
    timing = "immediately" if immediately else "next_period"
    subscription = state().catalog.amend_subscription(subscription_id, values, timing, request_id=request_id)
    show(subscription, SUBSCRIPTION_COLUMNS)


@subscriptions.command("cancel")
def subscriptions_cancel(
    subscription_id: str,
    immediately: Annotated[
        bool, typer.Option("--immediately/--at-period-end", help="end now, or at the end of the current period")
    ] = False,
    request_id: RequestId = "",
) -> None:
    mode = "immediately" if immediately else "at_period_end"
    show(state().catalog.cancel_subscription(subscription_id, mode, request_id=request_id), SUBSCRIPTION_COLUMNS)


# --------------------------------------------------------------- provision


@dataclass(frozen=True)
class Negotiable:
    key: str
    what: str  # "ai-credits MONTHLY" or "feature seats"
    min: str
    max: str
    default: str


def negotiable(plan: cpb.Plan) -> list[Negotiable]:
    """The plan version's variable entitlements, in the plan's order."""
    found = []
    for e in plan.credit_entitlements:
        if e.WhichOneof("amount") == "variable_amount":
            v = e.variable_amount
            cadence = short_name(cpb.Cadence.DESCRIPTOR, e.cadence)
            found.append(Negotiable(e.key, f"{e.currency_key} {cadence}", v.min, v.max, v.default_value))
    for e in plan.feature_entitlements:
        if e.WhichOneof("value") == "variable_limit":
            v = e.variable_limit
            found.append(Negotiable(e.key, f"limit of {e.feature_key}", v.min, v.max, v.default_value))
    return found


@app.command()
def provision(
    customer: str,
    plan: str,
    value: Annotated[
        list[str] | None, typer.Option("--value", help="ENTITLEMENT=AMOUNT for a negotiated value (repeat)")
    ] = None,
    plan_version: Annotated[int, typer.Option(help="published version (0: the latest)")] = 0,
    start: Annotated[str | None, typer.Option(help="start time, ISO 8601 (default: now, or the test clock's)")] = None,
    end: Annotated[str | None, typer.Option(help="end time, ISO 8601")] = None,
    test_clock: Annotated[str, typer.Option(help="test clock (default: the customer's)")] = "",
    prompt: Annotated[
        bool | None,
        typer.Option("--prompt/--no-prompt", help="ask for each negotiated value not given (default: on a terminal)"),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="wait until the grant service has it")] = False,
    request_id: RequestId = "",
) -> None:
    """Subscribe a customer to a published plan, with the negotiated values of its variable entitlements:
    each one not given with --value is asked for, showing its bounds and default (or, without a terminal
    or with --no-prompt, its default is used, and one without a default is an error)."""
    s = state()
    values = parse_values(value or [], "--value")
    version = s.catalog.get_plan(plan, plan_version)
    interactive = sys.stdin.isatty() if prompt is None else prompt
    missing = []
    for item in negotiable(version):
        if item.key in values:
            continue
        if not interactive:
            if not item.default:
                missing.append(item.key)
            continue
        bounds = f"between {item.min or 'more than 0'} and {item.max or 'no maximum'}"
        text = f"{item.key} ({item.what}, {bounds})"
        answer = typer.prompt(text, default=item.default or None, err=True)
        values[item.key] = str(answer).strip()
    if missing:
        raise fail(f"no value for {', '.join(missing)}: give --value KEY=AMOUNT (or run on a terminal to be asked)")
    subscription = s.catalog.provision_subscription(
        customer,
        plan,
        values,
        plan_version=version.version,
        start_time=parse_time(start, "--start"),
        end_time=parse_time(end, "--end"),
        test_clock_id=test_clock,
        request_id=request_id,
    )
    if wait:
        subscription = _wait_delivered(subscription)
    show(subscription, SUBSCRIPTION_COLUMNS)


def _wait_delivered(subscription: cpb.Subscription, timeout_s: float = 60.0) -> cpb.Subscription:
    s = state()
    deadline = time.monotonic() + timeout_s
    with (
        s.console.status("waiting for the handoff to the grant service", spinner="dots")
        if sys.stderr.isatty()
        else _nothing()
    ):
        while subscription.handoff.status != cpb.HANDOFF_STATUS_DELIVERED:
            if subscription.handoff.status == cpb.HANDOFF_STATUS_FAILED or time.monotonic() > deadline:
                break
            time.sleep(0.2)
            subscription = s.catalog.get_subscription(subscription.subscription_id)
    return subscription


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------- balance, grants

GRANT_COLUMNS = [
    ("grant", lambda g: g.grant_id),
    ("currency", lambda g: g.currency_key),
    ("status", lambda g: short_name(gpb.GrantStatus.DESCRIPTOR, g.status)),
    ("amount", lambda g: g.amount),
    ("used", lambda g: g.used),
    ("remaining", lambda g: g.remaining),
    ("effective (UTC)", lambda g: when(g.effective_time)),
    ("expires (UTC)", lambda g: when(g.expire_time)),
    ("source", lambda g: short_name(gpb.GrantSource.DESCRIPTOR, g.source)),
]


@app.command()
def balance(
    customer: str,
    currency: str,
    as_of: Annotated[str | None, typer.Option(help="a past instant, ISO 8601 (default: now)")] = None,
    grants: Annotated[bool, typer.Option("--grants", help="per grant")] = False,
) -> None:
    """A customer's balance in a currency, now or as of an instant, optionally per grant."""
    result = state().grant.get_balance(customer, currency, as_of=parse_time(as_of, "--as-of"), with_grants=grants)
    if state().output is Output.json:
        show(result, [])
        return
    state().console.print(
        f"{result.customer_key}: [bold]{result.available}[/bold] {result.currency_key} "
        f"available at {when(result.as_of_time)} UTC"
    )
    if grants:
        show(list(result.grants), GRANT_COLUMNS)


grants_app = group("grants", "Grants (grant service): list, and the operator's create and void.")


@grants_app.command("list")
def grants_list(
    customer: str,
    currency: Annotated[str, typer.Option(help="only this currency")] = "",
    subscription: Annotated[str, typer.Option(help="only this subscription's")] = "",
) -> None:
    show(list(state().grant.list_grants(customer, currency, subscription)), GRANT_COLUMNS)


@grants_app.command("create")
def grants_create(
    customer: str,
    currency: str,
    amount: str,
    effective: Annotated[str | None, typer.Option(help="ISO 8601 (default: now)")] = None,
    expires: Annotated[str | None, typer.Option(help="ISO 8601 (default: never)")] = None,
    priority: Annotated[int | None, typer.Option(help="lower is burned first")] = None,
    reason: Annotated[str, typer.Option(help="why (kept on the grant)")] = "",
    request_id: RequestId = "",
) -> None:
    """A one-off grant (role operator), e.g. goodwill credits."""
    grant = state().grant.create_grant(
        customer,
        currency,
        amount,
        effective_time=parse_time(effective, "--effective"),
        expire_time=parse_time(expires, "--expires"),
        priority=priority,
        reason=reason,
        request_id=request_id,
    )
    show(grant, GRANT_COLUMNS)


@grants_app.command("void")
def grants_void(
    grant_id: str, reason: Annotated[str, typer.Option(help="why")] = "", request_id: RequestId = ""
) -> None:
    """Void a grant (role operator): its remainder leaves the balance."""
    show(state().grant.void_grant(grant_id, reason, request_id=request_id), GRANT_COLUMNS)


# -------------------------------------------------------------------- ledger


@app.command()
def ledger(
    customer: str,
    currency: Annotated[str, typer.Option(help="only this currency")] = "",
    since: Annotated[str | None, typer.Option(help="from this instant, ISO 8601")] = None,
    until: Annotated[str | None, typer.Option(help="before this instant, ISO 8601")] = None,
    type: Annotated[str | None, typer.Option(help="grant, debit, expire, void or adjust")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many entries")] = None,
) -> None:
    """A customer's ledger entries, oldest first."""
    entries = state().grant.list_ledger_entries(
        customer,
        currency,
        start_time=parse_time(since, "--since"),
        end_time=parse_time(until, "--until"),
        type=type,
        limit=limit,
    )
    columns = [
        ("effective (UTC)", lambda e: when(e.effective_time)),
        ("type", lambda e: short_name(gpb.LedgerEntryType.DESCRIPTOR, e.type)),
        ("amount", lambda e: e.amount),
        ("currency", lambda e: e.currency_key),
        ("grant", lambda e: e.grant_id),
        ("description", lambda e: e.description or "-"),
    ]
    show(list(entries), columns)


# --------------------------------------------------------------------- usage

usage = group("usage", "Usage of metered features (grant service).")
USAGE_COLUMNS = [
    ("usage", lambda u: u.usage_id),
    ("customer", lambda u: u.customer_key),
    ("feature", lambda u: f"{u.quantity} {u.feature_key}"),
    ("credits", lambda u: f"{u.credits} {u.currency_key} (at {u.credits_per_unit})"),
    ("balance after", lambda u: u.balance_after),
    ("request id", lambda u: u.request_id),
]


@usage.command("report")
def usage_report(
    customer: str,
    feature: str,
    quantity: str,
    currency: Annotated[str, typer.Option(help="the currency to burn, if the feature burns several")] = "",
    request_id: RequestId = "",
) -> None:
    """Report usage: its cost in credits is debited at once (exit 4 if the balance does not cover it)."""
    show(state().grant.report_usage(customer, feature, quantity, currency, request_id=request_id), USAGE_COLUMNS)


@usage.command("check")
def usage_check(
    customer: str,
    feature: str,
    quantity: str,
    currency: Annotated[str, typer.Option(help="the currency to burn")] = "",
) -> None:
    """Would this usage be allowed now, and what would it cost? Changes nothing."""
    result = state().grant.check_usage(customer, feature, quantity, currency)
    show(
        result,
        [
            ("allowed", lambda r: "yes" if r.allowed else "no"),
            ("credits required", lambda r: f"{r.credits_required} {r.currency_key} (at {r.credits_per_unit})"),
            ("available", lambda r: r.available),
        ],
    )


# ---------------------------------------------------------------- test clocks

clocks = group("clocks", "Test clocks (grant service, when it runs with test clocks enabled).")
CLOCK_COLUMNS = [
    ("id", lambda c: c.test_clock_id),
    ("name", lambda c: c.name),
    ("time (UTC)", lambda c: when(c.frozen_time)),
    ("created (UTC)", lambda c: when(c.create_time)),
]


@clocks.command("list")
def clocks_list() -> None:
    show(list(state().grant.list_test_clocks()), CLOCK_COLUMNS)


@clocks.command("show")
def clocks_show(test_clock_id: str) -> None:
    show(state().grant.get_test_clock(test_clock_id), CLOCK_COLUMNS)


@clocks.command("create")
def clocks_create(
    name: str,
    at: Annotated[str, typer.Option(help="its time, ISO 8601 (or now)")] = "now",
    request_id: RequestId = "",
) -> None:
    show(state().grant.create_test_clock(name, parse_time(at, "--at"), request_id=request_id), CLOCK_COLUMNS)


@clocks.command("advance")
def clocks_advance(
    test_clock_id: str,
    to: Annotated[str, typer.Option(help="the new time, ISO 8601")],
    request_id: RequestId = "",
) -> None:
    """Move the clock forward: every grant due until then is issued and expired before this returns."""
    clock = state().grant.advance_test_clock(test_clock_id, parse_time(to, "--to"), request_id=request_id)
    show(clock, CLOCK_COLUMNS)


@clocks.command("delete")
def clocks_delete(test_clock_id: str, request_id: RequestId = "") -> None:
    state().grant.delete_test_clock(test_clock_id, request_id=request_id)
    show_value({"deleted": test_clock_id}, f"test clock {test_clock_id} deleted")


# ------------------------------------------------------------------ handoffs

handoffs = group("handoffs", "The catalog's handoffs to the grant service (role operator).")
HANDOFF_COLUMNS = [
    ("id", lambda h: h.handoff_id),
    ("kind", lambda h: short_name(cpb.HandoffKind.DESCRIPTOR, h.kind)),
    ("key", lambda h: h.key),
    ("revision", lambda h: h.revision),
    ("status", lambda h: short_name(cpb.HandoffStatus.DESCRIPTOR, h.status)),
    ("attempts", lambda h: h.attempts),
    ("queued (UTC)", lambda h: when(h.create_time)),
    ("last error", lambda h: h.last_error or "-"),
]
Kind = Annotated[str, typer.Argument(help="subscription or credit-currency")]


@handoffs.command("list")
def handoffs_list(
    status: Annotated[str | None, typer.Option(help="pending, delivered or failed (parked)")] = None,
    kind: Annotated[str | None, typer.Option(help="subscription or credit-currency")] = None,
    key: Annotated[str, typer.Option(help="a subscription_id or currency key")] = "",
    limit: Annotated[int | None, typer.Option(help="at most this many")] = None,
) -> None:
    """Handoffs oldest first, one per revision."""
    show(list(state().catalog.list_handoffs(status, kind, key, limit=limit)), HANDOFF_COLUMNS)


@handoffs.command("show")
def handoffs_show(kind: Kind, key: str) -> None:
    """Every revision of one subscription or currency, with the last error of each."""
    found = list(state().catalog.list_handoffs(None, kind, key))
    if not found:
        raise fail(f"no handoff of {kind} {key!r}", EXIT_NOT_FOUND)
    show(found, HANDOFF_COLUMNS)


@handoffs.command("requeue")
def handoffs_requeue(
    kind: Annotated[str | None, typer.Argument(help="subscription or credit-currency")] = None,
    key: Annotated[str | None, typer.Argument(help="its subscription_id or currency key")] = None,
    all_parked: Annotated[bool, typer.Option("--all", help="every parked handoff")] = False,
    request_id: RequestId = "",
) -> None:
    """Put parked handoffs back in the queue (after fixing their cause): one aggregate's, or --all."""
    if all_parked == bool(kind or key) or (not all_parked and not (kind and key)):
        raise fail("give KIND and KEY, or --all")
    count = state().catalog.requeue_handoffs(kind, key or "", all_parked=all_parked, request_id=request_id)
    show_value({"requeued_count": count}, f"{count} parked handoff(s) requeued")


# -------------------------------------------------------------------- events

events = group("events", "Credit events of the grant service (role reader): list them, or watch them live.")


def _event_details(e: gpb.CreditEvent) -> str:
    """What happened, in a few words (the payload of its type)."""
    which = e.WhichOneof("payload")
    if which == "credits_granted":
        p = e.credits_granted
        expires = f", expires {when(p.expire_time)}" if p.HasField("expire_time") else ""
        return f"{p.amount} granted (grant {p.grant_id}, {short_name(gpb.GrantSource.DESCRIPTOR, p.source)}{expires})"
    if which == "credits_expired":
        p = e.credits_expired
        return f"{p.expired_amount} of {p.amount} expired (grant {p.grant_id})"
    if which == "grant_voided":
        p = e.grant_voided
        return f"{p.voided_amount} voided (grant {p.grant_id}{', ' + p.reason if p.reason else ''})"
    if which == "grant_depleted":
        p = e.grant_depleted
        return f"grant {p.grant_id} used up ({p.amount}, last by usage {p.usage_id or '-'})"
    if which == "balance_alert":
        p = e.balance_alert
        level = _level_text(p.level)
        previous = f" (was {p.previous_balance})" if p.previous_balance else ""
        return f"balance {p.balance}{previous}, level {level} = {p.threshold} of {p.granted_amount} granted"
    if which == "usage_rejected":
        p = e.usage_rejected
        return (
            f"usage of {p.quantity} {p.feature_key} refused: needs {p.requested_credits}, "
            f"{p.available_credits} available (request {p.request_id})"
        )
    if which == "subscription_changed":
        p = e.subscription_changed
        return f"subscription {p.subscription_id} revision {p.previous_revision} -> {p.revision}"
    return "-"


EVENT_COLUMNS = [
    ("occurred (UTC)", lambda e: when(e.occurred_time)),
    ("type", lambda e: short_name(gpb.CreditEventType.DESCRIPTOR, e.type)),
    ("customer", lambda e: e.customer_key),
    ("currency", lambda e: e.currency_key or "-"),
    ("what", _event_details),
    ("event", lambda e: e.event_id),
]
EventTypes = Annotated[
    list[str] | None,
    typer.Option(
        "--type",
        help="only this type (repeat): credits-granted, credits-expired, grant-voided, grant-depleted, balance-low, "
        "balance-depleted, balance-recovered, usage-rejected, subscription-changed, subscription-ended",
    ),
]


def _event_type_numbers(types: list[str] | None) -> list[int]:
    """The --type values as CreditEventType numbers; an unknown one is a usage error naming --type."""
    try:
        return [enum_value(gpb.CreditEventType.DESCRIPTOR, t, "--type") for t in types or ()]
    except ValueError as error:
        raise typer.BadParameter(str(error).removeprefix("--type "), param_hint="--type") from None


@events.command("list")
def events_list(
    customer: Annotated[str, typer.Option(help="only this customer's")] = "",
    currency: Annotated[str, typer.Option(help="only this currency's")] = "",
    type: EventTypes = None,
    since: Annotated[str | None, typer.Option(help="occurred at or after this instant, ISO 8601")] = None,
    until: Annotated[str | None, typer.Option(help="occurred before this instant, ISO 8601")] = None,
    limit: Annotated[int | None, typer.Option(help="at most this many events (every page until then)")] = None,
    page_size: Annotated[
        int | None, typer.Option(help="one page of this many (at most 1000) and its next page token")
    ] = None,
    page_token: Annotated[str, typer.Option(help="the page after the one that gave this token")] = "",
) -> None:
    """Credit events in log order, oldest first.

    Every page (up to --limit) by default; with --page-size or --page-token one page, then the token
    of the next (JSON: {"events": [...], "next_page_token": ...})."""
    types = _event_type_numbers(type)
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    s = state()
    if page_size is None and not page_token:
        found = list(s.grant.list_events(customer, currency, types, start_time=start, end_time=end, limit=limit))
        show(found, EVENT_COLUMNS)
        if found and s.output is Output.table:
            print(f"watch what follows: credit-grants events watch --cursor {found[-1].cursor}", file=sys.stderr)
        return
    page = s.grant.list_events_page(
        customer, currency, types, start_time=start, end_time=end, page_size=page_size or 0, page_token=page_token
    )
    if s.output is Output.json:
        print(json.dumps(as_dict(page), indent=2, sort_keys=True))
        return
    show(list(page.events), EVENT_COLUMNS)
    if page.next_page_token:
        print(f"next page: --page-token {page.next_page_token}", file=sys.stderr)
    elif page.events:
        print(f"last page; watch what follows: --cursor {page.events[-1].cursor}", file=sys.stderr)


_EVENT_LINE_WIDTHS = (19, 20, 0, 0, 0, 0)  # time and type padded (the longest type is 20 long)


def _event_line(e: gpb.CreditEvent) -> str:
    """One event on one line, as `events watch` prints it: the columns of `events list`."""
    cells = [
        str(value(e)).ljust(width) for (_header, value), width in zip(EVENT_COLUMNS, _EVENT_LINE_WIDTHS, strict=True)
    ]
    return "  ".join(cells)


@events.command("watch")
def events_watch(
    cursor: Annotated[str, typer.Option(help="continue after the event with this cursor (default: the start)")] = "",
    customer: Annotated[str, typer.Option(help="only this customer's")] = "",
    type: EventTypes = None,
    limit: Annotated[int | None, typer.Option(help="stop after this many events (default: never)")] = None,
    idle_timeout: Annotated[
        float,
        typer.Option(
            help="seconds without an event or a heartbeat after which the stream is taken for dead and "
            "reopened (default 60; 0: never); above the server's --events-heartbeat-interval (15 s)"
        ),
    ] = 60.0,
) -> None:
    """Follow the event log live, one event per line; Ctrl-C ends it.

    Every event after --cursor (default: the start of the log), then each new one as it commits
    (JSON: one object per line); heartbeats are not printed; Ctrl-C ends it with status 0. A broken
    connection (UNAVAILABLE, or nothing for --idle-timeout) is reopened from the last event's cursor,
    so no event is missed or repeated; CREDIT_GRANTS_GRANT_RETRIES failures in a row end it with
    status 6. A reader that goes away (`| head -n 1`) ends it with status 0."""
    types = _event_type_numbers(type)
    s = state()
    last = cursor
    if limit is not None and limit <= 0:
        return
    if idle_timeout < 0:
        raise typer.BadParameter("must be 0 (never) or more seconds", param_hint="--idle-timeout")
    stream = s.grant.watch_events(cursor, customer, types, idle_timeout_s=idle_timeout or None)
    seen = 0
    try:
        for event in stream:
            last = event.cursor
            if s.output is Output.json:
                print(json.dumps(as_dict(event), sort_keys=True), flush=True)
            else:
                print(_event_line(event), flush=True)
            seen += 1
            if limit is not None and seen >= limit:
                break
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # the reader went away (`... | head -n 1`): done, quietly
        _stdout_to_devnull()
    finally:
        stream.close()
    if last and s.output is Output.table:
        print(f"resume with: credit-grants events watch --cursor {last}", file=sys.stderr)


def _stdout_to_devnull() -> None:
    """After a broken pipe: point stdout at /dev/null so that the exit's flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


# ------------------------------------------------------------ balance alerts

alerts = group("alerts", "Balance alert levels (grant service): set and clear need the role operator.")


def _level_text(level: gpb.BalanceAlertLevel) -> str:
    return f"{level.percent}%" if level.WhichOneof("level") == "percent" else level.amount


ALERT_COLUMNS = [
    ("customer", lambda a: a.customer_key or "(currency default)"),
    ("currency", lambda a: a.currency_key),
    ("levels", lambda a: ", ".join(_level_text(v) for v in a.levels) or "none"),
    ("source", lambda a: short_name(gpb.BalanceAlertsSource.DESCRIPTOR, a.source)),
]
AlertCustomer = Annotated[str, typer.Option(help="this customer's levels (default: the currency's default levels)")]


@alerts.command("set")
def alerts_set(
    currency: str,
    levels: Annotated[
        list[str] | None, typer.Argument(help="each an amount of credits (500) or a percentage of the grants (10%)")
    ] = None,
    customer: AlertCustomer = "",
    none: Annotated[bool, typer.Option("--none", help="no levels at all (only BALANCE_DEPLETED is reported)")] = False,
) -> None:
    """Replace the alert levels of a customer, or the currency's default for every customer without
    their own: e.g. `alerts set ai-credits 1000 10% --customer acme`. A balance falling below a
    level is a BALANCE_LOW event; nothing fires until the balance next changes."""
    if bool(levels) == none:
        raise fail("give one or more LEVELS (e.g. 1000 or 10%), or --none")
    show(state().grant.set_balance_alerts(currency, levels or [], customer), ALERT_COLUMNS)


@alerts.command("show")
def alerts_show(currency: str, customer: AlertCustomer = "") -> None:
    """The levels in force for a customer (their own, else the currency's default), and their source."""
    show(state().grant.get_balance_alerts(currency, customer), ALERT_COLUMNS)


@alerts.command("clear")
def alerts_clear(currency: str, customer: AlertCustomer = "") -> None:
    """Remove a customer's own levels (the currency's default applies again), or the default's."""
    show(state().grant.clear_balance_alerts(currency, customer), ALERT_COLUMNS)


# ------------------------------------------------------------------ webhooks

webhooks = group("webhooks", "Webhook endpoints receiving the credit events (role webhooks).")
ENDPOINT_COLUMNS = [
    ("id", lambda w: w.endpoint_id),
    ("url", lambda w: w.url),
    ("events", lambda w: ", ".join(_short_event_type(t) for t in w.event_types) or "all"),
    (
        "enabled",
        lambda w: (
            "yes"
            if w.enabled
            else f"no ({short_name(wpb.WebhookDisabledReason.DESCRIPTOR, w.disabled_reason).replace('_', ' ')})"
        ),
    ),
    ("failing since (UTC)", lambda w: when(w.failing_since)),
    ("description", lambda w: w.description or "-"),
    ("created (UTC)", lambda w: when(w.create_time)),
]
ATTEMPT_COLUMNS = [
    ("time (UTC)", lambda a: when(a.attempt_time)),
    ("endpoint", lambda a: a.endpoint_id),
    ("event", lambda a: a.event_id),
    ("attempt", lambda a: a.attempt),
    ("trigger", lambda a: short_name(wpb.WebhookDeliveryTrigger.DESCRIPTOR, a.trigger)),
    ("result", lambda a: a.error or f"HTTP {a.http_status}"),
    ("next attempt (UTC)", lambda a: when(a.next_attempt_time)),
]
WebhookEventTypes = Annotated[
    list[str] | None,
    typer.Option("--event-type", help="send only this type (repeat), e.g. credits-granted; none: every type"),
]
EndpointId = Annotated[str, typer.Argument(help="the endpoint's id (whe_...)")]


def _short_event_type(name: str) -> str:
    return name.removeprefix("CREDIT_EVENT_TYPE_").lower() if name.startswith("CREDIT_EVENT_TYPE_") else name


def _with_secret(response: Any) -> None:
    """An endpoint and its signing secret: printed once, as the server returned it."""
    if state().output is Output.json:
        print(json.dumps(as_dict(response), indent=2, sort_keys=True))
        return
    show(response.endpoint, ENDPOINT_COLUMNS)
    state().console.print(
        f"signing secret (shown this once: store it with the receiver): {response.signing_secret}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@webhooks.command("create")
def webhooks_create(
    url: Annotated[str, typer.Argument(help="where events are POSTed, https://...")],
    event_type: WebhookEventTypes = None,
    description: Annotated[str, typer.Option(help="for the people who manage it")] = "",
    request_id: RequestId = "",
) -> None:
    """Create an enabled endpoint; its signing secret (whsec_...) is printed this once."""
    _with_secret(state().grant.create_webhook_endpoint(url, event_type, description, request_id=request_id))


@webhooks.command("list")
def webhooks_list(limit: Annotated[int | None, typer.Option(help="at most this many")] = None) -> None:
    """The endpoints, newest first (never their secrets)."""
    show(list(state().grant.list_webhook_endpoints(limit=limit)), ENDPOINT_COLUMNS)


@webhooks.command("show")
def webhooks_show(endpoint_id: EndpointId) -> None:
    show(state().grant.get_webhook_endpoint(endpoint_id), ENDPOINT_COLUMNS)


@webhooks.command("update")
def webhooks_update(
    endpoint_id: EndpointId,
    url: Annotated[str | None, typer.Option(help="the new URL")] = None,
    event_type: Annotated[
        list[str] | None, typer.Option("--event-type", help="replaces the types sent (repeat)")
    ] = None,
    all_events: Annotated[bool, typer.Option("--all-events", help="send every type")] = False,
    description: Annotated[str | None, typer.Option(help="the new description")] = None,
) -> None:
    """Change an endpoint's URL, event types or description (enable and disable have their own commands)."""
    if event_type and all_events:
        raise fail("give --event-type or --all-events, not both")
    types = [] if all_events else event_type
    if url is None and types is None and description is None:
        raise fail("nothing to update: give --url, --event-type, --all-events or --description")
    endpoint = state().grant.update_webhook_endpoint(endpoint_id, url=url, event_types=types, description=description)
    show(endpoint, ENDPOINT_COLUMNS)


@webhooks.command("disable")
def webhooks_disable(endpoint_id: EndpointId) -> None:
    """Stop deliveries to it (events meanwhile are not queued for it)."""
    show(state().grant.disable_webhook_endpoint(endpoint_id), ENDPOINT_COLUMNS)


@webhooks.command("enable")
def webhooks_enable(endpoint_id: EndpointId) -> None:
    """Resume deliveries, also to an endpoint the service disabled for failing (then `replay` what it missed)."""
    show(state().grant.enable_webhook_endpoint(endpoint_id), ENDPOINT_COLUMNS)


@webhooks.command("delete")
def webhooks_delete(endpoint_id: EndpointId) -> None:
    """Delete it, with its pending deliveries and attempts."""
    state().grant.delete_webhook_endpoint(endpoint_id)
    show_value({"deleted": endpoint_id}, f"webhook endpoint {endpoint_id} deleted")


def parse_duration(text: str | None, option: str) -> timedelta | None:
    """Seconds ("90"), or with a unit: "90s", "30m", "24h", "2d"."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = Decimal(number) * units[unit]
    except InvalidOperation:
        raise typer.BadParameter(f"{text!r} is not a duration such as 3600, 30m, 24h or 0", param_hint=option) from None
    if not seconds.is_finite() or seconds < 0:
        raise typer.BadParameter(f"{text!r} must be a duration of 0 or more", param_hint=option)
    return timedelta(seconds=int(seconds), microseconds=int((seconds % 1) * 1_000_000))


@webhooks.command("rotate-secret")
def webhooks_rotate_secret(
    endpoint_id: EndpointId,
    previous_secret_ttl: Annotated[
        str | None,
        typer.Option(help="how long the old secret also signs: 3600, 30m, 24h, 0 (default 24h, at most 7d)"),
    ] = None,
    request_id: RequestId = "",
) -> None:
    """A new signing secret, printed this once; the old one keeps signing too for --previous-secret-ttl."""
    ttl = parse_duration(previous_secret_ttl, "--previous-secret-ttl")
    _with_secret(state().grant.rotate_webhook_secret(endpoint_id, ttl, request_id=request_id))


@webhooks.command("attempts")
def webhooks_attempts(
    endpoint: Annotated[str, typer.Option(help="attempts to this endpoint")] = "",
    event: Annotated[str, typer.Option(help="attempts of this event (evt_...)")] = "",
    limit: Annotated[int | None, typer.Option(help="at most this many")] = None,
) -> None:
    """Delivery attempts, newest first, to an endpoint and/or of an event (give at least one)."""
    if not endpoint and not event:
        raise fail("give --endpoint, --event or both")
    show(list(state().grant.list_webhook_delivery_attempts(endpoint, event, limit=limit)), ATTEMPT_COLUMNS)


@webhooks.command("resend")
def webhooks_resend(
    endpoint_id: EndpointId,
    event_id: Annotated[str, typer.Argument(help="the event (evt_...)")],
    request_id: RequestId = "",
) -> None:
    """Queue one event for one endpoint again (whatever types it subscribes to)."""
    delivery = state().grant.resend_webhook_event(endpoint_id, event_id, request_id=request_id)
    show_value({"delivery_id": delivery}, f"event {event_id} queued for {endpoint_id} (delivery {delivery})")


@webhooks.command("replay")
def webhooks_replay(
    endpoint_id: EndpointId,
    after: Annotated[str, typer.Option(help="the events after this cursor (default: from the first)")] = "",
    max_events: Annotated[int, typer.Option(help="at most this many (default and maximum 1000)")] = 0,
    request_id: RequestId = "",
) -> None:
    """Queue again, for one endpoint, the events after a cursor of the types it subscribes to."""
    result = state().grant.replay_webhook_events(endpoint_id, after, max_events, request_id=request_id)
    text = f"{result.queued} event(s) queued for {endpoint_id}"
    if result.more:
        text += f"; more: run again with --after {result.last_cursor}"
    show_value({"queued": result.queued, "last_cursor": result.last_cursor, "more": result.more}, text)


# --------------------------------------------------------------------- keys


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def keys(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="grant or catalog")],
) -> None:
    """API keys of a service, in its database: `credit-grants keys grant create --role reader --label x`,
    `... keys catalog list`, `... keys grant revoke ID` (the same as `python -m grant_service keys ...`;
    --help after the service lists them)."""
    if service in ("-h", "--help"):
        print("Usage: credit-grants keys grant|catalog create|ensure|list|revoke ...\n\n" + (keys.__doc__ or ""))
        raise typer.Exit(EXIT_OK)
    if service not in ("grant", "catalog"):
        raise fail(f"the service is grant or catalog, not {service!r}")
    if service == "grant":
        from grant_service.__main__ import run
    else:
        from catalog_service.__main__ import run
    try:
        code = run(["keys", *ctx.args])
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        code = exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
        code = EXIT_USAGE if code == 2 else code
    raise typer.Exit(code or 0)


# ------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: runs the app and turns every failure into its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    _CURRENT.clear()
    try:
        code = app(args=args, prog_name="credit-grants", standalone_mode=False)
        return code if isinstance(code, int) else EXIT_OK
    except ApiError as error:
        if _CURRENT and _CURRENT[0].output is Output.json:
            print(json.dumps({"error": error.as_dict()}, indent=2), file=sys.stderr)
        else:
            print(f"error: {_plain(error)}", file=sys.stderr)
        return EXIT_CODES.get(error.code, EXIT_ERROR)
    except typer.TyperException as error:  # a usage error (bad option, missing argument, bad value)
        show_error = getattr(error, "show", None)
        if show_error is not None:
            show_error(file=sys.stderr)
        else:
            print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as error:  # a key or certificate file that cannot be read, a bad setting
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _plain(error: ApiError) -> str:
    """One paragraph a person can act on: the message, each bad field, and what the reason implies."""
    lines = [error.message]
    for v in error.violations:
        lines.append(f"  {v.field}: {v.description}")
    if error.reason == "ROLE_REQUIRED":
        lines.append(f"  the API key needs the role {error.metadata.get('required_role', '?')}")
    elif error.reason == "INSUFFICIENT_CREDITS" and "available" in error.metadata:
        lines.append(f"  available: {error.metadata['available']}")
    elif error.code == grpc.StatusCode.UNAVAILABLE:
        lines.append(f"  is the service running and reachable? (request_id {error.request_id or '-'})")
    if error.reason:
        lines[0] += f" [{error.reason}]"
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
