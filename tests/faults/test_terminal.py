"""Terminal output cannot be forged: a failing module's escape sequences in a real
terminal (tmux), live and in the failure tail, against corral's own summary."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid

from ..test_lint import need

# Clear the screen and its scrollback, paint a green "all ok", then conceal whatever
# comes next (corral's real summary) and set the window title.
FORGERY = (
    r"\033[2J\033[3J\033[H\033[32mcorral: ok: 1 modules (1 ok) in 0.01s\033[0m\n"
    r"\033]0;all good\007\033[8m"
)


class Pane:
    """One tmux server and pane of its own, running a shell command."""

    def __init__(self, command: str, env: dict):
        self.socket = f"corral-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k.isidentifier())
        script = f"export {exports}; {command}; echo '[pane done]'; sleep 60"
        subprocess.run(
            [need("tmux"), "-L", self.socket, "-f", "/dev/null", "new-session", "-d"]
            + ["-x", "150", "-y", "50", "bash", "-c", script],
            check=True,
        )

    def screen(self, attributes: bool = False) -> str:
        cmd = ["tmux", "-L", self.socket, "capture-pane", "-p", "-J"]
        return subprocess.run(
            cmd + (["-e"] if attributes else []), capture_output=True, text=True
        ).stdout

    def wait_done(self, timeout: float = 60) -> str:
        end = time.monotonic() + timeout
        while "[pane done]" not in (text := self.screen()):
            assert time.monotonic() < end, text
            time.sleep(0.1)
        return text

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


def corral_command(corral, *args: str) -> str:
    argv = [sys.executable, "-m", "corral", "--modules", str(corral.modules)]
    return shlex.join([*argv, "--db", str(corral.db), *args])


def test_a_module_cannot_repaint_the_screen_or_hide_the_summary(corral):
    corral.module("liar", body=f"printf '{FORGERY}'; exit 1")
    corral.module("fine", body="echo all fine here")
    pane = Pane(corral_command(corral, "run", "-j", "1"), corral.env)
    try:
        text = pane.wait_done()
        styled = pane.screen(attributes=True)
    finally:
        pane.close()
    lines = [line for line in text.splitlines() if line.strip()]
    assert "corral: running 2 modules" in text  # nothing was wiped
    assert "^[[2J^[[3J^[[H^[[32mcorral: ok: 1 modules (1 ok)" in text  # shown, not obeyed
    assert lines[-2].startswith("corral: failed: 2 modules (1 ok, 1 failed)"), lines
    assert "\x1b[8m" not in styled  # nothing concealed


def test_control_the_same_bytes_unescaped_forge_the_screen(tmp_path):
    """The attack works on this terminal: the bytes printed raw wipe what came before,
    show the green lie, and conceal the real verdict printed after them."""
    command = f"echo 'corral: running 2 modules'; printf '{FORGERY}'; echo 'corral: failed'"
    pane = Pane(command, {"PATH": os.environ["PATH"]})
    try:
        text = pane.wait_done()
        styled = pane.screen(attributes=True)
    finally:
        pane.close()
    assert "corral: running 2 modules" not in text
    assert text.lstrip().startswith("corral: ok: 1 modules (1 ok)")
    assert "\x1b[8mcorral: failed" in styled.replace("\x1b[39m", "")


def test_corral_log_shows_a_terminal_the_bytes_and_a_pipe_the_log(corral):
    import pexpect

    corral.module("liar", body=f"printf '{FORGERY}'")
    assert corral("run").code == 0
    argv = ["-m", "corral", "--modules", str(corral.modules), "--db", str(corral.db)]
    child = pexpect.spawn(sys.executable, [*argv, "log", "liar"], env=corral.env, timeout=30)
    child.expect(pexpect.EOF)
    shown = child.before.decode()
    assert "^[[2J^[[3J^[[H^[[32mcorral: ok" in shown and "\x1b" not in shown
    assert "\x1b[2J" in corral("log", "liar").out  # the control: piped, the raw bytes
