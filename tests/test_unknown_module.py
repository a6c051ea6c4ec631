"""A module name that matches nothing is a usage error with the closest names, for every
command that takes one (`history`, `why`, `log`), never an empty answer: a typo in a
cron job's `corral history disk_usgae --json` must not read as "no failures"."""

from __future__ import annotations

import pytest


@pytest.fixture
def ran(corral):
    corral.module("disk_usage", body="echo used")
    corral.module("never_ran")
    assert corral("run", "disk_usage").code == 0
    return corral


@pytest.mark.parametrize(
    "command",
    [["history"], ["history", "--json"], ["history", "--all"], ["why"], ["log"]],
)
def test_an_unknown_module_is_an_error_with_the_closest_names(ran, command):
    result = ran(*command, "disk_usgae")
    assert result.code == 2, (result.out, result.err)
    assert "no records of module 'disk_usgae'" in result.err
    assert "(did you mean disk_usage?)" in result.err
    assert result.out == "" and "Traceback" not in result.err


@pytest.mark.parametrize("command", [["history"], ["why"], ["log"]])
def test_control_the_right_name_answers(ran, command):
    result = ran(*command, "disk_usage")
    assert result.code == 0, result.err
    assert result.out


def test_a_module_that_never_ran_or_is_gone_is_known(ran):
    """A module of the directory without records yet is no typo (an empty list as
    JSON); one whose file is gone still has its records."""
    result = ran("history", "--json", "never_ran")
    assert result.code == 0 and result.json() == []
    (ran.modules / "disk_usage.sh").unlink()
    result = ran("history", "disk_usage")
    assert result.code == 0 and "ok" in result.out, result.err


def test_an_unknown_host_is_an_error_with_the_closest_names(ran):
    import os

    here = os.uname().nodename
    typo = here + "x"
    result = ran("history", "--host", typo)
    assert result.code == 2 and f"no records of host {typo!r}" in result.err, result.err
    assert f"did you mean {here}" in result.err and result.out == ""
    far = ran("history", "--host", "nothing-like-it-at-all")
    assert far.code == 2 and f"(hosts with records: {here})" in far.err, far.err
    # the control: this machine's own name answers with its runs
    result = ran("history", "--host", here)
    assert result.code == 0 and "Z-" in result.out, (result.out, result.err)
