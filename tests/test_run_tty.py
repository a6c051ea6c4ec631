"""`corral run` in a real pseudo-terminal: live coloured lines, Ctrl-C."""

from __future__ import annotations

import sqlite3
import sys

import pexpect

from .runtrace import processes_with

# Within one line of the screen. pexpect's `.` matches newlines too (re.DOTALL), so
# "done_early.*ok" matched from a status line naming done_early, before another
# module's line, to the "ok" after it, and swallowed the line a later expect waited for.
LINE = r"[^\r\n]*"


def spawn(corral, *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "corral", "--modules", str(corral.modules), "--db", str(corral.db), *args],
        env=corral.env,
        encoding="utf-8",
        timeout=30,
        dimensions=(40, 160),
    )


def test_terminal_shows_live_prefixed_colour_lines_and_a_summary(corral):
    corral.module("alpha", body="echo hello from alpha")
    corral.module("beta", "requires: alpha", "echo 'bad news' >&2; exit 4")
    child = spawn(corral, "run")
    child.expect(r"\x1b\[\d+malpha\s*\x1b\[0m │ hello from alpha")
    child.expect(rf"beta{LINE}\x1b\[31m!\x1b\[0m bad news")  # stderr: a red !
    child.expect("last lines of beta")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1


def test_ctrl_c_stops_everything_and_keeps_the_records(corral):
    corral.module("done_early", body="echo finished")
    corral.module("sleeper", body="echo sleeping; sleep 60")
    corral.module("trapper", body="trap 'echo got TERM; exit 1' TERM; echo armed; sleep 60 & wait")
    corral.module("later", "requires: sleeper")
    child = spawn(corral, "run", "-j", "3")
    seen = set()  # they reach the terminal in any order
    while len(seen) < 3:
        seen.add(child.expect(["sleeping", "armed", rf"done_early{LINE}ok in"]))
    child.sendintr()
    child.expect("SIGINT")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, child.before
    conn = sqlite3.connect(corral.db)
    run_id, status, code = conn.execute("SELECT run_id, status, exit_code FROM runs").fetchone()
    assert (status, code) == ("interrupted", 130)
    modules = dict(conn.execute("SELECT module, status FROM module_runs"))
    assert modules == {
        "done_early": "ok",
        "sleeper": "interrupted",
        "trapper": "interrupted",
        "later": "skipped",
    }
    assert processes_with(f"CORRAL_RUN_ID={run_id}") == []
