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

This file is the executor: tracking, the wait loop (output, reaping, deadlines due),
sampling. Beside it: `spawn.py` starts the processes (the ready bashes, the stub,
pipes, posix_spawn), `stopping.py` stops attempts and keeps their deadlines,
`keepalive.py` keeps the watchdog going, `sweep.py` stops what is left at the end.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import time
from dataclasses import dataclass

from corral import procfs
from corral.accounting import measure
from corral.backends import keepalive, sweep
from corral.backends.spawn import Spawner
from corral.backends.stopping import Stopping
from corral.containment import Containment, Member
from corral.events import AttemptResult
from corral.executor import LineListener, Spec, Wakeup
from corral.output import Output
from corral.sampler import HostSample, HostSampler, TreeUsage, process_tree, tree_usage
from corral.signals import Signals
from corral.status import Status
from corral.throttle import Host

PR_SET_CHILD_SUBREAPER = 36
# Without a memory figure from a cgroup, a young attempt's tree is read 5, 10, 20, 40, 80
# and 160 ms after it starts (then with every sample): short modules get a figure.
FIRST_LOOK_S, LAST_LOOK_S = 0.005, 0.16


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


def _set_subreaper(on: bool) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class LocalExecutor(Stopping):
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
        self._spawner = Spawner()  # bash, /dev/null, directories, trust, ready bashes
        self._epoll = select.epoll()
        self._pipes: dict[int, Job] = {}  # output pipes' fds (stdout, stderr) -> their job
        self._timed: set[Job] = set()  # jobs with a deadline or a pending KILL
        self._signals = Signals(children=True)
        self.run_id = run_id
        self.leftovers: dict[tuple[str, int], int] = {}  # processes left at the end
        self._own_peak = (0.0, 0)  # (when read, corral's VmHWM)
        self.containment: Containment | None = None
        self._trees: dict[int, Job] = {}  # main process exited: pid -> job, until all gone
        self._young: set[Job] = set()  # attempts read early (see FIRST_LOOK_S)
        self._sampler = HostSampler()
        self.cpus = self._sampler.cpus
        self._host = Host()
        self._notices: list[str] = []  # for the next Wakeup
        self._abandoned = False  # an attempt was given up on (_abandon): reap it now
        self._given_up: set[int] = set()  # the PIDs of what no signal ends (_abandon)
        self._watchdog_stopped = False  # said once: another process stopped the watchdog
        self._over_members: list[Member] = []  # over: their cgroups go before the next wait
        self._to_ready: list[dict[str, str]] = []  # bashes to ready before the next wait

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
            self._spawner.open()
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
        if self._spawner.devnull < 0:
            return
        try:
            self._to_ready.clear()  # (none is readied while the run ends)
            self._release_over()
            self._spawner.dismiss_ready(self.containment)
            self._stop_leftovers()
            for job in [*self._lingering, *self._jobs.values()]:
                self._drain(job, final=True)
            self._reap_all()
        finally:  # (a fault on the way, out of descriptors: the cgroups still go)
            if self.containment is not None:
                self.containment.close()
        self._sampler.close()
        self._signals.__exit__()
        _set_subreaper(False)
        self._epoll.close()
        self._spawner.close()

    # start -----------------------------------------------------------------------------

    def start(self, spec: Spec) -> Job:
        """Spawn one attempt (`backends/spawn.py`); raises OSError when it cannot (the
        caller records a failure).

        With cgroups, the attempt is handed to a bash that already entered its cgroups
        (`spawn.Ready`): entering waits for an RCU grace period after a quiet spell, and
        that wait is then not on the attempt's way, and the module's bash is inside from
        its exec (what it costs is all counted). One more is readied before the next
        wait."""
        spawner, containment = self._spawner, self.containment
        if containment is not None and containment.cgroups is not None:
            handed = spawner.hand_over(spec, containment)
            if handed is not None:
                ready, wall, now, module = handed
                job = self._track(spec, ready.pid, wall, now, ready.out, ready.err, ready.member)
                job.checked = module
                # perf: readied before the next wait, not between this pass's spawns
                self._to_ready.append(spec.env)
                return job
        pid, wall, now, r, er, member = spawner.spawn(spec, containment)
        return self._track(spec, pid, wall, now, r, er, member)

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
        self._release_over()
        for env in self._to_ready:
            self._spawner.replenish(env, len(self._jobs), self.containment)
        self._to_ready.clear()
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
        if keepalive.continue_if_stopped(self._watchdog_pid()) and not self._watchdog_stopped:
            self._watchdog_stopped = True
            self._notices.append("the watchdog was stopped by another process; continued")

    def _watchdog_died(self, status: int) -> None:
        """Something killed the watchdog: another is started at once (ResourceError when
        none can be: the run stops)."""
        self._notices.append(keepalive.replace(self.containment.watchdog, status))

    def _orphan_reaped(self, pid: int, usage) -> None:
        """The fallback's accounting: an orphan of a known attempt adds its rusage. A
        ready bash that died before its attempt (it could not enter its cgroup) is
        dropped."""
        if self._spawner.drop_ready(pid, self.containment):
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
            # perf: removed before the next wait, after what this end released has
            # started: an rmdir is not on the way from an exit to a spawn
            # (docs/architecture.md)
            self._over_members.append(job.member)
        return result

    def _release_over(self) -> None:
        """Remove the cgroups of the attempts that are over."""
        for member in self._over_members:
            self.containment.release(member)
        self._over_members.clear()

    # stop: backends/stopping.py (Stopping) -----------------------------------------------

    def _watchdog_pid(self) -> int | None:
        return self.containment.watchdog.pid if self.containment is not None else None

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
            # every attempt was its cgroup, and each is over: only escapees are left
            sweep.stop_escapees(
                self.containment.cgroups,
                self.run_id,
                self._given_up,
                self._watchdog_pid,
                self.grace,
                self.leftovers,
                self._reap_all,
            )
            return
        sweep.stop_marked(
            self.run_id,
            self._groups,
            self._given_up,
            self._watchdog_pid,
            self.grace,
            self.leftovers,
            self._reap_all,
        )


def open_executor(place) -> LocalExecutor:
    """The registry's constructor (see corral.backends)."""
    return LocalExecutor(place.config.grace, place.config.log_limit, place.on_line, place.run_id)
