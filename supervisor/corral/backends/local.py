"""The local backend: attempts run as processes on this host.

Every attempt is `bash FILE`, which proves before the module's first command that the
file it opened is the one `trust.Checker` opened and checked (`cgroups.PROOF`: $0 and
BASH_SOURCE are the module's path, and a file swapped in since is not run), in a new
session (its
own process group) and, where the host allows, its own cgroup from its first
instruction (`corral.containment`), stdin from /dev/null, stdout and stderr on a
pipe each, whose bytes go to the attempt's `Output` with their stream (the shared log
and display pipeline).
Waiting is event-driven: one `epoll` loop over the output pipes and the signal pipe
(`corral.signals`), so SIGCHLD, SIGINT, SIGTERM and SIGHUP all arrive as bytes and
nothing polls. An attempt's outcome is known when its main process exits (even if a
daemon it forked still holds the pipe); the attempt is over, and returned by `wait`,
when everything it started is gone: what it left gets the grace period to end, then
is stopped (unless the module may detach).

corral is the children's subreaper while it runs, so what a module leaves behind is
reparented to corral (not init) and is reaped by it.
Measuring (the sampler) happens here too: the scheduler asks `sample()` and reads
`host` and each attempt's `rss` / `load`, never a pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import select
import signal
import time
from dataclasses import dataclass

from corral import procfs
from corral.accounting import measure
from corral.cgroups import MODULE_FD, STUB, STUB_FD, command, ready_message, startup, stub
from corral.containment import Containment, Member
from corral.errors import ResourceError, exhausted
from corral.events import AttemptResult
from corral.executor import LineListener, Spec, Wakeup
from corral.kill import ASK, signal_group, terminate
from corral.output import Output
from corral.safepath import UnsafePath
from corral.sampler import HostSample, HostSampler, TreeUsage, process_tree, tree_usage
from corral.signals import CHILD_DEFAULTS, Signals
from corral.status import Status
from corral.throttle import Host
from corral.trust import Checker
from corral.units import plural
from corral.watchdog import bash

PR_SET_CHILD_SUBREAPER = 36
# Without a memory figure from a cgroup, a young attempt's tree is read 5, 10, 20, 40, 80
# and 160 ms after it starts (then with every sample): short modules get a figure.
FIRST_LOOK_S, LAST_LOOK_S = 0.005, 0.16
MAX_READY = 16  # bash processes kept entered in their cgroups, waiting for an attempt


@dataclass(eq=False, slots=True)
class Ready:
    """A bash already in its own cgroups, waiting on a pipe for the attempt to run."""

    pid: int
    out: int  # read end of its stdout pipe …
    err: int  # … and of its stderr pipe
    control: int  # write end of the pipe it reads the attempt from
    member: Member
    env: dict[str, str]  # the environment it was started with

    def close(self) -> None:
        """Close corral's ends of its pipes (it reads end of file and exits)."""
        for fd in (self.control, self.out, self.err):
            os.close(fd)


READ_CHUNK = 1 << 16


@dataclass(eq=False, slots=True)
class Job:
    """A started attempt, as the local backend tracks it (an `executor.Attempt`)."""

    spec: Spec
    pid: int
    start: float
    start_mono: float
    fd: int | None  # the stdout pipe's read end, until it is closed …
    err: int | None  # … and the stderr pipe's
    out: Output
    deadline: float | None
    cause: Status | None = None  # TIMEOUT or INTERRUPTED once corral decided to stop it
    stop_signal: int | None = None
    kill_at: float | None = None
    # grace after the KILL: what is still there then cannot be stopped (the kernel's
    # uninterruptible wait, a frozen cgroup) and is left, said, so nothing waits for ever
    abandon_at: float | None = None
    abandoned: bool = False
    exited: bool = False
    empty: bool = False  # nothing it started was alive when its main process was reaped
    usage: TreeUsage | None = None  # its tree as last sampled
    member: Member | None = None  # its containment (cgroup, or the fallback's view)
    result: AttemptResult | None = None  # once the main process exited
    rusage: object = None  # wait4's figures for the main process and what it waited for
    look_at: float | None = None  # next early reading of its tree (no memory cgroup)
    checked: int | None = None  # the module's checked descriptor, while a ready bash needs it

    @property
    def ident(self) -> int:
        """The main process's PID (recorded as `pid`; the scheduler never uses it)."""
        return self.pid

    @property
    def rss(self) -> int:
        """Bytes resident in its tree at the last sample; 0 before one."""
        return self.usage.rss if self.usage is not None else 0

    @property
    def load(self) -> float | None:
        """Runnable tasks it adds (averaged); None until measured."""
        return self.usage.runnable_avg if self.usage is not None else None


def _nonblocking(*fds: int) -> None:
    """perf: one fcntl each on a fresh pipe end, whose only status flag is its access
    mode (os.set_blocking reads the flags first: two; docs/architecture.md)."""
    for fd in fds:
        fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NONBLOCK)


def _pipes(count: int) -> list[tuple[int, int]]:
    """`count` new close-on-exec pipes as (read end, write end); raises OSError, with
    none of them left open, when one cannot be made."""
    made: list[tuple[int, int]] = []
    try:
        for _ in range(count):
            made.append(os.pipe2(os.O_CLOEXEC))
    except OSError:
        for pair in made:
            for fd in pair:
                os.close(fd)
        raise
    return made


def _set_subreaper(on: bool) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class LocalExecutor:
    """Runs attempts on this host (an `executor.Executor`). Use as a context manager:
    it owns the program's signals, the subreaper role and the watchdog meanwhile."""

    def __init__(
        self,
        grace: float = 5.0,
        log_cap: int = 64 << 20,
        on_line: LineListener | None = None,
        run_id: str | None = None,
    ):
        self.grace = grace
        self.log_cap = log_cap
        self.on_line = on_line
        self._jobs: dict[int, Job] = {}  # pid -> running job
        self._lingering: set[Job] = set()  # exited, but a daemon still holds the pipe
        # every process group started, for close(): pgid -> (module, may it detach)
        self._groups: dict[int, tuple[str, bool]] = {}
        self._bash = bash()  # by absolute path (checked as root), never through PATH
        self._epoll = select.epoll()
        self._pipes: dict[int, Job] = {}  # output pipes' fds (stdout, stderr) -> their job
        self._timed: set[Job] = set()  # jobs with a deadline or a pending KILL
        self._devnull = -1
        self._signals = Signals(children=True)
        self._cwd: str | None = None
        self._home = _cwd()  # None: the directory corral started in is gone
        self._dirs: dict[str, str] = {}  # a module's directory as given -> absolute
        self._trust = Checker()  # opens each module to run, checked (as root)
        self.run_id = run_id
        self.leftovers: dict[tuple[str, int], int] = {}  # processes left at the end
        self._own_peak = (0.0, 0)  # (when read, corral's VmHWM)
        self.containment: Containment | None = None
        self._trees: dict[int, Job] = {}  # main process exited: pid -> job, until all gone
        self._young: set[Job] = set()  # attempts read early (see FIRST_LOOK_S)
        self._ready: list[Ready] = []  # see Ready; only with cgroups
        self._readied = 0  # how many were started (their cgroups' numbers)
        self._sampler = HostSampler()
        self.cpus = self._sampler.cpus
        self._host = Host()
        self._notices: list[str] = []  # for the next Wakeup
        self._abandoned = False  # an attempt was given up on (_abandon): reap it now
        self._given_up: set[int] = set()  # the PIDs of what no signal ends (_abandon)
        self._watchdog_stopped = False  # said once: another process stopped the watchdog

    # the seam's read-only views ------------------------------------------------------

    @property
    def running(self):
        """The attempts started and not yet returned by `wait` (a live view)."""
        return self._jobs.values()

    @property
    def host(self) -> Host:
        """This host's figures as the gate reads them, from the last sample (`Host()`
        before one)."""
        return self._host

    @property
    def sampling_cpu_s(self) -> float:
        """CPU seconds the sampler spent measuring the host (0.0 before a sample)."""
        return self._sampler.cpu_spent

    # setup and teardown ----------------------------------------------------------------

    def __enter__(self) -> LocalExecutor:
        try:
            self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            self._signals.__enter__()
            self._epoll.register(self._signals.fd, select.EPOLLIN)
            _set_subreaper(True)
            if self.run_id is not None:
                self.containment = Containment(self.run_id, self.grace)
        except BaseException:  # (out of descriptors): undo what was set up, cgroups too
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> dict:
        """How attempts are held together, for the run's record (and recovery)."""
        if self.containment is None:
            return {}
        return {
            "containment": self.containment.kind,
            "cgroups": os.pathsep.join(self.containment.bases()) or None,
        }

    def close(self) -> None:
        """Stop whatever is left (leftover daemons too, unless detached), reap, restore."""
        if self._devnull < 0:
            return
        try:
            self._dismiss_ready()
            self._stop_leftovers()
            for job in [*self._lingering, *self._jobs.values()]:
                self._drain(job, final=True)
            self._reap_all()
        finally:  # (a fault on the way, out of descriptors: the cgroups still go)
            if self.containment is not None:
                self.containment.close()
        self._sampler.close()
        self._trust.close()
        self._signals.__exit__()
        _set_subreaper(False)
        self._epoll.close()
        os.close(self._devnull)
        self._devnull = -1
        if self._cwd is not None and self._home is not None:
            with contextlib.suppress(OSError):  # it may have been removed meanwhile
                os.chdir(self._home)

    # start -----------------------------------------------------------------------------

    def start(self, spec: Spec) -> Job:
        """Spawn one attempt; raises OSError when it cannot (the caller records a failure).

        With cgroups, the attempt is handed to a bash that already entered its cgroups
        (`Ready`): entering waits for an RCU grace period on a busy host, and that wait
        is then not on the attempt's way. One more is readied for the next attempt."""
        if self.containment is not None and self.containment.cgroups is not None:
            job = self._start_ready(spec)
            if job is not None:
                return job
        directory, path = self._locate(spec.path)
        # perf: posix_spawn has no cwd: corral is single-threaded, so change its own and
        # remember it (most modules share one directory, so this is rarely a syscall;
        # docs/architecture.md).
        if directory != self._cwd:
            os.chdir(directory)
            self._cwd = directory
        module = self._open_module(path)
        try:
            (r, w), (er, ew) = _pipes(2)
        except OSError:
            os.close(module)
            raise
        try:
            # The clock is read before the spawn: the module may run its first line before
            # corral is scheduled again, and its duration must hold all of it.
            now, wall = time.monotonic(), time.time()
            # perf: posix_spawn (vfork+exec), not subprocess (docs/architecture.md)
            files, member = [], None
            if self.containment is not None:
                files, member = self.containment.prepare(spec.name, spec.attempt, spec.detach)
            env, later = startup(spec.env)
            pid = self._spawn(
                command(path), env, w, ew, module, _stub(stub(files, later)), MODULE_FD
            )
        except OSError:
            os.close(r)
            os.close(er)
            raise
        finally:
            os.close(w)
            os.close(ew)
            os.close(module)
        _nonblocking(r, er)
        return self._track(spec, pid, wall, now, r, er, member)

    def _locate(self, given_path: str) -> tuple[str, str]:
        """(its directory, its path) of a module, both absolute: a relative path is taken
        from where corral started, before any chdir."""
        given, file = os.path.split(given_path)
        directory = self._dirs.get(given)
        if directory is None:
            directory = self._dirs[given] = os.path.abspath(os.path.join(self._home or "", given))
        return directory, f"{directory}/{file}"

    def _open_module(self, path: str) -> int:
        """The checked descriptor to run `path` from (`trust.Checker`); a module changed
        since the run began is a PermissionError, as any other OSError a failed attempt."""
        try:
            return self._trust.open_module(path)
        except UnsafePath as exc:
            raise PermissionError(errno.EPERM, str(exc), path) from None

    def _spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        out: int,
        err: int,
        fd: int,
        stub_fd: int | None,
        at: int,
    ) -> int:
        """Spawn bash `argv` in a session of its own: stdin /dev/null, `out` and `err` its
        stdout and stderr, `fd` as descriptor `at`, and `stub_fd` (closed here) as STUB_FD
        and BASH_ENV; returns its PID, raises OSError."""
        actions = [
            (os.POSIX_SPAWN_DUP2, self._devnull, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, err, 2),
            (os.POSIX_SPAWN_DUP2, fd, at),
        ]
        if stub_fd is not None:
            actions.append((os.POSIX_SPAWN_DUP2, stub_fd, STUB_FD))
            env = {**env, "BASH_ENV": STUB}
        try:
            return os.posix_spawn(
                self._bash,
                argv,
                env,
                file_actions=actions,
                setsid=True,
                setsigdef=CHILD_DEFAULTS,
            )
        finally:
            if stub_fd is not None:
                os.close(stub_fd)

    def _start_ready(self, spec: Spec) -> Job | None:
        """Hand `spec` to a ready bash (readying one first if none is); None when one
        cannot be readied (the caller spawns the attempt directly)."""
        try:
            ready = self._ready.pop() if self._ready else self._make_ready(spec.env)
        except OSError:
            return None
        _, path = self._locate(spec.path)
        try:
            # The attempt's bash proves it runs this descriptor's file (cgroups.PROOF): it
            # opens it again through /proc, so it stays open until the attempt is over.
            module = self._open_module(path)
        except OSError:
            self._ready.append(ready)
            raise
        before = ready.env
        changed = {k: v for k, v in spec.env.items() if before.get(k) != v}
        message = ready_message(
            self._bash,
            path,
            f"/proc/{os.getpid()}/fd/{module}",
            changed,
            [k for k in before if k not in spec.env],
        )
        if message is None:  # a name bash cannot set: the attempt is spawned directly
            os.close(module)
            self._ready.append(ready)
            return None
        now, wall = time.monotonic(), time.time()
        try:
            view = memoryview(message)
            while view:  # a module larger than the pipe is taken as bash reads it
                view = view[os.write(ready.control, view) :]
        except OSError:  # it died meanwhile: reaped as an orphan; spawn directly
            ready.close()
            os.close(module)
            return None
        os.close(ready.control)
        self.containment.assigned(ready.member, spec.detach)
        job = self._track(spec, ready.pid, wall, now, ready.out, ready.err, ready.member)
        job.checked = module
        if len(self._ready) < min(len(self._jobs), MAX_READY):
            with contextlib.suppress(OSError):
                self._ready.append(self._make_ready(spec.env))
        return job

    def _make_ready(self, env: dict[str, str]) -> Ready:
        """Start a bash that enters a fresh cgroup and waits for an attempt."""
        self._readied += 1
        argv, member = self.containment.prepare_ready(self._readied)
        env = startup(env)[0]  # the rest once inside (cgroups.startup)
        (r, w), (er, ew), (control_r, control_w) = _pipes(3)
        try:
            pid = self._spawn(argv, env, w, ew, control_r, None, 3)
        except OSError:
            os.close(r)
            os.close(er)
            os.close(control_w)
            raise
        finally:
            os.close(w)
            os.close(ew)
            os.close(control_r)
        _nonblocking(r, er, control_w)
        return Ready(pid, r, er, control_w, member, env)

    def _dismiss_ready(self) -> None:
        """The run is ending: ready bashes read end of file and exit; reap them."""
        for ready in self._ready:
            ready.close()
        for ready in self._ready:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(ready.pid, 0)
            self.containment.release(ready.member)
        self._ready = []

    def _track(self, spec: Spec, pid: int, wall: float, now: float, r: int, er: int, member) -> Job:
        deadline = now + spec.timeout if spec.timeout else None
        out = Output(spec.name, spec.log_path, self.log_cap, self.on_line)
        job = Job(spec, pid, wall, now, r, er, out, deadline, member=member)
        if self.containment is None or not self.containment.counts_memory:
            job.look_at = now + FIRST_LOOK_S
            self._young.add(job)
        if member is not None:
            self.containment.started(member, pid)
        self._jobs[pid] = job
        self._groups[pid] = (spec.name, spec.detach)
        self._epoll.register(r, select.EPOLLIN)
        self._epoll.register(er, select.EPOLLIN)
        self._pipes[r] = self._pipes[er] = job
        if deadline is not None:
            self._timed.add(job)
        return job

    # measure ---------------------------------------------------------------------------

    def sample(self) -> HostSample:
        """Read every running attempt's processes (its cgroup's members, or its tree),
        then the host: the host's other load is the runnable count that the attempts'
        own runnable processes leave."""
        self._keep_watchdog_going()
        ours = 0
        proportional = self.containment is None or not self.containment.counts_memory
        for pid, job in list(self._jobs.items()):
            member = job.member
            if member is not None and member.cgroup is not None:
                tree = member.pids()  # everything in its cgroup, escapees included
            else:
                tree = process_tree(pid)
                if member is not None:
                    self.containment.seen(member, tree)
            job.usage = tree_usage(pid, job.usage, tree, proportional)
            ours += job.usage.runnable
        sample = self._sampler.sample(ours)
        self._host = Host(
            sample.others_avg,
            sample.mem_available,
            sample.mem_total,
            sample.psi_cpu,
            sample.psi_mem,
        )
        return sample

    # wait ------------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Wakeup:
        """Block until an attempt ends, a signal arrives or `timeout` passes; never polls.

        Output that arrives meanwhile goes to the attempts' `Output`. Returns an empty
        Wakeup when only output (or nothing) happened.
        """
        out = Wakeup()
        deadline = self._next_deadline()
        if self._young:
            look = min(job.look_at for job in self._young)
            deadline = look if deadline is None else min(deadline, look)
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        if self._notices:  # something to say now (from a sample): do not wait to say it
            timeout = 0.0
        for fd, _ in self._epoll.poll(-1 if timeout is None else timeout):
            if fd == self._signals.fd:
                out.signals.extend(self._signals.read())
            elif (job := self._pipes.get(fd)) is not None:  # (not closed meanwhile)
                self._read(job, fd)
        if signal.SIGCHLD in out.signals:
            out.finished = self._reap_all()
            out.signals = [s for s in out.signals if s != signal.SIGCHLD]
        self._enforce_deadlines()
        if self._abandoned:  # over without a SIGCHLD: no process of theirs ended
            self._abandoned = False
            out.finished = [*out.finished, *self._reap_all()]
        if self._notices:
            out.notices, self._notices = self._notices, []
        if self._young:
            self._look_early()
        return out

    def _look_early(self) -> None:
        """Read the trees of young attempts that are due (only without a memory cgroup)."""
        now = time.monotonic()
        for job in list(self._young):
            if job.exited:
                self._young.discard(job)
            elif job.look_at <= now:
                tree = process_tree(job.pid)
                if job.member is not None:
                    self.containment.seen(job.member, tree)
                job.usage = tree_usage(job.pid, job.usage, tree, proportional=True)
                age = now - job.start_mono
                if age >= LAST_LOOK_S:
                    self._young.discard(job)
                else:
                    job.look_at = job.start_mono + max(2 * age, FIRST_LOOK_S)

    def _read(self, job: Job, fd: int) -> bool:
        """Copy one chunk from the pipe `fd` (the job's stdout or stderr); False when it
        is empty for now or closed."""
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._close_pipe(job, fd)
            return False
        job.out.feed(data, fd == job.err)
        return True

    def _close_pipe(self, job: Job, fd: int | None) -> None:
        """Close one of the job's pipes; once both are, its display and log end."""
        if fd is None:
            return
        self._epoll.unregister(fd)
        del self._pipes[fd]
        os.close(fd)
        if fd == job.fd:
            job.fd = None
        else:
            job.err = None
        if job.fd is None and job.err is None:
            job.out.end_display()
            self._lingering.discard(job)
            if job.exited:
                job.out.close_log()

    def _drain(self, job: Job, final: bool = False) -> None:
        """Read what is in the pipes now; at `final`, close them even if a daemon holds
        them."""
        while job.fd is not None and self._read(job, job.fd):
            pass
        while job.err is not None and self._read(job, job.err):
            pass
        if final:
            self._close_pipe(job, job.fd)
            self._close_pipe(job, job.err)
            job.out.close_log()

    def _reap_all(self) -> list[AttemptResult]:
        """Reap every exited child (ours and reparented orphans); results for attempts
        that are over: the main process exited and nothing it started is left (or it
        may leave a daemon)."""
        finished = []
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            job = self._jobs.get(pid)
            if job is not None and not job.exited:
                self._exited(job, status, usage)
            elif pid == self._watchdog_pid():
                self._watchdog_died(status)
            elif job is None:
                self._orphan_reaped(pid, usage)
        for pid, job in list(self._trees.items()):
            member = job.member
            if (
                member is None
                or job.spec.detach
                or job.empty
                or job.abandoned
                or self.containment.gone(member)
            ):
                del self._trees[pid]
                finished.append(self._over(job))
        return finished

    def _keep_watchdog_going(self) -> None:
        """A watchdog stopped by another process (SIGSTOP) would do nothing if corral died
        meanwhile: it is continued (looked at with every sample), and that is said once."""
        pid = self._watchdog_pid()
        fields = procfs.stat(pid) if pid is not None else None
        if fields and fields[0] == b"T":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            if not self._watchdog_stopped:
                self._watchdog_stopped = True
                self._notices.append("the watchdog was stopped by another process; continued")

    def _watchdog_died(self, status: int) -> None:
        """Something killed the watchdog: without one, a SIGKILL of corral would leave
        the modules running. Another is started at once, told what the first knew; when
        none can be, the run stops (ResourceError: what runs is stopped and recorded)."""
        how = os.waitstatus_to_exitcode(status)
        how = f"killed by signal {-how}" if how < 0 else f"exit {how}"
        try:
            self.containment.watchdog.restart()
        except OSError as exc:
            short = exhausted(exc) or exc.strerror or str(exc)
            raise ResourceError(
                f"the watchdog ({how}) died and no other could be started: {short}; "
                "the run stops (what runs is stopped, the rest is not started)"
            ) from exc
        self._notices.append(f"the watchdog ({how}) died before the run ended; started another")

    def _orphan_reaped(self, pid: int, usage) -> None:
        """The fallback's accounting: an orphan of a known attempt adds its rusage. A
        ready bash that died before its attempt (it could not enter its cgroup) is
        dropped."""
        for ready in self._ready:
            if ready.pid == pid:
                self._ready.remove(ready)
                ready.close()
                self.containment.release(ready.member)
                return
        for job in self._jobs.values():
            member = job.member
            if member is not None and member.cgroup is None and pid in member.known:
                if job.usage is None:
                    job.usage = TreeUsage()
                job.usage.orphan_user_s += usage.ru_utime
                job.usage.orphan_sys_s += usage.ru_stime
                return

    def _exited(self, job: Job, status: int, usage) -> None:
        """The main process ended: the attempt's outcome is known; its figures are final
        once everything it started is gone."""
        end_mono = time.monotonic()
        job.exited = True
        self._timed.discard(job)
        job.kill_at = None
        self._drain(job)
        if job.fd is not None or job.err is not None:
            self._lingering.add(job)  # a daemon holds stdout: keep logging, do not wait
        else:
            job.out.close_log()
        code = os.waitstatus_to_exitcode(status)
        exit_code, signum = (code, None) if code >= 0 else (None, -code)
        job.rusage = usage
        job.result = AttemptResult(
            name=job.spec.name,
            attempt=job.spec.attempt,
            status=job.cause or (Status.OK if exit_code == 0 else Status.FAILED),
            exit_code=exit_code,
            signal=signum if signum is not None else job.stop_signal,
            start=job.start,
            end=job.start + (end_mono - job.start_mono),
            duration_s=end_mono - job.start_mono,
            pid=job.pid,
        )
        self._trees[job.pid] = job
        if job.member is None:
            return
        if job.spec.detach:
            self._count_leftovers(job)  # left running, as it may
        elif self.containment.gone(job.member):
            job.empty = True  # perf: _reap_all need not ask again (docs/architecture.md)
        else:
            # What it left gets the grace period to end by itself, then is stopped.
            job.deadline = end_mono + self.grace
            self._timed.add(job)

    def _over(self, job: Job) -> AttemptResult:
        """Everything the attempt started is gone (or detached): its final figures."""
        self._jobs.pop(job.pid, None)
        if job.checked is not None:
            os.close(job.checked)
            job.checked = None
        self._timed.discard(job)
        now = time.monotonic()
        if now - self._own_peak[0] > 1.0:  # perf: read corral's own peak once a second
            self._own_peak = (now, procfs.status_kb("self", b"VmHWM") or 0)
        kernel = self.containment.figures(job.member) if job.member is not None else None
        figures = measure(kernel, job.rusage, job.usage, self._own_peak[1])
        result = job.result
        result.peak_rss_bytes, result.mem_source = figures.peak_rss_bytes, figures.mem_source
        result.cpu_user_s, result.cpu_sys_s = figures.cpu_user_s, figures.cpu_sys_s
        result.cpu_source = figures.cpu_source
        result.read_bytes, result.write_bytes = figures.read_bytes, figures.write_bytes
        result.io_source = figures.io_source
        out = job.out
        result.log_path = out.written_path
        result.log_bytes = out.log_bytes
        result.log_dropped_bytes = out.dropped
        result.log_incomplete = out.incomplete
        if job.member is not None and not job.spec.detach:
            self.containment.release(job.member)
        return result

    # stop ------------------------------------------------------------------------------

    def stop(self, job: Job, cause: Status | None, now: bool = False) -> None:
        """TERM (and CONT, so a stopped process hears it) everything the attempt
        started; KILL after the grace period, or at once with `now`. After its main
        process exited, what is left is stopped and the outcome stays as it was."""
        if not job.exited:
            job.cause = job.cause or cause
        if now:
            self._killed(job)
            return
        if job.kill_at is None:
            if job.exited:
                self._count_leftovers(job)
            for signum in ASK:
                self._signal(job, signum)
            if not job.exited:
                job.stop_signal = job.stop_signal or signal.SIGTERM
            job.kill_at = time.monotonic() + self.grace
            self._timed.add(job)

    def _watchdog_pid(self) -> int | None:
        return self.containment.watchdog.pid if self.containment is not None else None

    def _count_leftovers(self, job: Job) -> None:
        if job.member is not None:
            count = len(job.member.pids())
            if count:
                key = (job.spec.name, job.spec.attempt)
                self.leftovers[key] = self.leftovers.get(key, 0) + count

    def _signal(self, job: Job, signum: int) -> None:
        if job.member is None:
            signal_group(job.pid, signum)
        elif signum == signal.SIGKILL:
            self.containment.kill(job.member)
        else:
            self.containment.signal(job.member, signum)

    def _stop_all(self, cause: Status, now: bool = False) -> None:
        for job in list(self._jobs.values()):
            if not (job.exited and job.spec.detach):
                self.stop(job, cause, now)

    def _next_deadline(self) -> float | None:
        times = [
            t
            for job in self._timed
            for t in (job.kill_at if job.kill_at is not None else job.deadline, job.abandon_at)
            if t
        ]
        return min(times) if times else None

    def _killed(self, job: Job) -> None:
        """KILL everything the attempt started; what is still there a grace period later
        cannot be stopped (_abandon)."""
        self._signal(job, signal.SIGKILL)
        if not job.exited:
            job.stop_signal = signal.SIGKILL
        job.kill_at = None
        if job.abandon_at is None and not job.abandoned:
            job.abandon_at = time.monotonic() + self.grace
            self._timed.add(job)

    def _abandon(self, job: Job) -> None:
        """A grace period after the KILL the attempt's processes are still there: they
        wait in the kernel (uninterruptible, as on a hung NFS server) or are frozen, and
        no signal ends them. Waiting for them would hang the run (its requirers, its end)
        without a word: corral says which and stops waiting; they are counted as leftovers
        (their cgroup, if any, stays, as a detached daemon's does)."""
        job.abandon_at = None
        self._timed.discard(job)
        if self.containment.gone(job.member) if job.member is not None else job.exited:
            return
        pids = sorted(job.member.pids()) if job.member is not None else [job.pid]
        if not pids and self.run_id:  # the fallback saw none of them: find its mark
            mark = (job.spec.name, job.spec.attempt)
            pids = sorted(p for p, of in procfs.marked(self.run_id).items() if of == mark)
        self._given_up.update(pids)
        shown = ", ".join(map(str, pids[:8])) + (" …" if len(pids) > 8 else "")
        self._notices.append(
            f"{job.spec.name}: {plural(len(pids), 'process')} ({shown}) still there "
            f"{self.grace:g}s after SIGKILL (waiting in the kernel, or frozen): no signal "
            "ends them; corral no longer waits for them and leaves them"
        )
        job.abandoned = self._abandoned = True
        key = (job.spec.name, job.spec.attempt)  # left: counted once (also if when stopped)
        self.leftovers[key] = max(self.leftovers.get(key, 0), len(pids))
        if not job.exited:  # its main process: the outcome is what stopping it made it
            job.cause = job.cause or Status.INTERRUPTED
            self._exited(job, signal.SIGKILL, None)  # (a wait status: killed by KILL)
            self._jobs.pop(job.pid, None)  # if it ever ends, it is reaped as an orphan
            self._trees[job.pid] = job

    def _enforce_deadlines(self) -> None:
        if not self._timed:
            return
        now = time.monotonic()
        for job in list(self._timed):
            if job.kill_at is not None and now >= job.kill_at:
                self._killed(job)
                job.deadline = None
            elif job.abandon_at is not None and job.kill_at is None and now >= job.abandon_at:
                self._abandon(job)
            elif job.deadline is not None and job.kill_at is None and now >= job.deadline:
                self.stop(job, None if job.exited else Status.TIMEOUT)
                job.deadline = None

    def _stop_leftovers(self) -> None:
        """Kill what attempts left behind: their process groups, then reparented orphans."""
        if self._jobs:
            self._stop_all(Status.INTERRUPTED)
            end = time.monotonic() + self.grace
            while self._jobs and time.monotonic() < end:
                self.wait(max(0.0, end - time.monotonic()))
            self._stop_all(Status.INTERRUPTED, now=True)
            while self._jobs and any(not job.abandoned for job in self._jobs.values()):
                self.wait(0.1)
        if self.containment is not None and self.containment.cgroups is not None:
            self._stop_escapees()  # every attempt was its cgroup, and each is over
            return
        # The fallback: everything still carrying this run's mark, by module: process-group members,
        # setsid escapees, nohup'ed daemons alike (unless the module may leave a daemon).
        found = procfs.marked(self.run_id) if self.run_id else {}
        detached = {name for name, detach in self._groups.values() if detach}
        orphans = [
            (pid, pgid)
            for pid, pgid in procfs.children_of_self()
            if pgid not in self._groups and pgid not in (os.getpgrp(), self._watchdog_pid())
        ]
        unknown = [pid for pid, _ in orphans if pid not in found]
        if unknown and self.run_id:
            # A process in the middle of exec has no readable environment for a moment:
            # look again before treating it as nobody's (a detached daemon must survive).
            time.sleep(0.05)
            found.update(procfs.marked(self.run_id, unknown))
        for pid in self._given_up:  # no signal ends them (_abandon): said once already
            found.pop(pid, None)
        orphans = [(pid, pgid) for pid, pgid in orphans if pid not in self._given_up]
        for name, attempt in found.values():
            key = (name, attempt)
            self.leftovers[key] = self.leftovers.get(key, 0) + 1
        pids = [pid for pid, (name, _) in found.items() if name not in detached]
        spared = {pid for pid, (name, _) in found.items() if name in detached}
        groups = [pgid for pgid, (_, detach) in self._groups.items() if not detach]
        groups += [pgid for pid, pgid in orphans if pid not in spared]
        terminate(groups, pids, self.grace, reap=self._reap_all)

    def _stop_escapees(self) -> None:
        """Stop what left its attempt's cgroup. Only root can (a module writing its PID
        into another cgroup's cgroup.procs), and what did is still marked by the kernel
        as corral's: once what started it has ended, it is reparented to corral, the
        subreaper, whatever it did to its session or environment. Every child of corral
        at the end of the run but the watchdog and a detached attempt's daemons (in
        their cgroups) is such an escapee, and is stopped as leftovers are."""
        cgroups = self.containment.cgroups
        for _ in range(3):  # what an escapee forked is reparented once it is stopped
            spared = {p for cg in cgroups.attempts if cg.detached() for p in cg.pids()}
            spared |= self._given_up  # no signal ends them (_abandon): said once already
            escapees = [
                pid
                for pid, _ in procfs.children_of_self()
                if pid != self._watchdog_pid() and pid not in spared
            ]
            if not escapees:
                return
            for name, attempt in procfs.marked(self.run_id, escapees).values():
                key = (name, attempt)
                self.leftovers[key] = self.leftovers.get(key, 0) + 1
            terminate([], escapees, self.grace, reap=self._reap_all)


def open_executor(place) -> LocalExecutor:
    """The registry's constructor (see corral.backends)."""
    return LocalExecutor(place.config.grace, place.config.log_limit, place.on_line, place.run_id)


def _stub(text: bytes) -> int:
    """A descriptor of an anonymous file holding `text` (the attempt's stub), for bash to
    open as STUB (from its start: a memfd has no size limit to block on)."""
    fd = os.memfd_create("corral-stub", os.MFD_CLOEXEC)
    try:
        view = memoryview(text)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None
