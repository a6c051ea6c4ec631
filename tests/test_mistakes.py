"""The usual mistakes get a message that says what to do: file names as targets, typos in
module names, global options after the command, a missing modules directory, and
`--wait-lock` next to a target."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from corral.runlock import lock_path

from .conftest import Result


def run_in(corral, cwd, *args: str, env: dict | None = None) -> Result:
    proc = subprocess.run(
        [sys.executable, "-m", "corral", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**corral.env, **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_targets_may_be_given_as_file_names(corral):
    corral.module("disk_usage")
    corral.module("memory")
    cwd = corral.modules.parent
    for target in ("disk_usage.sh", "modules/disk_usage.sh", str(corral.modules / "disk_usage.sh")):
        result = run_in(corral, cwd, "--db", str(corral.db), "run", "-n", target)
        assert result.code == 0, (target, result.err)
        assert "1. disk_usage" in result.out and "memory" not in result.out
    other = cwd / "elsewhere"
    other.mkdir()
    (other / "memory.sh").write_text("true\n")
    result = run_in(corral, cwd, "--db", str(corral.db), "run", "elsewhere/memory.sh")
    assert result.code == 2 and "is not the module 'memory'" in result.err
    assert str(corral.modules / "memory.sh") in result.err
    # a file of another directory, named like no module here: where it is, and how to run it
    (other / "backup.sh").write_text("true\n")
    result = run_in(corral, cwd, "--db", str(corral.db), "run", "-n", "elsewhere/backup.sh")
    assert result.code == 2 and "Traceback" not in result.err
    assert f"not in the modules directory {corral.modules}: it is in {other}" in result.err
    assert f"`corral --modules {other} ...`" in result.err
    # a file name with a typo gets the did-you-mean of its module name
    result = run_in(corral, cwd, "--db", str(corral.db), "run", "modules/disk_usgae.sh")
    assert result.code == 2 and "did you mean disk_usage?" in result.err, result.err
    # no modules directory here, a module file named: the command that runs it
    result = run_in(
        corral, other, "--db", str(corral.db), "plan", str(corral.modules / "memory.sh")
    )
    assert result.code == 2 and "modules directory not found" in result.err
    said = f"is in {corral.modules}: `corral --modules {corral.modules} plan memory`"
    assert said in result.err, result.err
    # the control: no file among the arguments, no such hint
    assert " is in " not in run_in(corral, other, "--db", str(corral.db), "plan", "memory").err


def test_did_you_mean_for_targets_exclusions_and_headers(corral):
    corral.module("disk_usage")
    corral.module("summary", "wants: disk_usage")
    result = corral("run", "disk_usgae")
    assert result.code == 2 and "did you mean disk_usage?" in result.err
    assert "did you mean summary?" in corral("plan", "--exclude", "sumary").err
    corral.module("report", "after: disk_usag")
    result = corral("check")
    assert result.code == 0 and "after 'disk_usag'" in result.err
    assert "did you mean disk_usage?" in result.err
    corral.module("report", "requires: disk_usag")
    result = corral("check")
    assert result.code == 2 and "did you mean disk_usage?" in result.err
    corral.module("report", "after: postgres")  # absent, nothing like it: ordering only
    assert corral("check").err.startswith("0 errors, 0 warnings")


def test_global_option_after_the_command_is_explained(corral):
    corral.module("a")
    for args in (("run", "--db", "x.db"), ("cache", "stats", "--modules", "m")):
        result = corral(*args)
        assert result.code == 2 and "Traceback" not in result.err
        assert f"{args[-2]} is a global option: give it before the command" in result.err
        assert f"corral {args[-2]} " in result.err


def test_missing_modules_directory_names_where_it_looked(corral, tmp_path):
    bare = tmp_path / "empty"
    bare.mkdir()
    result = run_in(corral, bare, "--db", str(corral.db), "plan")
    assert result.code == 2
    assert str(bare / "modules") in result.err and f"current directory {bare}" in result.err
    assert "--modules DIR" in result.err and "CORRAL_MODULES" in result.err
    result = run_in(corral, bare, "--db", str(corral.db), "plan", env={"CORRAL_MODULES": "/nope"})
    assert "$CORRAL_MODULES=/nope" in result.err
    result = run_in(corral, bare, "--modules", "nope", "--db", str(corral.db), "plan")
    assert "as given by --modules" in result.err and "give --modules" not in result.err


def test_wait_lock_never_swallows_a_target(corral):
    corral.module("a", body=f"touch {corral.modules.parent}/a.ran")
    corral.module("b", body=f"touch {corral.modules.parent}/b.ran")
    result = corral("run", "--wait-lock", "b")
    assert result.code == 0, result.err
    assert (corral.modules.parent / "b.ran").exists()
    assert not (corral.modules.parent / "a.ran").exists()
    assert corral("run", "--wait-lock", "0.5", "a").code == 0
    assert (corral.modules.parent / "a.ran").exists()


def test_lock_message_suggests_wait_lock_only_to_who_did_not_use_it(corral):
    corral.module("a")
    path = lock_path((corral.modules,))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        plain = corral("run")
        assert plain.code == 3 and "--wait-lock[=DURATION]" in plain.err
        assert f"is running {corral.modules};" in plain.err and "`corral status`" in plain.err
        waited = corral("run", "--wait-lock=0.3")
        assert waited.code == 3 and "after waiting 0.3s" in waited.err
        assert "--wait-lock" not in waited.err
    finally:
        os.close(fd)


def test_messages_name_the_modules_directory_in_full(corral, tmp_path):
    """Given as ./modules (the default), a message names the directory as a full path:
    `no earlier run of modules` says nothing to a user reading cron mail."""
    work = tmp_path / "work"
    (work / "modules").mkdir(parents=True)
    full = str(work / "modules")
    db = ("--db", str(tmp_path / "w.db"))
    empty = run_in(corral, work, *db, "run")
    assert empty.code == 2 and f"{full}: no modules to run" in empty.err, empty.err
    (work / "modules" / "a.sh").write_text("true\n")
    again = run_in(corral, work, *db, "run", "--failed")
    assert again.code == 2 and f"no earlier run of {full} is recorded" in again.err, again.err
    unknown = run_in(corral, work, *db, "log", "b")
    assert unknown.code == 2 and f"no b.sh in {full}" in unknown.err, unknown.err
