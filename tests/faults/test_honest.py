"""Records tell the truth after an interrupt or a crash.

`corral status`, `corral history` and `corral history MODULE` never show a dead run (or
its attempts) as running, nor an interrupted run as ok: after SIGINT and SIGTERM (the
run records itself), after SIGKILL (before the next start records the crash, readers
see it as crashed), with modules waiting for a `locks:` pool or the gate when it died,
and when the PID a dead run recorded now belongs to another process.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from corral.procfs import start_time

from ..conftest import db_rows
from .conftest import Running, last_run, recorded, wait_gone


def crowded_run(corral, gate):
    """`a_holder` holds lock x (and runs), `b_waiter` waits for x, `c_held` waits for the
    gate (--max-load 0.01 lets nothing start beside a running module)."""
    corral.module("a_holder", "locks: x", f"touch {gate}; sleep 60")
    corral.module("b_waiter", "locks: x", "true")
    corral.module("c_held", "", "true")
    run = Running(corral, "-j", "3", "--max-load", "0.01")
    run.wait_for(gate)
    return run


def states(corral, *args: str) -> dict:
    history = json.loads(corral("history", "--json", *args).out)
    status = json.loads(corral("status", "--json").out)
    return {"history": history, "status": status}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_run_that_was_stopped_or_killed_is_never_shown_running_or_ok(corral, tmp_path, signum):
    gate = tmp_path / "gate"
    run = crowded_run(corral, gate)
    # The control: while corral lives, the same readers do say it runs (once the run's
    # row and its first status file are written: no sleep is sure to be long enough).
    end = time.monotonic() + 20
    while True:
        run_id = recorded(corral.db, "a_holder", "running")["run_id"]
        alive = states(corral)
        running = [s["run_id"] for s in alive["status"]["running"]]
        if alive["history"][0]["status"] == "running" and running == [run_id]:
            break
        assert time.monotonic() < end, alive
        time.sleep(0.05)
    run.proc.send_signal(signum)
    code = run.finish()[0]
    assert code == {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}[signum]
    assert wait_gone(run_id, 5) == []
    after = states(corral)
    want = "crashed" if signum == signal.SIGKILL else "interrupted"
    assert after["history"][0]["status"] == want
    assert after["status"]["running"] == []
    rows = json.loads(corral("history", "--json", "a_holder").out)
    assert rows[0]["status"] == "interrupted", rows[0]
    for name in ("b_waiter", "c_held"):  # never started: skipped (or no row, after a crash)
        rows = json.loads(corral("history", "--json", name).out)
        assert all(r["status"] in ("skipped", "interrupted") for r in rows), rows
    text = corral("status").out
    assert "running for" not in text


def test_a_dead_run_whose_pid_was_reused_is_not_shown_running(corral, tmp_path):
    """A run recorded as running by a PID that now belongs to another process (here the
    test's own, with another start time): crashed, and its attempt interrupted; the
    status file says the same. The control: with the real start time, it runs."""
    corral.module("a")
    assert corral("run").code == 0
    run_id = last_run(corral.db)["run_id"]
    me, born = os.getpid(), start_time(os.getpid())
    state_path = next((tmp_path / "logs").glob(f"{run_id}/status.json"))

    def pretend(started: int) -> None:
        conn = sqlite3.connect(corral.db)
        with conn:
            conn.execute(
                "UPDATE runs SET status = 'running', pid = ?, pid_start = ? WHERE run_id = ?",
                (me, started, run_id),
            )
            conn.execute("UPDATE module_runs SET status = 'running' WHERE run_id = ?", (run_id,))
        conn.close()
        state = json.loads(state_path.read_text())
        state.update(status="running", pid=me, pid_start=started)
        state_path.write_text(json.dumps(state))

    pretend(born + 12345)
    seen = states(corral)
    assert seen["history"][0]["status"] == "crashed"
    assert seen["status"]["running"] == []
    assert json.loads(corral("history", "--json", "a").out)[0]["status"] == "interrupted"
    pretend(born)  # the control
    seen = states(corral)
    assert seen["history"][0]["status"] == "running"
    assert [s["run_id"] for s in seen["status"]["running"]] == [run_id]
    assert json.loads(corral("history", "--json", "a").out)[0]["status"] == "running"
    rows = db_rows(corral.db, "SELECT status FROM runs")  # readers changed nothing
    assert rows == [{"status": "running"}]
