"""kill.stop, the one TERM → CONT → grace → KILL sequence, on real processes; and the
watchdog's copy of it (Bash, which must outlive corral), held to the same outcomes."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from corral import kill, procfs, watchdog

TRAPS_TERM = "trap 'exit 7' TERM"


def spawn(script: str) -> subprocess.Popen:
    """A bash in a process group of its own, ready (its traps set) when this returns."""
    proc = subprocess.Popen(
        ["bash", "-c", f"{script}\necho ready\nwhile :; do sleep 0.05; done"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout.readline() == "ready\n"
    return proc


def by_stop(procs: list[subprocess.Popen], grace: float) -> None:
    """corral's own copy: `kill.stop` over the processes."""
    kill.stop([kill.Process(p.pid) for p in procs], grace)


def by_watchdog(procs: list[subprocess.Popen], grace: float) -> None:
    """The watchdog's copy, as when corral dies without cgroups: told the processes
    (`pid PID START`), then its pipe closes without `done`; returns once it has exited."""
    dog = watchdog.Watchdog(f"test-kill-{os.getpid()}", grace)
    for proc in procs:
        dog.tell(f"pid {proc.pid} {procfs.start_time(proc.pid)}")
    os.close(dog._w)  # corral "crashed"
    dog._w = None
    assert os.waitstatus_to_exitcode(os.waitpid(dog.pid, 0)[1]) == 0


STOPPERS = pytest.mark.parametrize("stop", [by_stop, by_watchdog], ids=["kill.stop", "watchdog"])


@STOPPERS
def test_term_ends_a_process_and_kill_what_ignores_term_after_the_grace_period(stop):
    polite = spawn("")
    stubborn = spawn("trap '' TERM")
    stop([polite, stubborn], grace=0.3)
    assert polite.wait(5) == -signal.SIGTERM
    assert stubborn.wait(5) == -signal.SIGKILL


@STOPPERS
def test_cont_lets_a_stopped_process_hear_term(stop):
    """A stopped process runs no handler: its TERM trap runs once CONT wakes it."""
    stopped = spawn(TRAPS_TERM)
    os.kill(stopped.pid, signal.SIGSTOP)
    stop([stopped], grace=5.0)
    assert stopped.wait(5) == 7


@STOPPERS
def test_what_ends_within_the_grace_period_is_not_killed(stop):
    """A process whose TERM handler takes a while (0.3 s) ends by itself within the
    grace period, so the sequence never sends KILL (the control: the stubborn one
    above, which is killed)."""
    slow = spawn("trap 'sleep 0.3; exit 7' TERM")
    stop([slow], grace=30.0)
    assert slow.wait(5) == 7


def test_the_watchdog_is_handed_the_sequence_not_its_own():
    """The watchdog's signals and grace period come from `kill` (by name, in
    microseconds), and its script names no signal of the sequence itself."""
    args = watchdog.sequence_args("r", 1.5)
    assert args[0] == "1500000" and args[4] == "TERM CONT" and args[5] == "KILL"
    sequence = watchdog.SCRIPT.split("pids=$(everyone)", 1)[1]
    assert not {"TERM", "CONT", "KILL", "-9", "-15"} & set(sequence.replace('"', " ").split())


def test_control_without_cont_a_stopped_process_only_ends_by_kill():
    """What `ASK`'s CONT is for: TERM alone stays pending in a stopped process that
    handles it, so only the KILL after the grace period ends it."""
    stopped = spawn(TRAPS_TERM)
    os.kill(stopped.pid, signal.SIGSTOP)

    class TermOnly(kill.Process):
        def ask(self) -> bool:
            return kill.signal_process(self.pid, signal.SIGTERM)

    kill.stop([TermOnly(stopped.pid)], grace=0.3)
    assert stopped.wait(5) == -signal.SIGKILL
