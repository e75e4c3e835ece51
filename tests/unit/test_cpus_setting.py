"""--cpus / <PREFIX>_CPUS: the CPUs a service process is pinned to, written as Linux writes them."""

from __future__ import annotations

import argparse

import pytest

from credit_common.config import cpu_list, parse_service_args


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0", {0}), ("0,2", {0, 2}), ("2-3", {2, 3}), ("0-1,4", {0, 1, 4}), (" 1 , 3-3 ", {1, 3})],
)
def test_cpu_lists(text, cpus):
    assert cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["", "x", "-1", "3-1", "1-", "0,,1", "1.5"])
def test_what_is_not_a_cpu_list_is_refused_with_an_example(text):
    with pytest.raises(argparse.ArgumentTypeError, match="such as 0 or 0,2 or 2-3"):
        cpu_list(text)


def _settings(argv, monkeypatch, **env):
    monkeypatch.delenv("CATALOG_CPUS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return parse_service_args(
        service="catalog_service", env_prefix="CATALOG", default_port=50051, database_file="c.db", argv=argv
    )


def test_not_pinned_unless_asked(monkeypatch):
    assert _settings([], monkeypatch).cpus is None


def test_flag_and_environment(monkeypatch):
    assert _settings([], monkeypatch, CATALOG_CPUS="1").cpus == {1}
    assert _settings(["--cpus", "0-1"], monkeypatch, CATALOG_CPUS="1").cpus == {0, 1}
