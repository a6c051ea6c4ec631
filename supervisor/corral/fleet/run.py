"""A fleet run from start to end, and a later gather: what `api` calls.

run_fleet: select the modules here (header errors stop everything before any host
is touched), build the bundle, take this machine's run lock, run the hosts through
the real scheduler on the fleet backend with the fleet recorder and the caller's
listeners, and return the fleet's outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from corral.config import Config
from corral.errors import UsageError
from corral.store import Store
from corral.units import plural


@dataclass
class FleetOutcome:
    """How a fleet run ended: its status, exit code and hosts, the rows gathered and the
    bundle's digest."""

    run_id: str
    status: str
    exit_code: int
    hosts: list = field(default_factory=list)  # HostResult
    rows: int = 0  # rows gathered into this database
    digest: str = ""
    notices: list = field(default_factory=list)  # events.Notice: what the user should know

    def as_json(self) -> dict:
        """The fleet run as `run -w --json` gives it: its id, status, exit code and each host's
        outcome."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "exit_code": self.exit_code,
            "hosts": [h.as_json() for h in self.hosts],
        }


MAX_HOSTS = 1_000_000  # a node set beyond this is a typo (web[1-10000000]), not a fleet


def clustershell_as_root() -> None:
    """Call before ClusterShell is imported. It reads defaults.conf (which names the ssh
    it runs) and groups.conf (whose upcalls are shell commands it runs to resolve an
    `@group`) from per-user places too: ~/.local/etc/clustershell and
    $XDG_CONFIG_HOME/clustershell (~/.config/clustershell). As root under another
    user's HOME (sudo keeping it) those are theirs, and what they wrote would run as
    root: then ClusterShell is given root's own home instead (HOME, XDG_CONFIG_HOME).
    A $CLUSTERSHELL_CFGDIR another user controls is refused (UnsafePath)."""
    import os
    import pwd

    from corral import safepath

    if not safepath.strict():
        return
    given = os.environ.get("CLUSTERSHELL_CFGDIR")
    if given:
        safepath.probe_dirs(given)
    home = os.path.expanduser("~")
    config = os.environ.get("XDG_CONFIG_HOME", os.path.join(home, ".config"))
    try:
        for place in (f"{home}/.local/etc/clustershell", f"{config}/clustershell"):
            safepath.probe_dirs(place)
    except (OSError, safepath.UnsafePath):
        os.environ["HOME"] = pwd.getpwuid(0).pw_dir
        os.environ.pop("XDG_CONFIG_HOME", None)


def expand(nodes: str) -> list[str]:
    """ClusterShell node-set syntax (`web[01-20],db1`, `@group`) -> host names; a
    UsageError for a node set that is malformed, names no host or more than MAX_HOSTS
    (counted before any name is made: a range of billions would fill the memory)."""
    clustershell_as_root()
    from ClusterShell.NodeSet import NodeSet, NodeSetException

    try:
        nodeset = NodeSet(nodes)
        count = len(nodeset)
    except NodeSetException as exc:
        raise UsageError(f"-w {nodes}: {exc}") from None
    except (AssertionError, OverflowError, MemoryError):  # RangeSet's "range too large"
        raise UsageError(f"-w {nodes}: a range too large for a node set") from None
    if count > MAX_HOSTS:
        raise UsageError(
            f"-w {nodes} names {plural(count, 'host', grouped=True)}; a fleet run takes at most "
            f"{MAX_HOSTS:,}"
        )
    if not count:
        group = (
            " (an @group is defined in ClusterShell's groups.conf or groups.d)"
            if "@" in nodes
            else ""
        )
        raise UsageError(f"-w {nodes!r} names no host{group}")
    return list(nodeset)


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
    """Run the selection on every host of `nodes`; `args` are the hosts' run options.

    The real scheduler runs the hosts through the fleet backend: the fan-out is its
    --jobs, the canary a first wave, the canary gate and --max-fail its stop policy
    (corral.fleet.rollout)."""
    from corral import api
    from corral.backends import Place, open_executor
    from corral.backends.fleet import FleetTarget, fanout_window
    from corral.events import Notice
    from corral.fleet import bundle as bundles
    from corral.fleet.hosts import HostResult, fleet_exit_code
    from corral.fleet.records import (
        FleetRecorder,
        abandon_fleet_run,
        finish_fleet_run,
        start_fleet_run,
    )
    from corral.fleet.rollout import RolloutPolicy, host_plan
    from corral.graph import select
    from corral.recovery import end_dead_fleet_runs
    from corral.runlock import RunLock
    from corral.scheduler import RunSettings, Scheduler
    from corral.store import module_set_key
    from corral.throttle import Jobs

    hosts = expand(nodes)
    if canary < 0 or fanout < 1 or (max_fail is not None and not 0 <= max_fail <= 100):
        raise UsageError("--fanout must be at least 1, --canary at least 0, --max-fail 0-100")
    fanout, narrowed = fanout_window(min(fanout, len(hosts)))
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
    results = {h: HostResult(h) for h in hosts}
    with RunLock(config.modules).acquire(None):
        notices = [Notice(m, warning=True) for m in end_dead_fleet_runs(store, module_set)]
        if narrowed:
            notices.append(Notice(narrowed, warning=True))
        start_fleet_run(store, run_id, nodes, args, digest, module_set, hosts)
        try:
            recorder = FleetRecorder(store, run_id)
            every = [recorder, *listeners]

            def emit(event) -> None:
                for listener in every:
                    listener(event)

            target = FleetTarget(
                run_id,
                args,
                digest,
                packed,
                results,
                emit,
                fanout=fanout,
                connect_timeout=connect_timeout,
                ssh_options=config.ssh_options,
                exec_command=exec_command,
            )
            host_graph, host_selection = host_plan(hosts, canary)
            policy = RolloutPolicy(hosts[:canary], max_fail, lambda h: results[h].status)
            settings = RunSettings(run_id, Jobs(fanout), stop_when=policy)
            with open_executor("fleet", Place(config, run_id, target=target)) as executor:
                scheduler = Scheduler(
                    host_graph, host_selection, settings, executor, _Skips(results, emit)
                )
                scheduler.run()
            code = fleet_exit_code(list(results.values()), scheduler.stop_signal)
            status = {0: "ok", 1: "failed", 4: "failed", 5: "warning"}.get(code, "interrupted")
            finish_fleet_run(store, run_id, status, code)
        except BaseException as exc:  # the controller failed: its row never stays running
            abandon_fleet_run(store, run_id, exc)
            raise
    hosts_ = list(results.values())
    return FleetOutcome(run_id, status, code, hosts_, recorder.rows, digest, notices=notices)


class _Skips:
    """The scheduler's listener on a fleet run: of its events, only a host it will never
    start is news to the fleet's listeners (the fleet backend tells the rest, in the
    fleet's terms; hosts are never recorded as module attempts)."""

    def __init__(self, results: dict, emit: Callable):
        self.results = results
        self.emit = emit

    def __call__(self, event) -> None:
        from corral.events import ModuleSkipped
        from corral.fleet.hosts import SKIPPED, HostFinished

        if isinstance(event, ModuleSkipped):
            r = self.results[event.name]
            r.status, r.exit_code, r.reason, r.ended = SKIPPED, None, event.reason, time.time()
            self.emit(HostFinished(r))


@dataclass
class Gathered:
    """What `fleet gather` brought back from one host."""

    host: str
    status: str  # ok | unreachable | failed
    runs: int = 0
    rows: int = 0
    reason: str = ""

    def as_json(self) -> dict:
        """What was gathered from the host, as `fleet gather --json` gives it."""
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

    clustershell_as_root()
    from ClusterShell.Event import EventHandler
    from ClusterShell.Task import task_self

    from corral.backends.fleet import configure, fanout_window
    from corral.fleet.agent import PREFIX
    from corral.fleet.hosts import SSH_FAILED
    from corral.fleet.records import add_records, gather_since
    from corral.fleet.remote import export_command

    hosts = expand(nodes)
    fanout, _ = fanout_window(min(fanout, len(hosts)))
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
    configure(task, fanout, connect_timeout, config.ssh_options)  # as a run's: keepalives
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
