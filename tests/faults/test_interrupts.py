"""Fault 1 (interrupts) and 3 (kill escalation): signals to corral, stubborn modules."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pexpect

from ..runtrace import read_pid, state
from .conftest import Running, attempts, last_run, leftovers

TRAPPER = "trap 'echo got TERM' TERM\nsleep 60 & wait; sleep 60 & wait"
IGNORER = "trap '' TERM\nsleep 60 & wait; sleep 60"


def stubborn_modules(corral, ready):
    """Each module writes its PID into `ready/NAME` once it is as stubborn as it gets
    (its trap set); `stopped` then stops itself. sleeper starts after done_early."""
    ready.mkdir()
    corral.module("done_early")
    corral.module("sleeper", "after: done_early", f"echo $$ > {ready}/sleeper; sleep 60")
    corral.module("trapper", body=TRAPPER.replace("\n", f"\necho $$ > {ready}/trapper\n", 1))
    corral.module("ignorer", body=IGNORER.replace("\n", f"\necho $$ > {ready}/ignorer\n", 1))
    corral.module("stopped", body=f"echo $$ > {ready}/stopped; kill -STOP $$; sleep 60")
    corral.module("later", "requires: sleeper")


def test_sigterm_stops_stubborn_modules_within_grace(corral, marked_sleeper):
    (corral.modules.parent / "corral.yaml").write_text("grace: 1s\n")
    ready = corral.modules.parent / "ready"
    stubborn_modules(corral, ready)
    run = Running(corral, "-j", "6", "--max-load", "1000")
    pids = {name: read_pid(ready / name) for name in ("sleeper", "trapper", "ignorer", "stopped")}
    end = time.monotonic() + 20
    while state(pids["stopped"]) != b"T":  # stopped: TERM alone cannot end it now
        assert time.monotonic() < end, "stopped never stopped"
        time.sleep(0.02)
    run.proc.send_signal(signal.SIGTERM)
    # The state, not a time: the ignorer outlives any wait for it (its sleeps add up to
    # two minutes, past `finish`'s bound), so only KILL after the grace ends it (9 below).
    code, out, err = run.finish()
    assert code == 143, err
    row = last_run(corral.db)
    assert row["status"] == "interrupted" and row["exit_code"] == 143
    mods = attempts(corral.db, row["run_id"])
    assert mods["done_early"]["status"] == "ok"
    for name in ("sleeper", "trapper", "ignorer", "stopped"):
        assert mods[name]["status"] == "interrupted", name
        assert mods[name]["signal"] in (15, 9), name
    assert mods["ignorer"]["signal"] == 9
    assert mods["later"]["status"] == "skipped"
    assert leftovers(row["run_id"]) == []
    # The control: the same detector does find a process carrying the mark.
    control = marked_sleeper(row["run_id"])
    assert leftovers(row["run_id"]) == [control.pid]


def test_second_ctrl_c_kills_at_once(corral):
    """The state, not a time: with a grace period of an hour, only the second Ctrl-C can
    end the ignorer (KILL, 9) before pexpect gives up."""
    (corral.modules.parent / "corral.yaml").write_text("grace: 1h\n")
    # A word only the module says once its trap is set: the status line's "waiting:
    # ready (ignorer)" matched "ready", and a Ctrl-C sent then, before the trap, ended
    # the module and the run at the first Ctrl-C (the flake of this test).
    corral.module("ignorer", body=IGNORER.replace("\n", "\necho ignoring-TERM\n", 1))
    child = pexpect.spawn(
        sys.executable,
        ["-m", "corral", "--modules", str(corral.modules), "--db", str(corral.db), "run"],
        env=corral.env,
        encoding="utf-8",
        timeout=20,
    )
    child.expect("ignoring-TERM")
    child.sendintr()
    child.expect("SIGINT")  # the first is answered: the second is a second
    child.sendintr()
    child.expect("killing every module now")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    row = last_run(corral.db)
    assert attempts(corral.db, row["run_id"])["ignorer"]["signal"] == 9
    assert leftovers(row["run_id"]) == []


def test_a_stopped_module_needs_cont_to_hear_term(corral):
    """Control for the escalation: a stopped process ignores TERM until CONT arrives."""
    proc = subprocess.Popen(["bash", "-c", "kill -STOP $$; sleep 60"])
    end = time.monotonic() + 20
    while state(proc.pid) != b"T":
        assert time.monotonic() < end, "bash never stopped itself"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None  # TERM alone did nothing
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(5) == -signal.SIGTERM
    # corral sends both: a stopped module with a timeout ends as `timeout`, signal 15.
    corral.module("stopped", "timeout: 0.3s", "kill -STOP $$; sleep 60")
    corral.module("ignorer", "timeout: 1s", IGNORER)  # (its trap is set well before)
    (corral.modules.parent / "corral.yaml").write_text("grace: 0.5s\n")
    result = corral("run", "--json")
    mods = {m["name"]: m for m in result.json()["modules"]}
    assert mods["stopped"]["status"] == "timeout" and mods["stopped"]["signal"] == 15
    assert mods["ignorer"]["status"] == "timeout" and mods["ignorer"]["signal"] == 9
