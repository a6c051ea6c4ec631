"""A fleet run's own row never stays `running` after its controller is gone: an error in
the controller ends it as `crashed` (exit 70) on the way out, and a controller killed
outright (SIGKILL) is found by the next start that takes the same run lock (a live
controller would hold it); until then every reader (history, status, the report) tells
its controller is dead by its PID and start time, as for a run. Simulated hosts
(ClusterShell's exec worker), real sqlite."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from corral import api
from corral.config import load_config
from corral.fleet.hosts import HostStarted

from .conftest import db_rows


def fleet_rows(db) -> list[tuple]:
    rows = db_rows(db, "SELECT status, exit_code, ended FROM fleet_runs ORDER BY started")
    return [(r["status"], r["exit_code"], r["ended"] is not None) for r in rows]


def test_an_error_in_the_controller_ends_its_fleet_run_as_crashed(corral, tmp_path):
    corral.module("a")
    config = load_config((str(corral.modules),), str(corral.db))
    store = api.open_store(config)
    launch = f"env XDG_STATE_HOME={tmp_path}/%h HOME={tmp_path}/%h bash -c"

    def fails(event) -> None:
        if isinstance(event, HostStarted):
            raise RuntimeError("a listener of the controller failed")

    with pytest.raises(RuntimeError):
        api.run_fleet(config, store, "sim1", [], listeners=[fails], exec_command=launch)
    assert fleet_rows(corral.db) == [("crashed", 70, True)]
    hosts = db_rows(corral.db, "SELECT host, status, reason FROM fleet_hosts")
    assert [(h["host"], h["status"]) for h in hosts] == [("sim1", "lost")]  # never pending
    assert "corral fleet gather" in hosts[0]["reason"]
    # The control: the same fleet run without the error ends as it went.
    outcome = api.run_fleet(config, store, "sim1", [], exec_command=launch)
    assert outcome.exit_code == 0
    assert fleet_rows(corral.db) == [("crashed", 70, True), ("ok", 0, True)]


CONTROLLER = """
import sys
from corral import api
from corral.config import load_config
config = load_config((sys.argv[1],), sys.argv[2])
api.run_fleet(config, api.open_store(config), "slow1", [], exec_command=sys.argv[3])
"""


def started(db) -> bool:
    try:
        return bool(db_rows(db, "SELECT 1 FROM fleet_runs"))
    except sqlite3.Error:  # not made yet
        return False


def readers(corral) -> tuple[str, str, str]:
    """What `history --json`, `status` and the report say of the newest fleet run."""
    history = corral("history", "--json").json()
    fleets = [r for r in history if r.get("kind") == "fleet"]
    status = corral("status").out
    report = corral.db.parent / "report"
    corral("docs", "--out", str(report))
    section = (report / "README.md").read_text().split("## Fleet run")[1].split("##")[0]
    return fleets[0]["status"] + " " + fleets[0]["hosts"][0]["status"], status, section


def test_a_killed_controller_is_recorded_as_crashed_by_the_next_start(corral):
    corral.module("a")
    slow = "sh -c 'exec sleep 60' sh"  # a host that never answers
    env = {**corral.env, "PYTHONPATH": os.pathsep.join(sys.path)}
    controller = subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, str(corral.modules), str(corral.db), slow],
        env=env,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        end = time.monotonic() + 60
        while not started(corral.db):
            assert controller.poll() is None, controller.communicate()
            assert time.monotonic() < end, "the fleet run never started"
            time.sleep(0.05)
        # The control: while the controller lives, every reader says it runs.
        history, status, report = readers(corral)
        assert history == "running pending", history
        assert f"in progress (controller PID {controller.pid})" in status, status
        assert "1 host (1 pending), running, exit -" in report, report
        os.kill(controller.pid, signal.SIGKILL)
        controller.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(controller.pid, signal.SIGKILL)  # its host's sleep too
    # Killed, nothing ended its row, but no reader shows it running: its PID is gone.
    assert fleet_rows(corral.db) == [("running", None, False)]
    history, status, report = readers(corral)
    assert history == "crashed lost", history
    assert f"(PID {controller.pid}) is no longer running" in status, status
    assert "1 host (1 lost), crashed, exit 70" in report, report
    result = corral("run")
    assert result.code == 0, result.err
    assert "crashed (its controller is gone)" in result.err
    assert fleet_rows(corral.db) == [("crashed", 70, True)]
    assert "crashed (its controller" not in corral("run").err  # said once
