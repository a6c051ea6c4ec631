"""Hosts broken in every way the controller meets them, against the real test fleet: each
is reported with its reason within the connect timeout, never hangs the run, never
loses another host's records; a controller killed mid-run leaves nothing a reader shows
running, and a gather files what its hosts ran under it."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ..conftest import Result, write_module
from .test_fleet import HELD, Controller, hosts_of, wait_for


@contextlib.contextmanager
def blackholed(address: tuple[str, int]):
    """A listener whose accept queue is full and never served: the kernel drops every
    further SYN, as a firewall that filters the port does."""
    listener = socket.socket()
    fillers = []
    try:
        listener.bind(address)
        listener.listen(0)
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(address)
            fillers.append(s)
        yield
    finally:
        for s in fillers:
            s.close()
        listener.close()


def ssh_clients(fleet, timeout: float = 30.0) -> list[int]:
    """Waits until no ssh client of this fleet's config runs here; returns those left."""
    end = time.monotonic() + timeout
    while True:
        left = []
        for entry in os.listdir("/proc"):
            with contextlib.suppress(OSError):
                if (
                    entry.isdigit()
                    and str(fleet.ssh_config).encode()
                    in Path(f"/proc/{entry}/cmdline").read_bytes()
                ):
                    left.append(int(entry))
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.1)


# A python3 that runs the zipapp as a Python 3.9 would: it reports that version.
OLD_PYTHON = """#!{interpreter} -I
import runpy, sys
args = [a for a in sys.argv[1:] if a not in ("-I", "-S")]
sys.version_info, sys.version, sys.argv = (3, 9, 18, "final", 0), "3.9.18", args
runpy.run_path(args[0], run_name="__main__")
"""


def test_every_kind_of_broken_host_is_reported_with_its_reason(tmp_path, fleet):
    controller = Controller(tmp_path / "controller", fleet)
    write_module(controller.modules, "a", "", "echo on $(hostname)")
    # The control: the same four hosts, whole, are ok (and get the bundle).
    first = controller("run", "-w", "node[1-4]", "--json")
    assert first.code == 0, first.err
    node1, node2, node3, node4 = fleet.hosts
    node1.sh("mount -o remount,ro /var/lib/corral")  # read-only state directory
    node4.sh("mount -o remount,ro /var/tmp")  # corral needs no /var/tmp: node4 stays ok
    node2.sh("mount --bind /dev/null /usr/bin/python3.11")  # python3 cannot run
    fill = "dd if=/dev/zero of=/var/lib/corral/fill bs=64k 2>/dev/null; true"
    node3.sh(f"mount -o remount,size=$(du -sk /var/lib/corral | cut -f1)k /var/lib/corral; {fill}")
    nodes = f"node[1-4],{fleet.unreachable},{fleet.silent},nothing.invalid"
    with blackholed(fleet.silent_address):
        result = controller("run", "-w", nodes, "--connect-timeout", "2", "--json", timeout=60)
    assert result.code == 4, result.err
    hosts = hosts_of(result)
    said = {h: (v["status"], v["reason"]) for h, v in hosts.items()}
    assert said["node4"] == ("ok", ""), said
    assert said["node1"][0] == "failed" and "Read-only file system" in said["node1"][1], said
    assert said["node2"][0] == "failed" and "python3" in said["node2"][1], said
    assert said["node3"][0] == "failed" and "no space left" in said["node3"][1].lower(), said
    assert said[fleet.unreachable][0] == "unreachable", said
    assert "refused" in said[fleet.unreachable][1], said
    assert said[fleet.silent][0] == "unreachable" and "timed out" in said[fleet.silent][1]
    assert said["nothing.invalid"][0] == "unreachable"
    assert "resolve" in said["nothing.invalid"][1], said
    # The ok host's records are whole; nothing runs anywhere afterwards.
    assert controller.per_host()["node4"] == 2
    assert fleet.wait_idle() == {}
    # A python3 older than 3.11 (this one says it is 3.9): the zipapp says so.
    interpreter = tmp_path / "python3.11"
    shutil.copy2("/usr/bin/python3.11", interpreter)
    old = tmp_path / "old-python3"
    old.write_text(OLD_PYTHON.format(interpreter=interpreter))
    old.chmod(0o755)
    node2.sh(f"umount /usr/bin/python3.11 && mount --bind {old} /usr/bin/python3.11")
    result = controller("run", "-w", "node2", "--json")
    assert result.code == 1, result.err
    node2_said = hosts_of(result)["node2"]
    assert node2_said["status"] == "failed"
    assert "this host has Python 3.9.18; corral needs python3 >= 3.11" in node2_said["reason"]


def test_a_fanout_beyond_the_open_file_limit_is_narrowed_not_fatal(tmp_path, fleet):
    controller = Controller(tmp_path / "controller", fleet)
    write_module(controller.modules, "a")
    nodes = f"{fleet.unreachable}[1-40],node1"

    def limited(n: int) -> Result:
        """The run with at most `n` open files (soft and hard limit)."""
        proc = subprocess.run(
            controller.argv("run", "-w", nodes, "--fanout", "41", "--json"),
            capture_output=True,
            text=True,
            env=controller.env,
            stdin=subprocess.DEVNULL,
            timeout=120,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)),
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    result = limited(96)
    assert result.code == 4, result.err  # not 70: ClusterShell's thread died of EMFILE
    assert "--fanout 41 needs about 228 open files" in result.err, result.err
    assert "this process may open 96 (ulimit -n): 8 hosts at once" in result.err
    statuses = [h["status"] for h in result.json()["hosts"]]
    assert statuses.count("unreachable") == 40 and hosts_of(result)["node1"]["status"] == "ok"
    # The control: with room for the whole window, nothing is narrowed.
    again = limited(1024)
    assert again.code == 4 and "open files" not in again.err, again.err


def test_a_killed_controller_then_a_gather_files_the_runs_under_its_fleet_run(tmp_path, fleet):
    controller = Controller(tmp_path / "controller", fleet)
    write_module(controller.modules, "slow", "", HELD)
    for host in fleet.hosts[:2]:
        host.sh("touch /var/tmp/go")
    earlier = controller("run", "-w", "node[1-2]", "--json")  # an older fleet run of them
    assert earlier.code == 0, earlier.err
    for host in fleet.hosts[:2]:
        host.sh("rm -f /var/tmp/go /var/tmp/slow-started /var/tmp/slow-done")
    proc = controller.start("run", "-w", "node[1-2]", "--json")
    for host in fleet.hosts[:2]:
        wait_for(host, "/var/tmp/slow-started", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    killed = controller.rows("SELECT run_id, status FROM fleet_runs ORDER BY started")[-1]
    assert killed["status"] == "running"  # nothing ended its row ...
    history = [r for r in controller("history", "--json").json() if r.get("kind") == "fleet"]
    assert history[0]["run_id"] == killed["run_id"]
    assert history[0]["status"] == "crashed"  # ... but no reader shows it running
    assert {h["status"] for h in history[0]["hosts"]} == {"lost"}
    status = controller("status").out
    assert f"fleet run {killed['run_id']}" in status and "no longer running" in status
    # The hosts' runs went on; once they end, a gather files them under the killed run.
    assert ssh_clients(fleet, timeout=0) != []  # the control: its ssh clients still wait
    for host in fleet.hosts[:2]:
        host.sh("touch /var/tmp/go")
        wait_for(host, "/var/tmp/slow-done")
    assert fleet.wait_idle() == {}
    assert ssh_clients(fleet) == []  # the killed controller's end with their hosts' runs
    deadline = time.monotonic() + 30
    while True:
        gathered = controller("fleet", "gather", "-w", "node[1-2]", "--json")
        assert gathered.code == 0, gathered.err
        rows = controller.rows(
            "SELECT host, fleet_run, status FROM runs WHERE fleet_run = ? ORDER BY host",
            killed["run_id"],
        )
        if [r["status"] for r in rows] == ["ok", "ok"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(r["host"], r["status"]) for r in rows] == [("node1", "ok"), ("node2", "ok")]
    # The control: the older fleet run keeps its own runs, one per host.
    older = controller.rows(
        "SELECT count(*) AS n FROM runs WHERE fleet_run = ?", earlier.json()["run_id"]
    )
    assert older[0]["n"] == 2
    hosts = controller.rows(
        "SELECT host, run_id FROM fleet_hosts WHERE fleet_run = ? ORDER BY host",
        killed["run_id"],
    )
    assert [h["run_id"].split("/")[0] for h in hosts] == ["node1", "node2"]
    again = controller("fleet", "gather", "-w", "node[1-2]", "--json")
    assert [g["rows"] for g in again.json()] == [0, 0]


def test_a_run_killed_on_its_host_fails_there_with_the_signal_and_leaves_nothing(tmp_path, fleet):
    controller = Controller(tmp_path / "controller", fleet)
    write_module(controller.modules, "slow", "", HELD)
    node1, node2 = fleet.hosts[:2]
    node2.sh("touch /var/tmp/go")  # the control: node2's run ends as it should
    proc = controller.start("run", "-w", "node[1-2]", "--json")
    wait_for(node1, "/var/tmp/slow-started", proc)
    agents = {
        pid: int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        for pid in node1.pids()
        if b"fleet-agent" in Path(f"/proc/{pid}/cmdline").read_bytes()
    }
    run = [pid for pid, parent in agents.items() if parent in agents]
    assert len(agents) == 2 and len(run) == 1, agents  # the agent and its fork, the run
    os.kill(run[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err  # a host failed, none unreachable or lost
    hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert hosts["node1"]["status"] == "failed" and hosts["node1"]["exit_code"] == 137
    assert "corral was killed there by SIGKILL" in hosts["node1"]["reason"], hosts["node1"]
    assert hosts["node2"]["status"] == "ok"
    assert controller.per_host() == {"node2": 1}
    assert fleet.wait_idle() == {}  # the host's watchdog stopped the killed run's module


def test_a_host_that_stalls_mid_run_is_lost_within_a_few_connect_timeouts(tmp_path, fleet):
    """Its sshd stops answering (stopped, as a hung host or a dead link look): ssh's
    keepalives (every connect timeout, three missed) end the connection; the host is
    lost and its run goes on."""
    controller = Controller(tmp_path / "controller", fleet)
    write_module(controller.modules, "slow", "", HELD)
    node1, node2 = fleet.hosts[:2]
    node2.sh("touch /var/tmp/go")  # the control: node2, not stalled, is ok
    proc = controller.start("run", "-w", "node[1-2]", "--connect-timeout", "2", "--json")
    wait_for(node1, "/var/tmp/slow-started", proc)
    stalled = node1.sessions()
    for pid in stalled:
        os.kill(pid, signal.SIGSTOP)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        for pid in stalled:
            os.kill(pid, signal.SIGCONT)
    assert proc.returncode == 4, err
    hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert hosts["node1"]["status"] == "lost", hosts["node1"]
    assert "the run goes on there" in hosts["node1"]["reason"]
    assert hosts["node2"]["status"] == "ok"
    node1.sh("touch /var/tmp/go")
    wait_for(node1, "/var/tmp/slow-done")
    assert fleet.wait_idle() == {}


def test_a_gather_from_a_host_that_stalls_ends_within_a_few_connect_timeouts(tmp_path, fleet):
    controller = Controller(tmp_path / "controller", fleet)
    write_module(controller.modules, "a")
    first = controller("run", "-w", "node[1-2]", "--json")
    assert first.code == 0, first.err
    node1 = fleet.host("node1")
    interpreter = tmp_path / "python3.11"
    shutil.copy2("/usr/bin/python3.11", interpreter)
    slow = tmp_path / "slow-python3"  # node1's gather starts, then waits there
    slow.write_text(
        f'#!/bin/sh\ntouch /var/tmp/export-started\nsleep 30\nexec {interpreter} "$@"\n'
    )
    slow.chmod(0o755)
    node1.sh(f"mount --bind {slow} /usr/bin/python3.11")
    proc = controller.start(
        "fleet", "gather", "-w", "node[1-2]", "--connect-timeout", "2", "--json"
    )
    wait_for(node1, "/var/tmp/export-started", proc)
    stalled = node1.sessions()  # the host stops answering, as a hung host or a dead link
    for pid in stalled:
        os.kill(pid, signal.SIGSTOP)
    try:
        out, err = proc.communicate(timeout=25)  # within the slow python3's own 30 s
    finally:
        for pid in stalled:
            os.kill(pid, signal.SIGCONT)
    assert proc.returncode == 4, err
    gathered = {g["host"]: g for g in json.loads(out)}
    assert gathered["node2"]["status"] == "ok"  # the control: the host beside it answers
    assert gathered["node1"]["status"] != "ok", gathered
