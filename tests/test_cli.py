"""The commands as a user types them: output shapes, exit codes, docs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import click
import pytest

from corral.cli import main

from .conftest import REPO


def test_plan_json_matches_design(corral):
    corral.module("a", "provides: alpha\nlocks: apt")
    corral.module("b", "requires: alpha")
    result = corral("plan", "--json")
    assert result.code == 0, result.err
    out = result.json()
    assert out["order"] == ["a", "b"]
    b = out["modules"][1]
    for key in (
        "name",
        "path",
        "requires",
        "wants",
        "after",
        "before",
        "provides",
        "locks",
        "level",
    ):
        assert key in b
    assert b["requires"] == ["a"] and b["level"] == 1
    assert out["modules"][0]["locks"] == ["apt"] and out["modules"][0]["provides"] == ["alpha"]


def test_plan_table_shows_waves(corral):
    corral.module("a", "description: first")
    corral.module("b", "requires: a")
    result = corral("plan")
    assert result.code == 0
    assert "wave 0" in result.out and "wave 1" in result.out and "first" in result.out


def test_header_error_exits_2_and_prints_file_and_line(corral):
    corral.module("a", "timeout: soon")
    marker = corral.modules / "ran"
    corral.module("b", body=f"touch {marker}")
    for command in (["plan"], ["list"], ["graph"], ["check"]):
        result = corral(*command)
        assert result.code == 2, command
        assert f"{corral.modules}/a.sh:2: timeout: cannot read 'soon'" in result.err
        assert "Traceback" not in result.err
    assert not marker.exists()


def test_check_prints_every_error_and_strict_turns_warnings_into_errors(corral):
    corral.module("a", "timeout: soon")
    corral.module("b", "requires: ghost")
    corral.module("c", "colour: blue")
    result = corral("check")
    assert result.code == 2
    assert "a.sh:2" in result.err and "b.sh:2" in result.err and "c.sh:2: warning" in result.err
    corral.module("a", "timeout: 5s")
    corral.module("b")
    assert corral("check").code == 0
    assert corral("check", "--strict").code == 2


def test_list_json_has_typed_headers(corral):
    corral.module("a", "timeout: 2m\nmemory: 1G\ntags: x y")
    (entry,) = corral("list", "--json").json()
    assert entry["timeout"] == 120 and entry["memory"] == 1 << 30 and entry["tags"] == ["x", "y"]


def test_graph_json_and_dot(corral):
    corral.module("a")
    corral.module("b", "requires: a\nafter: c")
    corral.module("c")
    data = json.loads(corral("graph", "--format", "json").out)
    assert {"from": "b", "to": "a", "kind": "requires"} in data["edges"]
    dot = corral("graph").out
    assert dot.startswith("digraph corral {") and '"b" -> "a"' in dot
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True)
        assert svg.returncode == 0 and "<svg" in svg.stdout


def test_missing_modules_dir_is_a_usage_error(corral):
    result = corral("--modules", "/nonexistent/dir", "plan")
    assert result.code == 2 and "modules directory not found" in result.err


def test_bad_config_names_the_file(corral):
    config = corral.modules.parent / "corral.yaml"
    config.write_text("jobs: [1, 2\n")
    result = corral("plan")
    assert result.code == 2 and str(config) in result.err and "invalid YAML" in result.err
    config.write_text("jbos: 2\n")
    result = corral("plan")
    assert result.code == 2 and "unknown setting 'jbos'" in result.err


def _commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


@pytest.mark.parametrize("name,command", list(_commands(main)))
def test_every_command_has_an_example_and_is_in_the_user_docs(name, command):
    docs = (REPO / "docs" / "usage.md").read_text()
    assert f"corral {name}" in docs
    parent_help = command.help or ""
    assert command.help, name
    if " " not in name:
        assert "Example:" in parent_help, name


@pytest.mark.parametrize("name,command", list(_commands(main)))
def test_every_option_of_every_command_is_in_the_user_docs(name, command):
    docs = (REPO / "docs" / "usage.md").read_text()
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        longs = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
        if longs and "--help" not in longs:
            assert any(o in docs for o in longs), f"corral {name} {longs[0]} is not in usage.md"


@pytest.mark.parametrize("name,command", list(_commands(main)))
def test_every_argument_of_every_command_is_in_its_heading_in_the_user_docs(name, command):
    """`corral status [RUN]`: each command's positional arguments are in its heading."""
    docs = (REPO / "docs" / "usage.md").read_text()
    headings = [h for h in docs.splitlines() if h.startswith("### ") and f"corral {name}" in h]
    assert headings, f"usage.md has no heading for corral {name}"
    for param in command.params:
        if isinstance(param, click.Argument):
            word = (param.metavar or param.name.upper()).strip("[].").removesuffix("S")
            assert any(word in h for h in headings), f"corral {name}: {word} not in {headings}"


def test_no_option_shows_a_type_name_as_its_value():
    """Every option's value is named for a person (N, DIR, DURATION), never click's
    type names (INTEGER RANGE, FLOAT, TEXT), in --help and so in the man page."""
    page = (REPO / "share" / "man" / "man1" / "corral.1").read_text()
    for word in ("INTEGER", "FLOAT", "TEXT", "RANGE", "BOOLEAN"):
        assert f" {word}" not in page.replace("\\fB", " "), word


BUG = """
import sys
import corral.api as api
def broken(*a, **k):
    raise RuntimeError("a bug planted by the test")
api.load_graph = broken
from corral.cli import main
sys.argv = ["corral", "--modules", sys.argv[1], "--db", sys.argv[2], "list"]
main(prog_name="corral")
"""


def test_a_bug_in_corral_is_one_line_and_exit_70_never_a_traceback(corral, tmp_path):
    corral.module("a")
    cmd = [sys.executable, "-c", BUG, str(corral.modules), str(corral.db)]
    env = {**corral.env, "TMPDIR": str(tmp_path)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 70
    assert "Traceback" not in done.stderr
    assert "corral: internal error: RuntimeError: a bug planted by the test" in done.stderr
    kept = list(tmp_path.glob("corral-error-*.txt"))
    assert len(kept) == 1 and "Traceback" in kept[0].read_text()
    shown = subprocess.run(  # the control: CORRAL_DEBUG shows the traceback it caught
        cmd, capture_output=True, text=True, env={**env, "CORRAL_DEBUG": "1"}, timeout=60
    )
    assert shown.returncode == 70 and "Traceback" in shown.stderr


def test_out_of_range_retention_and_an_empty_modules_list_are_usage_errors(corral):
    corral.module("a")
    for env in ({"CORRAL_KEEP_DAYS": "800000"}, {"CORRAL_KEEP_DAYS": "inf"}):
        result = corral("run", "-q", extra_env=env)
        assert result.code == 2 and "keep_days" in result.err.lower()
        assert "Traceback" not in result.err
    result = corral("prune", "--keep-days", "1e400")
    assert result.code == 2 and "Traceback" not in result.err
    assert corral("run", "-q", extra_env={"CORRAL_KEEP_DAYS": "36525"}).code == 0
