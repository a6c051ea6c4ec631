"""`corral run -w` against the real test fleet: statuses, exit codes, records, gathering."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import Corral, Result, db_rows, write_module


def fails_on(host: str) -> str:
    """A module body that fails on `host` only (each host has its own hostname)."""
    return f'if [[ $(hostname) == {host} ]]; then echo "broken on {host}"; exit 3; fi'


class Controller(Corral):
    """The controller's side: a modules dir, a config naming the ssh_config, a database."""

    def __init__(self, root: Path, fleet, ssh_options: str | None = None):
        super().__init__(
            root / "modules",
            root / "controller.db",
            {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")},
        )
        self.root = root
        self.fleet = fleet
        self.modules.mkdir(parents=True)
        options = ssh_options if ssh_options is not None else f"-F {fleet.ssh_config}"
        (root / "corral.yaml").write_text(f'ssh_options: "{options}"\nconnect_timeout: 5\n')

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )

    def rows(self, sql: str, *args) -> list[dict]:
        return db_rows(self.db, sql, *args)

    def per_host(self) -> dict[str, int]:
        return {
            r["host"]: r["n"]
            for r in self.rows("SELECT host, count(*) AS n FROM module_runs GROUP BY host")
        }


@pytest.fixture
def controller(tmp_path, fleet):
    return Controller(tmp_path / "controller", fleet)


COUNT = (
    "python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1])"
    '.execute("SELECT count(*) FROM module_runs").fetchone()[0])\''
)


def bundles(host) -> dict[str, int]:
    """The bundles unpacked on a host, with their directory's inode."""
    out = host.sh("stat -c '%n %i' /var/lib/corral/fleet/*/.complete").stdout.split("\n")
    return dict(line.rsplit(" ", 1) for line in out if line)


def hosts_of(result: Result) -> dict[str, dict]:
    return {h["host"]: h for h in result.json()["hosts"]}


# A module that runs until the test lets it end (/var/tmp/go on its host; at most 30 s),
# so what the test does meanwhile never races a sleep.
HELD = (
    "touch /var/tmp/slow-started\n"
    "for _ in {1..300}; do [[ -e /var/tmp/go ]] && break; sleep 0.1; done\n"
    "touch /var/tmp/slow-done"
)


def wait_for(host, path: str, proc=None, timeout: float = 30.0) -> None:
    """Until `path` exists on `host` (and `proc`, when given, still runs)."""
    end = time.monotonic() + timeout
    while host.sh(f"test -e {path}").returncode != 0:
        assert proc is None or proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{path} never appeared on {host.name}"
        time.sleep(0.1)


def test_fleet_run_statuses_exit_codes_records_and_gather(controller, fleet):
    write_module(controller.modules, "base", "tags: web", "echo base on $(hostname)")
    write_module(controller.modules, "check", "requires: base\ntags: web", fails_on("node2"))
    write_module(controller.modules, "other", "tags: db", "true")
    nodes = ",".join([*fleet.names, fleet.unreachable])

    result = controller("run", "-w", nodes, "--json", "-j", "1", "--tag", "web")

    assert result.code == 4, result.err  # a host unreachable wins over a module failed
    fleet_run = result.json()
    assert fleet_run["status"] == "failed" and fleet_run["exit_code"] == 4
    hosts = hosts_of(result)
    assert set(hosts) == {*fleet.names, fleet.unreachable}
    ghost = hosts.pop(fleet.unreachable)
    assert ghost["status"] == "unreachable" and ghost["run"] is None
    assert "Connection refused" in ghost["reason"]
    assert hosts["node2"]["status"] == "failed" and hosts["node2"]["exit_code"] == 1
    assert "check failed" in hosts["node2"]["reason"]
    for name, host in hosts.items():
        run = host["run"]
        assert run["jobs"] == 1  # run options reach every host
        assert [m["name"] for m in run["modules"]] == ["base", "check"]  # --tag web
        if name != "node2":
            assert host["status"] == "ok" and host["exit_code"] == 0 and host["reason"] == ""
    # Every host's attempts, and its run, are in the controller's database.
    assert controller.per_host() == dict.fromkeys(fleet.names, 2)
    runs = controller.rows("SELECT run_id, host, status, fleet_run FROM runs ORDER BY host")
    assert [r["host"] for r in runs] == fleet.names
    assert all(r["run_id"].startswith(f"{r['host']}/") for r in runs)
    assert {r["fleet_run"] for r in runs} == {fleet_run["run_id"]}
    assert [r["status"] for r in runs] == ["ok", "failed", "ok", "ok"]
    # Each host ran its own corral and kept its own records.
    for host in fleet.hosts:
        local = host.sh(f"{COUNT} /var/lib/corral/corral.db")
        assert local.stdout.strip() == "2", local.stderr
    assert fleet.wait_idle() == {}

    # The report's fleet section: hosts x modules, the failing hosts.
    docs = controller("docs", "--out", str(controller.root / "report"))
    assert docs.code == 0, docs.err
    report = (controller.root / "report" / "README.md").read_text()
    assert f"## Fleet run {fleet_run['run_id']}" in report
    assert "| node2 | ok " in report and "failed" in report.split("| node2 |")[1].split("\n")[0]
    failing = report.split("## Failing hosts")[1].split("##")[0]
    assert "| node2 | failed |" in failing and f"| {fleet.unreachable} | unreachable |" in failing
    assert (controller.root / "report" / "fleet.svg").is_file()

    # A second gather adds nothing; history answers per host.
    before = controller.rows("SELECT count(*) AS n FROM module_runs")[0]["n"]
    gathered = controller("fleet", "gather", "-w", ",".join(fleet.names), "--json")
    assert gathered.code == 0, gathered.err
    assert [g["rows"] for g in gathered.json()] == [0] * len(fleet.names)
    assert controller.rows("SELECT count(*) AS n FROM module_runs")[0]["n"] == before
    history = controller("history", "--host", "node2", "--json")
    assert [r["host"] for r in history.json()] == ["node2"]
    attempts = controller("history", "check", "--host", "node3", "--json").json()
    assert [(a["host"], a["status"]) for a in attempts] == [("node3", "ok")]

    # Control: without the unreachable host the same failure is exit 1; the hosts
    # already have the bundle, so nothing is copied again.
    shipped = {h.name: bundles(h) for h in fleet.hosts}
    assert all(len(b) == 1 for b in shipped.values()), shipped
    again = controller("run", "-w", ",".join(fleet.names), "--json", "--tag", "web")
    assert again.code == 1, again.err
    assert {h["status"] for h in again.json()["hosts"]} == {"ok", "failed"}
    assert {h.name: bundles(h) for h in fleet.hosts} == shipped
    ok = controller("run", "-w", "node1,node3", "--json", "other")
    assert ok.code == 0, ok.err
    assert len(bundles(fleet.host("node1"))) == 2  # another selection is another bundle
    assert fleet.wait_idle() == {}


def test_ssh_options_come_from_the_config(tmp_path, fleet):
    blind = Controller(tmp_path / "blind", fleet, ssh_options="-oBatchMode=yes")
    write_module(blind.modules, "a")
    result = blind("run", "-w", "node1", "--json")
    assert result.code == 4
    assert hosts_of(result)["node1"]["status"] == "unreachable"
    assert "node1" in hosts_of(result)["node1"]["reason"]


def test_canary_gate(controller, fleet):
    write_module(controller.modules, "a", "", fails_on("node1"))
    result = controller("run", "-w", "node[1-4]", "--canary", "1", "--json")
    assert result.code == 4, result.err
    hosts = hosts_of(result)
    assert hosts["node1"]["status"] == "failed"
    for name in ("node2", "node3", "node4"):
        assert hosts[name]["status"] == "skipped"
        assert "canary node1 failed" in hosts[name]["reason"]
        assert hosts[name]["run"] is None
        assert fleet.host(name).sh("ls /var/lib/corral").stdout.strip() == ""
    assert controller.per_host() == {"node1": 1}
    # Control: a canary that passes releases the rest.
    write_module(controller.modules, "a")
    result = controller("run", "-w", "node[1-4]", "--canary", "2", "--json")
    assert result.code == 0, result.err
    assert {h["status"] for h in result.json()["hosts"]} == {"ok"}


@pytest.mark.parametrize(
    ("max_fail", "statuses"), [(40, "ok failed skipped skipped"), (60, "ok failed ok ok")]
)
def test_max_fail(controller, fleet, max_fail, statuses):
    write_module(controller.modules, "a", "", fails_on("node2"))
    result = controller(
        "run", "-w", "node[1-4]", "--fanout", "1", "--max-fail", str(max_fail), "--json"
    )
    assert result.code == (4 if "skipped" in statuses else 1), result.err
    hosts = hosts_of(result)
    assert " ".join(hosts[n]["status"] for n in fleet.names) == statuses
    for host in hosts.values():
        if host["status"] == "skipped":
            assert f"--max-fail {max_fail}%: 1 of 2 finished hosts failed" in host["reason"]


def test_lost_host_finishes_there_and_a_gather_brings_its_records(controller, fleet):
    write_module(controller.modules, "slow", "", HELD)
    write_module(controller.modules, "after", "requires: slow", "true")
    fleet.host("node2").sh("touch /var/tmp/go")
    proc = controller.start("run", "-w", "node1,node2", "--json")
    node1 = fleet.host("node1")
    wait_for(node1, "/var/tmp/slow-started", proc)
    for pid in node1.sessions():  # the link drops: sshd's session for the controller dies
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 4, err
    hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert hosts["node1"]["status"] == "lost", hosts["node1"]
    assert "fleet gather" in hosts["node1"]["reason"]
    assert hosts["node2"]["status"] == "ok"
    assert controller.per_host() == {"node2": 2}
    # The modules finish on the lost host all the same.
    node1.sh("touch /var/tmp/go")
    wait_for(node1, "/var/tmp/slow-done")
    assert fleet.wait_idle() == {}
    gathered = controller("fleet", "gather", "-w", "node1", "--json")
    assert gathered.code == 0, gathered.err
    assert gathered.json()[0]["rows"] >= 2
    rows = controller.rows("SELECT module, status FROM module_runs WHERE host = 'node1'")
    assert sorted((r["module"], r["status"]) for r in rows) == [("after", "ok"), ("slow", "ok")]
    again = controller("fleet", "gather", "-w", "node1", "--json")
    assert again.json()[0]["rows"] == 0
    assert controller.per_host() == {"node1": 2, "node2": 2}


def test_a_host_whose_lock_is_held_is_locked(tmp_path, controller, fleet):
    # Runs until the test lets it end (at most 30 s).
    body = (
        "touch /var/tmp/slow-started\n"
        "for _ in {1..300}; do [[ -e /var/tmp/go ]] && exit; sleep 0.1; done"
    )
    write_module(controller.modules, "slow", "", body)
    twin = Controller(tmp_path / "twin", fleet)  # same modules, so the same bundle
    write_module(twin.modules, "slow", "", body)
    first = controller.start("run", "-w", "node3", "--json")
    node3 = fleet.host("node3")
    end = time.monotonic() + 30
    while node3.sh("test -e /var/tmp/slow-started").returncode != 0:
        assert first.poll() is None and time.monotonic() < end, first.communicate()
        time.sleep(0.1)
    fleet.host("node4").sh("touch /var/tmp/go")  # node4 is free: its run ends at once
    second = twin("run", "-w", "node3,node4", "--json")
    assert second.code == 4, second.err
    hosts = hosts_of(second)
    assert hosts["node3"]["status"] == "locked"
    assert "another corral run" in hosts["node3"]["reason"]
    assert hosts["node4"]["status"] == "ok"
    node3.sh("touch /var/tmp/go")
    out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    assert fleet.wait_idle() == {}


def test_a_host_that_never_answers_is_unreachable_within_the_connect_timeout(controller, fleet):
    write_module(controller.modules, "a")
    with socket.socket() as listener:  # the kernel accepts; nobody ever speaks SSH
        listener.bind(fleet.silent_address)
        listener.listen(8)
        result = controller(
            "run", "-w", f"{fleet.silent},node1", "--connect-timeout", "2", "--json", timeout=30
        )
    assert result.code == 4, result.err
    hosts = hosts_of(result)
    assert hosts["node1"]["status"] == "ok"
    assert hosts[fleet.silent]["status"] == "unreachable"
    assert "timed out" in hosts[fleet.silent]["reason"]


@pytest.mark.parametrize("stop", [signal.SIGINT, None])
def test_an_interrupted_controller_starts_no_new_host_and_the_running_one_goes_on(
    controller, fleet, stop
):
    write_module(controller.modules, "slow", "", HELD)
    proc = controller.start("run", "-w", "node[1-2]", "--fanout", "1", "--json")
    node1 = fleet.host("node1")
    wait_for(node1, "/var/tmp/slow-started", proc)
    if stop is not None:
        proc.send_signal(stop)
    else:  # control: the same run, not interrupted, its modules let go
        for name in ("node1", "node2"):
            fleet.host(name).sh("touch /var/tmp/go")
    out, err = proc.communicate(timeout=30)
    hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
    if stop is None:
        assert proc.returncode == 0, err
        assert [hosts[n]["status"] for n in ("node1", "node2")] == ["ok", "ok"]
        return
    assert proc.returncode == 128 + stop, err
    assert hosts["node1"]["status"] == "lost" and "interrupted" in hosts["node1"]["reason"]
    assert hosts["node2"]["status"] == "skipped", hosts["node2"]
    assert "interrupted" in hosts["node2"]["reason"]
    assert fleet.host("node2").sh("ls /var/lib/corral").stdout.strip() == ""
    # node1's run goes on there (detached), and nothing is left running afterwards.
    node1.sh("touch /var/tmp/go")
    wait_for(node1, "/var/tmp/slow-done")
    assert fleet.wait_idle() == {}
