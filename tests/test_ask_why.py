"""Asking a run what it does and did: `corral status` from another terminal while a run
goes on, `corral why MODULE`, `corral log MODULE [RUN]` and logs/latest."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import replace

from .conftest import Result, db_rows
from .runtrace import wait_for


def test_status_shows_what_runs_and_what_waits_on_what(corral, tmp_path):
    gate, go = tmp_path / "holding", tmp_path / "go"
    corral.module(
        "pkg_nginx", "locks: pkgdb", body=f"touch {gate}; while [ ! -e {go} ]; do sleep 0.05; done"
    )
    corral.module("pkg_php", "locks: pkgdb")
    corral.module("web", "requires: pkg_nginx")
    run = subprocess.Popen(
        corral.argv("run", "-j", "4", "-l", "1000", "pkg_nginx", "pkg_php", "web"),
        env=corral.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
        published = corral("status", "--json").json()
        (state,) = published["running"]
        assert state["running"][0]["name"] == "pkg_nginx" and state["total"] == 3
        assert published["last"]["run_id"] == state["run_id"]
        for when in (state["started"], state["written"], state["running"][0]["start"]):
            assert dt.datetime.fromisoformat(when).utcoffset() == dt.timedelta(0), when
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


def test_the_status_file_waits_for_what_a_write_cost_in_cpu_not_for_a_busy_host(
    tmp_path, monkeypatch
):
    """A write that took 50 ms of wall time but no CPU (corral not scheduled on a busy
    host) does not hold the next one back 5 s, as counting wall time 100 times did; the
    control: a write that costs 20 ms of CPU waits at least 100 times that."""
    from corral import progress
    from corral.events import Idle

    def idle(state):
        time.sleep(0.05)
        return "{}"

    def busy(state):
        end = time.thread_time() + 0.02
        while time.thread_time() < end:
            pass
        return "{}"

    for dumps, slow in ((idle, False), (busy, True)):
        monkeypatch.setattr(progress.json, "dumps", dumps)
        published = progress.StateFile(progress.RunState(), str(tmp_path), every=0.25)
        published(Idle())
        assert (published.pause >= 2.0) == slow, (dumps.__name__, published.pause)


def test_why_a_skipped_module_never_started(corral):
    corral.module("bad", body="exit 1")
    corral.module("dep", "requires: bad")
    corral("run")
    out = corral("why", "dep").out
    assert "dep in run" in out and "never started: requires bad, which failed" in out
    assert "attempt" not in out


def test_why_during_a_run_says_what_runs_and_what_has_not_run_yet(corral, tmp_path):
    """Asked while the run goes on: a running module has been running for so long (not
    'ran 0.00s; ended ?'), and one not started yet has no records because it has not run
    (exit 2, saying so). The control: once the run ended, the same module ran and ended."""
    started, go = tmp_path / "started", tmp_path / "go"
    corral.module("slow", body=f"touch {started}; until [ -e {go} ]; do sleep 0.05; done")
    corral.module("later", "requires: slow")
    run = subprocess.Popen(corral.argv("run", "-q"), env=corral.env, stderr=subprocess.PIPE)
    try:
        wait_for(started, run)
        deadline = time.monotonic() + 20
        while "running" not in (now := corral("why", "slow")).out.split("\n")[0]:
            assert time.monotonic() < deadline, now.out + now.err
            time.sleep(0.05)  # the attempt's row is written just after its start
        assert "attempt 1 has been running for " in now.out and "ended ?" not in now.out
        later = corral("why", "later")
        assert later.code == 2 and "no records of module 'later': it has not run yet" in later.err
    finally:
        go.touch()
        run.wait(60)
    assert run.returncode == 0
    done = corral("why", "slow").out
    assert "has been running" not in done and "ran " in done and "; ended +" in done


def test_why_names_the_lock_and_its_holder(corral, tmp_path):
    go = tmp_path / "go"
    for name in ("pkg_nginx", "pkg_php"):
        corral.module(
            name,
            "locks: pkgdb",
            body=f"touch {tmp_path / name}; while [ ! -e {go} ]; do sleep 0.05; done",
        )
    run = subprocess.Popen(
        corral.argv("run", "-j", "4", "-l", "1000"),
        env=corral.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any((tmp_path / n).exists() for n in ("pkg_nginx", "pkg_php")):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
        holder = "pkg_nginx" if (tmp_path / "pkg_nginx").exists() else "pkg_php"
        waiter = "pkg_php" if holder == "pkg_nginx" else "pkg_nginx"
        time.sleep(0.3)  # the waiter waits a while
    finally:
        go.touch()
        out, err = run.communicate(timeout=60)
    assert run.returncode == 0, out + err
    why = corral("why", waiter)
    assert why.code == 0, why.err
    assert f"(lock pkgdb held by {holder})" in why.out, why.out
    # the control: the module that got the lock first waited for none
    first = corral("why", holder).out
    assert "locks 0.00s," in first and "held by" not in first


def test_status_shows_every_run_in_progress(corral, tmp_path):
    """Two module sets sharing a database (and so the log directory), both running: each
    is shown, not only the newest; the control is that `latest` names just one. The user
    picks one by its run id, or by naming its modules directory (`--modules`)."""

    def everything(*args: str) -> Result:  # no --modules given: every module set's runs
        done = subprocess.run(
            [sys.executable, "-m", "corral", "--db", str(corral.db), *args],
            env=corral.env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return Result(done.returncode, done.stdout, done.stderr)

    other = tmp_path / "other"
    gates = {}
    for name, where in (("alpha", corral.modules), ("beta", other)):
        gates[name] = tmp_path / f"{name}.started"
        (where / f"{name}.sh").parent.mkdir(parents=True, exist_ok=True)
        (where / f"{name}.sh").write_text(
            f"touch {gates[name]}; while [ ! -e {tmp_path / 'go'} ]; do sleep 0.05; done\n"
        )
    runs = []
    try:
        for where, name in ((corral.modules, "alpha"), (other, "beta")):
            argv = replace(corral, modules=where).argv("run", "-q")
            runs.append(subprocess.Popen(argv, env=corral.env, stderr=subprocess.PIPE))
            wait_for(gates[name], runs[-1])
        deadline = time.monotonic() + 20
        while True:
            status = everything("status")
            if status.out.count("running:") == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status.code == 0, status.err
        logs = corral.db.parent / "logs"
        assert status.out.startswith(
            f"2 runs in progress under {logs} (`corral status RUN` shows one):"
        )
        assert f"of {other}" in status.out and f"of {corral.modules}" in status.out
        assert "  alpha" in status.out and "  beta" in status.out
        # one host: its line once; first runs: the ETA said as the live line says it
        assert status.out.count("host: load") <= 1 and "ETA ?" not in status.out
        assert status.out.count("ETA unknown (no history yet)") == 2, status.out
        published = everything("status", "--json").json()
        assert {s["modules"] for s in published["running"]} == {str(corral.modules), str(other)}
        latest = (corral.db.parent / "logs" / "latest" / "status.json").read_text()
        assert ("alpha" in latest) != ("beta" in latest)  # the control: latest has one
        # the user picks one by a prefix of its id: only that run is shown
        beta = next(s["run_id"] for s in published["running"] if s["modules"] == str(other))
        one = everything("status", beta[:-1])
        assert one.code == 0, one.err
        assert one.out.startswith(f"run {beta} (PID ") and "running:" in one.out
        assert "  beta" in one.out and "alpha" not in one.out
        assert everything("status", "--json", beta).json()["run_id"] == beta
        # or by naming its modules directory, as history and docs take it
        for mine, theirs, where in (("alpha", "beta", corral.modules), ("beta", "alpha", other)):
            named = replace(corral, modules=where)("status")
            assert named.out.count("running:") == 1 and f"  {mine}" in named.out, named.out
            assert theirs not in named.out
        # a prefix both share names them and asks for more; one nobody has says where it looked
        both = everything("status", beta[:4])
        assert both.code == 2 and "2 runs match" in both.err and beta in both.err, both.err
        none = everything("status", "19990101")
        said = f"no run matching '19990101' published its state under {logs}"
        assert none.code == 2 and said in none.err, none.err
        assert "Traceback" not in none.err + both.err
    finally:
        (tmp_path / "go").touch()
        for run in runs:
            run.wait(60)
    assert [run.returncode for run in runs] == [0, 0]
    assert "no run in progress" in everything("status").out
    assert everything("status", "--json").json()["running"] == []
    # a picked run that has ended says how it ended
    ended = corral("status", beta)
    assert ended.code == 0 and ended.out.startswith(f"run {beta} ended "), ended.out
    assert ": ok (1 module: 1 ok)" in ended.out, ended.out
