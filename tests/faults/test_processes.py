"""Faults 4 (daemonising modules) and 5 (exit codes, zombies)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from corral import api
from corral.config import load_config

from ..conftest import write_module
from .conftest import attempts, last_run, leftovers


def test_daemons_do_not_hang_the_run_and_are_stopped_at_its_end(corral):
    corral.module("background", body="sleep 300 &\necho started")
    corral.module("setsid", body="(setsid sleep 301 &)\necho started")
    corral.module("nohup", body="nohup sleep 302 >/dev/null 2>&1 &\necho started")
    corral.module("next", "requires: background setsid nohup")
    start = time.monotonic()
    result = corral("run", "--json")
    assert result.code == 0, result.err
    assert time.monotonic() - start < 20  # none of the 300 s sleeps was waited for
    run_id = result.json()["run_id"]
    assert leftovers(run_id) == []
    mods = attempts(corral.db, run_id)
    for name in ("background", "setsid", "nohup"):
        assert mods[name]["leftovers"] == 1, name
        assert f"{name}: 1 process(es) left behind, stopped" in result.err


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
