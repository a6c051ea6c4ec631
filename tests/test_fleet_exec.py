"""Simulated hosts (ClusterShell's exec worker, as scripts/bench_fleet.py uses them):
the whole host path without ssh, each host with its own state directory."""

from __future__ import annotations

from corral import api
from corral.config import load_config

from .conftest import db_rows, write_module


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


def test_the_fleet_backend_is_an_executor_whose_attempts_are_hosts():
    """The seam's contract, on the real backend: start returns at once, every attempt
    ends once in some wait, stop ends a host as the controller's doing, a signal wakes
    wait, and a host's outcome is the fleet's (unreachable, lost) beside the attempt's."""
    import os
    import signal

    from corral.backends.fleet import FleetExecutor, FleetTarget
    from corral.executor import Attempt, Executor, Spec
    from corral.fleet.hosts import LOST, UNREACHABLE, HostFinished, HostResult, HostStarted
    from corral.status import Status

    results = {h: HostResult(h) for h in ("gone", "slow")}
    events: list = []
    # "gone" says why and exits as ssh does when it cannot connect; "slow" never answers
    launch = "sh -c 'case %h in gone) echo no route to %h >&2; exit 255;; esac; exec sleep 30' sh"
    target = FleetTarget("key", [], "0" * 64, bytes, results, events.append, exec_command=launch)
    with FleetExecutor(target) as executor:
        assert isinstance(executor, Executor)
        gone = executor.start(Spec("gone", "gone", 1, {}))
        slow = executor.start(Spec("slow", "slow", 1, {}))
        assert isinstance(gone, Attempt) and {a.spec.name for a in executor.running} == {
            "gone",
            "slow",
        }
        wake = executor.wait(20)
        assert [(r.name, r.status) for r in wake.finished] == [("gone", Status.FAILED)]
        assert results["gone"].status == UNREACHABLE
        assert results["gone"].reason == "no route to gone" and results["gone"].exit_code == 255
        assert executor.wait(0.2).finished == []  # a timeout; "slow" still runs
        os.kill(os.getpid(), signal.SIGHUP)
        assert executor.wait(20).signals == [signal.SIGHUP]
        executor.stop(slow, Status.INTERRUPTED)
        wake = executor.wait(20)
        assert [(r.name, r.status) for r in wake.finished] == [("slow", Status.INTERRUPTED)]
        assert results["slow"].status == LOST and "interrupted" in results["slow"].reason
        assert not executor.running
    started = [e.host.host for e in events if isinstance(e, HostStarted)]
    finished = [e.host.host for e in events if isinstance(e, HostFinished)]
    assert started == ["gone", "slow"] and finished == ["gone", "slow"]


def simulated(tmp_path, config_text: str = "", db: str | None = None):
    """A controller's modules dir (one module), its config, its store, and the launch
    command that makes sim1, sim2 … hosts with their own state directories."""
    modules = tmp_path / "modules"
    write_module(modules, "a", "", "true")
    if config_text:
        (modules / "corral.yaml").write_text(config_text)
    config = load_config((str(modules),), db or str(tmp_path / "controller.db"))
    launch = f"env XDG_STATE_HOME={tmp_path}/%h HOME={tmp_path}/%h bash -c"
    return config, api.open_store(config), launch


def per_host(store, sql: str) -> dict[str, int]:
    return dict(store.conn.execute(sql).fetchall())


def test_keep_runs_and_keep_days_apply_per_host_to_gathered_runs(tmp_path):
    import sqlite3

    config, store, launch = simulated(tmp_path, "keep_runs: 2\n")
    runs_of = "SELECT host, count(*) FROM runs WHERE fleet_run IS NOT NULL GROUP BY host"
    fleet_runs = []
    for n in (1, 2, 3):
        outcome = api.run_fleet(config, store, "sim[1-2]", [], fanout=2, exec_command=launch)
        fleet_runs.append(outcome.run_id)
        # control: up to the limit every run is gathered and kept
        assert per_host(store, runs_of) == {"sim1": min(n, 2), "sim2": min(n, 2)}
    # the newest two of each host: the first fleet run's are gone
    kept = [r for (r,) in store.conn.execute("SELECT run_id FROM fleet_runs ORDER BY started")]
    assert kept == fleet_runs[1:]
    hosts_of = "SELECT fleet_run, count(*) FROM fleet_hosts GROUP BY fleet_run"
    assert per_host(store, hosts_of) == dict.fromkeys(fleet_runs[1:], 2)
    attempts = "SELECT host, count(*) FROM module_runs WHERE host IS NOT NULL GROUP BY host"
    assert per_host(store, attempts) == {"sim1": 2, "sim2": 2}
    # A gather does not bring back what retention forgot for good.
    api.gather_fleet(config, store, "sim[1-2]", exec_command=launch)
    assert per_host(store, runs_of) == {"sim1": 2, "sim2": 2}
    # keep_days, by `corral prune` over every module set: sim1's older run is too old.
    with sqlite3.connect(config.db) as conn:
        conn.execute(
            "UPDATE runs SET started = '2020-01-01T00:00:00+00:00' WHERE run_id = "
            "(SELECT run_id FROM runs WHERE host = 'sim1' ORDER BY started LIMIT 1)"
        )
    from corral.retention import prune

    pruned = prune(store, config.log_dir, 0, 30)
    assert len(pruned.runs) == 1 and pruned.runs[0].startswith("sim1/")
    assert per_host(store, runs_of) == {"sim1": 1, "sim2": 2}


def test_a_controller_that_is_one_of_its_hosts_records_that_run_once(tmp_path):
    # The controller's database is sim1's own: sim1's corral writes its run there.
    shared = tmp_path / "sim1" / "corral" / "corral.db"
    shared.parent.mkdir(parents=True)
    config, store, launch = simulated(tmp_path, db=str(shared))
    outcome = api.run_fleet(config, store, "sim[1-2]", [], fanout=2, exec_command=launch)
    assert outcome.exit_code == 0, [h.as_json() for h in outcome.hosts]
    rows = store.conn.execute("SELECT run_id, host, fleet_run FROM runs ORDER BY host").fetchall()
    assert [(host, run_id.startswith(f"{host}/"), fleet) for run_id, host, fleet in rows] == [
        ("sim1", True, outcome.run_id),
        ("sim2", True, outcome.run_id),
    ]
    attempts = "SELECT host, count(*) FROM module_runs GROUP BY host"
    assert per_host(store, attempts) == {"sim1": 1, "sim2": 1}
    # A gather of the shared database does not take the gathered copy for sim1's own.
    gathered = api.gather_fleet(config, store, "sim[1-2]", exec_command=launch)
    assert [(g.status, g.rows) for g in gathered] == [("ok", 0)] * 2
    assert store.conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
    # sim2 shares nothing: its own database keeps its own row.
    own = db_rows(tmp_path / "sim2" / "corral" / "corral.db", "SELECT fleet_run FROM runs")
    assert own == [{"fleet_run": None}]


def test_gathering_a_run_this_database_holds_as_its_own(tmp_path):
    from corral.fleet.records import add_records

    config, store, _ = simulated(tmp_path)
    mine = {
        "run_id": "20261123-080000-abcd",
        "started": "2026-11-23T08:00:00+00:00",
        "status": "ok",
        "host": "box",
        "pid": 4242,
        "modules_dir": "/var/lib/corral/fleet/d/modules",
    }
    attempt = {"run_id": mine["run_id"], "module": "a", "attempt": 1, "status": "ok"}
    with store.write():
        store.conn.execute(
            f"INSERT INTO runs ({', '.join(mine)}) VALUES ({', '.join('?' * len(mine))})",
            tuple(mine.values()),
        )
        store.conn.execute(
            "INSERT INTO module_runs (run_id, module, attempt, status) VALUES (?, ?, ?, ?)",
            tuple(attempt.values()),
        )

    def ids():
        return [r for (r,) in store.conn.execute("SELECT run_id FROM runs ORDER BY run_id")]

    # Still running here: nothing is taken (its corral still writes that row).
    store.conn.execute("UPDATE runs SET status = 'running'")
    store.conn.commit()
    assert add_records(store, "box", {"run": mine, "attempts": [attempt]}, "fleet-1") == 0
    assert ids() == [mine["run_id"]]
    store.conn.execute("UPDATE runs SET status = 'ok'")
    store.conn.commit()
    # Ended: the host's own rows become the gathered ones.
    add_records(store, "box", {"run": mine, "attempts": [attempt]}, "fleet-1")
    assert ids() == [f"box/{mine['run_id']}"]
    assert db_rows(config.db, "SELECT run_id, host FROM module_runs") == [
        {"run_id": f"box/{mine['run_id']}", "host": "box"}
    ]
    # Control: the same run id from another process (another machine's run) is not
    # this database's: both are kept.
    other = {**mine, "pid": 1, "host": "elsewhere"}
    add_records(store, "elsewhere", {"run": other, "attempts": [attempt]}, "fleet-1")
    assert ids() == [f"box/{mine['run_id']}", f"elsewhere/{mine['run_id']}"]


def test_each_host_costs_the_controller_one_transaction(tmp_path):
    """A host's records and how it ended are written together: one more host, one more
    COMMIT (two before: the records as they came, then the host's row)."""
    from corral.fleet.run import run_fleet

    modules = tmp_path / "modules"
    write_module(modules, "a", "", "true")
    write_module(modules, "b", "requires: a", "true")
    config = load_config((str(modules),), str(tmp_path / "controller.db"))
    store = api.open_store(config)
    launch = f"env XDG_STATE_HOME={tmp_path}/%h HOME={tmp_path}/%h bash -c"
    commits = []

    def count(nodes: str) -> int:
        run_fleet(config, store, "sim1", [], exec_command=launch)  # headers cached, shipped
        commits.clear()
        store.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else 0)
        try:
            outcome = run_fleet(config, store, nodes, [], fanout=4, exec_command=launch)
        finally:
            store.conn.set_trace_callback(None)
        assert outcome.exit_code == 0
        return len(commits)

    two, four = count("sim[1-2]"), count("sim[1-4]")
    assert four - two == 2, (two, four)
    rows = store.conn.execute("SELECT host, count(*) FROM module_runs GROUP BY host").fetchall()
    assert dict(rows) == {"sim1": 8, "sim2": 4, "sim3": 2, "sim4": 2}
