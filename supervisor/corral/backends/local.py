"""The local backend: attempts run as processes on this host.

Every attempt is `bash FILE` in a new session (its own process group), stdin from
/dev/null, stdout and stderr on one pipe whose bytes go to the attempt's `Output` (the
shared log and display pipeline). Waiting is event-driven: one `epoll` loop over the
output pipes and the signal pipe (`corral.signals`), so SIGCHLD, SIGINT, SIGTERM and
SIGHUP all arrive as bytes and nothing polls. An attempt is over when its main process
exits, even if a daemon it forked still holds the pipe.

corral is the children's subreaper while it runs, so what a module leaves behind is
reparented to corral (not init) and is found, killed and reaped by `close()`.
Measuring (the sampler) happens here too: the scheduler asks `sample()` and reads
`host` and each attempt's `rss` / `load`, never a pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import signal
import time
from dataclasses import dataclass

from corral import procfs
from corral.cgroups import Cgroups
from corral.events import AttemptResult
from corral.executor import LineListener, Spec, Wakeup
from corral.output import Output
from corral.sampler import HostSample, HostSampler, TreeUsage, process_tree, tree_usage
from corral.signals import CHILD_DEFAULTS, Signals
from corral.status import Status
from corral.throttle import Host

PR_SET_CHILD_SUBREAPER = 36
READ_CHUNK = 1 << 16
CONTAIN_AFTER_S = 1.0  # an attempt this old moves into its own cgroup at the next sample


@dataclass(eq=False, slots=True)
class Job:
    """A started attempt, as the local backend tracks it (an `executor.Attempt`)."""

    spec: Spec
    pid: int
    start: float
    start_mono: float
    fd: int | None  # the output pipe's read end, until it is closed
    out: Output
    deadline: float | None
    cause: Status | None = None  # TIMEOUT or INTERRUPTED once corral decided to stop it
    stop_signal: int | None = None
    kill_at: float | None = None
    exited: bool = False
    cgroup: str | None = None  # its cgroup v2 directory, once contained
    usage: TreeUsage | None = None  # its tree as last sampled

    @property
    def ident(self) -> int:
        return self.pid

    @property
    def rss(self) -> int:
        return self.usage.rss if self.usage is not None else 0

    @property
    def load(self) -> float | None:
        return self.usage.runnable_avg if self.usage is not None else None


# If corral dies without cleaning up (SIGKILL, OOM killer), this Bash watchdog sees its
# pipe from corral close without the final "done", and stops every process whose
# environment carries this run's CORRAL_RUN_ID (TERM, CONT, then KILL after the grace
# period). It runs in its own session, so Ctrl-C at the terminal does not reach it.
WATCHDOG = r"""
exec 2>/dev/null
trap '' INT HUP TERM
run=$1 grace=$2 last=
while IFS= read -r line; do last=$line; done
[[ $last == done ]] && exit 0
marked() {
  local f pid var
  for f in /proc/[0-9]*/environ; do
    pid=${f#/proc/}; pid=${pid%/environ}
    [[ $pid == "$$" ]] && continue
    while IFS= read -r -d '' var; do
      if [[ $var == "CORRAL_RUN_ID=$run" ]]; then echo "$pid"; break; fi
    done < "$f" 2>/dev/null
  done
}
pids=$(marked)
[[ -z $pids ]] && exit 0
kill -TERM $pids 2>/dev/null; kill -CONT $pids 2>/dev/null
end=$(( SECONDS + ${grace%.*} + 1 ))
while (( SECONDS < end )); do
  pids=$(marked); [[ -z $pids ]] && exit 0
  sleep 0.1
done
kill -KILL $(marked) 2>/dev/null
exit 0
"""


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
        self._bash = shutil.which("bash") or "/bin/bash"
        self._epoll = select.epoll()
        self._pipes: dict[int, Job] = {}  # output pipe's fd -> its job
        self._timed: set[Job] = set()  # jobs with a deadline or a pending KILL
        self._devnull = -1
        self._signals = Signals(children=True)
        self._cwd: str | None = None
        self._home = os.getcwd()
        self._dirs: dict[str, str] = {}  # a module's directory as given -> absolute
        self.run_id = run_id
        self.leftovers: dict[tuple[str, int], int] = {}  # processes left at the end
        self._own_peak = (0.0, 0)  # (when read, corral's VmHWM)
        self.cgroups: Cgroups | None = None
        self._watchdog: int | None = None  # write end of the watchdog's pipe
        self._watchdog_pid: int | None = None
        self._sampler = HostSampler()
        self.cpus = self._sampler.cpus
        self._host = Host()

    # the seam's read-only views ------------------------------------------------------

    @property
    def running(self):
        return self._jobs.values()

    @property
    def host(self) -> Host:
        return self._host

    @property
    def sampling_cpu_s(self) -> float:
        return self._sampler.cpu_spent

    # setup and teardown ----------------------------------------------------------------

    def __enter__(self) -> LocalExecutor:
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._signals.__enter__()
        self._epoll.register(self._signals.fd, select.EPOLLIN)
        _set_subreaper(True)
        if self.run_id is not None:
            self._start_watchdog()
            self.cgroups = Cgroups(self.run_id)
        return self

    def _start_watchdog(self) -> None:
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            self._watchdog_pid = os.posix_spawn(
                self._bash,
                ["bash", "-c", WATCHDOG, "corral-watchdog", self.run_id, str(self.grace)],
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, self._devnull, 1)],
                setsid=True,
                setsigdef=CHILD_DEFAULTS,
            )
            self._watchdog = w
        except OSError:
            os.close(w)
        finally:
            os.close(r)

    def _stop_watchdog(self) -> None:
        """Everything is cleaned up: tell the watchdog so, and reap it."""
        if self._watchdog is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._watchdog, b"done\n")
        os.close(self._watchdog)
        self._watchdog = None
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._watchdog_pid, 0)

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop whatever is left (leftover daemons too, unless detached), reap, restore."""
        if self._devnull < 0:
            return
        self._stop_leftovers()
        for job in [*self._lingering, *self._jobs.values()]:
            self._drain(job, final=True)
        self._stop_watchdog()
        self._reap_all()
        if self.cgroups is not None:
            self.cgroups.close()
        self._sampler.close()
        self._signals.__exit__()
        _set_subreaper(False)
        self._epoll.close()
        os.close(self._devnull)
        self._devnull = -1
        if self._cwd is not None:
            os.chdir(self._home)

    # start -----------------------------------------------------------------------------

    def start(self, spec: Spec) -> Job:
        """Spawn one attempt; raises OSError when it cannot (the caller records a failure)."""
        r, w = os.pipe2(os.O_CLOEXEC)
        given, file = os.path.split(spec.path)
        try:
            directory = self._dirs.get(given)
            if directory is None:  # relative to where corral started, before any chdir
                directory = os.path.abspath(os.path.join(self._home, given))
                self._dirs[given] = directory
            # perf: posix_spawn has no cwd: corral is single-threaded, so change its own
            # and remember it (most modules share one directory, so this is rarely a
            # syscall; docs/architecture.md).
            if directory != self._cwd:
                os.chdir(directory)
                self._cwd = directory
            # perf: posix_spawn (vfork+exec), not subprocess (docs/architecture.md)
            pid = os.posix_spawn(
                self._bash,
                ["bash", f"{directory}/{file}"],
                spec.env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, self._devnull, 0),
                    (os.POSIX_SPAWN_DUP2, w, 1),
                    (os.POSIX_SPAWN_DUP2, w, 2),
                ],
                setsid=True,
                setsigdef=CHILD_DEFAULTS,
            )
        except OSError:
            os.close(r)
            raise
        finally:
            os.close(w)
        os.set_blocking(r, False)
        now = time.monotonic()  # perf: no other syscall per spawn (docs/architecture.md)
        deadline = now + spec.timeout if spec.timeout else None
        out = Output(spec.name, spec.log_path, self.log_cap, self.on_line)
        job = Job(spec, pid, time.time(), now, r, out, deadline)
        self._jobs[pid] = job
        self._groups[pid] = (spec.name, spec.detach)
        self._epoll.register(r, select.EPOLLIN)
        self._pipes[r] = job
        if deadline is not None:
            self._timed.add(job)
        return job

    # measure ---------------------------------------------------------------------------

    def sample(self) -> HostSample:
        """Read every running attempt's process tree, then the host: the host's other
        load is the runnable count that the attempts' own runnable processes leave."""
        now = time.monotonic()
        ours = 0
        for pid, job in list(self._jobs.items()):
            tree = process_tree(pid)
            job.usage = tree_usage(pid, job.usage, tree)
            ours += job.usage.runnable
            # perf: moving processes between cgroups stalls the kernel's forks for
            # milliseconds (an RCU grace period): only attempts that have run a while
            # are worth it (docs/architecture.md).
            if job.cgroup is None and now - job.start_mono >= CONTAIN_AFTER_S:
                self._contain(job, tree)
        sample = self._sampler.sample(ours)
        self._host = Host(
            sample.others_avg,
            sample.mem_available,
            sample.mem_total,
            sample.psi_cpu,
            sample.psi_mem,
        )
        return sample

    def _contain(self, job: Job, tree: list[int]) -> None:
        """Move a running attempt's tree into its own cgroup (once; where possible)."""
        if self.cgroups is not None and job.cgroup is None and not job.exited:
            job.cgroup = self.cgroups.contain(tree, job.spec.name, job.spec.attempt) or ""

    # wait ------------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Wakeup:
        """Block until an attempt ends, a signal arrives or `timeout` passes; never polls.

        Output that arrives meanwhile goes to the attempts' `Output`. Returns an empty
        Wakeup when only output (or nothing) happened.
        """
        out = Wakeup()
        deadline = self._next_deadline()
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        for fd, _ in self._epoll.poll(-1 if timeout is None else timeout):
            if fd == self._signals.fd:
                out.signals.extend(self._signals.read())
            elif (job := self._pipes.get(fd)) is not None:  # (not closed meanwhile)
                self._read(job)
        if signal.SIGCHLD in out.signals:
            out.finished = self._reap_all()
            out.signals = [s for s in out.signals if s != signal.SIGCHLD]
        self._enforce_deadlines()
        return out

    def _read(self, job: Job) -> bool:
        """Copy one chunk from the pipe; False when it is empty for now or closed."""
        try:
            data = os.read(job.fd, READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._close_pipe(job)
            return False
        job.out.feed(data)
        return True

    def _close_pipe(self, job: Job) -> None:
        if job.fd is None:
            return
        self._epoll.unregister(job.fd)
        del self._pipes[job.fd]
        os.close(job.fd)
        job.fd = None
        job.out.end_display()
        self._lingering.discard(job)
        if job.exited:
            job.out.close_log()

    def _drain(self, job: Job, final: bool = False) -> None:
        """Read what is in the pipe now; at `final`, close it even if a daemon holds it."""
        while job.fd is not None and self._read(job):
            pass
        if final:
            self._close_pipe(job)
            job.out.close_log()

    def _reap_all(self) -> list[AttemptResult]:
        """Reap every exited child (ours and reparented orphans); results for ours."""
        finished = []
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            job = self._jobs.pop(pid, None)
            if job is not None:
                finished.append(self._finish(job, status, usage))
        return finished

    def _finish(self, job: Job, status: int, usage) -> AttemptResult:
        end_mono = time.monotonic()
        job.exited = True
        self._timed.discard(job)
        self._drain(job)
        if job.fd is not None:
            self._lingering.add(job)  # a daemon holds stdout: keep logging, do not wait
        else:
            job.out.close_log()
        # ru_maxrss of a child spawned from corral starts at corral's own high-water mark
        # (the kernel carries the old mm's peak across exec), so it only says something
        # when it is clearly above ours; otherwise the sampler's figure stands.
        kernel_peak = usage.ru_maxrss * 1024
        if end_mono - self._own_peak[0] > 1.0:  # perf: read corral's own peak once a second
            self._own_peak = (end_mono, procfs.status_kb("self", b"VmHWM") or 0)
        if kernel_peak <= self._own_peak[1] + (1 << 20):
            kernel_peak = 0
        code = os.waitstatus_to_exitcode(status)
        exit_code, signum = (code, None) if code >= 0 else (None, -code)
        whole = Cgroups.figures(job.cgroup)  # the whole tree since it was contained
        tree = job.usage  # the sampled tree can exceed the kernel's per-process figures
        out = job.out
        return AttemptResult(
            name=job.spec.name,
            attempt=job.spec.attempt,
            status=job.cause or (Status.OK if exit_code == 0 else Status.FAILED),
            exit_code=exit_code,
            signal=signum if signum is not None else job.stop_signal,
            start=job.start,
            end=job.start + (end_mono - job.start_mono),
            duration_s=end_mono - job.start_mono,
            # The larger of the kernel's rusage (exact for the waited-for tree), the
            # cgroup's totals (which also hold children nobody waited for) and the
            # sampled tree.
            cpu_user_s=max(usage.ru_utime, whole.get("cpu_user_s", 0.0)),
            cpu_sys_s=max(usage.ru_stime, whole.get("cpu_sys_s", 0.0)),
            peak_rss_bytes=max(
                kernel_peak, whole.get("peak_rss_bytes", 0), tree.peak_rss if tree else 0
            ),
            read_bytes=max(
                usage.ru_inblock * 512, whole.get("read_bytes", 0), tree.read_bytes if tree else 0
            ),
            write_bytes=max(
                usage.ru_oublock * 512,
                whole.get("write_bytes", 0),
                tree.write_bytes if tree else 0,
            ),
            pid=job.pid,
            log_path=out.written_path,
            log_bytes=out.log_bytes,
            log_dropped_bytes=out.dropped,
            log_incomplete=out.incomplete,
        )

    # stop ------------------------------------------------------------------------------

    def stop(self, job: Job, cause: Status, now: bool = False) -> None:
        """TERM (and CONT, so a stopped group hears it) the attempt's whole process group;
        KILL after the grace period, or at once with `now`."""
        job.cause = job.cause or cause
        if now:
            _killpg(job.pid, signal.SIGKILL)
            job.stop_signal = signal.SIGKILL
            job.kill_at = None
            return
        if job.kill_at is None:
            _killpg(job.pid, signal.SIGTERM)
            _killpg(job.pid, signal.SIGCONT)
            job.stop_signal = job.stop_signal or signal.SIGTERM
            job.kill_at = time.monotonic() + self.grace
            self._timed.add(job)

    def _stop_all(self, cause: Status, now: bool = False) -> None:
        for job in list(self._jobs.values()):
            self.stop(job, cause, now)

    def _next_deadline(self) -> float | None:
        times = [
            t
            for job in self._timed
            for t in (job.kill_at if job.kill_at is not None else job.deadline,)
            if t
        ]
        return min(times) if times else None

    def _enforce_deadlines(self) -> None:
        if not self._timed:
            return
        now = time.monotonic()
        for job in list(self._timed):
            if job.kill_at is not None and now >= job.kill_at:
                _killpg(job.pid, signal.SIGKILL)
                job.stop_signal = signal.SIGKILL
                job.kill_at = None
                job.deadline = None
            elif job.deadline is not None and job.kill_at is None and now >= job.deadline:
                self.stop(job, Status.TIMEOUT)
                job.deadline = None

    def _stop_leftovers(self) -> None:
        """Kill what attempts left behind: their process groups, then reparented orphans."""
        if self._jobs:
            self._stop_all(Status.INTERRUPTED)
            end = time.monotonic() + self.grace
            while self._jobs and time.monotonic() < end:
                self.wait(max(0.0, end - time.monotonic()))
            self._stop_all(Status.INTERRUPTED, now=True)
            while self._jobs:
                self.wait(0.1)
        # Everything still carrying this run's mark, by module: process-group members,
        # setsid escapees, nohup'ed daemons alike (unless the module may leave a daemon).
        found = procfs.marked(self.run_id) if self.run_id else {}
        detached = {name for name, detach in self._groups.values() if detach}
        orphans = [
            (pid, pgid)
            for pid, pgid in procfs.children_of_self()
            if pgid not in self._groups and pgid not in (os.getpgrp(), self._watchdog_pid)
        ]
        unknown = [pid for pid, _ in orphans if pid not in found]
        if unknown and self.run_id:
            # A process in the middle of exec has no readable environment for a moment:
            # look again before treating it as nobody's (a detached daemon must survive).
            time.sleep(0.05)
            found.update(procfs.marked(self.run_id, unknown))
        for name, attempt in found.values():
            key = (name, attempt)
            self.leftovers[key] = self.leftovers.get(key, 0) + 1
        pids = [pid for pid, (name, _) in found.items() if name not in detached]
        spared = {pid for pid, (name, _) in found.items() if name in detached}
        groups = [pgid for pgid, (_, detach) in self._groups.items() if not detach]
        groups += [pgid for pid, pgid in orphans if pid not in spared]
        alive = [g for g in groups if _killpg(g, signal.SIGTERM)]
        for g in alive:
            _killpg(g, signal.SIGCONT)
        for pid in pids:
            _kill(pid, signal.SIGTERM)
            _kill(pid, signal.SIGCONT)
        end = time.monotonic() + self.grace
        while (alive or pids) and time.monotonic() < end:
            self._reap_all()
            alive = [g for g in alive if _killpg(g, 0)]
            pids = [p for p in pids if _kill(p, 0)]
            if alive or pids:
                time.sleep(0.02)
        for g in alive:
            _killpg(g, signal.SIGKILL)
        for pid in pids:
            _kill(pid, signal.SIGKILL)
        self._reap_all()


def _killpg(pgid: int, signum: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, signum)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _kill(pid: int, signum: int) -> bool:
    """Signal one process; False when it no longer exists (or is a zombie)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return procfs.alive(pid) if signum == 0 else True


def open_executor(place) -> LocalExecutor:
    """The registry's constructor (see corral.backends)."""
    return LocalExecutor(place.config.grace, place.config.log_limit, place.on_line, place.run_id)
