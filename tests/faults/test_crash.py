"""Fault 2: corral itself killed with SIGKILL."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ..test_lint import need
from .conftest import Running, attempts, db_rows, last_run, leftovers, recorded, wait_gone


def crashing_run(corral, gate):
    """quick has ended (and is on disk), sleeper sleeps, ignorer ignores TERM."""
    (corral.modules.parent / "corral.yaml").write_text("grace: 1s\n")
    trapped = corral.modules.parent / "trapped"
    corral.module("quick")
    corral.module("sleeper", "after: quick", f"touch {gate}; sleep 60")
    corral.module("ignorer", body=f"trap '' TERM; touch {trapped}; sleep 60 & wait; sleep 60")
    run = Running(corral, "-j", "3", "--max-load", "1000")
    run.wait_for(gate)
    run.wait_for(trapped)
    run_id = recorded(corral.db, "quick", "ok")["run_id"]
    for name in ("sleeper", "ignorer"):  # their starts are on disk too (a later batch)
        recorded(corral.db, name, "running")
    assert len(leftovers(run_id)) >= 2
    return run, run_id


def watchdog_of(run_id: str) -> int:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if b"corral-watchdog" in cmdline and run_id.encode() in cmdline:
                return int(entry.name)
    raise AssertionError("no watchdog")


def test_sigkill_leaves_no_module_behind_and_the_next_run_records_the_crash(corral):
    gate = corral.modules.parent / "gate"
    run, run_id = crashing_run(corral, gate)
    run.proc.kill()
    run.finish()
    # The watchdog: TERM at once, KILL after the grace period (1 s) for the ignorer.
    assert wait_gone(run_id, 1 + 2) == []
    gate.unlink()
    corral.module("sleeper", body="true")
    corral.module("ignorer", body="true")
    result = corral("run")
    assert result.code == 0, result.err
    assert f"run {run_id} crashed" in result.err
    # the watchdog stopped them all: nothing was left to stop, and '0 leftover' is not said
    assert "leftover" not in result.err, result.err
    crashed = db_rows(corral.db, "SELECT * FROM runs WHERE run_id = ?", run_id)[0]
    assert crashed["status"] == "crashed"
    mods = attempts(corral.db, run_id)
    assert mods["quick"]["status"] == "ok"
    assert mods["sleeper"]["status"] == "interrupted"
    assert mods["sleeper"]["reason"] == "corral crashed"


def test_a_killed_watchdog_is_replaced_so_a_later_sigkill_leaves_nothing_running(corral):
    """Another process kills the watchdog; corral notices (it reaps it) and starts
    another, told what the first knew: a SIGKILL of corral then still leaves no module
    process. The control is the next test: corral stopped, so nothing replaces it."""
    gate = corral.modules.parent / "gate"
    run, run_id = crashing_run(corral, gate)
    first = watchdog_of(run_id)
    os.kill(first, signal.SIGKILL)
    end = time.monotonic() + 10
    while _watchdog_or_none(run_id) in (None, first):
        assert time.monotonic() < end, "no new watchdog"
        time.sleep(0.02)
    run.wait_said("the watchdog (killed by signal 9) died before the run ended; started another")
    run.proc.kill()
    run.finish()
    assert wait_gone(run_id, 1 + 2) == []


def test_a_killed_watchdog_that_cannot_be_replaced_stops_the_run_safely(corral):
    """corral may open no more descriptors (prlimit on the running corral), then its
    watchdog is killed: no other can be started, so the run stops at once as when corral
    runs out (exit 71): every module stopped and recorded, nothing left running."""
    need("prlimit")
    gate = corral.modules.parent / "gate"
    run, run_id = crashing_run(corral, gate)
    pid = run.proc.pid
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={fds}:{fds}"], check=True)
    os.kill(watchdog_of(run_id), signal.SIGKILL)
    code, _, err = run.finish()
    assert code == 71, err
    assert "the watchdog (killed by signal 9) died and no other could be started" in err
    assert "Traceback" not in err
    assert wait_gone(run_id, 1 + 2) == []
    assert last_run(corral.db)["status"] == "crashed"
    assert attempts(corral.db, run_id)["sleeper"]["status"] == "interrupted"


def test_a_stopped_watchdog_is_continued_so_a_later_sigkill_leaves_nothing_running(corral):
    """Another process stops the watchdog (SIGSTOP): corral continues it, so a SIGKILL
    of corral still leaves no module process (the control: a watchdog that cannot act,
    as in the test after next, leaves them running)."""
    gate = corral.modules.parent / "gate"
    run, run_id = crashing_run(corral, gate)
    watchdog = watchdog_of(run_id)
    os.kill(watchdog, signal.SIGSTOP)
    end = time.monotonic() + 10
    while _state(watchdog) == "T":
        assert time.monotonic() < end, "the watchdog stayed stopped"
        time.sleep(0.02)
    run.wait_said("the watchdog was stopped by another process; continued")
    run.proc.kill()
    run.finish()
    assert wait_gone(run_id, 1 + 2) == []


def test_control_a_stopped_watchdog_no_one_continues_does_nothing_until_continued(corral):
    gate = corral.modules.parent / "gate"
    run, run_id = crashing_run(corral, gate)
    run.proc.send_signal(signal.SIGSTOP)  # so that it cannot continue the watchdog
    watchdog = watchdog_of(run_id)
    os.kill(watchdog, signal.SIGSTOP)
    run.proc.kill()
    run.finish()
    time.sleep(2.5)
    assert leftovers(run_id), "a stopped watchdog should not have stopped the modules"
    os.kill(watchdog, signal.SIGCONT)  # now it does its work
    assert wait_gone(run_id, 1 + 2) == []


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def _watchdog_or_none(run_id: str) -> int | None:
    try:
        return watchdog_of(run_id)
    except AssertionError:
        return None


def test_without_the_watchdog_modules_survive_until_the_next_start_reaps_them(corral):
    """The control: kill the watchdog too, and the modules do outlive corral; then the
    next start finds them by the crashed run's mark and stops them."""
    gate = corral.modules.parent / "gate"
    run, run_id = crashing_run(corral, gate)
    run.proc.send_signal(signal.SIGSTOP)  # so that it cannot start another watchdog
    os.kill(watchdog_of(run_id), signal.SIGKILL)
    run.proc.kill()
    run.finish()
    time.sleep(2.5)
    survivors = leftovers(run_id)
    assert survivors, "modules should outlive corral when nothing watches them"
    gate.unlink()
    corral.module("sleeper", body="true")
    corral.module("ignorer", body="true")
    result = corral("run")
    assert result.code == 0, result.err
    assert "leftover process" in result.err
    assert "stopped 0 leftover" not in result.err
    assert wait_gone(run_id, 2) == []


def test_a_detached_daemon_survives_a_crash_and_the_next_start_s_recovery(corral, tmp_path):
    """The watchdog spares a `detach: yes` attempt's daemon when corral dies, and the
    next start's recovery does too (its cgroup says so); the crashed run's other
    module is stopped (the control: recovery does stop what was not detached)."""
    pidfile, gate = tmp_path / "daemon.pid", tmp_path / "gate"
    (corral.modules.parent / "corral.yaml").write_text("grace: 1s\n")
    corral.module(
        "daemon", "detach: yes", f"setsid bash -c 'echo $$ > {pidfile}; exec sleep 300' &"
    )
    corral.module("sleeper", body=f"touch {gate}; sleep 60")
    run = Running(corral, "-j", "2", "--max-load", "1000")
    run.wait_for(gate)
    run.wait_for(pidfile)
    run_id = recorded(corral.db, "daemon", "ok")["run_id"]  # its attempt is on disk
    if last_run(corral.db)["containment"] != "cgroup":
        run.proc.kill()
        run.finish()
        pytest.skip("without cgroups recovery cannot tell a detached daemon (docs say so)")
    daemon = int(pidfile.read_text())
    try:
        run.proc.send_signal(signal.SIGSTOP)  # (so that it cannot start another watchdog)
        os.kill(watchdog_of(run_id), signal.SIGKILL)  # so the sleeper outlives corral …
        run.proc.kill()
        run.finish()
        time.sleep(1.5)
        survivors = leftovers(run_id)
        assert daemon in survivors and len(survivors) >= 2  # … beside the daemon
        corral.module("sleeper", body="true")
        result = corral("run")
        assert result.code == 0 and f"run {run_id} crashed" in result.err
        assert leftovers(run_id) == [daemon]  # the sleeper stopped, the daemon spared
    finally:
        os.kill(daemon, signal.SIGKILL)


def _with_cmdline(word: bytes) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    if word in f.read().split(b"\0"):
                        found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_sigkill_at_any_moment_leaves_no_process_and_no_cgroup(corral, tmp_path):
    """corral SIGKILLed at moments spread over its start (recovery of the runs killed
    before, the watchdog not started yet, the first spawns) and its run, each module's
    worker in a scrubbed environment and a session of its own. Afterwards (the
    watchdog's grace, then a clean start's recovery) no worker is alive and no
    cgroup of any of those runs is left. corral runs in a cgroup of the test's own,
    so that what it leaves there can be counted."""
    from corral import cgroups

    mine = f"crashes-{os.getpid()}"
    made = []
    for h in cgroups.hierarchies():
        if h.kind in (cgroups.V2, cgroups.MEMORY):
            with contextlib.suppress(OSError):
                os.mkdir(os.path.join(h.own, mine))
                made.append(os.path.join(h.own, mine))
    if not made or not os.path.basename(made[0]).startswith("crashes-"):
        pytest.skip("needs a writable cgroup hierarchy")
    word = f"{7_000_000 + os.getpid() % 1_000_000}".encode()
    (corral.modules.parent / "corral.yaml").write_text("grace: 0.5s\n")
    for i in range(3):
        corral.module(
            f"m{i}", body=f"(setsid env -i sleep {word.decode()} >/dev/null 2>&1 &)\nsleep 30"
        )
    enter = "; ".join(f"echo $$ > {d}/cgroup.procs" for d in made)
    argv = " ".join(shlex.quote(a) for a in corral.argv("run", "-j", "3"))
    try:
        for delay in [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9, 1.2]:
            proc = subprocess.Popen(
                ["bash", "-c", f"{enter}; exec {argv}"],
                env=corral.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(delay)
            proc.kill()
            proc.wait()
        assert corral("run", "-j", "3", "m0", timeout=60).code in (0, 1)  # the recovery
        end = time.monotonic() + 10
        while time.monotonic() < end and (
            _with_cmdline(word) or any(n.startswith("corral-") for d in made for n in os.listdir(d))
        ):
            time.sleep(0.1)
        assert _with_cmdline(word) == []
        left = [n for d in made for n in os.listdir(d) if n.startswith("corral-")]
        assert left == [], (left, db_rows(corral.db, "SELECT run_id, status, cgroups FROM runs"))
        # the control: the detector does find such a worker
        control = subprocess.Popen(["setsid", "env", "-i", "sleep", word.decode()])
        try:
            time.sleep(0.1)
            assert _with_cmdline(word) == [control.pid]
        finally:
            control.kill()
            control.wait()
    finally:
        for pid in _with_cmdline(word):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        for d in made:
            with contextlib.suppress(OSError):
                parent = os.path.dirname(d)
                for pid in Path(d, "cgroup.procs").read_text().split():
                    with (
                        contextlib.suppress(OSError),
                        open(os.path.join(parent, "cgroup.procs"), "w") as f,
                    ):
                        f.write(pid)
                for n in os.listdir(d):
                    if n.startswith("corral-"):
                        cgroups.remove_run([os.path.join(d, n)])
                os.rmdir(d)


@pytest.mark.parametrize("told", [True, False], ids=["told", "control"])
def test_a_directory_told_before_it_is_made_goes_when_corral_dies(tmp_path, told):
    """corral tells the watchdog each of the run's cgroup directories before it makes it
    (Containment), so a SIGKILL between the two cannot leave one to no one: when the
    pipe closes without `done`, the watchdog removes it. The control: a directory made
    but never told stays."""
    from corral.watchdog import Watchdog

    watchdog = Watchdog(f"told-{os.getpid()}-{told}", 0.1)
    base = tmp_path / "corral-base"
    if told:
        watchdog.tell(f"base {base}")
    base.mkdir()
    os.close(watchdog._w)  # corral is gone: no `done`
    watchdog._w = None
    os.waitpid(watchdog.pid, 0)
    assert base.exists() is not told
