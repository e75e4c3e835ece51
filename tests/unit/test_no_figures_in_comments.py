"""Comments and docstrings of the shipped code give reasons, not measurements: benchmark and profile
figures belong in docs/performance.md, where they can be measured again and kept up to date."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("credit_common", "catalog_service", "grant_service")

FIGURE = re.compile(
    r"py-spy|cProfile"  # a profile quoted
    r"|\d[\d,.]*(?:-[\d,.]+)?/s\b"  # a rate: 3,880/s, 4,070-4,275/s
    r"|\bp(?:50|90|95|99)\s+\d"  # a percentile: p99 27 ms
    r"|\d+(?:\.\d+)?%\s+of\s+(?:a|the|its)\b"  # a share of a profile: 12% of a GetBalance
)


def _texts(path: Path) -> list[tuple[int, str]]:
    """The comments and docstrings of `path`, with their line numbers."""
    source = path.read_text()
    texts = [
        (token.start[0], token.string)
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                texts.append((node.body[0].lineno, docstring))
    return texts


def test_no_benchmark_figures_in_comments_or_docstrings():
    found = []
    for package in SHIPPED:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            for line, text in _texts(path):
                found += [f"{relative}:{line}: {match.group(0)!r}" for match in FIGURE.finditer(text)]
    assert found == []


def test_the_check_sees_figures():
    assert FIGURE.search("GetBalance 3,420 -> 4,070-4,275/s on PostgreSQL")
    assert FIGURE.search("(p99 16.4 -> 13.6 ms)")
    assert FIGURE.search("12% of a GetBalance under load (py-spy)")
    assert FIGURE.search("8% of a batch, cProfile")
    assert not FIGURE.search("asked to go away at this age (+/- 10% jitter)")
