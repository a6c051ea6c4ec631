"""Progress at a terminal (ninja's [done/total], running modules with their elapsed
time, lock waits named with their holder, an ETA from history) and without one (a
progress line at most every `progress_interval`)."""

from __future__ import annotations

import subprocess
import time

import pexpect

from .test_run_tty import spawn


def test_terminal_status_line_counts_times_names_lock_holders_and_gives_an_eta(corral, tmp_path):
    go = tmp_path / "go"
    wait = f"while [ ! -e {go} ]; do sleep 0.05; done"
    corral.module("pkg_nginx", "locks: pkgdb", body=wait)
    corral.module("pkg_php", "locks: pkgdb", body=wait)
    corral.module("web", "requires: pkg_nginx")
    go.touch()
    assert corral("run").code == 0  # history: the next run has an ETA
    go.unlink()
    child = spawn(corral, "run", "-j", "4", "-l", "1000")
    child.expect(
        r"\[0/3\] · ETA \d[^·]* · running 1: pkg_\w+ \d+\.\ds · "
        r"waiting: lock pkgdb held by (pkg_nginx \(pkg_php|pkg_php \(pkg_nginx)"
    )
    child.expect(r"running 1: pkg_\w+ [1-9]\.\ds")  # the elapsed time moves on its own
    go.touch()
    child.expect(r"\[[12]/3\]")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_plain_output_prints_a_progress_line_at_most_every_interval(corral, tmp_path):
    go = tmp_path / "go"
    corral.module("slow", body=f"while [ ! -e {go} ]; do sleep 0.05; done")
    corral.module("after", "requires: slow")
    proc = subprocess.Popen(
        corral.argv("run"),
        env={**corral.env, "CORRAL_PROGRESS_INTERVAL": "0.5"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if sum("corral: [0/2]" in ln for ln in lines) >= 3:
            go.touch()
            break
    out = "".join(lines) + proc.stdout.read()
    proc.wait(timeout=60)
    progress = [ln for ln in out.splitlines() if "corral: [" in ln]
    assert progress[0].endswith(
        "corral: [0/2] · ETA unknown (no history yet) · running 1: slow"
        + progress[0].split("running 1: slow")[1]
    )
    assert "1 waiting" in progress[0]
    assert "\x1b" not in out
    quiet = corral("run", "-q", extra_env={"CORRAL_PROGRESS_INTERVAL": "0.1"})
    assert quiet.out == ""


def test_what_each_waiting_module_is_held_by():
    """The status line names what holds modules back (a lock, the gate, a slot, a
    retry), never a module only waiting for its requirements: a typed `Wait`, not a
    string the printer reads by its first word."""
    from corral.progress import Held, RunState

    state = RunState(clock=lambda: 10.0, names=["a", "b", "c", "d", "e", "f"], slots=1)
    state.deps = {"b": ["a"], "c": [], "d": [], "e": [], "f": []}
    state.running = {"a": (1.0, 1)}
    state.retrying = {"c"}
    state.locked = {"d": "lock pkgdb held by a"}
    state.gate, state.gate_modules = "load: 9.0 of 8", ["e"]
    waits = state.waiting()
    assert {n: w.held for n, w in waits.items()} == {
        "b": Held.REQUIREMENTS,
        "c": Held.BACKOFF,
        "d": Held.LOCK,
        "e": Held.GATE,
        "f": Held.SLOT,
    }
    assert str(waits["b"]) == "requires a" and str(waits["d"]) == "lock pkgdb held by a"
    state.slots = 2
    assert state.waiting()["f"].held == Held.READY


def test_modules_without_history_are_counted_in_the_same_words_everywhere(corral, tmp_path):
    """The live line, `corral status` and the dry run all say `+1 without history` for a
    module that has never run beside ones that have (the control: before it is added,
    none of them says it)."""
    go = tmp_path / "go"
    corral.module("old", body=f"while [ ! -e {go} ]; do sleep 0.05; done")
    go.touch()
    assert corral("run").code == 0
    assert "without history" not in corral("run", "-n").out
    go.unlink()
    corral.module("fresh", body=f"while [ ! -e {go} ]; do sleep 0.05; done")
    assert "expected about" in (dry := corral("run", "-n").out) and "1 without history" in dry
    child = spawn(corral, "run", "-j", "4", "-l", "1000")
    try:
        child.expect(r"ETA \S+ \(\+1 without history\)")
        deadline = time.monotonic() + 20
        while "(+1 without history)" not in (status := corral("status").out):
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
    finally:
        go.touch()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
