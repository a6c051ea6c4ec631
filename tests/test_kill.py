"""kill.stop, the one TERM → CONT → grace → KILL sequence, on real processes."""

from __future__ import annotations

import os
import signal
import subprocess

from corral import kill

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


def test_term_ends_a_process_and_kill_what_ignores_term_after_the_grace_period():
    polite = spawn("")
    stubborn = spawn("trap '' TERM")
    kill.stop([kill.Process(polite.pid), kill.Group(stubborn.pid)], grace=0.3)
    assert polite.wait(5) == -signal.SIGTERM
    assert stubborn.wait(5) == -signal.SIGKILL


def test_cont_lets_a_stopped_process_hear_term():
    """A stopped process runs no handler: its TERM trap runs once CONT wakes it."""
    stopped = spawn(TRAPS_TERM)
    os.kill(stopped.pid, signal.SIGSTOP)
    kill.stop([kill.Process(stopped.pid)], grace=5.0)
    assert stopped.wait(5) == 7


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
