"""Values that are not what they say (an outside tester's report): an empty string, a
number that is no number, a config value of the wrong kind. Every option and argument of
every command is tried, from the command tree itself, so an option added later is tried
too. A refused command runs nothing (no marker) and exits 2 naming the option; the
controls show the same command line with a real value does run."""

from __future__ import annotations

import subprocess

import click
import pytest

from corral.cli import main


def _commands(group: click.Group = main, path: tuple[str, ...] = ()):
    """(command path, command) of every command corral has."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _required(command: click.Command) -> list[str]:
    """A dummy value for each required option, so that the one tried is what fails."""
    return [
        arg
        for p in command.params
        if isinstance(p, click.Option) and p.required
        for arg in (p.opts[-1], "x")
    ]


def _takes(param: click.Parameter, kind) -> bool:
    return not getattr(param, "is_flag", False) and isinstance(param.type, kind)


def _cases(kind, value):
    """(argv, name) for every option and argument of a `kind` type given `value`."""
    for opt in main.params:
        if _takes(opt, kind):
            yield [opt.opts[-1], value, "plan"], opt.opts[-1]
    for path, command in _commands():
        for p in command.params:
            if not _takes(p, kind):
                continue
            rest = _required(command) if not (isinstance(p, click.Option) and p.required) else []
            arg = [p.opts[-1], value] if isinstance(p, click.Option) else [value]
            yield [*path, *rest, *arg], (p.opts[-1] if isinstance(p, click.Option) else p.name)


EMPTY = list(_cases(click.types.StringParamType, ""))
NAN = list(_cases(click.types.FloatParamType, "nan")) + list(
    _cases(click.types.FloatParamType, "inf")
)
HUGE = list(_cases(click.types.IntParamType, "99999999999999999999999"))


@pytest.fixture
def here(corral, tmp_path):
    """A current directory whose *.sh would leave a marker if an empty --modules meant
    "here"; and a real module in the modules directory that leaves one too."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "stray.sh").write_text(f"#!/bin/bash\ntouch {tmp_path}/stray-ran\n")
    corral.module("a", body=f"touch {tmp_path}/a-ran")
    return cwd


def _run(corral, cwd, argv: list[str], **env: str) -> subprocess.CompletedProcess:
    """corral `argv` in `cwd`, with the modules directory unless argv tries a global
    option, and its database unless the config file names one."""
    given = {o for p in main.params for o in p.opts}
    where = [] if argv[0] in given else ["--modules", str(corral.modules)]
    return subprocess.run(
        [*corral.argv()[:3], *where, *argv],
        cwd=cwd,
        env={**corral.env, "CORRAL_DB": str(corral.db), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_string_option_is_tried():
    """The cases below really cover the tree (a control for the introspection)."""
    names = {name for _, name in EMPTY}
    assert {"--modules", "--db", "--config", "--nodes", "--out", "--tag", "module"} <= names
    assert {"--keep-days", "--connect-timeout", "--max-fail", "--max-load"} <= {n for _, n in NAN}
    assert {"--limit", "--canary", "--fanout", "--keep-runs"} <= {n for _, n in HUGE}


@pytest.mark.parametrize(("argv", "name"), EMPTY, ids=[" ".join(a) for a, _ in EMPTY])
def test_an_empty_value_is_an_error_naming_it(corral, here, tmp_path, argv, name):
    result = _run(corral, here, argv)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "empty" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "stray-ran").exists() and not (tmp_path / "a-ran").exists()


@pytest.mark.parametrize(("argv", "name"), NAN + HUGE, ids=[" ".join(a) for a, _ in NAN + HUGE])
def test_a_number_that_is_no_number_is_an_error_naming_it(corral, here, argv, name):
    result = _run(corral, here, argv)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert name in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr


def test_control_the_same_command_lines_with_values_run(corral, here, tmp_path):
    """Without the empty value, --modules and -w work: the tests above can fail."""
    result = _run(corral, here, ["run"])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a-ran").exists()
    assert _run(corral, here, ["history", "-n", "5"]).returncode == 0
    assert _run(corral, here, ["prune", "-n", "--keep-days", "30"]).returncode == 0


def test_wait_lock_takes_a_duration_and_never_a_target(corral, here, tmp_path):
    for argv in (["--wait-lock", "1s", "a"], ["--wait-lock=1s", "a"], ["--wait-lock", "a"]):
        result = _run(corral, here, ["run", *argv])
        assert result.returncode == 0, (argv, result.stderr)
    result = _run(corral, here, ["run", "--wait-lock=nan", "a"])
    assert result.returncode == 2 and "--wait-lock" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("log_dir: [a, b]", "log_dir: expected a path"),
        ("db: true", "db: expected a path"),
        ("db: ''", "db: expected a path"),
        ("modules: ''", "modules: expected a path"),
        ("lib: 12", "lib: expected a path"),
        ("jobs: true", "jobs: cannot read True: expected a value"),
        ("jobs: null", "jobs: cannot read None: expected a value"),
        ("secret_patterns: [x]", "unknown setting 'secret_patterns'"),
    ],
)
def test_a_config_value_of_the_wrong_kind_is_an_error_naming_the_key(corral, here, text, why):
    (corral.modules.parent / "corral.yaml").write_text(text + "\n")
    result = _run(corral, here, ["run"])
    assert result.returncode == 2 and why in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not list(here.glob("*[[]*"))


def test_config_values_are_what_they_say(corral, here, tmp_path):
    """The control: `010` is ten (never YAML 1.1's octal 8), a relative `lib:` is read
    beside the file and its libraries reach the modules, every key is in the unknown-key
    list, and `corral config` shows deadline and the max_load the gate uses."""
    lib = corral.modules.parent / "mylib"
    lib.mkdir()
    (lib / "hello.sh").write_text('hello::say() { touch "$1"; }\n')
    (corral.modules.parent / "corral.yaml").write_text("jobs: 010\nlib: mylib\ndeadline: 30m\n")
    corral.module("b", body=f'source "$CORRAL_LIB/hello.sh"; hello::say {tmp_path}/lib-ran')
    shown = _run(corral, here, ["config", "--json"], CORRAL_MAX_LOAD="")
    settings = __import__("json").loads(shown.stdout)
    assert settings["jobs"]["value"] == 10 and settings["deadline"]["value"] == 1800
    assert settings["lib"]["value"] == str(lib)
    assert "CPU count" in str(settings["max_load"]["value"])
    result = _run(corral, here, ["run", "b"])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "lib-ran").exists()
    (corral.modules.parent / "corral.yaml").write_text("nosuch: 1\n")
    result = _run(corral, here, ["plan"])
    assert all(k in result.stderr for k in ("db,", "log_dir,", "modules,", "lib,"))
