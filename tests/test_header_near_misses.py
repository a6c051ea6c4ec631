"""Header lines that almost say something (an outside tester's report): a known key
without its colon, an LSB key outside its block, a misspelt LSB key, and the line each
problem names. A near miss of a key that orders modules is an error with a
did-you-mean naming FILE:LINE; a prose comment that merely starts with a key word is
left alone (the rule: every word after the key must name a module, or the line is
prose; docs/usage.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import HeaderError
from corral.graph import Module, build_graph
from corral.headers import parse_header


def graph_problems(files: dict[str, str]) -> list[str]:
    """`FILE:LINE: message` of every error and warning the modules' headers give."""
    modules = [Module(n, f"{n}.sh", parse_header(t.encode())) for n, t in files.items()]
    try:
        graph = build_graph(modules, {"$network": ()})
    except HeaderError as exc:
        return [str(p) for p in exc.problems]
    return [str(p) for p in graph.warnings]


SLEEPER = "#!/bin/bash\ntrue\n"


@pytest.mark.parametrize(
    ("line", "meant"),
    [
        ("# requires sleeper", "# requires: sleeper"),
        ("# Requires sleeper, other", "# requires: sleeper other"),
        ("# after sleeper", "# after: sleeper"),
        ("# needs sleeper", "# requires: sleeper"),
        ("# wants $network", "# wants: $network"),
    ],
)
def test_an_ordering_key_without_its_colon_naming_modules_is_an_error(line, meant):
    files = {"sleeper": SLEEPER, "other": SLEEPER, "m": f"#!/bin/bash\n\n{line}\ntrue\n"}
    found = graph_problems(files)
    assert len(found) == 1 and found[0].startswith("m.sh:3: '#"), found
    assert f"(did you mean '{meant}'?)" in found[0]


@pytest.mark.parametrize(
    "line",
    [
        "# after the reboot we check the sleeper",
        "# provides a quick look at the disks",
        "# requires root",  # no module is called root
        "# before anything else, sleeper must be done",
        "# tags are free labels",
        "# timeout after which we give up",
    ],
)
def test_control_prose_that_starts_with_a_key_word_is_no_error(line):
    files = {"sleeper": SLEEPER, "m": f"#!/bin/bash\n{line}\ntrue\n"}
    assert graph_problems(files) == []


@pytest.mark.parametrize(
    ("line", "severity"),
    [("# timeout 30s", "error"), ("# locks apt", "error"), ("# provides disks", "warning")],
)
def test_other_keys_without_their_colon_and_one_value(line, severity):
    h = parse_header(f"#!/bin/bash\n{line}\ntrue\n".encode())
    assert [(p.line, p.severity) for p in h.problems] == [(2, severity)]
    assert "a header key ends with a colon" in h.problems[0].message


def test_lsb_keys_outside_the_block_are_errors_naming_their_line():
    text = "#!/bin/sh\n# Required-Start: $network\n# Default-Start: 2 3\nexit 0\n"
    h = parse_header(text.encode())
    found = [(p.line, p.severity, p.message.split(":")[0]) for p in h.problems]
    assert found == [(2, "error", "Required-Start"), (3, "warning", "Default-Start")]
    assert "# requires: ..." in h.problems[0].message
    # a block whose BEGIN line is missing: its keys are below the first line of code
    stray = "#!/bin/sh\nset -e\n## BEGIN INIT INFO\n# Should-Start: x\n### END INIT INFO\n"
    h = parse_header(stray.encode())
    assert [(p.line, p.severity) for p in h.problems] == [(4, "error")]
    # the control: inside the block the same lines are read
    good = "#!/bin/sh\n### BEGIN INIT INFO\n# Required-Start: $network\n### END INIT INFO\n"
    h = parse_header(good.encode())
    assert h.problems == () and h.requires == ("$network",)


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("Required-Starts", "did you mean 'Required-Start'?"),
        ("Should-Stat", "did you mean 'Should-Start'?"),
        ("requires", "did you mean 'Required-Start:'?"),
        ("after", "did you mean '# after:' in the header at the top?"),
    ],
)
def test_a_misspelt_or_native_ordering_key_in_the_lsb_block_is_an_error(key, said):
    text = f"#!/bin/sh\n### BEGIN INIT INFO\n# Provides: x\n# {key}: y\n### END INIT INFO\n"
    h = parse_header(text.encode())
    assert [(p.line, p.severity) for p in h.problems] == [(4, "error")], h.problems
    assert said in h.problems[0].message
    # insserv's other keys are ignored, as insserv ignores them
    other = text.replace(f"# {key}: y", "# X-Interactive: true\n# Required-Stop: y")
    assert parse_header(other.encode()).problems == ()


def test_every_problem_names_its_own_line():
    """A byte-order mark, blank lines, an LSB block and a list key given on two lines:
    the problem about the second line's name is on the second line."""
    text = (
        "\ufeff#!/bin/bash\n"  # 1
        "\n"  # 2
        "### BEGIN INIT INFO\n"  # 3
        "# Provides: m\n"  # 4
        "# Required-Start: sleeper nosuch\n"  # 5
        "### END INIT INFO\n"  # 6
        "\n"  # 7
        "# requires: sleeper\n"  # 8
        "# requires: typo_of_sleeper\n"  # 9
        "# timeout: soon\n"  # 10
        "true\n"
    )
    files = {"sleeper": SLEEPER, "m": text}
    found = graph_problems(files)
    for where in (
        "m.sh:10: timeout: cannot read 'soon'",
        "m.sh:9: warning: requires 'typo_of_sleeper'",  # (an LSB header: warnings)
        "m.sh:5: warning: requires 'nosuch'",
    ):
        assert any(p.startswith(where) for p in found), (where, found)


def test_the_shipped_modules_and_examples_have_no_near_misses():
    """The control on real headers: the repository's own modules parse as before."""
    root = Path(__file__).resolve().parent.parent
    for path in [*root.glob("modules/*.sh"), *root.glob("examples/**/*.sh")]:
        h = parse_header(path.read_bytes())
        assert not h.unkeyed and not [p for p in h.problems if "colon" in p.message], path


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("memory: " + "9" * 400 + "T", "memory: cannot read"),
        ("memory: 2000T", "expected at most 1024T"),
        ("retries: " + "9" * 5000, "expected a whole number from 0 to 100"),
        ("retries: \u0663", "expected a whole number from 0 to 100"),  # an Arabic 3
        ("warning-exit: " + "9" * 5000, "expected exit codes from 1 to 255"),
        ("timeout: " + "9" * 400, "expected at most 366 days"),
    ],
)
def test_a_number_out_of_range_is_an_error_naming_its_line_never_a_crash(line, said):
    h = parse_header(f"#!/bin/bash\n\n# {line}\ntrue\n".encode())
    assert [(p.line, p.severity) for p in h.problems] == [(3, "error")]
    assert said in h.problems[0].message
    # the control: a value in range is read
    assert parse_header(b"# memory: 1024T\n# retries: 100\n").problems == ()


def test_a_key_below_the_first_line_of_code_is_a_warning_naming_its_line():
    text = "#!/bin/bash\n# requires: a\nset -euo pipefail\n\n# locks: apt\ntrue\n"
    h = parse_header(text.encode())
    assert h.requires == ("a",) and h.locks == ()
    assert [(p.line, p.severity) for p in h.problems] == [(5, "warning")]
    assert "locks: below the header, which ends at line 3" in h.problems[0].message
    # the control: the same line above the code is read
    h = parse_header(
        text.replace("set -euo pipefail\n\n# locks: apt", "# locks: apt\nset -e").encode()
    )
    assert h.locks == ("apt",) and h.problems == ()


@pytest.mark.parametrize(
    ("line", "severity", "meant"),
    [
        ("# depends on: sleeper", "error", "'requires'"),
        ("# runs after: sleeper", "error", "'after'"),
        ("# warning exit: 3", "warning", "'warning_exit'"),
    ],
)
def test_a_key_written_with_spaces_is_a_near_miss(line, severity, meant):
    h = parse_header(f"#!/bin/bash\n{line}\ntrue\n".encode())
    assert [(p.line, p.severity) for p in h.problems] == [(2, severity)]
    assert f"did you mean {meant}?" in h.problems[0].message
    # the control: prose with a colon is prose
    assert parse_header(b"#!/bin/bash\n# Note that: it is slow\ntrue\n").problems == ()


def test_a_corral_variable_with_a_typo_is_a_warning(corral):
    corral.module("a")
    result = corral("run", extra_env={"CORRAL_JOB": "4", "CORRAL_MODULE": "x"})
    assert result.code == 0, result.err
    assert "$CORRAL_JOB is not a setting corral reads (did you mean $CORRAL_JOBS?)" in result.err
    assert "CORRAL_MODULE " not in result.err  # what corral sets for its modules
    assert "is not a setting" not in corral("run", extra_env={"CORRAL_JOBS": "4"}).err
