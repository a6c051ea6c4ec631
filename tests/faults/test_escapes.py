"""Escape attempts against a real `corral run`: a worker that leaves the module's
session before a timeout while holding a lock, and a scrubbed-environment escapee when
corral itself is SIGKILLed. Each attack has its control: the same attack with cgroup
containment turned off (CORRAL_CGROUPS=0, the subreaper fallback), where it works.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from corral.cgroups import RunCgroups

from ..runtrace import alive, read_pid, wait_dead
from .conftest import Running, db_rows, last_run


@pytest.fixture(scope="module")
def cgroups_here():
    probe = RunCgroups(f"probe-{os.getpid()}")
    if not probe.enabled:
        pytest.skip("needs a writable cgroup hierarchy that can kill (v2 or v1 freezer)")
    probe.close()


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# A worker that leaves the module's process group, session and tree at once (a double
# fork into a new session), ignores TERM, and writes a line every 20 ms while it lives.
WORKER = (
    '(setsid bash -c \'trap "" TERM; echo $$ > {pid}; '
    'while :; do echo "$EPOCHREALTIME" >> {log}; sleep 0.02; done\' &)'
)


def lock_holders(corral, extra_env=None):
    """`first` holds lock `pool`, starts the worker, and times out; `second` needs the
    same lock. Returns (the worker's PID, its writes after `second` started)."""
    tmp = corral.modules.parent
    pid, log, t0 = tmp / "worker.pid", tmp / "worker.log", tmp / "second.t0"
    (tmp / "corral.yaml").write_text("grace: 0.5s\n")
    corral.module(
        "first",
        "locks: pool\ntimeout: 1s",
        # (past the fallback's first tree walks: what it sees, it does stop)
        "sleep 0.25\n" + WORKER.format(pid=pid, log=log) + "\nsleep 60",
    )
    corral.module("second", "locks: pool\nafter: first", f'echo "$EPOCHREALTIME" > {t0}\nsleep 0.3')
    result = corral("run", "--max-load", "1000", extra_env=extra_env)
    worker = read_pid(pid)
    second_started = float(t0.read_text())
    writes = [float(t) for t in log.read_text().split()]
    return result, worker, [t for t in writes if t > second_started]


def test_a_timed_out_holders_escaped_worker_is_stopped_before_the_lock_passes(corral, cgroups_here):
    result, worker, overlap = lock_holders(corral)
    try:
        assert result.code == 1  # first timed out
        assert overlap == []  # no two holders of `pool` ran at once
        assert not alive(worker)
    finally:
        kill(worker)


def test_control_without_cgroups_the_escaped_worker_overlaps_the_next_holder(corral):
    result, worker, overlap = lock_holders(corral, {"CORRAL_CGROUPS": "0"})
    try:
        assert result.code == 1
        assert overlap, "the worker should outlive the timeout without cgroup containment"
    finally:
        kill(worker)


def crash_with_escapee(corral, extra_env=None, kill_watchdog=False):
    """A module whose child scrubs its environment (`env -i`, `exec -c`) and leaves the
    session; corral is SIGKILLed while it runs. Returns (escapee PID, run id)."""
    tmp = corral.modules.parent
    pid = tmp / "escapee.pid"
    (tmp / "corral.yaml").write_text("grace: 1s\n")
    corral.module(
        "escaper",
        body=(  # (after the fallback's first tree walks: what it sees, it does stop)
            f"sleep 0.25\n(setsid env -i bash -c 'echo $$ > {pid}; exec -c sleep 300' &)\nsleep 60"
        ),
    )
    run = Running(corral, "--max-load", "1000", env={**corral.env, **(extra_env or {})})
    escapee = read_pid(pid)
    time.sleep(0.3)  # the fallback's tree walks (the control) have had their chance
    run_id = last_run(corral.db)["run_id"]
    if kill_watchdog:
        run.proc.send_signal(signal.SIGSTOP)  # so that it cannot start another
        for entry in os.scandir("/proc"):
            with contextlib.suppress(OSError):
                cmdline = open(f"/proc/{entry.name}/cmdline", "rb").read()  # noqa: SIM115
                if cmdline.startswith(b"corral-watchdog") and run_id.encode() in cmdline:
                    os.kill(int(entry.name), signal.SIGKILL)
    run.proc.kill()
    run.finish()
    return escapee, run_id


def test_a_scrubbed_environment_escapee_dies_with_a_sigkilled_corral(corral, cgroups_here):
    escapee, run_id = crash_with_escapee(corral)
    try:
        assert wait_dead(escapee, 1 + 2)  # the grace period, and some slack
        dirs = db_rows(corral.db, "SELECT cgroups FROM runs WHERE run_id = ?", run_id)[0]
        bases = dirs["cgroups"].split(os.pathsep)
        end = time.monotonic() + 2
        while any(os.path.exists(b) for b in bases) and time.monotonic() < end:
            time.sleep(0.02)
        assert not any(os.path.exists(b) for b in bases)  # the watchdog removed them
    finally:
        kill(escapee)


def test_control_without_cgroups_the_scrubbed_escapee_survives_a_sigkilled_corral(corral):
    escapee, _ = crash_with_escapee(corral, {"CORRAL_CGROUPS": "0"})
    try:
        # the watchdog's grace period (1 s) and its KILL have passed: still there
        assert not wait_dead(escapee, 1 + 1.5), "without cgroups nothing can find it"
    finally:
        kill(escapee)


def test_the_next_start_stops_leftovers_by_their_cgroup_and_removes_it(corral, cgroups_here):
    """The watchdog killed too: the escapee outlives corral; the next run's recovery
    finds it in the crashed run's cgroup, stops it and removes the run's cgroups."""
    escapee, run_id = crash_with_escapee(corral, kill_watchdog=True)
    try:
        time.sleep(0.5)
        assert alive(escapee)  # nothing watched: it did outlive corral
        dirs = db_rows(corral.db, "SELECT cgroups FROM runs WHERE run_id = ?", run_id)[0]
        bases = dirs["cgroups"].split(os.pathsep)
        assert all(os.path.isdir(b) for b in bases)
        corral.module("escaper", body="true")
        result = corral("run", "--max-load", "1000")
        assert result.code == 0, result.err
        assert f"run {run_id} crashed" in result.err
        assert "stopped 0 leftover" not in result.err
        assert wait_dead(escapee, 2)
        assert not any(os.path.exists(b) for b in bases)
    finally:
        kill(escapee)


# A module running as root leaves its cgroups: it writes its own PID into corral's cgroup
# (the parent of the run's) in every hierarchy, scrubs its environment and leaves the
# session. Only root can.
LEAVER = """
targets=()
while IFS=: read -r _ kinds path; do
  [[ $path == */corral-* ]] || continue
  if [[ -z $kinds ]]; then
    mnt=$(awk '$3 == "cgroup2" {{ print $2; exit }}' /proc/mounts)
  else
    mnt=$(awk -v k="$kinds" '$3 == "cgroup" && ("," $4 ",") ~ ("," k ",") {{ print $2; exit }}' \\
      /proc/mounts)
  fi
  targets+=("$mnt${{path%/*/*}}/cgroup.procs")
done < /proc/self/cgroup
setsid bash -c 'for t in "${{@:2}}"; do echo $BASHPID > "$t" || exit; done; echo $BASHPID > "$1"
  exec -c env -i sleep 300' leaver {pid} "${{targets[@]}}" >/dev/null 2>&1 &
sleep 0.5
grep -q corral- /proc/"$(cat {pid})"/cgroup || echo "left the attempt's cgroups"
"""


def test_a_process_that_left_its_cgroup_is_stopped_at_the_end_of_the_run(corral, cgroups_here):
    """It is no longer in any cgroup of the run, nor marked: but it is corral's orphan
    (reparented to corral, the subreaper, once the module ended), and the end of the
    run stops every such child but the watchdog and a detached attempt's daemons."""
    pid = corral.modules.parent / "leaver.pid"
    corral.module("leaver", body=LEAVER.format(pid=pid))
    result = corral("run")
    leaver = read_pid(pid)
    try:
        assert result.code == 0, result.err
        log = next((corral.db.parent / "logs").glob("2*/leaver.log")).read_text()
        assert log == "left the attempt's cgroups\n"  # it did leave
        assert wait_dead(leaver, 2)
    finally:
        kill(leaver)


def test_control_a_process_that_left_its_cgroup_outlives_a_sigkilled_corral(corral, cgroups_here):
    """The limit: after a SIGKILL of corral, nothing finds it (it is init's orphan now,
    in no cgroup of the run and unmarked): neither the watchdog nor the next start."""
    pid = corral.modules.parent / "leaver.pid"
    again = corral.modules.parent / "again"  # the next start's module ends at once
    corral.module(
        "leaver", body=f"[ -e {again} ] && exit 0\n" + LEAVER.format(pid=pid) + "\nsleep 60"
    )
    (corral.modules.parent / "corral.yaml").write_text("grace: 0.5s\n")
    run = Running(corral)
    leaver = read_pid(pid)
    try:
        time.sleep(0.6)
        run.proc.kill()
        run.finish()
        again.touch()
        assert corral("run").code == 0  # the next start's recovery
        assert not wait_dead(leaver, 2)
    finally:
        kill(leaver)
