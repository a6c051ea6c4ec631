"""No silent hang (issue 12.8) and a result is on disk when it is shown (12.5).

Real runs: a module that needs more memory than the host has, a --min-free-mem that
can never be met, a run bounded by --deadline / `deadline:`, a run lock held by
another process (a real flock), and corral SIGKILLed while it waits on leftovers."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys

import pytest

from corral.events import RunFinished, Waiting
from corral.printer import Printer
from corral.runlock import lock_path
from corral.status import Status
from corral.throttle import Block, Jobs, Refusal

from ..conftest import db_rows
from .conftest import Running, wait_gone


@pytest.mark.parametrize("how", ["flag", "config"])
def test_a_deadline_skips_what_has_not_started_and_stops_what_runs(corral, tmp_path, how):
    corral.module("quick", body=f"touch {tmp_path}/quick")
    corral.module("long", "requires: quick", "sleep 60")
    corral.module("after", "requires: long", f"touch {tmp_path}/after")
    args = ["--deadline", "2s"] if how == "flag" else []
    if how == "config":
        (corral.modules.parent / "corral.yaml").write_text("deadline: 2s\ngrace: 1s\n")
    result = corral("run", "--json", *args, timeout=30)  # the bound: it does not hang
    assert result.code == 1 and "Traceback" not in result.err
    mods = {m["name"]: m for m in result.json()["modules"]}
    assert mods["quick"]["status"] == "ok" and (tmp_path / "quick").exists()
    assert mods["long"]["status"] == "timeout"
    assert mods["long"]["reason"] == "stopped: the run's deadline passed"
    assert mods["after"]["status"] == "skipped" and not (tmp_path / "after").exists()
    assert "deadline (2s) passed" in mods["after"]["reason"]
    assert "deadline (2s) passed" in result.err
    assert wait_gone(result.json()["run_id"], 5) == []


def test_without_a_deadline_the_same_run_goes_on(corral, tmp_path):
    """The control: nothing else stops the long module."""
    corral.module("long", body=f"touch {tmp_path}/started; sleep 60")
    run = Running(corral, "-q")
    run.wait_for(tmp_path / "started")
    with pytest.raises(subprocess.TimeoutExpired):
        run.proc.wait(3)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish()[0] == 143


def test_memory_above_the_host_fails_at_once_with_the_reason(corral, tmp_path):
    corral.module("huge", "memory: 100T", f"touch {tmp_path}/huge")
    corral.module("small", "memory: 1M", f"touch {tmp_path}/small")
    result = corral("run", "--json", timeout=60)  # the bound: it does not wait for ever
    assert result.code == 2 and "Traceback" not in result.err
    assert "huge.sh:2: memory: 100T is more than this host's" in result.err
    assert not (tmp_path / "huge").exists() and not (tmp_path / "small").exists()
    dry = corral("run", "--dry-run")
    assert dry.code == 2 and "huge.sh:2: memory: 100T is more than" in dry.err
    check = corral("check")
    assert check.code == 2 and "huge.sh:2: memory: 100T is more than" in check.err
    (corral.modules / "huge.sh").unlink()  # the control: what fits runs
    assert corral("run").code == 0 and (tmp_path / "small").exists()


def test_a_min_free_mem_that_can_never_be_met_is_said_at_once(corral, tmp_path):
    """It does not hang (the gate lets one module start when nothing runs), but it is
    said before anything starts, in every mode, and by check."""
    corral.module("a", body=f"touch {tmp_path}/a")
    corral.module("b", body=f"touch {tmp_path}/b")
    result = corral("run", "-q", "--min-free-mem", "100T", timeout=60)
    assert "--min-free-mem 100T can never be met" in result.err
    assert result.code == 0 and (tmp_path / "a").exists() and (tmp_path / "b").exists()
    (corral.modules.parent / "corral.yaml").write_text("min_free_mem: 100T\n")
    check = corral("check")
    assert check.code == 0 and "min-free-mem 100T can never be met" in check.err
    (corral.modules.parent / "corral.yaml").write_text("min_free_mem: 1M\n")
    control = corral("run", "-q")
    assert control.code == 0 and "never be met" not in control.err


@pytest.mark.parametrize("quiet", [["-q"], ["--json"]])
def test_waiting_for_the_run_lock_is_said_in_every_mode(corral, quiet):
    corral.module("a")
    path = lock_path((corral.modules,))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        waited = corral("run", *quiet, "--wait-lock", "1")
        refused = corral("run", *quiet)  # the control: without --wait-lock, no wait
    assert waited.code == 3 and "waiting up to 1s for it" in waited.err
    assert refused.code == 3 and "waiting up to" not in refused.err


def test_a_long_gate_wait_is_said_under_quiet(monkeypatch, capsys):
    now = [1000.0]
    monkeypatch.setattr("corral.printer.time.monotonic", lambda: now[0])
    printer = Printer(sys.stdout, sys.stderr, color=False, timestamps=False, quiet=True)
    from corral.events import Idle

    printer(Waiting(Refusal(Block.MEMORY, "1G available, 2G wanted"), ["big"]))
    now[0] += 59
    printer(Idle())
    assert "waiting" not in capsys.readouterr().err  # the control: not before a minute
    now[0] += 2
    printer(Idle())
    printer(Idle())
    err = capsys.readouterr().err
    assert err.count("waiting for over a minute: memory: 1G available, 2G wanted (big)") == 1


def test_an_interrupted_run_s_summary_gives_its_wall_time(capsys):
    printer = Printer(sys.stdout, sys.stderr, color=False, timestamps=False)
    printer(RunFinished("r", Status.INTERRUPTED, 130, 100.0, 190.0, 0.0, Jobs(2), [], None))
    assert "in 1m30.0s" in capsys.readouterr().out


def test_a_result_shown_is_on_disk_before_the_run_ends(corral, tmp_path):
    """SIGKILL corral 0.2 s after a module's end was shown, while another still runs:
    the shown result is committed; the run row cannot be finished by anyone, and
    history shows the dead run as crashed, not running."""
    corral.module("long", body="sleep 60")
    corral.module("last", body="sleep 0.3; echo finishing")
    run = Running(corral, "-j", "2")
    for line in run.proc.stdout:  # the printer, as a person reads it
        if "last" in line and "ok in" in line:
            break
    subprocess.run(["sleep", "0.2"])  # past the 50 ms the writer promises
    run_id = db_rows(corral.db, "SELECT run_id FROM runs")[0]["run_id"]
    rows = {r["module"]: r for r in db_rows(corral.db, "SELECT * FROM module_runs")}
    assert run.proc.poll() is None  # the run goes on: "long" still runs
    os.kill(run.proc.pid, signal.SIGKILL)
    run.finish()
    assert rows["last"]["status"] == "ok"
    assert rows["long"]["status"] == "running"  # the control: not shown, not finished
    # The run row still says running (nothing could finish it) …
    assert db_rows(corral.db, "SELECT status FROM runs")[0]["status"] == "running"
    # … but history never shows a dead run as running.
    history = corral("history", "--json")
    assert [r["status"] for r in json.loads(history.out)] == ["crashed"]
    assert "crashed" in corral("history").out
    assert wait_gone(run_id, 15) == []
