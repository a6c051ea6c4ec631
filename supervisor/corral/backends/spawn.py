"""Starting an attempt's bash on this host: the local backend's only process spawner.

An attempt is `bash FILE` (`cgroups.command`), started with posix_spawn in a session of
its own, stdin /dev/null, stdout and stderr on a close-on-exec pipe each, the module's
checked descriptor (`trust.Checker`) at MODULE_FD and the stub (`cgroups.stub`, on a
memfd) as BASH_ENV. With cgroups, the attempt is handed instead to a bash started ahead
of time that already entered its cgroups (`Ready`), and one more is readied. What the
spawner hands back (a PID and the read ends of its pipes) the executor tracks and waits
on; the spawner never reads output nor reaps.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from dataclasses import dataclass

from corral.cgroups import MODULE_FD, STUB, STUB_FD, command, ready_message, startup, stub
from corral.containment import Containment, Member
from corral.errors import ResourceError
from corral.executor import Spec
from corral.safepath import UnsafePath
from corral.signals import CHILD_DEFAULTS
from corral.trust import Checker
from corral.watchdog import bash

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


class Spawner:
    """Spawns attempts' bash processes (directly, or through a `Ready` bash) and keeps
    what that needs: bash's path, /dev/null, corral's directory, the trust checker and
    the ready bashes. `open()` before the first spawn, `close()` after the last."""

    def __init__(self):
        self.bash = bash()  # by absolute path (checked as root), never through PATH
        self.devnull = -1  # < 0: not open
        self._cwd: str | None = None
        self._home = _cwd()  # None: the directory corral started in is gone
        self._dirs: dict[str, str] = {}  # a module's directory as given -> absolute
        self._trust = Checker()  # opens each module to run, checked (as root)
        self._ready: list[Ready] = []  # see Ready; only with cgroups
        self._readied = 0  # how many were started (their cgroups' numbers)

    def open(self) -> None:
        """Open /dev/null for the attempts' stdin; raises OSError (out of descriptors),
        and ResourceError as root where bash could not read the stub (no /proc/self/fd:
        bash skips a BASH_ENV it cannot open, in silence, and would run modules unproven)."""
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if os.geteuid() == 0 and not os.path.exists(f"/proc/self/fd/{self.devnull}"):
            os.close(self.devnull)
            self.devnull = -1
            raise ResourceError(
                f"{STUB.rpartition('/')[0]} is missing (is /proc mounted?): bash could not "
                "prove it runs the module corral checked, so as root nothing is run"
            )

    def close(self) -> None:
        """Close what it holds and return to the directory corral started in."""
        self._trust.close()
        if self.devnull >= 0:
            os.close(self.devnull)
            self.devnull = -1
        if self._cwd is not None and self._home is not None:
            with contextlib.suppress(OSError):  # it may have been removed meanwhile
                os.chdir(self._home)

    def spawn(
        self, spec: Spec, containment: Containment | None
    ) -> tuple[int, float, float, int, int, Member | None]:
        """Spawn `spec` directly: (pid, wall start, monotonic start, stdout's read end,
        stderr's read end, its containment member); raises OSError when it cannot,
        leaving nothing open."""
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
            if containment is not None:
                files, member = containment.prepare(spec.name, spec.attempt, spec.detach)
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
        return pid, wall, now, r, er, member

    def hand_over(
        self, spec: Spec, containment: Containment
    ) -> tuple[Ready, float, float, int] | None:
        """Hand `spec` to a ready bash (readying one first if none is): (that bash, wall
        start, monotonic start, the module's checked descriptor, to stay open until the
        attempt is over); None when no bash could take it (the caller spawns directly).
        Raises OSError when the module cannot be opened."""
        try:
            ready = self._ready.pop() if self._ready else self._make_ready(spec.env, containment)
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
            self.bash,
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
        containment.assigned(ready.member, spec.detach)
        return ready, wall, now, module

    def replenish(self, env: dict[str, str], running: int, containment: Containment) -> None:
        """Ready one more bash for the next attempt, unless as many wait as attempts
        run (`running`) or MAX_READY do; one that cannot be started is not."""
        if len(self._ready) < min(running, MAX_READY):
            with contextlib.suppress(OSError):
                self._ready.append(self._make_ready(env, containment))

    def drop_ready(self, pid: int, containment: Containment | None) -> bool:
        """A reaped orphan `pid` that was a ready bash (it died before its attempt: it
        could not enter its cgroup) is forgotten; False when it was none."""
        for ready in self._ready:
            if ready.pid == pid:
                self._ready.remove(ready)
                ready.close()
                containment.release(ready.member)
                return True
        return False

    def dismiss_ready(self, containment: Containment | None) -> None:
        """The run is ending: ready bashes read end of file and exit; reap them."""
        for ready in self._ready:
            ready.close()
        for ready in self._ready:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(ready.pid, 0)
            containment.release(ready.member)
        self._ready = []

    def _make_ready(self, env: dict[str, str], containment: Containment) -> Ready:
        """Start a bash that enters a fresh cgroup and waits for an attempt."""
        self._readied += 1
        argv, member = containment.prepare_ready(self._readied)
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
            (os.POSIX_SPAWN_DUP2, self.devnull, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, err, 2),
            (os.POSIX_SPAWN_DUP2, fd, at),
        ]
        if stub_fd is not None:
            actions.append((os.POSIX_SPAWN_DUP2, stub_fd, STUB_FD))
            env = {**env, "BASH_ENV": STUB}
        try:
            return os.posix_spawn(
                self.bash,
                argv,
                env,
                file_actions=actions,
                setsid=True,
                setsigdef=CHILD_DEFAULTS,
            )
        finally:
            if stub_fd is not None:
                os.close(stub_fd)


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
