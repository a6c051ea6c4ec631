"""The fleet controller: one ClusterShell task, each host one unit of work.

Plan apart from execution, as for modules: `Rollout` decides which host may start
now (the fan-out window, the canary gate, the --max-fail refusal) and what the rest
become; `Controller` starts hosts through ClusterShell (ssh, or its exec worker for
simulated hosts), reads their `corral-fleet:` lines and classifies how each ended.
Nothing here touches the database: records travel to listeners as events.
"""

from __future__ import annotations

import json
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ClusterShell.Event import EventHandler
from ClusterShell.Task import task_self

from corral.fleet.agent import PREFIX
from corral.fleet.remote import start_command

# Host statuses (design.md, "Fleets").
OK, FAILED, UNREACHABLE, LOST, LOCKED, SKIPPED = (
    "ok",
    "failed",
    "unreachable",
    "lost",
    "locked",
    "skipped",
)
PENDING, RUNNING = "pending", "running"
HOST_PROBLEMS = frozenset({UNREACHABLE, LOST, LOCKED, SKIPPED})  # fleet exit code 4
SSH_FAILED = 255
WARNED = 5  # a run's exit code: every module completed, one or more with a warning
TICK = 0.5  # seconds between status-line refreshes


@dataclass
class HostResult:
    """One host in a fleet run: how it ended, and what it is doing while it runs."""

    host: str
    status: str = PENDING
    exit_code: int | None = None
    reason: str = ""
    run: dict | None = None
    started: float | None = None  # wall clock
    ended: float | None = None
    since: float = 0.0  # monotonic start, for the live view
    connected: bool = False
    shipped: bool = False
    need_ship: bool = False
    result: dict | None = None
    error: str = ""
    stderr: deque = field(default_factory=lambda: deque(maxlen=5))
    running: dict[str, float] = field(default_factory=dict)  # module -> monotonic start
    done_modules: int = 0
    failed_modules: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "host": self.host,
            "status": self.status,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "run": self.run,
        }


# Events for listeners (the live view, the recorder) ------------------------------------


@dataclass
class HostStarted:
    host: HostResult


@dataclass
class HostProgress:
    host: HostResult
    module: str
    attempt: int
    status: str
    duration_s: float | None


@dataclass
class HostRecords:
    """One run of a host with its attempt rows, as the host recorded them."""

    host: str
    record: dict


@dataclass
class HostFinished:
    host: HostResult


@dataclass
class FleetTick:
    hosts: dict[str, HostResult]


FleetEvent = HostStarted | HostProgress | HostRecords | HostFinished | FleetTick


@dataclass(frozen=True)
class FleetSettings:
    key: str  # the fleet run's id: names each host's run directory
    args: list[str]  # every host's `corral run` options and targets
    fanout: int = 64
    canary: int = 0
    max_fail: float | None = None  # percent
    connect_timeout: float = 10.0
    ssh_options: str | None = None
    # Simulated hosts: a local command (ClusterShell's exec worker, %h is the host)
    # that runs the host's shell script given as its last argument.
    exec_command: str | None = None


class Rollout:
    """Which hosts may start now, and which never will (and why).

    The canary hosts go first and alone; the rest are released only if every canary
    ended ok. Once more than --max-fail percent of the finished hosts failed, nothing
    new starts. Pure: no processes, no clock.
    """

    def __init__(self, hosts: list[str], fanout: int, canary: int, max_fail: float | None):
        self.fanout = max(1, fanout)
        self.max_fail = max_fail
        self.canary = hosts[: max(0, canary)]
        self.gated = bool(self.canary)
        self.ready = deque(self.canary if self.gated else hosts)
        self.queue = deque(hosts[len(self.canary) :] if self.gated else ())  # behind the gate
        self.running: set[str] = set()
        self.finished: dict[str, str] = {}  # host -> status
        self.refused: str | None = None

    def take(self) -> list[str]:
        """Hosts to start now, within the window; [] when none may."""
        out = []
        while self.ready and len(self.running) < self.fanout and self.refused is None:
            host = self.ready.popleft()
            self.running.add(host)
            out.append(host)
        return out

    def done(self, host: str, status: str) -> list[tuple[str, str]]:
        """Record how `host` ended; returns (host, reason) for every host that will now
        never start."""
        self.running.discard(host)
        self.finished[host] = status
        skipped: list[tuple[str, str]] = []
        if self.gated and all(h in self.finished for h in self.canary):
            self.gated = False
            bad = [h for h in self.canary if self.finished[h] != OK]
            if bad:
                reason = "canary " + ", ".join(f"{h} {self.finished[h]}" for h in bad)
                skipped += self.refuse(f"not started: {reason}")
            else:
                self.ready.extend(self.queue)
                self.queue.clear()
        failed = sum(s != OK for s in self.finished.values())
        if (
            self.max_fail is not None
            and self.refused is None
            and failed * 100 > self.max_fail * len(self.finished)
        ):
            skipped += self.refuse(
                f"not started: --max-fail {self.max_fail:g}%: {failed} of "
                f"{len(self.finished)} finished hosts failed"
            )
        return skipped

    def refuse(self, reason: str) -> list[tuple[str, str]]:
        self.refused = reason
        left = [*self.ready, *self.queue]
        self.ready.clear()
        self.queue.clear()
        return [(h, reason) for h in left]

    def more_to_do(self) -> bool:
        return bool(self.running or self.ready)


class Stopped(Exception):
    """The controller got SIGINT or SIGTERM."""

    def __init__(self, signum: int):
        self.signum = signum


class Controller:
    """Runs one fleet run; `run()` returns every host's result, in the order given."""

    def __init__(
        self,
        hosts: list[str],
        settings: FleetSettings,
        digest: str,
        tarball: Callable[[], bytes],
        emit: Callable[[FleetEvent], None],
    ):
        self.settings = settings
        self.digest = digest
        self.tarball = tarball
        self.emit = emit
        self.results = {h: HostResult(h) for h in hosts}
        self.rollout = Rollout(hosts, settings.fanout, settings.canary, settings.max_fail)
        self.stopped: int | None = None
        self.task = None

    def run(self) -> list[HostResult]:
        task = self.task = task_self()
        task.set_info("fanout", self.rollout.fanout)
        task.set_info("connect_timeout", self.settings.connect_timeout)
        keepalive = max(1, int(self.settings.connect_timeout))
        task.set_info(
            "ssh_options",
            " ".join(
                filter(
                    None,
                    [
                        self.settings.ssh_options,
                        f"-oServerAliveInterval={keepalive} -oServerAliveCountMax=3",
                    ],
                )
            ),
        )
        handler = _Handler(self)
        task.timer(TICK, handler, interval=TICK, autoclose=True)
        old = {s: signal.signal(s, _raise_stopped) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._fill()
            task.resume()
        except Stopped as exc:
            self.stopped = exc.signum
            task.abort()  # kills the ssh clients; their hosts' runs go on
            for host in list(self.rollout.running):
                r = self.results[host]
                if r.status == RUNNING:  # its ssh client was not reaped by the abort
                    status, reason = self._classify(r, None)
                    self._end(r, status, None, reason)
            for host, reason in self.rollout.refuse("not started: the controller was interrupted"):
                self._end(self.results[host], SKIPPED, None, reason)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return list(self.results.values())

    # starting --------------------------------------------------------------------------

    def _fill(self) -> None:
        for host in self.rollout.take():
            r = self.results[host]
            r.status, r.started, r.since = RUNNING, time.time(), time.monotonic()
            self.emit(HostStarted(r))
            self._start(host, ship=False)

    def _start(self, host: str, ship: bool) -> None:
        script = start_command(self.digest, self.settings.key, self.settings.args, ship)
        handler = _Handler(self)
        if self.settings.exec_command is not None:
            import shlex

            # ClusterShell's exec worker expands %h in the command: the script's own % stay
            command = f"{self.settings.exec_command} {shlex.quote(script.replace('%', '%%'))}"
            worker = self.task.shell(
                command, nodes=host, handler=handler, stderr=True, remote=False
            )
        else:
            worker = self.task.shell(script, nodes=host, handler=handler, stderr=True)
        if ship:
            self.results[host].shipped = True
            worker.write(self.tarball())
        worker.set_write_eof()

    # reading ---------------------------------------------------------------------------

    def on_line(self, host: str, stream: str, line: str) -> None:
        r = self.results[host]
        if stream == "stderr" or not line.startswith(PREFIX):
            if line.strip():
                r.stderr.append(line.strip())
            return
        kind, _, payload = line[len(PREFIX) :].partition(" ")
        try:
            value = json.loads(payload) if payload else None
        except ValueError:
            r.stderr.append(line.strip())
            return
        if kind == "need":
            r.need_ship = True
        elif kind == "hello":
            r.connected = True
        elif kind == "event":
            self._progress(r, value)
        elif kind == "result":
            r.result = value
        elif kind == "rows":
            self.emit(HostRecords(host, value))
        elif kind == "error":
            r.error = str(value)

    def _progress(self, r: HostResult, event: dict) -> None:
        name, status = event["m"], event["s"]
        if status == RUNNING:
            r.running[name] = time.monotonic()
        else:
            r.running.pop(name, None)
            r.done_modules += 1
            if status not in ("ok", "skipped", "warning"):
                r.failed_modules.append(name)
        self.emit(HostProgress(r, name, event["a"], status, event.get("d")))

    def on_exit(self, host: str, rc: int | None) -> None:
        r = self.results[host]
        if r.need_ship and not r.shipped and r.result is None and not r.connected:
            self._start(host, ship=True)
            return
        status, reason = self._classify(r, rc)
        self._end(r, status, r.exit_code if r.result is not None else rc, reason)
        for skipped, why in self.rollout.done(host, status):
            self._end(self.results[skipped], SKIPPED, None, why)
        if self.stopped is None:
            self._fill()

    def _classify(self, r: HostResult, rc: int | None) -> tuple[str, str]:
        said = r.stderr[-1] if r.stderr else ""
        if r.result is not None:
            r.exit_code = code = r.result.get("rc")
            r.run = r.result.get("run")
            run_err = [x for x in r.result.get("stderr") or [] if x.strip()]
            if code == 0:
                return OK, ""
            if code == WARNED and r.run is not None:  # all completed, some warned
                warned = [m["name"] for m in r.run.get("modules", []) if m["status"] == "warning"]
                return OK, "warning: " + ", ".join(warned)
            if code == 3:
                return LOCKED, (run_err[-1] if run_err else "another corral run holds the lock")
            if code == 1 and r.run is not None:
                bad = [m for m in r.run.get("modules", []) if m["status"] not in ("ok", "warning")]
                return FAILED, "; ".join(
                    f"{m['name']} {m['status']}" + (f" ({m['reason']})" if m.get("reason") else "")
                    for m in bad
                )
            return FAILED, (run_err[-1] if run_err else f"corral exited {code}")
        if self.stopped is not None:
            return LOST, (
                "the controller was interrupted; the run goes on there (corral fleet gather)"
                if r.connected
                else "the controller was interrupted before the host answered; it may have "
                "started (corral fleet gather)"
            )
        if r.connected:
            return LOST, (
                f"connection lost while running ({said or f'exit {rc}'}); the run goes on "
                "there: corral fleet gather brings its records"
            )
        if r.error:
            return FAILED, r.error
        if rc == SSH_FAILED or rc is None:
            return UNREACHABLE, said or "ssh could not connect"
        return FAILED, f"corral could not start (exit {rc}): {said}" if said else f"exit {rc}"

    def _end(self, r: HostResult, status: str, code: int | None, reason: str) -> None:
        r.status, r.exit_code, r.reason = status, code, reason
        r.ended = time.time()
        r.running.clear()
        self.emit(HostFinished(r))

    def tick(self) -> None:
        self.emit(FleetTick(self.results))


class _Handler(EventHandler):
    """ClusterShell's callbacks, handed to the controller."""

    def __init__(self, controller: Controller):
        super().__init__()
        self.c = controller

    def ev_read(self, worker, node, sname, msg):
        text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
        self.c.on_line(str(node), sname, text)

    def ev_hup(self, worker, node, rc):
        self.c.on_exit(str(node), rc)

    def ev_timer(self, timer):
        self.c.tick()


def _raise_stopped(signum, frame):
    raise Stopped(signum)


def fleet_exit_code(results: list[HostResult], stopped: int | None = None) -> int:
    """0 all ok; 4 a host unreachable, lost, locked or skipped (wins over 1); 1 a module
    failed somewhere; 5 all completed and a module warned somewhere (as a local run);
    128+N when the controller was stopped by signal N."""
    if stopped is not None:
        return 128 + stopped
    if any(r.status in HOST_PROBLEMS for r in results):
        return 4
    if any(r.status != OK for r in results):
        return 1
    if any(r.exit_code == WARNED for r in results):
        return WARNED
    return 0
