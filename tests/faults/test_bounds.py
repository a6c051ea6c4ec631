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

from corral.backends.fake import Ends
from corral.events import Notice, RunFinished
from corral.printer import Printer
from corral.runlock import lock_path
from corral.status import Status
from corral.throttle import Jobs

from ..conftest import db_rows
from .conftest import Running, wait_gone


def test_a_deadline_skips_what_has_not_started_and_stops_what_runs(corral, tmp_path):
    """`deadline:` in the config (the flag, --deadline, bounds the lock wait below). The
    rule is the fast layer's, with its control (a run without a deadline runs the long
    module to its end: tests/test_scheduler.py); here real processes are stopped."""
    corral.module("quick", body=f"touch {tmp_path}/quick")
    corral.module("long", "requires: quick", "sleep 60")
    corral.module("after", "requires: long", f"touch {tmp_path}/after")
    (corral.modules.parent / "corral.yaml").write_text("deadline: 2s\ngrace: 1s\n")
    result = corral("run", "--json", timeout=30)  # the bound: it does not hang
    assert result.code == 1 and "Traceback" not in result.err
    mods = {m["name"]: m for m in result.json()["modules"]}
    assert mods["quick"]["status"] == "ok" and (tmp_path / "quick").exists()
    assert mods["long"]["status"] == "timeout"
    assert mods["long"]["reason"] == "stopped: the run's deadline passed"
    assert mods["after"]["status"] == "skipped" and not (tmp_path / "after").exists()
    assert "deadline (2s) passed" in mods["after"]["reason"]
    assert "deadline (2s) passed" in result.err
    assert wait_gone(result.json()["run_id"], 5) == []


def test_memory_above_the_host_fails_that_module_at_once_and_the_rest_runs(corral, tmp_path):
    """The module that could never start fails at once with the reason (no attempt to
    retry), its requirers are skipped as usual, everything else runs."""
    corral.module("huge", "memory: 100T\nretries: 3", f"touch {tmp_path}/huge")
    corral.module("needs", "requires: huge", f"touch {tmp_path}/needs")
    corral.module("wants", "wants: huge\nmemory: 1M", f"touch {tmp_path}/wants")
    corral.module("other", body=f"touch {tmp_path}/other")
    whole = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # never all available
    corral.module("whole", f"memory: {whole}", f"touch {tmp_path}/whole")
    result = corral("run", "--json", timeout=60)  # the bound: it does not wait for ever
    assert result.code == 1 and "Traceback" not in result.err
    mods = {m["name"]: m for m in result.json()["modules"]}
    assert mods["huge"]["status"] == "failed" and mods["huge"]["attempts"] == 1
    assert mods["huge"]["reason"].startswith("cannot start: memory: 100T is more than the")
    assert not (tmp_path / "huge").exists() and not (tmp_path / "whole").exists()
    assert "this host has (the kernel keeps a share)" in mods["whole"]["reason"]
    assert mods["needs"]["status"] == "skipped" and not (tmp_path / "needs").exists()
    assert mods["needs"]["reason"] == "requires huge, which failed"
    assert mods["wants"]["status"] == mods["other"]["status"] == "ok"  # the control:
    assert (tmp_path / "wants").exists() and (tmp_path / "other").exists()  # memory: 1M fits
    rows = db_rows(corral.db, "SELECT module, status, reason FROM module_runs WHERE module='huge'")
    assert [r["status"] for r in rows] == ["failed"] and "100T" in rows[0]["reason"]
    quiet = corral("run", "-q")  # said in every mode, --quiet included
    assert quiet.code == 1 and "huge" in quiet.out and "cannot start: memory: 100T" in quiet.out
    dry = corral("run", "--dry-run")
    assert dry.code == 1 and "cannot start: memory: 100T is more than" in dry.out
    assert "needs" in dry.out and "requires huge, which failed" in dry.out
    check = corral("check")
    assert check.code == 2 and "huge.sh:2: memory: 100T is more than" in check.err
    fast = corral("run", "--fail-fast", "--json")  # fail-fast stops at it, as at a failure
    assert {m["name"]: m["status"] for m in fast.json()["modules"]}["other"] == "skipped"


@pytest.mark.parametrize("where", ["flag", "config", "env"])
def test_a_min_free_mem_that_can_never_be_met_is_refused_at_once(corral, tmp_path, where):
    """No module could ever start under it: a usage error (exit 2) naming where it was
    set, before anything runs, in --dry-run and check too."""
    corral.module("a", body=f"touch {tmp_path}/a")
    args, extra = [], {}
    if where == "flag":
        args = ["--min-free-mem", "100T"]
    elif where == "config":
        (corral.modules.parent / "corral.yaml").write_text("min_free_mem: 100T\n")
    else:
        extra = {"CORRAL_MIN_FREE_MEM": "100T"}
    named = {
        "flag": "--min-free-mem 100T",
        "config": f"{corral.modules.parent / 'corral.yaml'}: min_free_mem: 100T",
        "env": "CORRAL_MIN_FREE_MEM=100T",
    }[where]
    modes = (["-q"], ["--json"], ["--dry-run"]) if where == "flag" else (["-q"],)
    for mode in modes:  # every mode once; the other sources of the setting in one
        result = corral("run", *mode, *args, timeout=60, extra_env=extra)
        assert result.code == 2 and "Traceback" not in result.err
        assert f"{named} can never be met: this host has" in result.err
        assert not (tmp_path / "a").exists()
    if where != "flag":
        check = corral("check", extra_env=extra)
        assert check.code == 2 and f"{named} can never be met" in check.err
    assert not corral.db.exists() or db_rows(corral.db, "SELECT * FROM runs") == []
    control = corral("run", "-q", "--min-free-mem", "1M", extra_env=extra)  # the flag wins
    assert control.code == 0 and "never be met" not in control.err and (tmp_path / "a").exists()


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


def test_the_deadline_bounds_the_wait_for_the_run_lock(corral, tmp_path):
    """--wait-lock (for ever) under --deadline 1s: the run ends at the deadline with its
    reason and exit code, and is recorded with its modules skipped."""
    corral.module("a", body=f"touch {tmp_path}/a")
    path = lock_path((corral.modules,))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = corral("run", "--json", "--wait-lock", "--deadline", "1s", timeout=30)
    assert result.code == 1 and "Traceback" not in result.err, result.err
    assert "deadline passed while waiting for the run lock" in result.err
    (module,) = result.json()["modules"]
    assert module["status"] == "skipped" and "deadline (1s) passed" in module["reason"]
    assert not (tmp_path / "a").exists()
    run = db_rows(corral.db, "SELECT * FROM runs")[0]
    assert run["status"] == "failed" and run["exit_code"] == 1
    (row,) = db_rows(corral.db, "SELECT * FROM module_runs")
    assert row["status"] == "skipped" and "deadline (1s) passed" in row["reason"]


def test_without_a_deadline_the_wait_for_the_lock_goes_on(corral):
    """The control: the same wait, no deadline, is still waiting well past a second."""
    corral.module("a")
    path = lock_path((corral.modules,))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        run = Running(corral, "-q", "--wait-lock")
        with pytest.raises(subprocess.TimeoutExpired):
            run.proc.wait(3)
        run.proc.send_signal(signal.SIGTERM)
        run.finish()


MODES = [[], ["-q"], ["--json"]]  # plain (cron, a pipe), quiet, JSON
SOON = {"CORRAL_TEST_LONG_WAIT_S": "0.3"}  # the variable only tests use (default 60 s)


def long_waits(corral, *args: str, env: dict | None = None) -> list[str]:
    """Run `wait` behind a lock `holder` holds for 1.5 s (a load target the host's own
    load never reaches), then `light` behind the load gate (a target no second module
    fits under) while `heavy` runs 1.5 s; returns the lines saying a wait was long."""
    said = []
    for name in ("holder", "wait", "heavy", "light"):
        (corral.modules / f"{name}.sh").unlink(missing_ok=True)
    corral.module("holder", "locks: x", "sleep 1.5")
    corral.module("wait", "locks: x")
    result = corral("run", "-j", "2", "--max-load", "1000", *args, extra_env=env)  # no gate
    assert result.code == 0 and "Traceback" not in result.err
    said += [line for line in result.err.splitlines() if "waiting for more than" in line]
    for name in ("holder", "wait"):
        (corral.modules / f"{name}.sh").unlink()
    corral.module("heavy", body="sleep 1.5")  # first by name, so it takes the one slot
    corral.module("light")
    result = corral("run", "-j", "2", "--max-load", "0.01", *args, extra_env=env)
    assert result.code == 0 and "Traceback" not in result.err
    return said + [line for line in result.err.splitlines() if "waiting for more than" in line]


@pytest.mark.parametrize("mode", MODES, ids=["plain", "quiet", "json"])
def test_a_long_wait_on_a_lock_or_the_gate_is_said_in_every_mode(corral, mode):
    """Each long wait is said once, on stderr, naming the module and the reason."""
    said = long_waits(corral, *mode, env=SOON)
    assert len(said) == 2, said
    assert said[0].endswith("waiting for more than 0.3s: lock x held by holder (wait)")
    assert ": load: " in said[1] and said[1].endswith("> 0.01 (light)")


def test_a_long_wait_is_said_at_a_terminal_too(corral):
    """The fourth mode: a real pseudo-terminal (colour, the redrawn status line)."""
    import pexpect

    corral.module("holder", "locks: x", "sleep 1.5")
    corral.module("wait", "locks: x")
    argv = corral.argv("run", "-j", "2", "--max-load", "1000")
    child = pexpect.spawn(
        argv[0], argv[1:], env={**corral.env, **SOON}, encoding="utf-8", timeout=30
    )
    child.expect(r"waiting for more than 0\.3s: lock x held by holder \(wait\)")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in child.before


def test_a_long_wait_is_told_once_per_module_and_not_for_a_free_slot():
    """The fast layer, on the scripted clock: after 60 s of a lock, not at 59 s (the
    control of the real runs above: under the default threshold nothing is said); a
    module waiting for a slot of --jobs auto (the run's own modules) is not told."""
    from ..test_scheduler import replay

    h = replay(
        {"holder": {"locks": ("apt",)}, "waiter": {"locks": ("apt",)}, "late": {}},
        {"holder": [Ends(59.0)]},
    )
    assert not [e for e in h.events if isinstance(e, Notice)]  # 59 s: not yet
    h = replay(
        {"holder": {"locks": ("apt",)}, "waiter": {"locks": ("apt",)}},
        {"holder": [Ends(200.0)]},
    )
    told = [e.message for e in h.events if isinstance(e, Notice)]
    assert told == ["waiting for more than a minute: lock apt held by holder (waiter)"]
    slots = replay(
        {"x": {"workload": "cpu"}, "y": {"workload": "cpu"}},
        {"x": [Ends(300.0)]},
        jobs=None,
        fake={"cpus": 1},
    )
    assert slots.starts("y") == [300.0] and not [e for e in slots.events if isinstance(e, Notice)]


def test_an_interrupted_run_s_summary_gives_its_wall_time(capsys):
    printer = Printer(sys.stdout, sys.stderr, color=False, timestamps=False)
    printer(RunFinished("r", Status.INTERRUPTED, 130, 100.0, 190.0, 0.0, Jobs(2), [], None))
    assert "in 1m30.0s" in capsys.readouterr().out


def killed_at(corral, shown: str) -> dict[str, dict]:
    """Run `long` (60 s) beside `last`, read corral's output as a person reads it, and
    SIGKILL corral the moment a line with `shown` is read; returns the rows then on
    disk (after checking that history calls the dead run crashed, and nothing is left)."""
    corral.module("long", body="sleep 60")
    corral.module("last", body="sleep 0.3; echo finishing; sleep 0.2")
    run = Running(corral, "-j", "2", "--max-load", "1000")
    for line in run.proc.stdout:  # the printer, as a person reads it
        if "last" in line and shown in line:
            os.kill(run.proc.pid, signal.SIGKILL)  # no poll, no sleep: what is on disk now
            break
    run.finish()
    rows = {r["module"]: r for r in db_rows(corral.db, "SELECT * FROM module_runs")}
    run_id = db_rows(corral.db, "SELECT run_id FROM runs")[0]["run_id"]
    # The run row still says running (nothing could finish it) …
    assert db_rows(corral.db, "SELECT status FROM runs")[0]["status"] == "running"
    # … but history never shows a dead run as running.
    history = corral("history", "--json")
    assert [r["status"] for r in json.loads(history.out)] == ["crashed"]
    assert "crashed" in corral("history").out
    assert wait_gone(run_id, 15) == []
    return rows


def test_a_result_shown_is_on_disk_when_it_is_shown(corral):
    """A module's end is committed before its line is shown: corral SIGKILLed the moment
    the line is read keeps the row (no waiting for it), while another module runs."""
    rows = killed_at(corral, "ok in")
    assert rows["last"]["status"] == "ok" and rows["last"]["exit_code"] == 0
    assert rows["long"]["status"] == "running"  # not shown, not finished


def test_a_kill_at_a_line_loses_what_was_not_shown(corral):
    """The control: the same kill at the line `last` prints before it ends finds it not
    finished on disk, so the check above can fail: the kill is prompt enough."""
    rows = killed_at(corral, "finishing")
    assert rows["last"]["status"] == "running"
