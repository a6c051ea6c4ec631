"""Small things a user notices: a second modules directory's config file is never
ignored in silence; `corral log` never prints `None` for a log; `logs/latest` never
names a run directory that is gone."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import pytest

from .conftest import Result, write_module


def run(corral, *args: str) -> Result:
    """corral with only the modules directories given in `args` (not the fixture's)."""
    done = subprocess.run(
        [sys.executable, "-m", "corral", "--db", str(corral.db), *args],
        env=corral.env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def test_a_config_file_of_a_second_modules_directory_is_an_error_naming_it(corral, tmp_path):
    web, db = tmp_path / "web" / "modules", tmp_path / "db" / "modules"
    write_module(web, "nginx")
    write_module(db, "postgres", "locks: pkgdb")
    (tmp_path / "web" / "corral.yaml").write_text("jobs: 2\n")
    (tmp_path / "db" / "corral.yaml").write_text("pools:\n  pkgdb: 1\n")
    both = ("--modules", str(web), "--modules", str(db))
    refused = run(corral, *both, "run")
    assert refused.code == 2, refused.out + refused.err
    assert f"{tmp_path / 'db' / 'corral.yaml'}: not read" in refused.err
    assert "--config" in refused.err and "Traceback" not in refused.err
    assert run(corral, *both, "plan").code == 2  # every command reads the config the same way
    merged = tmp_path / "corral.yaml"
    merged.write_text("jobs: 2\npools:\n  pkgdb: 1\n")
    assert run(corral, *both, "--config", str(merged), "run").code == 0


def test_the_control_one_config_for_both_directories_is_read(corral, tmp_path):
    """Two directories beside one corral.yaml: the same file, no error."""
    web, db = tmp_path / "etc" / "web", tmp_path / "etc" / "db"
    write_module(web, "nginx")
    write_module(db, "postgres")
    (tmp_path / "etc" / "corral.yaml").write_text("jobs: 3\n")
    result = run(corral, "--modules", str(web), "--modules", str(db), "config")
    assert result.code == 0, result.err
    assert "jobs" in result.out and str(tmp_path / "etc" / "corral.yaml") in result.out


def test_log_of_an_attempt_without_output_says_so_never_none(corral):
    corral.module(
        "flaky", "retries: 1", body='[ "$CORRAL_ATTEMPT" = 2 ] && echo "second try"; true'
    )
    corral.module("quiet_fail", "retries: 1", body='[ "$CORRAL_ATTEMPT" = 2 ] && echo ok2')
    corral("run")
    result = corral("log", "quiet_fail")
    assert "None" not in result.out + result.err
    assert "==> quiet_fail, attempt 1: no output <==" in result.out
    assert "(quiet_fail wrote no output in run " in result.err and "attempt 1)" in result.err
    assert "ok2" in result.out


@pytest.mark.parametrize("keep", ["--keep-runs", "--keep-days"])
def test_latest_never_names_a_run_directory_that_is_gone(corral, keep):
    corral.module("a", body="echo hi")
    first = corral("run", "--json").json()["run_id"]
    second = corral("run", "--json").json()["run_id"]
    logs = corral.db.parent / "logs"
    assert os.readlink(logs / "latest") == second
    # the newest run goes (as a later run of another module set could make it go)
    (logs / "latest").unlink()
    (logs / "latest").symlink_to(first)
    limit = ["--keep-runs", "1"] if keep == "--keep-runs" else ["--keep-days", "0.0000001"]
    assert corral("prune", *limit).code == 0
    link = logs / "latest"
    assert not link.is_symlink() or link.exists()
    if keep == "--keep-runs":  # the newest run stays, and latest names it
        assert os.readlink(link) == second
    else:  # everything went: no link at all
        assert not link.is_symlink()
    status = corral("status")
    assert status.code == 0 and "Traceback" not in status.err


def test_a_module_sees_its_path_in_bash_source_and_its_main_guard_runs(corral):
    """bash opens the module by its path (and proves it is the file corral checked):
    $0 and BASH_SOURCE[0] are both the path, so the usual
    `[[ ${BASH_SOURCE[0]} == "$0" ]] && main` guard runs main, and nothing warns."""
    guarded = corral.module(
        "guarded",
        body='main() { echo "did the work"; }\n'
        'echo "zero=$0 source=${BASH_SOURCE[0]}"\n'
        'if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main; fi',
    )
    for command in (["check"], ["plan"], ["run"]):
        result = corral(*command)
        assert result.code == 0 and "BASH_SOURCE" not in result.err, (command, result.err)
    log = next((corral.db.parent / "logs").glob("2*/guarded.log")).read_text()
    assert log == f"zero={guarded} source={guarded}\ndid the work\n"


def test_a_start_that_fails_leaves_latest_on_the_last_run_that_started(corral):
    """corral cannot start (no file descriptors left): no empty run directory stays
    behind and logs/latest still names the last run that did start."""
    corral.module("a", body="echo hi")
    first = corral("run", "--json").json()["run_id"]
    logs = corral.db.parent / "logs"
    cmd = " ".join(shlex.quote(a) for a in corral.argv("run"))
    failed = subprocess.run(
        ["bash", "-c", f"ulimit -n 16; {cmd}"],
        env=corral.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr
    assert sorted(p.name for p in logs.iterdir()) == [first, "latest"]
    assert os.readlink(logs / "latest") == first
    second = corral("run", "--json").json()["run_id"]  # the control: a run that starts
    assert os.readlink(logs / "latest") == second


def test_status_reads_the_state_an_older_corral_published(corral):
    """status.json of a run an older corral made has epoch numbers for its times: still
    read, its end said in UTC (now every time there is ISO 8601)."""
    run = corral.db.parent / "logs" / "20261101-120000Z-abcd"
    run.mkdir(parents=True)
    (run / "status.json").write_text(
        '{"run_id": "20261101-120000Z-abcd", "pid": 1, "started": 1793534400.0, '
        '"status": "ok", "total": 2, "done": 2, "counts": {"ok": 2}, "running": [], '
        '"waiting": [], "written": 1793534460.5}'
    )
    result = corral("status")
    assert result.code == 0, result.err
    assert "the last, 20261101-120000Z-abcd, ended 2026-11-01 12:01:00Z: ok" in result.out
