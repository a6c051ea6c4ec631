"""The log directory is never a reason not to run (issue 12.3), and names and files
cannot collide (12.9). The faults are real: a read-only bind mount, chattr +i, a file
where the directory should be, a missing parent, a HOME that does not exist for a
real unprivileged user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import db_rows
from .conftest import marking

NAMES = ("a", "b")


@pytest.fixture
def printing(corral, tmp_path):
    """Two modules that print a line and leave a marker file; the markers' directory."""
    return marking(corral, tmp_path, NAMES, "output of")


def with_log_dir(corral, path) -> None:
    (corral.modules.parent / "corral.yaml").write_text(f"log_dir: {path}\n")


@pytest.mark.parametrize("fault", ["read-only mount", "immutable", "a file", "missing parent"])
def test_a_log_directory_that_cannot_be_written_does_not_stop_the_run(
    corral, printing, tmp_path, mounts, immutable, fault
):
    logs = tmp_path / "logs"
    logs.mkdir()
    if fault == "read-only mount":
        mounts.read_only(logs)
    elif fault == "immutable":
        immutable(logs)
    elif fault == "a file":
        logs.rmdir()
        logs.write_text("not a directory")
    else:
        logs.rmdir()
        (tmp_path / "parent").write_text("a file")
        logs = tmp_path / "parent" / "logs"
    with_log_dir(corral, logs)
    # The control: nothing can be created there, root or not.
    with pytest.raises(OSError):
        (logs / "probe").mkdir()
    result = corral("run", "--json")
    assert "Traceback" not in result.err
    assert {p.name for p in printing.iterdir()} == set(NAMES)
    assert result.code == 1 and result.err.count("cannot create the log directory") == 1
    assert "incomplete" not in result.err  # said once: not again as each module's loss
    rows = db_rows(corral.db, "SELECT module, status, log_incomplete, log_path FROM module_runs")
    assert {r["module"]: r["status"] for r in rows} == dict.fromkeys(NAMES, "ok")
    assert all(r["log_incomplete"] == 1 and r["log_path"] is None for r in rows)


def test_a_failure_whose_output_was_not_kept_does_not_say_no_output(corral, tmp_path):
    """The failure tail of a module whose log could not be written says its output was
    lost (how many bytes), never "(no output)"; the control: a failing module that
    printed nothing says "(no output)"."""
    logs = tmp_path / "logs"
    logs.write_text("not a directory")
    with_log_dir(corral, logs)
    corral.module("talks", body="echo something went wrong >&2; exit 1")
    corral.module("silent", body="exit 1")
    result = corral("run", "-q")
    assert result.code == 1 and "Traceback" not in result.err
    talks, silent = (
        result.out.split(f"── last lines of {name}")[1].split("\n\n")[0]
        for name in ("talks", "silent")
    )
    assert "(its output was not kept: 21 bytes lost, the log could not be written)" in talks
    assert "(no output)" not in talks
    assert silent.splitlines()[1] == "  (no output)", silent


def test_a_home_that_does_not_exist_still_runs_the_modules(corral, printing, tmp_path, mounts):
    """A service account under cron: HOME names a directory that does not exist and
    cannot be made (it would be under a read-only mount), so neither the default
    database ($XDG_STATE_HOME/corral/corral.db) nor its logs can be created."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mounts.read_only(ro)
    home = ro / "nonexistent"
    env = {"HOME": str(home), "XDG_STATE_HOME": f"{home}/.local/state"}
    cmd = [sys.executable, "-m", "corral", "--modules", str(corral.modules), "run", "--json"]
    done = subprocess.run(
        cmd, env={**corral.env, **env}, capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert {p.name for p in printing.iterdir()} == set(NAMES)
    assert [m["status"] for m in json.loads(done.stdout)["modules"]] == ["ok", "ok"]
    assert done.stderr.count("not recorded") == 1 and str(home) in done.stderr
    assert done.returncode == 1
    assert not home.exists()  # the control: it could not be created


def test_module_a_2_and_attempt_2_of_a_never_share_a_log(corral, tmp_path):
    count = tmp_path / "count"
    corral.module(
        "a",
        "retries: 1",
        f'echo "attempt $CORRAL_ATTEMPT of a"; [[ -e {count} ]] || {{ touch {count}; exit 1; }}',
    )
    corral.module("a.2", body='echo "module a.2"')
    (corral.modules.parent / "corral.yaml").write_text("retry_backoff: 0.01\n")
    result = corral("run", "--json")
    assert result.code == 0, result.err
    rows = db_rows(corral.db, "SELECT module, attempt, log_path FROM module_runs")
    paths = {(r["module"], r["attempt"]): r["log_path"] for r in rows}
    assert len(set(paths.values())) == 3
    texts = {key: Path(path).read_text().strip() for key, path in paths.items()}
    assert texts == {
        ("a", 1): "attempt 1 of a",
        ("a", 2): "attempt 2 of a",
        ("a.2", 1): "module a.2",
    }


def test_a_name_too_long_for_a_log_file_gets_a_safe_log(corral):
    name = "n" * 250  # NAME.sh fits in 255 bytes; NAME.log does not
    corral.module(name, body="echo kept")
    result = corral("run", "--json")
    assert result.code == 0, result.err
    row = db_rows(corral.db, "SELECT log_path, log_incomplete FROM module_runs")[0]
    assert row["log_incomplete"] == 0 and Path(row["log_path"]).read_text() == "kept\n"
    assert len(os.path.basename(row["log_path"]).encode()) <= 255


def test_a_log_directory_that_goes_bad_during_the_run_does_not_stop_it(corral, printing):
    """The run's log directory made immutable by a module (chattr +i) while the run goes
    on: what starts later runs without a log, flagged, and the run says so once."""
    # after both printing modules: one still starting would lose its log as `late` does
    corral.module("spoiler", "requires: a b", 'chattr +i "$CORRAL_LOG_DIR"')
    corral.module("late", "requires: spoiler", f"echo late; touch {printing}/late")
    try:
        result = corral("run", "--json")
        log_dir = Path(result.json()["log_dir"])
        with pytest.raises(OSError):  # the control: nothing can be created there now
            (log_dir / "probe").touch()
    finally:
        for run in (corral.db.parent / "logs").iterdir():
            subprocess.run(["chattr", "-i", str(run)], capture_output=True, check=False)
    assert "Traceback" not in result.err and result.code == 1, result.err
    assert {p.name for p in printing.iterdir()} == {*NAMES, "late"}
    assert result.err.count("are incomplete") == 1 and "the logs of late" in result.err
    rows = db_rows(corral.db, "SELECT module, status, log_incomplete FROM module_runs")
    assert {r["module"]: r["status"] for r in rows} == dict.fromkeys(
        [*NAMES, "spoiler", "late"], "ok"
    )
    assert {r["module"] for r in rows if r["log_incomplete"]} == {"late"}
