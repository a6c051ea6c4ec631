"""Asking a run what it does and did: `corral status` from another terminal while a run
goes on, `corral why MODULE`, `corral log MODULE [RUN]` and logs/latest."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from .conftest import db_rows


def wait_for(path, proc, timeout=30.0):
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_status_shows_what_runs_and_what_waits_on_what(corral, tmp_path):
    gate, go = tmp_path / "holding", tmp_path / "go"
    corral.module(
        "pkg_nginx", "locks: pkgdb", body=f"touch {gate}; while [ ! -e {go} ]; do sleep 0.05; done"
    )
    corral.module("pkg_php", "locks: pkgdb")
    corral.module("web", "requires: pkg_nginx")
    run = subprocess.Popen(
        [sys.executable, "-m", "corral", "--modules", str(corral.modules), "--db", str(corral.db),
         "run", "-j", "4", "-l", "1000", "pkg_nginx", "pkg_php", "web"],
        env=corral.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(gate, run)
        deadline = time.monotonic() + 20
        while True:  # the state file is rewritten a few times a second
            status = corral("status")
            if "lock pkgdb held by pkg_nginx" in status.out or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status.code == 0, status.err
        lines = status.out.splitlines()
        assert lines[0].startswith("run ") and f"(PID {run.pid})" in lines[0]
        assert "[0/3]" in lines[0] and "ETA" in lines[0]
        running = lines.index("running:")
        assert lines[running + 1].split()[0] == "pkg_nginx"
        waiting = {
            ln.split()[0]: ln.split(None, 1)[1]
            for ln in lines[lines.index("waiting:") + 1 :]
            if ln.startswith("  ")
        }
        assert waiting["pkg_php"] == "lock pkgdb held by pkg_nginx"
        assert waiting["web"] == "requires pkg_nginx"
        state = corral("status", "--json").json()
        assert state["running"][0]["name"] == "pkg_nginx" and state["total"] == 3
    finally:
        go.touch()
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, out + err
    assert "no run in progress" in corral("status").out


def test_why_names_the_chain_that_released_a_module_and_its_lock_wait(corral):
    corral.module("base", "locks: pkgdb", body="sleep 0.3")
    corral.module("middle", "requires: base", body="sleep 0.2")
    corral.module("top", "requires: middle\nwants: side")
    corral.module("side")
    corral.module("other", "locks: pkgdb", body="sleep 0.1")
    assert corral("run", "-j", "4", "-l", "1000").code == 0
    result = corral("why", "top")
    assert result.code == 0, result.err
    assert "released by middle" in result.out
    assert "chain that released it: base -> middle -> top" in result.out
    lock_waiter = "other" if "locks 0.00s" not in corral("why", "other").out else "base"
    assert "locks 0." in corral("why", lock_waiter).out
    missing = corral("why", "nothing")
    assert missing.code == 2 and "no records of module 'nothing'" in missing.err


def test_log_prints_a_modules_log_and_latest_points_at_the_last_run(corral):
    corral.module("chatty", body="echo out-line; echo err-line >&2")
    corral.module(
        "flaky", "retries: 1", body='echo "try $CORRAL_ATTEMPT"; [ "$CORRAL_ATTEMPT" = 2 ]'
    )
    first = corral("run", "--json").json()["run_id"]
    second = corral("run", "--json").json()["run_id"]
    result = corral("log", "chatty")
    assert result.code == 0 and "out-line" in result.out and "err-line" in result.out
    flaky = corral("log", "flaky", first[:15])
    assert "==> flaky, attempt 1" in flaky.out and "try 1" in flaky.out and "try 2" in flaky.out
    latest = corral.db.parent / "logs" / "latest"
    rows = db_rows(
        corral.db, "SELECT log_path FROM module_runs WHERE run_id = ? AND module = 'chatty'", second
    )
    assert os.path.realpath(latest) == os.path.dirname(rows[0]["log_path"])
    assert corral("log", "chatty", "nosuchrun").code == 2


def test_the_status_file_of_a_large_run_is_written_less_often(tmp_path):
    """Publishing takes at most 1 % of corral's time: after a snapshot that took t
    seconds, the next waits 100 t (at least `every`); the file is whole JSON each time."""
    import json

    from corral.events import Idle
    from corral.progress import RunState, StateFile

    state = RunState()
    state.names = [f"m{i:05d}" for i in range(20000)]
    state.deps = {n: [] for n in state.names}
    published = StateFile(state, str(tmp_path), every=0.25)
    assert published.pause == 0.25
    published(Idle())
    assert published.pause >= 0.25
    written = json.loads((tmp_path / "status.json").read_text())
    assert written["total"] == 20000 and len(written["waiting"]) == 20000
    last = published.last
    published(Idle())  # too soon: not written again
    assert published.last == last


def test_why_a_skipped_module_never_started(corral):
    corral.module("bad", body="exit 1")
    corral.module("dep", "requires: bad")
    corral("run")
    out = corral("why", "dep").out
    assert "dep in run" in out and "never started: requires bad, which failed" in out
    assert "attempt" not in out
