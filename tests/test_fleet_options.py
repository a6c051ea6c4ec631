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


@pytest.mark.parametrize(
    ("nodes", "said"),
    [
        ("node[1-", 'missing bracket: "node[1-"'),
        ("node[3-1]", "bad range"),
        ("x[1-99999999999]", "a range too large for a node set"),  # was exit 70
        ("x[1-3],y[1-999999]", "names 1,000,002 hosts; a fleet run takes at most 1,000,000"),
        ("@undefined", "names no host (an @group is defined in ClusterShell's groups.conf"),
    ],
)
def test_a_node_set_that_cannot_be_a_fleet_is_a_usage_error(corral, nodes, said):
    corral.module("a")
    for command in (["run", "-w", nodes], ["fleet", "gather", "-w", nodes]):
        result = corral(*command)
        assert result.code == 2, result.err
        assert said in result.err and "Traceback" not in result.err, result.err


def test_the_largest_fleet_is_expanded(monkeypatch):
    """The control: a node set of MAX_HOSTS is a fleet (counted, then named); one more
    host is the error."""
    from corral.errors import UsageError
    from corral.fleet import run as fleet_run

    monkeypatch.setattr(fleet_run, "MAX_HOSTS", 1000)
    assert len(fleet_run.expand("x[1-1000]")) == 1000
    with pytest.raises(UsageError, match="names 1,001 hosts"):
        fleet_run.expand("x[1-1001]")
