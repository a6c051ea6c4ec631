"""The fleet backend: an attempt is a whole `corral run` on one host, over ClusterShell.

`corral run -w NODESET` drives the real `Scheduler` over the hosts of the node set
(`corral.fleet.run` builds the host plan: the canary hosts a first wave, --max-fail a
stop policy, the fan-out the job limit). Each `start` is one host: ClusterShell runs
`remote.start_command` there over the user's OpenSSH (or, for simulated hosts, its
exec worker), which starts the host's own corral detached; the host's agent answers
with `corral-fleet:` lines (progress, the run's JSON object, its records) that this
backend turns into the fleet's events (`corral.fleet.hosts`) for the live view and
the recorder. When the connection closes, `hosts.classify` says how the host ended
(ok, failed, unreachable, lost, locked), and the scheduler gets one `AttemptResult`:
ok, warning, failed, or the stop's cause.

ClusterShell's engine runs in a thread of its own, and only there: the main thread
sends it requests through a ClusterShell port (start a host, stop one, quit), and it
hands back what its workers read and when they close through a queue and a wake-up
pipe. So `wait` is a `poll` on that pipe and the program's signal pipe, as for every
backend, and listeners and the database are only ever called from the main thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ClusterShell.Event import EventHandler

from corral.events import AttemptResult
from corral.executor import Spec, Wakeup
from corral.fleet.agent import PREFIX
from corral.fleet.hosts import (
    OK,
    RUNNING,
    WARNED,
    FleetEvent,
    FleetTick,
    HostFinished,
    HostProgress,
    HostRecords,
    HostResult,
    HostStarted,
    classify,
)
from corral.fleet.remote import start_command
from corral.signals import Signals
from corral.status import Status
from corral.throttle import Host
from corral.units import plural

TICK = 0.5  # seconds between status-line refreshes
FDS_PER_HOST = 4  # an open connection's pipes (stdin, stdout, stderr), with a margin
FDS_RESERVED = 64  # the controller's own: its database, stdio, signal and wake pipes, spawns


def configure(task, fanout: int, connect_timeout: float, ssh_options: str | None) -> None:
    """A ClusterShell task as every fleet connection uses it (a run's, a gather's): the
    fan-out window, the connect timeout, and ssh's keepalives (every connect timeout,
    three missed end the connection: a host that stalls or a link that drops packets
    never holds the controller) after the user's own ssh options."""
    task.set_info("fanout", max(1, fanout))
    task.set_info("connect_timeout", connect_timeout)
    keepalive = max(1, int(connect_timeout))
    alive = f"-oServerAliveInterval={keepalive} -oServerAliveCountMax=3"
    task.set_info("ssh_options", " ".join(filter(None, [ssh_options, alive])))


def fanout_window(fanout: int) -> tuple[int, str | None]:
    """How many hosts this process can hold open at once for a `fanout` of N: the soft
    descriptor limit is raised toward the hard one as far as N needs, and what still
    does not fit narrows the window (ClusterShell's thread failed on EMFILE, and the
    controller with it). Returns (the window, a warning when it is narrower than N)."""
    import resource

    want = fanout * FDS_PER_HOST + FDS_RESERVED
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        raised = want if hard == resource.RLIM_INFINITY else min(hard, want)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY or soft >= want:
        return fanout, None
    window = max(1, (soft - FDS_RESERVED) // FDS_PER_HOST)
    return window, (
        f"--fanout {fanout} needs about {want} open files and this process may open "
        f"{soft} (ulimit -n): {plural(window, 'host')} at once"
    )


@dataclass(frozen=True)
class FleetTarget:
    """What a fleet run hands this backend (`backends.Place.target`)."""

    key: str  # the fleet run's id: names each host's run directory
    args: list[str]  # every host's `corral run` options and targets
    digest: str  # the bundle's: a host that has it gets nothing copied
    tarball: Callable[[], bytes]  # the bundle, built when a host first needs it
    results: dict[str, HostResult]  # every host of the run, filled in as they go
    emit: Callable[[FleetEvent], None]  # the fleet's listeners
    fanout: int = 64
    connect_timeout: float = 10.0
    ssh_options: str | None = None
    # Simulated hosts: a local command (ClusterShell's exec worker, %h is the host)
    # that runs the host's shell script given as its last argument.
    exec_command: str | None = None


@dataclass(eq=False, slots=True)
class HostAttempt:
    """One host's run (an `executor.Attempt`)."""

    spec: Spec
    ident: int
    start: float
    start_mono: float
    host: HostResult
    cause: Status | None = None
    rss: int = 0
    load: float | None = None


class FleetExecutor:
    """An `executor.Executor` whose attempts are hosts. Use as a context manager."""

    def __init__(self, target: FleetTarget):
        self.target = target
        self.cpus = max(1, target.fanout)  # the window is --jobs; nothing here is --jobs auto
        self.sampling_cpu_s = 0.0
        self.host = Host()  # nothing measured: the gate leaves the window to --jobs
        self.leftovers: dict[tuple[str, int], int] = {}
        self._attempts: dict[str, HostAttempt] = {}
        self._next = 1
        self._signals = Signals()
        self._engine: _Engine | None = None
        self._poll: select.poll | None = None
        self._next_tick = 0.0

    @property
    def running(self):
        """The attempts (hosts) started and not yet returned by `wait`; a live view."""
        return self._attempts.values()

    def __enter__(self) -> FleetExecutor:
        self._signals.__enter__()
        try:
            self._engine = _Engine(self.target)
            self._engine.begin()
            # poll, not select: with a thousand hosts' pipes open, descriptors pass 1024
            self._poll = select.poll()
            for fd in (self._engine.wake, self._signals.fd):
                self._poll.register(fd, select.POLLIN)
        except BaseException:
            self._engine = None
            self._signals.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Stops every ssh client still open (their hosts' runs go on, detached)."""
        try:
            if self._engine is not None:
                self._engine.end()
        finally:
            self._engine = None
            self._attempts.clear()
            self._signals.__exit__()

    def start(self, spec: Spec) -> HostAttempt:
        """Start host `spec.name`'s run (its connection is made by the engine's thread);
        returns at once."""
        r = self.target.results[spec.name]
        r.status, r.started, r.since = RUNNING, time.time(), time.monotonic()
        attempt = HostAttempt(spec, self._next, r.started, r.since, r)
        self._next += 1
        self._attempts[spec.name] = attempt
        self.target.emit(HostStarted(r))
        self._connect(r, ship=False)
        return attempt

    def stop(self, attempt: HostAttempt, cause: Status, now: bool = False) -> None:
        """Close the host's connection: its run goes on there (it is detached), and the
        host ends `lost`, as the controller's own doing."""
        attempt.cause = attempt.cause or cause
        attempt.host.stopped = True
        self._engine.send(("abort", attempt.spec.name))

    def sample(self) -> None:
        """None: each host measures itself (its figures come back in its records)."""
        return None  # each host measures itself; its figures come back in its records

    def wait(self, timeout: float | None) -> Wakeup:
        """Until a host ends, a signal arrives or `timeout` passes; the hosts' lines are
        read (and the status line refreshed) meanwhile."""
        end = None if timeout is None else time.monotonic() + timeout
        engine = self._engine
        while True:
            finished = [r for r in map(self._handle, engine.take()) if r is not None]
            signals = self._signals.read()
            if finished or signals:
                return Wakeup(finished, signals)
            now = time.monotonic()
            if end is not None and now >= end:
                return Wakeup()
            if now >= self._next_tick:
                self._next_tick = now + TICK
                self.target.emit(FleetTick(self.target.results))
            pause = self._next_tick - now if end is None else min(self._next_tick, end) - now
            self._poll.poll(max(0.0, pause) * 1000)

    # what the engine thread saw ----------------------------------------------------------

    def _handle(self, item: tuple) -> AttemptResult | None:
        kind, host = item[0], item[1]
        if kind == "crash":
            raise RuntimeError(f"the fleet's ClusterShell thread failed: {item[2]!r}")
        if kind == "line":
            self._on_line(self.target.results[host], item[2], item[3])
            return None
        return self._on_closed(host, item[2])

    def _on_line(self, r: HostResult, stream: str, line: str) -> None:
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
            self.target.emit(HostRecords(r.host, value))
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
        self.target.emit(HostProgress(r, name, event["a"], status, event.get("d")))

    def _on_closed(self, host: str, rc: int | None) -> AttemptResult | None:
        r = self.target.results[host]
        lacks = r.need_ship and not r.shipped and r.result is None and not r.connected
        if lacks and not r.stopped:  # it lacks the bundle: a second connection carries it
            self._connect(r, ship=True)
            return None
        attempt = self._attempts.pop(host)
        status, reason = classify(r, rc)
        r.status, r.reason, r.ended = status, reason, time.time()
        if r.result is None:
            r.exit_code = rc
        r.running.clear()
        self.target.emit(HostFinished(r))
        if status == OK:
            verdict = Status.WARNING if r.exit_code == WARNED else Status.OK
        else:
            verdict = attempt.cause if r.result is None and attempt.cause else Status.FAILED
        return AttemptResult(
            name=host,
            attempt=attempt.spec.attempt,
            status=verdict,
            exit_code=r.exit_code,
            signal=None,
            start=attempt.start,
            end=r.ended,
            duration_s=time.monotonic() - attempt.start_mono,
            pid=attempt.ident,  # the host's figures are in its own records
            reason=reason,
        )

    def _connect(self, r: HostResult, ship: bool) -> None:
        t = self.target
        script = start_command(t.digest, t.key, t.args, ship)
        if ship:
            r.shipped = True
        self._engine.send(("start", r.host, script, t.tarball() if ship else None))


class _Engine:
    """ClusterShell's task, in a thread of its own: requests in through a port, what the
    workers read and when they close out through a queue (and a byte on `wake`)."""

    def __init__(self, target: FleetTarget):
        self.target = target
        self.wake, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="corral-fleet", daemon=True)
        self._port = None
        self._task = None
        self._workers: dict[str, object] = {}  # host -> its open worker (engine thread)

    def begin(self) -> None:
        """Start the engine thread; raises RuntimeError when ClusterShell cannot start."""
        self._thread.start()
        self._ready.wait()
        if self._port is None:
            self._thread.join()
            crash = next((item[2] for item in self.take() if item[0] == "crash"), None)
            self.end()
            raise RuntimeError(f"the fleet's ClusterShell thread failed: {crash!r}")

    def end(self) -> None:
        """Stop every open connection and the thread; returns once it has ended."""
        try:
            if self._thread.is_alive():
                self.send(("quit",))
                self._thread.join()
        finally:
            os.close(self.wake)
            os.close(self._wake_w)

    def send(self, request: tuple) -> None:
        """Hand the engine thread a request; raises RuntimeError (with the thread's own
        error) when it has ended, rather than ClusterShell's KeyError on a closed port."""
        if not self._thread.is_alive():
            crash = next((item[2] for item in self.take() if item[0] == "crash"), None)
            raise RuntimeError(f"the fleet's ClusterShell thread failed: {crash!r}")
        self._port.msg_send(request)

    def take(self) -> list[tuple]:
        """Everything the engine thread handed over since the last call, in order."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake, 4096):
                pass
        out = []
        while True:
            try:
                out.append(self._out.get_nowait())
            except queue.Empty:
                return out

    def put(self, item: tuple) -> None:
        self._out.put(item)
        # a full pipe means a wake-up is pending anyway
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # the engine thread -------------------------------------------------------------------

    def _run(self) -> None:
        from corral.fleet.run import clustershell_as_root

        clustershell_as_root()
        from ClusterShell.Task import task_self

        try:
            task = self._task = task_self()
            t = self.target
            configure(task, t.fanout, t.connect_timeout, t.ssh_options)
            self._port = task.port(handler=_PortHandler(self), autoclose=False)
        except BaseException as exc:
            self._ready.set()
            self.put(("crash", "", exc))
            return
        self._ready.set()
        try:
            task.resume()
        except BaseException as exc:  # a bug in a handler: the main thread raises it
            self.put(("crash", "", exc))
        finally:
            with contextlib.suppress(Exception):
                task.abort(kill=True)  # unbinds the task from this thread

    def on_request(self, request: tuple) -> None:
        kind = request[0]
        if kind == "start":
            self._start(*request[1:])
        elif kind == "abort":
            worker = self._workers.get(request[1])
            if worker is not None:
                worker.abort()
        elif kind == "quit":
            self._task.abort(kill=True)  # kills every ssh client still open

    def closed(self, host: str, worker: object, rc: int | None) -> None:
        if self._workers.get(host) is worker:
            del self._workers[host]
        self.put(("closed", host, rc))

    def _start(self, host: str, script: str, tarball: bytes | None) -> None:
        handler = _WorkerHandler(self, host)
        command = self.target.exec_command
        if command is not None:
            # ClusterShell's exec worker expands %h in the command: the script's own % stay
            line = f"{command} {shlex.quote(script.replace('%', '%%'))}"
            worker = self._task.shell(line, nodes=host, handler=handler, stderr=True, remote=False)
        else:
            worker = self._task.shell(script, nodes=host, handler=handler, stderr=True)
        self._workers[host] = worker
        if tarball is not None:
            worker.write(tarball)
        worker.set_write_eof()


class _PortHandler(EventHandler):
    """The engine thread's end of the requests."""

    def __init__(self, engine: _Engine):
        super().__init__()
        self.engine = engine

    def ev_msg(self, port, msg):
        self.engine.on_request(msg)


class _WorkerHandler(EventHandler):
    """One connection to one host: its lines, its exit status, its close."""

    def __init__(self, engine: _Engine, host: str):
        super().__init__()
        self.engine = engine
        self.host = host
        self.rc: int | None = None  # None until ssh (or the local command) exits

    def ev_read(self, worker, node, sname, msg):
        text = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
        self.engine.put(("line", self.host, sname, text))

    def ev_hup(self, worker, node, rc):
        self.rc = rc

    def ev_close(self, worker, timedout):
        self.engine.closed(self.host, worker, self.rc)


def open_executor(place) -> FleetExecutor:
    """The registry's constructor (see corral.backends): `place.target` is the fleet
    run's `FleetTarget`."""
    if not isinstance(place.target, FleetTarget):
        raise TypeError("the fleet backend runs only for `corral run -w NODESET`")
    return FleetExecutor(place.target)
