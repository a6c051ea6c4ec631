"""Every local run option given with -w reaches each host's run as it was given."""

from __future__ import annotations

import pytest

from corral.cli import FLEET_ONLY, _host_args, run


def parse(args: list[str]):
    return run.make_context("run", list(args))


@pytest.mark.parametrize(
    "given",
    [
        ["-j", "2", "--max-load", "3.5", "--min-free-mem", "1M", "summary"],
        ["--tag", "a", "--tag", "b", "--exclude", "c", "--fail-fast", "--dry-run"],
        ["--keep-going", "--wait-lock", "5", "-j", "auto", "--", "-odd-target", "x"],
        ["--wait-lock"],
        ["--failed", "-j", "1"],
        ["--resume"],
        [],
    ],
)
def test_host_args_round_trip(given):
    fleet = ["-w", "web[01-04]", "--fanout", "2", "--canary", "1", "--max-fail", "10"]
    ctx = parse([*fleet, "--connect-timeout", "3", "--json", "-q", *given])
    host_args = _host_args(ctx)
    assert not {"-w", "--nodes", "--fanout", "--canary", "--json", "-q"} & set(host_args)
    again = parse(host_args)
    expected = parse(given)
    for name, value in expected.params.items():
        if name not in FLEET_ONLY:
            assert again.params[name] == value, name
