"""Flags in the wrong place or saying opposite things are usage errors that say what to
do (exit 2, nothing runs), never a bare click error or a silent choice of the last one.
The fast layer asks the CLI's own functions about every option of `run`, taken from the
command tree (so an option added later is covered); a few real command lines check
what the user sees, with controls that run."""

from __future__ import annotations

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.cli import contradictions, main, misplaced_option

RUN = main.commands["run"]
RUN_OPTIONS = [p for p in RUN.params if isinstance(p, click.Option)]


@pytest.mark.parametrize("param", RUN_OPTIONS, ids=lambda p: p.opts[0])
def test_every_run_option_given_before_run_is_explained(param):
    flag = param.opts[0]
    value = [] if param.is_flag else ["2"]
    hint = misplaced_option(main, "corral", [flag, *value, "run", "summary"], flag)
    assert hint == f"{flag} is an option of `run`: corral {' '.join(['run', flag, *value])} summary"
    for other in param.opts[1:]:  # every spelling of it
        hint = misplaced_option(main, "corral", ["--db", "x", other, *value, "run"], other)
        assert (
            hint == f"{other} is an option of `run`: corral --db x run {' '.join([other, *value])}"
        )


def test_an_option_of_a_group_s_command_given_before_the_group():
    hint = misplaced_option(main, "corral", ["-w", "web1", "fleet"], "-w")
    assert hint == "-w is an option of `fleet gather`: corral fleet gather -w web1"
    # the command's name as the option's value: said, never an internal error
    hint = misplaced_option(main, "corral", ["-w", "run", "fleet"], "-w")
    assert hint == "-w is an option of `run`: give it after the command"


def test_an_option_of_several_commands_without_one_given_names_them_all():
    hint = misplaced_option(main, "corral", ["--json"], "--json")
    assert hint is not None and hint.startswith("--json is an option of ")
    assert "`run`" in hint and "`history`" in hint and hint.endswith("give it after the command")
    assert misplaced_option(main, "corral", ["--nope", "run"], "--nope") is None


@pytest.mark.parametrize(
    ("args", "clash"),
    [
        (["-k", "--fail-fast"], "-k and --fail-fast"),
        (["--fail-fast", "--keep-going"], "--fail-fast and --keep-going"),
        (["--failed", "--resume"], "--failed and --resume"),
        (["-j", "2", "--resume", "summary", "--failed"], "--resume and --failed"),
    ],
)
def test_flags_that_say_opposite_things_are_named_together(args, clash):
    assert contradictions(RUN, args) == f"{clash} contradict each other: give one of them"


@pytest.mark.parametrize(
    "args",
    [
        ["-k", "-k"],
        ["--tag", "a", "--tag", "b"],  # repeatable: both count
        ["-j", "2", "--", "-j", "3"],  # targets after --
        ["-kn", "--fail-fast"],  # a cluster of short flags is left to click
        ["--failed", "-n"],
        # an option with a value given again: the last counts, as with make
        # (alias cr='corral run -j 4'; cr -j 8)
        ["-j", "2", "-j4"],
        ["--deadline", "5m", "--deadline=1h"],
        ["--exclude", "-k", "--fail-fast"],  # (-k is --exclude's value here)
    ],
)
def test_control_flags_that_agree_are_no_contradiction(args):
    assert contradictions(RUN, args) is None


def test_what_the_user_sees(corral, tmp_path):
    marker = tmp_path / "ran"
    corral.module("summary", body=f"echo x >> {marker}")
    misplaced = corral("-j", "2", "run", "summary")
    assert misplaced.code == 2, misplaced.err
    said = misplaced.err.strip()
    assert said.startswith("Error: -j is an option of `run`: corral --modules "), said
    assert said.endswith(f"{corral.db} run -j 2 summary"), said
    assert "No such option" not in misplaced.err
    for args, said in (
        (["run", "-k", "--fail-fast"], "-k and --fail-fast contradict each other"),
        (["run", "--failed", "--resume"], "--failed and --resume contradict each other"),
        (["run", "--canary", "1"], "--canary is for fleet runs: give -w NODESET"),
        (["run", "--max-fail", "10"], "--max-fail is for fleet runs"),
    ):
        result = corral(*args)
        assert result.code == 2 and said in result.err, (args, result.err)
    assert not marker.exists()
    # The controls: each flag alone, in its place, runs.
    assert corral("run", "-j", "2", "--fail-fast", "summary").code == 0
    assert corral("run", "--failed").code == 0
    assert marker.read_text() == "x\n"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--fanout", "70000"], "70000 is not in the range 1<=x<=65536"),
        (["--connect-timeout", "1e9"], "1000000000.0 is not in the range 1<=x<=86400"),
    ],
)
def test_fleet_numbers_have_the_config_files_ranges(corral, args, said):
    """As fanout: and connect_timeout: in the config: no host is touched."""
    result = corral("run", "-w", "nohost.invalid", *args)
    assert result.code == 2 and said in result.err, result.err


def test_a_subcommands_option_before_it_is_explained(corral):
    result = corral("fleet", "-w", "web1", "gather")
    assert result.code == 2, result.err
    assert "-w is an option of `gather`: corral fleet gather -w web1" in result.err


WORDS = sorted(
    {o for cmd in (RUN, *main.commands.values()) for p in cmd.params for o in p.opts}
    | {"run", "fleet", "gather", "history", "x", "2", "--", "-kn", "-j4", "--jobs=3"}
)


@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=7))
def test_the_hints_never_fail_whatever_was_typed(args):
    """Whatever the command line, the explanations are a sentence or None, never an
    exception (which would be an internal error, exit 70)."""
    for found in (contradictions(RUN, args), contradictions(main, args, main.commands)):
        assert found is None or "contradict" in found
    for name in args:
        if name.startswith("-"):
            hint = misplaced_option(main, "corral", args, name)
            assert hint is None or " is an option of " in hint
