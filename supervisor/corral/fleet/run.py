"""A fleet run from start to end, and a later gather: what `api` calls.

run_fleet: select the modules here (header errors stop everything before any host
is touched), build the bundle, take this machine's run lock, run the controller with
the fleet recorder and the caller's listeners, and return the fleet's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from corral.config import Config
from corral.errors import UsageError
from corral.store import Store


@dataclass
class FleetOutcome:
    run_id: str
    status: str
    exit_code: int
    hosts: list = field(default_factory=list)  # HostResult
    rows: int = 0  # rows gathered into this database
    digest: str = ""

    def as_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "hosts": [h.as_json() for h in self.hosts],
        }


def expand(nodes: str) -> list[str]:
    """ClusterShell node-set syntax (`web[01-20],db1`, `@group`) -> host names."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    try:
        hosts = list(NodeSet(nodes))
    except NodeSetException as exc:
        raise UsageError(f"-w {nodes}: {exc}") from None
    if not hosts:
        raise UsageError(f"-w {nodes!r} names no host")
    return hosts


def run_fleet(
    config: Config,
    store: Store,
    nodes: str,
    args: list[str],
    targets: Iterable[str] = (),
    tags: Iterable[str] = (),
    exclude: Iterable[str] = (),
    listeners: Iterable[Callable] = (),
    fanout: int = 64,
    canary: int = 0,
    max_fail: float | None = None,
    connect_timeout: float = 10.0,
    exec_command: str | None = None,
) -> FleetOutcome:
    """Run the selection on every host of `nodes`; `args` are the hosts' run options."""
    from corral import api
    from corral.fleet import bundle as bundles
    from corral.fleet.controller import Controller, FleetSettings, fleet_exit_code
    from corral.fleet.records import FleetRecorder, finish_fleet_run, start_fleet_run
    from corral.graph import select
    from corral.runlock import RunLock
    from corral.store import module_set_key

    hosts = expand(nodes)
    if canary < 0 or fanout < 1 or (max_fail is not None and not 0 <= max_fail <= 100):
        raise UsageError("--fanout must be at least 1, --canary at least 0, --max-fail 0-100")
    graph, _ = api.load_graph(config, store)
    selection = select(graph, targets, tags, exclude, {})
    paths = [graph.modules[n].path for n in selection.names]
    bundle = bundles.build(paths, api.lib_dir(config), config.config_file, bundles.cache_dir())
    digest = bundle.digest
    tarball: list[bytes] = []

    def packed() -> bytes:
        if not tarball:
            tarball.append(bundle.tarball())
        return tarball[0]

    run_id = api.new_run_id()
    module_set = module_set_key(config.modules)
    settings = FleetSettings(
        run_id,
        args,
        fanout=fanout,
        canary=canary,
        max_fail=max_fail,
        connect_timeout=connect_timeout,
        ssh_options=config.ssh_options,
        exec_command=exec_command,
    )
    with RunLock(config.modules).acquire(None):
        start_fleet_run(store, run_id, nodes, args, digest, module_set)
        recorder = FleetRecorder(store, run_id)
        every = [recorder, *listeners]

        def emit(event) -> None:
            for listener in every:
                listener(event)

        controller = Controller(hosts, settings, digest, packed, emit)
        results = controller.run()
        code = fleet_exit_code(results, controller.stopped)
        status = {0: "ok", 1: "failed", 4: "failed", 5: "warning"}.get(code, "interrupted")
        finish_fleet_run(store, run_id, status, code)
    return FleetOutcome(run_id, status, code, results, recorder.rows, digest)


@dataclass
class Gathered:
    host: str
    status: str  # ok | unreachable | failed
    runs: int = 0
    rows: int = 0
    reason: str = ""

    def as_json(self) -> dict:
        return {
            "host": self.host,
            "status": self.status,
            "runs": self.runs,
            "rows": self.rows,
            "reason": self.reason,
        }


def gather(
    config: Config,
    store: Store,
    nodes: str,
    fanout: int = 64,
    connect_timeout: float = 10.0,
    exec_command: str | None = None,
) -> list[Gathered]:
    """Bring every fleet run each host recorded since this database last heard of it."""
    import json
    import shlex

    from ClusterShell.Event import EventHandler
    from ClusterShell.Task import task_self

    from corral.fleet.agent import PREFIX
    from corral.fleet.controller import SSH_FAILED
    from corral.fleet.records import add_records, gather_since
    from corral.fleet.remote import export_command

    hosts = expand(nodes)
    out = {h: Gathered(h, "unreachable") for h in hosts}
    said: dict[str, str] = {}
    done: set[str] = set()

    class Handler(EventHandler):
        def ev_read(self, worker, node, sname, msg):
            host, line = str(node), msg.decode("utf-8", "replace")
            if sname == "stderr" or not line.startswith(PREFIX):
                said[host] = line.strip() or said.get(host, "")
                return
            kind, _, payload = line[len(PREFIX) :].partition(" ")
            if kind == "rows":
                out[host].rows += add_records(store, host, json.loads(payload), None)
                out[host].runs += 1
            elif kind == "result":
                done.add(host)

        def ev_hup(self, worker, node, rc):
            host = str(node)
            g = out[host]
            if host in done:
                g.status = "ok"
            elif rc == SSH_FAILED:
                g.status, g.reason = "unreachable", said.get(host, "ssh could not connect")
            else:
                g.status, g.reason = "failed", said.get(host, f"exit {rc}")

    task = task_self()  # runs in this thread
    task.set_info("fanout", fanout)
    task.set_info("connect_timeout", connect_timeout)
    if config.ssh_options:
        task.set_info("ssh_options", config.ssh_options)
    for host in hosts:
        script = export_command(gather_since(store, host))
        if exec_command is not None:
            task.shell(
                f"{exec_command} {shlex.quote(script.replace('%', '%%'))}",
                nodes=host,
                handler=Handler(),
                stderr=True,
                stdin=False,
                remote=False,
            )
        else:
            task.shell(script, nodes=host, handler=Handler(), stderr=True, stdin=False)
    task.resume()
    return [out[h] for h in hosts]
