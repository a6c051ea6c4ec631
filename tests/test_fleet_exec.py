"""Simulated hosts (ClusterShell's exec worker, as scripts/bench_fleet.py uses them):
the whole host path without ssh, each host with its own state directory."""

from __future__ import annotations

from corral import api
from corral.config import load_config

from .conftest import write_module


def test_simulated_hosts_run_ship_and_gather(tmp_path):
    modules = tmp_path / "modules"
    write_module(modules, "a", "", "echo on ${XDG_STATE_HOME##*/}")
    write_module(modules, "b", "requires: a", "[[ $XDG_STATE_HOME != *sim2 ]]")
    config = load_config((str(modules),), str(tmp_path / "controller.db"))
    store = api.open_store(config)
    launch = f"env XDG_STATE_HOME={tmp_path}/%h HOME={tmp_path}/%h bash -c"
    outcome = api.run_fleet(config, store, "sim[1-3]", ["-j", "2"], fanout=3, exec_command=launch)
    assert outcome.exit_code == 1
    status = {h.host: h.status for h in outcome.hosts}
    assert status == {"sim1": "ok", "sim2": "failed", "sim3": "ok"}
    for n in (1, 2, 3):  # each simulated host has its own bundle and database
        assert (tmp_path / f"sim{n}" / "corral" / "corral.db").is_file()
        assert len(list((tmp_path / f"sim{n}" / "corral" / "fleet").glob("*/.complete"))) == 1
    rows = store.conn.execute("SELECT host, count(*) FROM module_runs GROUP BY host").fetchall()
    assert dict(rows) == {"sim1": 2, "sim2": 2, "sim3": 2}
    gathered = api.gather_fleet(config, store, "sim[1-3]", exec_command=launch)
    assert [(g.status, g.rows) for g in gathered] == [("ok", 0)] * 3
