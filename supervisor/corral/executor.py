"""Spawn, wait, kill, log: the only part of corral that runs processes.

Every attempt is `bash FILE` in a new session (its own process group), stdin from
/dev/null, stdout and stderr on one pipe that corral copies into the attempt's log
file (capped) and hands line by line to a listener. Waiting is event-driven: one
`epoll` loop over the output pipes and a signal wakeup fd, so SIGCHLD, SIGINT,
SIGTERM and SIGHUP all arrive as bytes on a pipe and nothing polls. An attempt is over
when its main process exits, even if a daemon it forked still holds the pipe.

corral is the children's subreaper while it runs, so what a module leaves behind is
reparented to corral (not init) and is found, killed and reaped by `close()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from corral import procfs
from corral.cgroups import Cgroups
from corral.events import FAILED, INTERRUPTED, OK, TIMEOUT, AttemptResult

PR_SET_CHILD_SUBREAPER = 36
READ_CHUNK = 1 << 16
LINES_PER_SECOND = 200  # per module, on the terminal; the log keeps everything
MAX_LINE = 8192  # bytes of one line shown; longer lines are cut on screen only
# Signals the supervisor turns into events; everything else keeps its default.
HANDLED = (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# What a child must not inherit from Python: ignored SIGPIPE/SIGXFSZ and our handlers.
CHILD_DEFAULTS = (
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGCHLD,
    signal.SIGQUIT,
)


@dataclass(frozen=True)
class Spec:
    """What to start: one attempt of one module."""

    name: str
    path: str  # absolute
    attempt: int
    env: dict[str, str]  # the whole environment the module sees
    log_path: str | None = None
    timeout: float | None = None
    detach: bool = False


@dataclass(eq=False)
class Job:
    """A started attempt, as the executor tracks it."""

    spec: Spec
    pid: int
    start: float
    start_mono: float
    fd: int | None
    log_fd: int | None
    deadline: float | None
    log_bytes: int = 0
    dropped: int = 0
    log_incomplete: bool = False
    log_opened: bool = False
    partial: bytes = b""
    window: float = 0.0  # display rate limit: start of the current second …
    shown: int = 0  # … lines shown in it …
    hidden: int = 0  # … and lines not shown
    cause: str | None = None  # TIMEOUT or INTERRUPTED once corral decided to stop it
    stop_signal: int | None = None
    kill_at: float | None = None
    exited: bool = False
    cgroup: str | None = None  # its cgroup v2 directory, once contained


@dataclass
class Wakeup:
    """What one `wait` saw: attempts that ended and signals corral itself received."""

    finished: list[AttemptResult] = field(default_factory=list)
    signals: list[int] = field(default_factory=list)


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
    """Runs attempts on this host. Use as a context manager: it owns signal handling."""

    def __init__(
        self,
        grace: float = 5.0,
        log_cap: int = 64 << 20,
        on_line: Callable[[str, bytes], None] | None = None,
        run_id: str | None = None,
    ):
        self.grace = grace
        self.log_cap = log_cap
        self.on_line = on_line
        self.running: dict[int, Job] = {}
        self._lingering: set[Job] = set()  # exited, but a daemon still holds the pipe
        # every process group started, for close(): pgid -> (module, may it detach)
        self._groups: dict[int, tuple[str, bool]] = {}
        self._bash = shutil.which("bash") or "/bin/bash"
        self._epoll = select.epoll()
        self._pipes: dict[int, Job] = {}  # output pipe's fd -> its job
        self._timed: set[Job] = set()  # jobs with a deadline or a pending KILL
        self._devnull = -1
        self._wake_r = self._wake_w = -1
        self._old_handlers: dict[int, object] = {}
        self._old_wakeup = -1
        self._cwd: str | None = None
        self._home = os.getcwd()
        self.run_id = run_id
        self.leftovers: dict[tuple[str, int], int] = {}  # processes left at the end
        self._own_peak = (0.0, 0)  # (when read, corral's VmHWM)
        self.cgroups: Cgroups | None = None
        self._watchdog: int | None = None  # write end of the watchdog's pipe
        self._watchdog_pid: int | None = None

    # setup and teardown ----------------------------------------------------------------

    def __enter__(self) -> LocalExecutor:
        self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        for signum in HANDLED:
            self._old_handlers[signum] = signal.signal(signum, _note_signal)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
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
        if self._wake_r < 0:
            return
        self._stop_leftovers()
        for job in [*self._lingering, *self.running.values()]:
            self._drain(job, final=True)
        self._stop_watchdog()
        self._reap_all()
        if self.cgroups is not None:
            self.cgroups.close()
        signal.set_wakeup_fd(self._old_wakeup)
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        _set_subreaper(False)
        self._epoll.close()
        for fd in (self._wake_r, self._wake_w, self._devnull):
            os.close(fd)
        self._wake_r = -1
        if self._cwd is not None:
            os.chdir(self._home)

    # start -----------------------------------------------------------------------------

    def start(self, spec: Spec) -> Job:
        """Spawn one attempt; raises OSError when it cannot (the caller records a failure)."""
        r, w = os.pipe2(os.O_CLOEXEC)
        directory = os.path.dirname(spec.path)
        try:
            # posix_spawn has no cwd: corral is single-threaded, so change its own and
            # remember it (most modules share one directory, so this is rarely a syscall).
            if directory != self._cwd:
                os.chdir(directory)
                self._cwd = directory
            pid = os.posix_spawn(
                self._bash,
                ["bash", spec.path],
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
        now = time.monotonic()
        deadline = now + spec.timeout if spec.timeout else None
        job = Job(spec, pid, time.time(), now, r, None, deadline)
        self.running[pid] = job
        self._groups[pid] = (spec.name, spec.detach)
        self._epoll.register(r, select.EPOLLIN)
        self._pipes[r] = job
        if deadline is not None:
            self._timed.add(job)
        return job

    # wait ------------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> Wakeup:
        """Block until an attempt ends, a signal arrives or `timeout` passes; never polls.

        Output that arrives meanwhile goes to the logs and the line listener. Returns an
        empty Wakeup when only output (or nothing) happened.
        """
        out = Wakeup()
        deadline = self._next_deadline()
        if deadline is not None:
            left = max(0.0, deadline - time.monotonic())
            timeout = left if timeout is None else min(timeout, left)
        for fd, _ in self._epoll.poll(-1 if timeout is None else timeout):
            if fd == self._wake_r:
                out.signals.extend(self._read_wakeups())
            elif (job := self._pipes.get(fd)) is not None:  # (not closed meanwhile)
                self._read(job)
        if signal.SIGCHLD in out.signals:
            out.finished = self._reap_all()
        out.signals = [s for s in out.signals if s != signal.SIGCHLD]
        self._enforce_deadlines()
        return out

    def _read_wakeups(self) -> list[int]:
        signals: list[int] = []
        while True:
            try:
                data = os.read(self._wake_r, 512)
            except BlockingIOError:
                return signals
            if not data:
                return signals
            signals.extend(b for b in data if b not in signals)

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
        self._log(job, data)
        if self.on_line is not None:
            self._show(job, data)
        return True

    def _show(self, job: Job, data: bytes) -> None:
        """Hand complete lines to the listener, at most LINES_PER_SECOND per module: a
        flood (`yes`) is counted, not printed, and the log keeps every byte."""
        now = time.monotonic()
        if now - job.window >= 1.0:
            if job.hidden:
                self.on_line(
                    job.spec.name, f"… {job.hidden} lines not shown; they are in the log".encode()
                )
            job.window, job.shown, job.hidden = now, 0, 0
        if job.shown >= LINES_PER_SECOND:
            job.hidden += data.count(b"\n")
            job.partial = b""
            return
        lines = (job.partial + data).split(b"\n")
        job.partial = lines.pop()
        if len(job.partial) > MAX_LINE:  # no newline in sight (head -c 3G /dev/zero)
            lines.append(job.partial[:MAX_LINE] + b" [...]")
            job.partial = b""
        room = LINES_PER_SECOND - job.shown
        for line in lines[:room]:
            self.on_line(job.spec.name, line[:MAX_LINE])
        job.shown += min(len(lines), room)
        job.hidden += max(0, len(lines) - room)

    def _log(self, job: Job, data: bytes) -> None:
        if job.log_fd is None:
            # The log file is created with the first byte: most checks print nothing, and
            # creating a thousand empty files costs more than spawning the modules.
            if job.spec.log_path is None or job.log_opened:
                if job.log_opened:
                    job.dropped += len(data)
                return
            job.log_opened = True
            try:
                job.log_fd = os.open(
                    job.spec.log_path,
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                    0o640,
                )
            except OSError:
                job.log_incomplete = True
                job.dropped += len(data)
                return
        room = self.log_cap - job.log_bytes
        if room < len(data):
            job.dropped += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        view = memoryview(data)
        while view:
            try:
                written = os.write(job.log_fd, view)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                # Disk full or gone: keep draining the pipe so the module is not blocked
                # or killed by SIGPIPE, and say the log is incomplete.
                job.log_incomplete = True
                job.dropped += len(view)
                os.close(job.log_fd)
                job.log_fd = None
                return
            job.log_bytes += written
            view = view[written:]

    def _close_pipe(self, job: Job) -> None:
        if job.fd is None:
            return
        self._epoll.unregister(job.fd)
        del self._pipes[job.fd]
        os.close(job.fd)
        job.fd = None
        if self.on_line is not None:
            if job.partial:
                self.on_line(job.spec.name, job.partial[:MAX_LINE])
            if job.hidden:
                self.on_line(
                    job.spec.name, f"… {job.hidden} lines not shown; they are in the log".encode()
                )
        job.partial, job.hidden = b"", 0
        self._lingering.discard(job)
        if job.log_fd is not None and job.exited:
            os.close(job.log_fd)
            job.log_fd = None

    def _drain(self, job: Job, final: bool = False) -> None:
        """Read what is in the pipe now; at `final`, close it even if a daemon holds it."""
        while job.fd is not None and self._read(job):
            pass
        if final and job.fd is not None:
            self._close_pipe(job)
        if final and job.log_fd is not None:
            os.close(job.log_fd)
            job.log_fd = None

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
            job = self.running.pop(pid, None)
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
        elif job.log_fd is not None:
            os.close(job.log_fd)
            job.log_fd = None
        # ru_maxrss of a child spawned from corral starts at corral's own high-water mark
        # (the kernel carries the old mm's peak across exec), so it only says something
        # when it is clearly above ours; otherwise the sampler's figure stands.
        kernel_peak = usage.ru_maxrss * 1024
        if end_mono - self._own_peak[0] > 1.0:  # corral's own peak moves slowly
            self._own_peak = (end_mono, procfs.status_kb("self", b"VmHWM") or 0)
        if kernel_peak <= self._own_peak[1] + (1 << 20):
            kernel_peak = 0
        code = os.waitstatus_to_exitcode(status)
        exit_code, signum = (code, None) if code >= 0 else (None, -code)
        whole = Cgroups.figures(job.cgroup)  # the whole tree since it was contained
        outcome = job.cause or (OK if exit_code == 0 else FAILED)
        return AttemptResult(
            name=job.spec.name,
            attempt=job.spec.attempt,
            status=outcome,
            exit_code=exit_code,
            signal=signum if signum is not None else job.stop_signal,
            start=job.start,
            end=job.start + (end_mono - job.start_mono),
            duration_s=end_mono - job.start_mono,
            # The larger of the kernel's rusage (exact for the waited-for tree) and the
            # cgroup's totals (which also hold children nobody waited for).
            cpu_user_s=max(usage.ru_utime, whole.get("cpu_user_s", 0.0)),
            cpu_sys_s=max(usage.ru_stime, whole.get("cpu_sys_s", 0.0)),
            peak_rss_bytes=max(kernel_peak, whole.get("peak_rss_bytes", 0)),
            read_bytes=max(usage.ru_inblock * 512, whole.get("read_bytes", 0)),
            write_bytes=max(usage.ru_oublock * 512, whole.get("write_bytes", 0)),
            pid=job.pid,
            log_path=job.spec.log_path if job.log_opened else None,
            log_bytes=job.log_bytes,
            log_dropped_bytes=job.dropped,
            log_incomplete=job.log_incomplete,
        )

    # stop ------------------------------------------------------------------------------

    def contain(self, job: Job, tree: list[int]) -> None:
        """Move a running attempt's tree into its own cgroup (once; where possible)."""
        if self.cgroups is not None and job.cgroup is None and not job.exited:
            job.cgroup = self.cgroups.contain(tree, job.spec.name, job.spec.attempt) or ""

    def stop(self, job: Job, cause: str, now: bool = False) -> None:
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

    def stop_all(self, cause: str, now: bool = False) -> None:
        for job in list(self.running.values()):
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
                self.stop(job, TIMEOUT)
                job.deadline = None

    def _stop_leftovers(self) -> None:
        """Kill what attempts left behind: their process groups, then reparented orphans."""
        if self.running:
            self.stop_all(INTERRUPTED)
            end = time.monotonic() + self.grace
            while self.running and time.monotonic() < end:
                self.wait(max(0.0, end - time.monotonic()))
            self.stop_all(INTERRUPTED, now=True)
            while self.running:
                self.wait(0.1)
        # Everything still carrying this run's mark, by module: process-group members,
        # setsid escapees, nohup'ed daemons alike (unless the module may leave a daemon).
        found = marked(self.run_id) if self.run_id else {}
        detached = {name for name, detach in self._groups.values() if detach}
        orphans = [
            (pid, pgid)
            for pid, pgid in _orphans()
            if pgid not in self._groups and pgid not in (os.getpgrp(), self._watchdog_pid)
        ]
        unknown = [pid for pid, _ in orphans if pid not in found]
        if unknown and self.run_id:
            # A process in the middle of exec has no readable environment for a moment:
            # look again before treating it as nobody's (a detached daemon must survive).
            time.sleep(0.05)
            found.update(marked(self.run_id, unknown))
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


class DryRunExecutor:
    """Starts nothing: every attempt 'succeeds' at once, so the scheduler's order shows."""

    def __init__(self) -> None:
        self.running: dict[int, Job] = {}
        self._next_pid = 1

    def __enter__(self) -> DryRunExecutor:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def start(self, spec: Spec) -> Job:
        job = Job(spec, self._next_pid, time.time(), time.monotonic(), None, None, None)
        self.running[job.pid] = job
        self._next_pid += 1
        return job

    def wait(self, timeout: float | None = None) -> Wakeup:
        done = [
            AttemptResult(
                j.spec.name,
                j.spec.attempt,
                OK,
                0,
                None,
                j.start,
                j.start,
                0.0,
                0.0,
                0.0,
                0,
                0,
                0,
                j.pid,
                None,
            )
            for j in self.running.values()
        ]
        self.running.clear()
        if not done and timeout:
            time.sleep(timeout)
        return Wakeup(finished=done)

    def stop(self, job: Job, cause: str, now: bool = False) -> None:
        pass

    def stop_all(self, cause: str, now: bool = False) -> None:
        pass


def proc_start(pid: int) -> int | None:
    """A process's start time in clock ticks since boot; None when it is gone."""
    fields = procfs.stat(pid)
    return int(fields[19]) if fields else None


def _note_signal(signum, frame) -> None:
    """Python-level handler: the wakeup fd already carries the signal number."""


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


def marked(run_id: str, among=None) -> dict[int, tuple[str, int]]:
    """Live processes (of `among`, default all) whose environment carries
    CORRAL_RUN_ID=run_id: pid -> (module, attempt)."""
    needle = f"CORRAL_RUN_ID={run_id}".encode()
    me = os.getpid()
    out = {}
    for pid in procfs.pids() if among is None else among:
        env = procfs.environ(pid) if pid != me else None
        if not env or needle not in env or not procfs.alive(pid):
            continue
        values = dict(v.split(b"=", 1) for v in env if b"=" in v)
        name = values.get(b"CORRAL_MODULE", b"?").decode(errors="replace")
        attempt = int(values.get(b"CORRAL_ATTEMPT", b"1") or 1)
        out[pid] = (name, attempt)
    return out


def _orphans() -> list[tuple[int, int]]:
    """(pid, process group) of processes reparented to corral (it is their subreaper)."""
    me = str(os.getpid()).encode()
    out = []
    for pid in procfs.pids():
        fields = procfs.stat(pid)
        if fields and fields[1] == me and fields[0] != b"Z":
            out.append((pid, int(fields[2])))
    return out
