"""The README stays a page, and the links of the README and docs/ lead somewhere.

Every relative link in README.md and docs/*.md must name a file of the repository, and a
`#fragment` must name a heading of the file it points to (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_BYTES = 12 * 1024
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _links(text: str) -> list[str]:
    return _LINK.findall(_prose(text))


def _is_relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = _anchor(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    return anchors


def test_readme_fits_on_a_page():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move detail to docs/ (limit {README_MAX_BYTES})"


@pytest.mark.parametrize("command", ["make run", "make test"])
def test_readme_says_how_to_start(command):
    assert command in README.read_text(encoding="utf-8")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings(document):
    broken = []
    for target in _links(document.read_text(encoding="utf-8")):
        if not _is_relative(target):
            continue
        path_part, _, fragment = target.partition("#")
        linked = (document.parent / path_part).resolve() if path_part else document
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in _anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.relative_to(ROOT)}")
    assert not broken, f"broken links in {document.relative_to(ROOT)}: {broken}"


def test_the_link_check_sees_links():
    """Guards the checker itself: links in prose count, those in code do not."""
    text = "See [ops](docs/operations.md#logs) and `[x](nowhere.md)`.\n```\n[y](nowhere.md)\n```\n"
    assert _links(text) == ["docs/operations.md#logs"]
    assert _anchor("Handoff to the grant service (outbox)") == "handoff-to-the-grant-service-outbox"
    assert _anchor("Default size (`--size default`, both backends)") == "default-size---size-default-both-backends"
    assert not _is_relative("https://example.com/a.md")


_COMMANDS = ("python", "python3", "grpcurl", "credit-grants", "buf", "pytest", "alembic", "ruff", "pip")  # the .venv's
_SH_BLOCK = re.compile(r"^```(?:sh|bash|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_commands_work_as_written_after_make_run(document):
    """A command the docs tell a user to type names the virtualenv's program (`.venv/bin/grpcurl`,
    `.venv/bin/python -m ...`): `python -m grant_service keys` alone fails outside the virtualenv.
    A block that starts with `source .venv/bin/activate` may drop the prefix; a variable ($PY, $G)
    is set in its block."""
    text = document.read_text(encoding="utf-8")
    bare = []
    for block in _SH_BLOCK.findall(text):
        if "source .venv/bin/activate" in block:
            continue
        bare += [line for line in block.splitlines() if line.split(" ", 1)[0] in _COMMANDS]
    for span in _CODE_SPAN.findall(_FENCE.sub("", text)):
        words = span.strip("`").split()
        if len(words) > 1 and words[0] in _COMMANDS:
            bare.append(span)
    assert not bare, f"{document.relative_to(ROOT)}: give these as .venv/bin/<program> (or after activate): {bare}"
