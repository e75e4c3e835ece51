"""`credit-grants` (credit_client.cli) against a real server pair (the catalog handing off to the
grant service with its sync key): the main flow command by command, the prompts of `provision`,
`--output json`, the exit statuses scripts rely on, errors in plain words with the field, roles,
and the `keys` commands. The CLI is a client: one backend (SQLite) is enough for it."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catalog_service.entrypoints import app as catalog_app
from credit_client import cli
from credit_common.auth.keys import ADMIN, OPERATOR, READER, SYNC
from grant_service.entrypoints import app as grant_app
from tests.support.auth import create_key_at
from tests.support.servers import serving

PLAN_YAML = """
key: enterprise
display_name: Enterprise
custom: true
credit_entitlements:
  - key: ai-credits-monthly
    currency_key: ai-credits
    cadence: CADENCE_MONTHLY
    variable_amount: {min: "10000", max: "1000000"}
"""


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@dataclass
class Cli:
    env: dict[str, str]
    grant_url: str
    catalog_url: str
    folder: Path

    def __call__(self, command: str, *, input: str | None = None, env: dict[str, str] | None = None) -> Run:
        with CliRunner().isolation(input=input, env={**self.env, **(env or {})}) as (out, err, _mixed):
            code = cli.main(shlex.split(command))
            import sys

            sys.stdout.flush()
            sys.stderr.flush()
            return Run(code, out.getvalue().decode(), err.getvalue().decode())

    def ok(self, command: str, **kwargs) -> Run:
        run = self(command, **kwargs)
        assert run.code == 0, (command, run)
        return run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Cli]:
    folder = tmp_path_factory.mktemp("cli")
    grant_url, catalog_url = f"sqlite:///{folder / 'grant.db'}", f"sqlite:///{folder / 'catalog.db'}"
    sync_key = create_key_at(grant_app.DEFINITION, grant_url, (SYNC,), label="catalog")
    grant_args = ["--enable-test-clocks", "--catch-up-interval", "0"]
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
            yield Cli(env, grant_url, catalog_url, folder)


def test_the_main_flow(run: Cli, tmp_path):
    feature = run.ok("-o json features create gpt-calls --name 'GPT calls' --type metered --unit call").json()
    assert feature["type"] == "FEATURE_TYPE_METERED"
    again = run("features create gpt-calls --name 'GPT calls'")
    assert again.code == cli.EXIT_CONFLICT and "already exists" in again.stderr and "KEY_ALREADY_EXISTS" in again.stderr

    currency = run.ok("-o json currencies create ai-credits --name 'AI credits' --rate gpt-calls=2.5").json()
    assert currency["rates"] == [{"feature_key": "gpt-calls", "credits_per_unit": "2.5"}]
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(PLAN_YAML)
    plan = run.ok(f"-o json plans create {plan_file} --publish").json()
    assert (plan["status"], plan["version"]) == ("PLAN_STATUS_PUBLISHED", 1)
    assert (
        "ai-credits-monthly: ai-credits monthly, negotiated [10000..1000000]" in run.ok("plans show enterprise").stdout
    )

    clock = run.ok("-o json clocks create acme-clock --at 2026-01-31T10:00:00Z").json()
    run.ok(f"customers create acme --name 'Acme Corp' --test-clock {clock['test_clock_id']}")

    # no terminal and no value: it says which value is missing (exit 1), before calling the server
    missing = run("provision acme enterprise --no-prompt")
    assert missing.code == cli.EXIT_USAGE and "no value for ai-credits-monthly" in missing.stderr
    # the server's answer to a value out of bounds names the field
    bad = run("provision acme enterprise --no-prompt --value ai-credits-monthly=5")
    assert bad.code == cli.EXIT_USAGE
    assert "entitlement_values[ai-credits-monthly]" in bad.stderr and "INVALID_ENTITLEMENT_VALUES" in bad.stderr
    bad_json = run("-o json provision acme enterprise --no-prompt --value ai-credits-monthly=5")
    error = json.loads(bad_json.stderr)["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["field_violations"][0]["field"].startswith(
        "entitlement_values"
    )

    # the prompt shows the bounds, and the answer is the negotiated amount
    prompted = run("-o json provision acme enterprise --prompt --wait", input="50000\n")
    assert prompted.code == 0, prompted
    assert "ai-credits-monthly (ai-credits monthly, between 10000 and 1000000)" in prompted.stderr + prompted.stdout
    subscription = json.loads(prompted.stdout[prompted.stdout.index("{") :])
    assert subscription["credit_entitlements"][0]["amount"] == "50000"
    assert subscription["handoff"]["status"] == "HANDOFF_STATUS_DELIVERED"
    sub_id = subscription["subscription_id"]

    assert run.ok("-o json balance acme ai-credits").json()["available"] == "50000"
    usage = run.ok("-o json usage report acme gpt-calls 1000 --request-id u-1").json()
    assert (usage["credits"], usage["balance_after"]) == ("2500", "47500")
    assert run.ok("-o json usage report acme gpt-calls 1000 --request-id u-1").json()["usage_id"] == usage["usage_id"]
    short = run("usage report acme gpt-calls 100000")
    assert short.code == cli.EXIT_EXHAUSTED and "available: 47500" in short.stderr

    run.ok(f"clocks advance {clock['test_clock_id']} --to 2026-03-01T00:00:00Z")
    entries = run.ok("-o json ledger acme --currency ai-credits").json()
    assert [(e["type"], e["amount"]) for e in entries] == [
        ("LEDGER_ENTRY_TYPE_GRANT", "50000"),
        ("LEDGER_ENTRY_TYPE_DEBIT", "-2500"),
        ("LEDGER_ENTRY_TYPE_EXPIRE", "-47500"),
        ("LEDGER_ENTRY_TYPE_GRANT", "50000"),
    ]
    assert sum(Decimal(e["amount"]) for e in entries) == 50000
    past = run.ok("-o json balance acme ai-credits --as-of 2026-02-01T00:00:00Z --grants").json()
    assert past["available"] == "47500" and len(past["grants"]) == 1
    assert "available at" in run.ok("balance acme ai-credits --grants").stdout
    assert len(run.ok("-o json grants list acme").json()) == 2

    amended = run.ok(f"-o json subscriptions amend {sub_id} --value ai-credits-monthly=80000").json()
    assert amended["revision"] == "2"
    cancelled = run.ok(f"-o json subscriptions cancel {sub_id} --at-period-end").json()
    assert cancelled["cancel_mode"] == "CANCEL_MODE_AT_PERIOD_END"
    assert sub_id in run.ok("subscriptions list --customer acme").stdout

    handoffs = run.ok(f"-o json handoffs list --kind subscription --key {sub_id}").json()
    assert [h["revision"] for h in handoffs] == ["1", "2", "3"]
    assert run.ok("-o json handoffs requeue --all").json() == {"requeued_count": 0}


def test_exit_statuses_and_plain_errors(run: Cli, tmp_path, monkeypatch):
    missing = run("subscriptions show sub_nope")
    assert missing.code == cli.EXIT_NOT_FOUND and "does not exist" in missing.stderr
    usage = run("handoffs requeue subscription")
    assert usage.code == cli.EXIT_USAGE and "give KIND and KEY, or --all" in usage.stderr
    assert run("balance acme").code == cli.EXIT_USAGE  # a missing argument
    assert run("balance acme ai-credits --as-of yesterday").code == cli.EXIT_USAGE

    reader = create_key_at(catalog_app.DEFINITION, run.catalog_url, (READER,), migrate=False)
    denied = run("handoffs list", env={"CREDIT_GRANTS_CATALOG_API_KEY": reader})
    assert denied.code == cli.EXIT_AUTH and "needs the role operator" in denied.stderr
    operator = create_key_at(catalog_app.DEFINITION, run.catalog_url, (OPERATOR,), migrate=False)
    assert run("handoffs list", env={"CREDIT_GRANTS_CATALOG_API_KEY": operator}).code == 0

    monkeypatch.chdir(tmp_path)  # no data/*.key here: no key at all
    unauthenticated = run("features list", env={"CREDIT_GRANTS_CATALOG_API_KEY": None})
    assert unauthenticated.code == cli.EXIT_AUTH and "API_KEY_MISSING" in unauthenticated.stderr
    down = run(
        "features list", env={"CREDIT_GRANTS_CATALOG_ADDRESS": "127.0.0.1:9", "CREDIT_GRANTS_CATALOG_RETRIES": "1"}
    )
    assert down.code == cli.EXIT_UNAVAILABLE and "is the service running" in down.stderr


def test_keys_commands_are_reachable(run: Cli):
    created = run.ok("keys grant create --role reader --label from-cli --quiet")
    key_id = created.stdout.strip().split("_")[1]
    assert key_id in run.ok("keys grant list").stdout
    assert "revoked" in run.ok(f"keys grant revoke {key_id}").stdout
    assert run("keys catalog create --role sync").code == cli.EXIT_USAGE  # not a catalog role
    assert run("keys nowhere list").code == cli.EXIT_USAGE
    assert "credit-grants keys grant|catalog" in run.ok("keys --help").stdout
    assert "usage:" in run.ok("keys catalog --help").stdout
