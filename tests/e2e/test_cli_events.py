"""`credit-grants events|alerts|webhooks` (credit_client.cli) against a real server pair: events
listed after a story that produced them (filters, time range, paging), `events watch` receiving an
event produced while it runs (a subprocess, ended with Ctrl-C: status 0) and resuming from a
cursor, reconnecting after UNAVAILABLE from the last cursor (through a proxy that breaks the stream)
with no event missed or repeated, balance alerts set/show/clear, webhook endpoints from create to
delete (the secret printed once), and bad input: the documented exit status and the field in plain
words. The CLI is a client: one backend (SQLite) is enough for it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from catalog_service.entrypoints import app as catalog_app
from credit_client import GrantClient, cli
from credit_common.auth.keys import ADMIN, READER, SYNC
from grant_service.entrypoints import app as grant_app
from grant_service.v1 import grant_service_pb2_grpc as gpb_grpc
from tests.e2e.test_cli import Cli
from tests.support.auth import caller_credentials, create_key_at
from tests.support.servers import serving

PLAN_YAML = """
key: starter
display_name: Starter
credit_entitlements:
  - key: ai-credits-monthly
    currency_key: ai-credits
    cadence: CADENCE_MONTHLY
    fixed_amount: "1000"
"""
GUARD_S = 60  # only so that a broken test fails instead of hanging; nothing is timed


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Cli]:
    folder = tmp_path_factory.mktemp("cli-events")
    grant_url, catalog_url = f"sqlite:///{folder / 'grant.db'}", f"sqlite:///{folder / 'catalog.db'}"
    sync_key = create_key_at(grant_app.DEFINITION, grant_url, (SYNC,), label="catalog")
    # no webhook workers: endpoints are managed, nothing is sent; frequent heartbeats, never printed
    grant_args = ["--catch-up-interval", "0", "--webhook-workers", "0", "--events-heartbeat-interval", "0.1"]
    with serving(grant_app.DEFINITION, grant_app.build, grant_url, args=grant_args) as (grant_running, _):
        catalog_args = [
            "--grant-service-address",
            f"127.0.0.1:{grant_running.port}",
            "--grant-service-api-key",
            sync_key,
        ]
        with serving(catalog_app.DEFINITION, catalog_app.build, catalog_url, args=catalog_args) as (catalog, _):
            env = {
                "CREDIT_GRANTS_CATALOG_ADDRESS": f"127.0.0.1:{catalog.port}",
                "CREDIT_GRANTS_GRANT_ADDRESS": f"127.0.0.1:{grant_running.port}",
                "CREDIT_GRANTS_CATALOG_API_KEY": create_key_at(catalog_app.DEFINITION, catalog_url, (ADMIN,)),
                "CREDIT_GRANTS_GRANT_API_KEY": create_key_at(grant_app.DEFINITION, grant_url, (ADMIN,)),
                "CATALOG_DATABASE_URL": catalog_url,
                "GRANT_DATABASE_URL": grant_url,
            }
            cli_ = Cli(env, grant_url, catalog_url, folder)
            _story(cli_, folder)
            yield cli_


def _story(run: Cli, folder) -> None:
    """A customer on a plan of 1000 credits a month, a currency-wide alert at 50%, 600 credits used."""
    run.ok("features create gpt-calls --name 'GPT calls' --unit call")
    run.ok("currencies create ai-credits --name 'AI credits' --rate gpt-calls=1")
    plan_file = folder / "plan.yaml"
    plan_file.write_text(PLAN_YAML)
    run.ok(f"plans create {plan_file} --publish")
    run.ok("customers create acme --name 'Acme Corp'")
    run.ok("customers create globex --name 'Globex'")
    for customer in ("acme", "globex"):
        provisioned = run.ok(f"-o json provision {customer} starter --no-prompt --wait").json()
        assert provisioned["handoff"]["status"] == "HANDOFF_STATUS_DELIVERED"
    run.ok("alerts set ai-credits 50%")
    run.ok("usage report acme gpt-calls 600")  # 1000 -> 400: below 50%, a BALANCE_LOW event


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _types(events: list[dict]) -> list[str]:
    return [e["type"].removeprefix("CREDIT_EVENT_TYPE_") for e in events]


def test_events_list_with_filters_time_range_and_paging(run: Cli):
    everything = run.ok("-o json events list").json()
    acme = run.ok("-o json events list --customer acme").json()
    assert {e["customer_key"] for e in acme} == {"acme"}
    assert _types(acme) == ["SUBSCRIPTION_CHANGED", "CREDITS_GRANTED", "BALANCE_LOW"]
    assert {e["customer_key"] for e in everything} == {"acme", "globex"}
    low = run.ok("-o json events list --type balance-low").json()
    assert len(low) == 1
    assert low[0]["balance_alert"]["balance"] == "400" and low[0]["balance_alert"]["level"] == {"percent": "50"}
    both = run.ok("-o json events list --customer acme --currency ai-credits --type credits-granted --type balance-low")
    assert _types(both.json()) == ["CREDITS_GRANTED", "BALANCE_LOW"]

    assert run.ok("-o json events list --since 2100-01-01").json() == []
    assert run.ok("-o json events list --until 2000-01-01").json() == []
    first = min(everything, key=lambda e: _at(e["occurred_time"]))["occurred_time"]
    assert run.ok(f"-o json events list --until {first}").json() == []
    assert len(run.ok(f"-o json events list --since {first}").json()) == len(everything)
    since_low = run.ok(f"-o json events list --since {low[0]['occurred_time']}").json()
    assert low[0]["event_id"] in [e["event_id"] for e in since_low]
    assert all(_at(e["occurred_time"]) >= _at(low[0]["occurred_time"]) for e in since_low)
    until_low = run.ok(f"-o json events list --until {low[0]['occurred_time']}").json()
    assert len(since_low) + len(until_low) == len(everything)
    assert len(run.ok("-o json events list --limit 4").json()) == 4

    # paging by hand: each page and its token, then the last page has none
    page, seen = run.ok("-o json events list --page-size 2").json(), []
    while True:
        seen += page["events"]
        if "next_page_token" not in page:
            break
        assert len(page["events"]) == 2
        page = run.ok(f"-o json events list --page-size 2 --page-token {page['next_page_token']}").json()
    assert [e["event_id"] for e in seen] == [e["event_id"] for e in everything]

    table = run.ok("events list --customer acme")
    assert "balance_low" in table.stdout and "balance 400 (was 1000), level 50% = 500" in table.stdout
    assert f"events watch --cursor {acme[-1]['cursor']}" in table.stderr


def test_events_watch_resumes_from_a_cursor(run: Cli):
    everything = run.ok("-o json events list").json()
    rest = everything[2:]
    lines = run.ok(f"-o json events watch --cursor {everything[1]['cursor']} --limit {len(rest)}").stdout.splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [e["event_id"] for e in rest]
    from_start = run.ok("-o json events watch --limit 2 --customer acme").stdout.splitlines()
    assert [json.loads(line)["event_id"] for line in from_start] == [
        e["event_id"] for e in everything if e["customer_key"] == "acme"
    ][:2]
    table = run.ok(f"events watch --cursor {everything[0]['cursor']} --limit 1")
    assert everything[1]["event_id"] in table.stdout and len(table.stdout.splitlines()) == 1
    assert f"--cursor {everything[1]['cursor']}" in table.stderr  # where to resume


def _lines(stream, count: int | None = None) -> queue.Queue:
    """The lines of a subprocess's pipe as they come (the first `count`), then None."""
    lines: queue.Queue = queue.Queue()

    def read():
        for n, line in enumerate(stream, 1):
            lines.put(line)
            if n == count:
                break
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_events_watch_prints_an_event_produced_while_it_runs_and_ctrl_c_ends_it(run: Cli, tmp_path):
    last = run.ok("-o json events list").json()[-1]
    watcher = _watcher(run, tmp_path, "--cursor", last["cursor"])
    errors = _lines(watcher.stderr)
    try:
        lines = _lines(watcher.stdout)
        grant = run.ok("-o json grants create globex ai-credits 250 --reason goodwill").json()
        event = json.loads(lines.get(timeout=GUARD_S))
        assert event["type"] == "CREDIT_EVENT_TYPE_CREDITS_GRANTED"
        assert event["credits_granted"]["grant_id"] == grant["grant_id"]
        assert event["credits_granted"]["amount"] == "250"
        watcher.send_signal(signal.SIGINT)
        assert _ended(watcher) == cli.EXIT_OK
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    # nothing before the cursor was repeated, no heartbeat printed: the one event, then the end
    assert lines.get(timeout=GUARD_S) is None
    assert _rest(errors) == ""


def _ended(process: subprocess.Popen) -> int:
    """The process's exit status once it ends; if it has not ended within GUARD_S, the failure shows
    where each of its threads is (py-spy), so that a rare hang can be understood."""
    try:
        return process.wait(timeout=GUARD_S)
    except subprocess.TimeoutExpired:
        spy = Path(sys.executable).parent / "py-spy"
        dump = [str(spy), "dump", "--pid", str(process.pid)]
        found = subprocess.run(dump, capture_output=True, text=True, timeout=60)
        status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
        signals = "\n".join(line for line in status if line.startswith(("SigBlk", "SigIgn", "SigCgt", "SigPnd")))
        raise AssertionError(
            f"still running {GUARD_S} s later; its signals:\n{signals}\nits threads:\n{found.stdout}{found.stderr}"
        ) from None


def _rest(lines: queue.Queue) -> str:
    """What a pipe read by `_lines` gave until it closed (the process has ended)."""
    out = []
    while (line := lines.get(timeout=GUARD_S)) is not None:
        out.append(line)
    return "".join(out)


# The watcher gets Ctrl-C as in a terminal: SIGINT handled by Python's default handler and not
# blocked, whatever the test process passed on (once in the full suite a watcher sat in its stream
# 60 s after its SIGINT, as if it had never come).
_AS_IN_A_TERMINAL = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT]); "
    "runpy.run_module('credit_client.cli', run_name='__main__', alter_sys=True)"
)


def _watcher(run: Cli, cwd, *args: str) -> subprocess.Popen:
    """`credit-grants -o json events watch ARGS` in a process of its own."""
    return subprocess.Popen(
        [sys.executable, "-c", _AS_IN_A_TERMINAL, "-o", "json", "events", "watch", *args],
        env={**os.environ, **run.env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_events_watch_ends_quietly_when_its_reader_goes(run: Cli, tmp_path):
    """As in `credit-grants -o json events watch | head -n 1`: status 0, no error."""
    last = run.ok("-o json events list").json()[-1]
    watcher = _watcher(run, tmp_path, "--cursor", last["cursor"])
    errors = _lines(watcher.stderr)
    try:
        lines = _lines(watcher.stdout, count=1)
        run.ok("grants create globex ai-credits 5 --reason one")
        assert json.loads(lines.get(timeout=GUARD_S))["credits_granted"]["amount"] == "5"
        assert lines.get(timeout=GUARD_S) is None
        watcher.stdout.close()  # the reader goes; the next event meets a broken pipe
        run.ok("grants create globex ai-credits 6 --reason two")
        assert _ended(watcher) == cli.EXIT_OK
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert _rest(errors) == ""


class BreakingProxy(gpb_grpc.GrantServiceServicer):
    """Forwards WatchEvents to the real grant service, but its first stream breaks with UNAVAILABLE
    after `break_after` events (or, `stall`ing, sends nothing more, not even heartbeats, and never
    ends by itself); it records the cursor each call asked for."""

    def __init__(self, target: str, break_after: int, *, stall: bool = False) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = gpb_grpc.GrantServiceStub(self.channel)
        self.break_after = break_after
        self.stall = stall
        self.cursors: list[str] = []

    def WatchEvents(self, request, context):
        self.cursors.append(request.cursor)
        first = len(self.cursors) == 1
        upstream = self.stub.WatchEvents(request, metadata=caller_credentials(context))
        context.add_callback(upstream.cancel)
        sent = 0
        for message in upstream:
            if first and sent == self.break_after:
                upstream.cancel()
                if self.stall:  # quiet until the client gives up on it (else fail the test)
                    ended = threading.Event()
                    context.add_callback(ended.set)
                    ended.wait(GUARD_S)
                    context.abort(grpc.StatusCode.INTERNAL, "the client never gave up on a silent stream")
                context.abort(grpc.StatusCode.UNAVAILABLE, "injected: connection lost")
            yield message
            sent += message.HasField("event")


@contextmanager
def proxying(run: Cli, *, stall: bool = False) -> Iterator[tuple[BreakingProxy, str]]:
    servicer = BreakingProxy(run.env["CREDIT_GRANTS_GRANT_ADDRESS"], break_after=2, stall=stall)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    gpb_grpc.add_GrantServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)
        servicer.channel.close()


@pytest.fixture
def proxy(run: Cli) -> Iterator[tuple[BreakingProxy, str]]:
    with proxying(run) as proxied:
        yield proxied


def test_events_watch_reopens_a_stream_gone_silent(run: Cli):
    """Heartbeats every 0.1 s here: a stream without one for --idle-timeout is dead, and is reopened
    from the last cursor (the proxy would hold it open, silent, for ever)."""
    everything = run.ok("-o json events list").json()
    with proxying(run, stall=True) as (servicer, address):
        watched = run.ok(
            f"-o json events watch --limit {len(everything)} --idle-timeout 1",
            env={"CREDIT_GRANTS_GRANT_ADDRESS": address},
        )
    assert [json.loads(line)["event_id"] for line in watched.stdout.splitlines()] == [e["event_id"] for e in everything]
    assert servicer.cursors == ["", everything[1]["cursor"]]


def test_events_watch_reconnects_from_the_last_cursor_after_unavailable(run: Cli, proxy):
    servicer, address = proxy
    everything = run.ok("-o json events list").json()
    lines = run.ok(
        f"-o json events watch --limit {len(everything)}", env={"CREDIT_GRANTS_GRANT_ADDRESS": address}
    ).stdout.splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [e["event_id"] for e in everything]
    assert servicer.cursors == ["", everything[1]["cursor"]]


def test_the_library_watch_reconnects_and_gives_up_after_its_retries(run: Cli, proxy):
    servicer, address = proxy
    for n in range(3):  # events it wants, whichever tests ran before it on this worker
        run.ok(f"grants create globex ai-credits {n + 1} --reason library-{n}")
    everything = run.ok("-o json events list").json()
    with GrantClient(address=address, api_key=run.env["CREDIT_GRANTS_GRANT_API_KEY"]) as client:
        stream = client.watch_events(everything[0]["cursor"], types=["credits-granted", "balance-low"])
        received = [next(stream).event_id for _ in range(3)]
        stream.close()
    wanted = [e["event_id"] for e in everything[1:] if e["type"].endswith(("CREDITS_GRANTED", "BALANCE_LOW"))]
    assert received == wanted[:3]
    assert servicer.cursors[1] == next(e["cursor"] for e in everything if e["event_id"] == wanted[1])

    down = run("events watch", env={"CREDIT_GRANTS_GRANT_ADDRESS": "127.0.0.1:9", "CREDIT_GRANTS_GRANT_RETRIES": "1"})
    assert down.code == cli.EXIT_UNAVAILABLE and "is the service running" in down.stderr


def test_balance_alerts_set_show_clear(run: Cli):
    default = run.ok("-o json alerts show ai-credits --customer globex").json()
    assert default["source"] == "BALANCE_ALERTS_SOURCE_CURRENCY_DEFAULT" and default["levels"] == [{"percent": "50"}]

    own = run.ok("-o json alerts set ai-credits 100 25% --customer globex").json()
    assert own["customer_key"] == "globex" and own["source"] == "BALANCE_ALERTS_SOURCE_CUSTOMER"
    assert own["levels"] == [{"amount": "100"}, {"percent": "25"}]
    shown = run.ok("alerts show ai-credits --customer globex").stdout
    assert "100, 25%" in shown and "customer" in shown

    assert run.ok("-o json alerts set ai-credits --customer globex --none").json().get("levels", []) == []
    cleared = run.ok("-o json alerts clear ai-credits --customer globex").json()
    assert cleared["source"] == "BALANCE_ALERTS_SOURCE_CURRENCY_DEFAULT"
    assert run.ok("-o json alerts clear ai-credits").json()["source"] == "BALANCE_ALERTS_SOURCE_NONE"
    assert "none" in run.ok("alerts show ai-credits --customer globex").stdout
    run.ok("alerts set ai-credits 50%")  # as the story left it

    reader = create_key_at(grant_app.DEFINITION, run.grant_url, (READER,), migrate=False)
    denied = run("alerts set ai-credits 10", env={"CREDIT_GRANTS_GRANT_API_KEY": reader})
    assert denied.code == cli.EXIT_AUTH and "needs the role operator" in denied.stderr
    assert run("alerts show ai-credits", env={"CREDIT_GRANTS_GRANT_API_KEY": reader}).code == cli.EXIT_OK


def test_webhook_endpoints_from_create_to_delete(run: Cli):
    created = run.ok(
        "-o json webhooks create https://hooks.example.com/credits --event-type credits-granted "
        "--event-type BALANCE_LOW --description billing --request-id hook-1"
    ).json()
    endpoint, secret = created["endpoint"], created["signing_secret"]
    endpoint_id = endpoint["endpoint_id"]
    assert secret.startswith("whsec_") and endpoint["enabled"] is True
    assert endpoint["event_types"] == ["CREDIT_EVENT_TYPE_CREDITS_GRANTED", "CREDIT_EVENT_TYPE_BALANCE_LOW"]

    listed = run.ok("-o json webhooks list").json()
    assert endpoint_id in [e["endpoint_id"] for e in listed]
    table = run.ok("webhooks list").stdout
    assert "https://hooks.example.com/credits" in table and "credits_granted, balance_low" in table
    assert secret not in table and secret not in run.ok(f"webhooks show {endpoint_id}").stdout

    updated = run.ok(f"-o json webhooks update {endpoint_id} --all-events --description 'all of them'").json()
    assert "event_types" not in updated and updated["description"] == "all of them"
    assert run.ok(f"-o json webhooks disable {endpoint_id}").json()["disabled_reason"] == (
        "WEBHOOK_DISABLED_REASON_BY_CALLER"
    )
    assert "no (by caller)" in run.ok(f"webhooks show {endpoint_id}").stdout
    assert run.ok(f"-o json webhooks enable {endpoint_id}").json()["enabled"] is True

    rotated = run.ok(f"webhooks rotate-secret {endpoint_id} --previous-secret-ttl 1h")
    new_secret = rotated.stdout.split("store it with the receiver): ")[1].split()[0]
    assert new_secret.startswith("whsec_") and new_secret != secret

    event = run.ok("-o json events list --limit 1").json()[0]
    delivery = run.ok(f"-o json webhooks resend {endpoint_id} {event['event_id']}").json()["delivery_id"]
    assert delivery
    replayed = run.ok(f"-o json webhooks replay {endpoint_id} --max-events 2").json()
    assert replayed["queued"] == 2 and replayed["more"] is True and replayed["last_cursor"]
    assert run.ok(f"-o json webhooks attempts --endpoint {endpoint_id}").json() == []  # no worker sends here

    assert run.ok(f"-o json webhooks delete {endpoint_id}").json() == {"deleted": endpoint_id}
    gone = run(f"webhooks show {endpoint_id}")
    assert gone.code == cli.EXIT_NOT_FOUND and "WEBHOOK_ENDPOINT_NOT_FOUND" in gone.stderr
    assert endpoint_id not in [e["endpoint_id"] for e in run.ok("-o json webhooks list").json()]


def test_bad_input_gives_the_exit_status_and_names_the_field(run: Cli):
    http = run("webhooks create http://hooks.example.com/credits")
    assert http.code == cli.EXIT_USAGE and "url: must use https" in http.stderr
    http_json = json.loads(run("-o json webhooks create http://hooks.example.com/x").stderr)["error"]
    assert http_json["code"] == "INVALID_ARGUMENT" and http_json["field_violations"][0]["field"] == "url"
    unknown_type = run("webhooks create https://hooks.example.com/x --event-type nonsense")
    assert unknown_type.code == cli.EXIT_USAGE and "event_types[0]" in unknown_type.stderr

    negative = run("alerts set ai-credits 10 --customer acme -- -5")
    assert negative.code == cli.EXIT_USAGE and "levels[1]" in negative.stderr
    over = run("alerts set ai-credits 120%")
    assert over.code == cli.EXIT_USAGE and "levels[0].percent: must be at most 100" in over.stderr
    nothing = run("alerts set ai-credits")
    assert nothing.code == cli.EXIT_USAGE and "give one or more LEVELS" in nothing.stderr

    bad_type = run("events list --type nonsense")
    assert bad_type.code == cli.EXIT_USAGE and "--type" in bad_type.stderr and "credits_granted" in bad_type.stderr
    assert run("events list --since yesterday").code == cli.EXIT_USAGE
    bad_cursor = run("events watch --cursor not-a-cursor")
    assert bad_cursor.code == cli.EXIT_USAGE and "cursor" in bad_cursor.stderr and "INVALID_CURSOR" in bad_cursor.stderr
    assert run("webhooks attempts").code == cli.EXIT_USAGE
    assert run("webhooks rotate-secret whe_x --previous-secret-ttl soon").code == cli.EXIT_USAGE
    missing = run("webhooks disable whe_nope")
    assert missing.code == cli.EXIT_NOT_FOUND
