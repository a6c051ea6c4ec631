"""Faults 4 (daemonising modules) and 5 (exit codes, zombies)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pytest

from corral import api, cgroups
from corral.config import load_config

from ..conftest import db_rows, write_module
from .conftest import attempts, last_run, leftovers


def test_daemons_do_not_hang_the_run_and_are_stopped_at_its_end(corral):
    # What a module leaves gets the grace period to end by itself, then is stopped: a
    # short one, so that each leftover is not waited for the default 5 s.
    (corral.modules.parent / "corral.yaml").write_text("grace: 0.5s\n")
    corral.module("background", body="sleep 300 &\necho started")
    corral.module("setsid", body="(setsid sleep 301 &)\necho started")
    corral.module("nohup", body="nohup sleep 302 >/dev/null 2>&1 &\necho started")
    corral.module("next", "requires: background setsid nohup")
    result = corral("run", "--json")  # (a wait for a 300 s sleep: past its 120 s bound)
    assert result.code == 0, result.err
    run_id = result.json()["run_id"]
    assert leftovers(run_id) == []
    mods = attempts(corral.db, run_id)
    for name in ("background", "setsid", "nohup"):
        assert mods[name]["leftovers"] == 1, name
        assert f"{name}: 1 process left behind, stopped" in result.err


def test_a_module_that_may_detach_keeps_its_daemon_and_it_is_recorded(corral):
    corral.module("daemon", "detach: yes", "setsid sleep 303 >/dev/null 2>&1 &\necho ok")
    result = corral("run", "--json")
    assert result.code == 0, result.err
    run_id = result.json()["run_id"]
    try:
        survivors = leftovers(run_id)  # the control: a detached daemon is found
        assert len(survivors) == 1
        assert attempts(corral.db, run_id)["daemon"]["leftovers"] == 1
        assert "left running (detach: yes)" in result.err
    finally:
        for pid in leftovers(run_id):
            os.kill(pid, signal.SIGKILL)


def test_a_detached_daemon_s_cgroup_is_removed_by_a_later_start_once_empty(corral, tmp_path):
    """The run records the cgroups its detached daemon still holds; a later start
    removes them once the daemon is gone (never while it runs) and forgets them."""
    pidfile = tmp_path / "daemon.pid"
    corral.module(
        "daemon", "detach: yes", f"setsid bash -c 'echo $$ > {pidfile}; exec sleep 300' &"
    )
    first = corral("run", "--json")
    assert first.code == 0, first.err
    row = last_run(corral.db)
    if row["containment"] != "cgroup":
        pytest.skip("needs cgroup containment (a writable cgroup v2 or v1 freezer)")
    daemon = int(pidfile.read_text())
    try:
        left = row["cgroups"].split(os.pathsep)
        assert left and all(os.path.isdir(d) for d in left)
        corral.module("daemon", body="true")  # later runs leave nothing of their own
        busy = corral("run")
        assert busy.code == 0 and all(os.path.isdir(d) for d in left)  # it still runs there
        assert last_run(corral.db)["cgroups"] is None
    finally:
        os.kill(daemon, signal.SIGKILL)
    end = time.monotonic() + 10
    while any(cgroups.leftovers(left)[0].pids()) and time.monotonic() < end:
        time.sleep(0.02)
    # The control: emptied, its cgroups stay until something removes them.
    assert all(os.path.isdir(d) for d in left) and not cgroups.leftovers(left)[0].pids()
    later = corral("run")
    assert later.code == 0 and "Traceback" not in later.err
    assert not any(os.path.exists(d) for d in left)
    runs = db_rows(corral.db, "SELECT run_id, cgroups FROM runs")
    assert [r["cgroups"] for r in runs] == [None, None, None]


def test_the_sweep_removes_only_run_cgroups_whatever_the_database_says(corral, tmp_path):
    """A row naming directories that are not a run's cgroups (an edited or foreign
    database) gets nothing removed; the row naming a real emptied one does."""
    planted = [tmp_path / "corral-planted", tmp_path / "empty"]
    for directory in planted:
        directory.mkdir()
    corral.module("a")
    assert corral("run").code == 0
    conn = sqlite3.connect(corral.db)
    with conn:
        conn.execute("UPDATE runs SET cgroups = ?", (os.pathsep.join(map(str, planted)),))
    conn.close()
    assert corral("run").code == 0
    assert all(d.is_dir() for d in planted)
    assert db_rows(corral.db, "SELECT cgroups FROM runs")[0]["cgroups"] is not None


def test_exit_code_of_a_busy_forker_is_never_lost(corral):
    corral.module("forker", body="for i in $(seq 200); do (exit 3) & done; wait; exit 7")
    corral.module("signalled", body="kill -KILL $$")
    result = corral("run", "--json")
    mods = {m["name"]: m for m in result.json()["modules"]}
    assert mods["forker"]["exit_code"] == 7 and mods["forker"]["status"] == "failed"
    assert mods["signalled"]["exit_code"] is None and mods["signalled"]["signal"] == 9
    row = attempts(corral.db, last_run(corral.db)["run_id"])["forker"]
    assert row["exit_code"] == 7


def zombies_of(pid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == b"Z" and int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def test_no_zombie_is_left_with_corral_as_its_parent(tmp_path):
    # The control: an unreaped child of ours is a zombie the check does see.
    child = subprocess.Popen(["true"])
    time.sleep(0.3)
    assert zombies_of(os.getpid()) == [child.pid]
    child.wait()
    modules = tmp_path / "modules"
    write_module(
        modules,
        "orphaner",
        body="(setsid bash -c 'sleep 0.2' &)\nfor i in $(seq 50); do true & done; wait",
    )
    write_module(modules, "daemon", body="sleep 0.5 &")
    config = load_config((str(modules),), str(tmp_path / "db.sqlite"))
    store = api.open_store(config)
    try:
        outcome = api.run_modules(config, store, want_output=False)
    finally:
        store.close()
    assert outcome.exit_code == 0
    assert zombies_of(os.getpid()) == []
