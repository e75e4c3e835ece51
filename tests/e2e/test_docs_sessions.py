"""The docs work as written: the README's grpcurl session (its shell blocks, parsed from README.md,
run command by command in one bash) and `make demo` (scripts/demo.py) against live servers, in a
folder laid out as after `make run` (`.venv`, `data/*.key`). Each runs on a database where the
other already ran, twice, in both orders. The answers the README shows are checked: a command
followed by `# ERROR:` must fail with the code shown; every `"field": value` pair in the comment
lines right under a command (`#   ...`) must be in its output, in that order. The demo's ledger must be the one
docs/architecture.md shows (grant ids aside)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from catalog_service.entrypoints import app as catalog_app
from credit_common.auth.keys import ADMIN, SYNC
from grant_service.entrypoints import app as grant_app
from tests.support.auth import create_key_at
from tests.support.servers import serving

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
_PAIR = re.compile(r'"(\w+)":\s*("[^"]*"|-?\d+|true|false)')


@dataclass
class Command:
    text: str  # as in the README, continuation lines joined
    expected: list[str]  # the comment lines right under it


def readme_commands(section: str = "## A grpcurl session") -> list[Command]:
    text = README.read_text()
    body = text[text.index(section) :]
    body = body[: body.index("\n## ", 1)]
    commands: list[Command] = []
    for block in re.findall(r"^```sh\n(.*?)^```", body, re.MULTILINE | re.DOTALL):
        lines = block.splitlines()
        i, after_command = 0, False
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                after_command = False
            elif line.startswith("#"):  # "#   ..." or "# ERROR:" right under a command: its answer
                if after_command and (line.startswith("#   ") or line.startswith("# ERROR:")):
                    commands[-1].expected.append(line[1:].strip())
                else:
                    after_command = False
            else:
                joined = line
                while joined.endswith("\\"):
                    i += 1
                    joined = joined[:-1] + " " + lines[i].strip()
                commands.append(Command(joined, []))
                after_command = True
            i += 1
    return commands


@dataclass
class Folder:
    path: Path
    catalog: str
    grant: str

    def localize(self, command: str) -> str:
        return command.replace("127.0.0.1:50051", self.catalog).replace("127.0.0.1:50052", self.grant)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Iterator[Folder]:
    """Both services on SQLite (test clocks on), and a folder as after `make run`: `.venv`, `data/`
    holding an admin key of each."""
    path = tmp_path_factory.mktemp("made")
    (path / ".venv").symlink_to(ROOT / ".venv")
    (path / "data").mkdir(mode=0o700)
    grant_url, catalog_url = f"sqlite:///{path / 'data/grant.db'}", f"sqlite:///{path / 'data/catalog.db'}"
    sync_key = create_key_at(grant_app.DEFINITION, grant_url, (SYNC,), label="catalog")
    grant_args = ["--enable-test-clocks", "--catch-up-interval", "1"]
    with serving(grant_app.DEFINITION, grant_app.build, grant_url, args=grant_args) as (grant, _):
        catalog_args = ["--grant-service-address", f"127.0.0.1:{grant.port}", "--grant-service-api-key", sync_key]
        with serving(catalog_app.DEFINITION, catalog_app.build, catalog_url, args=catalog_args) as (catalog, _):
            (path / "data/catalog-admin.key").write_text(create_key_at(catalog_app.DEFINITION, catalog_url, (ADMIN,)))
            (path / "data/grant-admin.key").write_text(create_key_at(grant_app.DEFINITION, grant_url, (ADMIN,)))
            yield Folder(path, f"127.0.0.1:{catalog.port}", f"127.0.0.1:{grant.port}")


def run_readme_session(folder: Folder) -> None:
    commands = readme_commands()
    assert len(commands) > 10
    script = ["set -u"]
    for n, command in enumerate(commands):
        script.append(f"echo '@@start {n}'")
        script.append(f"{folder.localize(command.text)} 2>&1")
        script.append(f'echo "@@rc {n} $?"')
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=folder.path, capture_output=True, text=True, timeout=300
    )
    outputs = dict(re.findall(r"^@@start (\d+)\n(.*?)^@@rc \1 ", done.stdout, re.MULTILINE | re.DOTALL))
    codes = dict(re.findall(r"^@@rc (\d+) (\d+)$", done.stdout, re.MULTILINE))
    assert len(codes) == len(commands), done.stdout + done.stderr
    for n, command in enumerate(commands):
        output, code = outputs[str(n)], int(codes[str(n)])
        where = f"README command {n}: {command.text}\n--- output:\n{output}"
        if command.expected[:1] == ["ERROR:"]:
            assert code != 0, where
            shown_code = next(e for e in command.expected if e.startswith("Code:"))
            assert shown_code in output, where
        else:
            assert code == 0, where
        flat, cursor = re.sub(r"\s+", "", output), 0
        for key, value in _PAIR.findall("\n".join(command.expected)):  # in the order shown
            pair = re.sub(r"\s+", "", f'"{key}":{value}')
            found = flat.find(pair, cursor)
            assert found >= 0, f'{where}\n--- "{key}": {value} not in the output (after what is shown before it)'
            cursor = found + len(pair)


def run_demo(folder: Folder, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts/demo.py"), "--catalog", folder.catalog, "--grant", folder.grant, *extra],
        cwd=folder.path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def ledger_rows(text: str) -> list[tuple[str, ...]]:
    """The rows of the "Ledger of ..." table, without the grant ids."""
    table = text[text.index("Ledger of") :].split("\n\n")[0].splitlines()[3:]
    return [tuple(row.split()[:4]) for row in table]


# The credit events the demo's story causes, as its live WatchEvents stream shows them step by step.
DEMO_EVENTS = [
    "SUBSCRIPTION_CHANGED",  # revision 1 applied
    "CREDITS_GRANTED",  # period 0
    "BALANCE_LOW",  # 7,500 left: below 20% of 50,000
    "USAGE_REJECTED",
    "CREDITS_EXPIRED",  # renewal: 7,500 expire
    "CREDITS_GRANTED",
    "BALANCE_RECOVERED",
    "SUBSCRIPTION_CHANGED",  # amended from the next period
    "CREDITS_EXPIRED",
    "CREDITS_GRANTED",  # 80,000
    "CREDITS_EXPIRED",  # amended immediately
    "CREDITS_GRANTED",  # 20,000
    "SUBSCRIPTION_CHANGED",
    "SUBSCRIPTION_CHANGED",  # cancelled at period end
    "CREDITS_EXPIRED",
    "BALANCE_LOW",  # 0: below 5,000
    "SUBSCRIPTION_ENDED",
]


def live_events(text: str) -> list[str]:
    """The types of the events the demo printed as its stream delivered them, in order."""
    return [line.split()[1] for line in text.splitlines() if line.startswith("    event  ")]


def test_the_readme_session_and_the_demo_run_in_any_order_and_again(folder: Folder):
    shown = ARCHITECTURE.read_text()
    shown = shown[shown.index("Ledger of", shown.index("## Subscription lifecycle")) :]
    for _ in range(2):
        run_readme_session(folder)
        output = run_demo(folder)
        assert ledger_rows(output) == ledger_rows(shown)
        assert live_events(output) == DEMO_EVENTS
        assert f"{len(DEMO_EVENTS)} credit events of acme-" in output
        assert f"watched live; ListEvents lists the same {len(DEMO_EVENTS)}" in output


def test_the_first_call_of_the_readme_answers_on_a_fresh_database(folder: Folder):
    text = README.read_text()
    block = text[text.index("Every other method needs an API key") :]
    first = re.search(r"```sh\n(.*?)```", block, re.DOTALL).group(1)
    command = folder.localize(first.replace("\\\n", " ").split("#")[0])
    done = subprocess.run(["bash", "-c", command], cwd=folder.path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    json.loads(done.stdout)


def security_blocks() -> list[str]:
    text = (ROOT / "docs" / "security.md").read_text()
    section = text[text.index("### Certificates for a try-out") :]
    section = section[: section.index("\n### ", 1)]
    return re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)


def test_the_certificate_recipe_and_the_demo_over_tls(tmp_path):
    """The try-out certificates of docs/security.md, made by its command; both services serving
    TLS with them (what its `make run` line sets); its client commands, as written."""
    make_certificates = security_blocks()[0].splitlines()[0]
    assert "GRANT_TLS_CERT=data/tls/server.pem" in security_blocks()[0]
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    for name in ("Makefile", "scripts", "protos", "pyproject.toml"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "data").mkdir(mode=0o700)
    done = subprocess.run(["bash", "-c", make_certificates], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    tls = tmp_path / "data/tls"
    grant_url, catalog_url = f"sqlite:///{tmp_path / 'data/grant.db'}", f"sqlite:///{tmp_path / 'data/catalog.db'}"
    sync_key = create_key_at(grant_app.DEFINITION, grant_url, (SYNC,), label="catalog")
    listener = ["--tls-cert", str(tls / "server.pem"), "--tls-key", str(tls / "server.key")]
    credentials = grpc.ssl_channel_credentials((tls / "client.pem").read_bytes())
    grant_args = ["--enable-test-clocks", *listener]
    with serving(grant_app.DEFINITION, grant_app.build, grant_url, args=grant_args, credentials=credentials) as (
        grant,
        _,
    ):
        catalog_args = [
            *listener,
            "--grant-service-address",
            f"127.0.0.1:{grant.port}",
            "--grant-service-api-key",
            sync_key,
            "--grant-tls-ca",
            str(tls / "client.pem"),
        ]
        with serving(
            catalog_app.DEFINITION, catalog_app.build, catalog_url, args=catalog_args, credentials=credentials
        ) as (catalog, _):
            (tmp_path / "data/catalog-admin.key").write_text(create_key_at(catalog_app.DEFINITION, catalog_url))
            (tmp_path / "data/grant-admin.key").write_text(create_key_at(grant_app.DEFINITION, grant_url))
            folder = Folder(tmp_path, f"127.0.0.1:{catalog.port}", f"127.0.0.1:{grant.port}")
            for command in security_blocks()[1].splitlines():
                command = folder.localize(command.split("#")[0].strip())
                command = command.replace("make demo", "make -o setup demo").replace(
                    'DEMO_ARGS="', f'DEMO_ARGS="--catalog {folder.catalog} --grant {folder.grant} '
                )
                command = command.replace("credit-grants ", f"credit-grants --catalog {folder.catalog} ")
                done = subprocess.run(
                    ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300
                )
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                if "demo" in command:
                    assert "Subscription ENDED, handoff DELIVERED (revision 4)" in done.stdout
                if "grpcurl" in command:
                    assert "catalog_service.v1.CatalogService" in done.stdout
                if "features list" in command:
                    assert "gpt-call" in done.stdout
