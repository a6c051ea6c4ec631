"""Starting an attempt's bash on this host: the local backend's only process spawner.

An attempt is `bash FILE` (`cgroups.command`), started with posix_spawn in a session of
its own, stdin /dev/null, stdout and stderr on a close-on-exec pipe each, the module's
checked descriptor (`trust.Checker`) at MODULE_FD and the stub (`cgroups.stub`, on a
memfd) as BASH_ENV: the stub puts bash into the attempt's cgroups before anything of the
module runs. What the spawner hands back (a PID and the read ends of its pipes) the
executor tracks and waits on; the spawner never reads output nor reaps.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time

from corral.cgroups import MODULE_FD, STUB, STUB_FD, command, startup, stub
from corral.containment import Containment, Member
from corral.errors import ResourceError
from corral.executor import Spec
from corral.safepath import UnsafePath
from corral.signals import CHILD_DEFAULTS
from corral.trust import Checker
from corral.watchdog import bash


class Spawner:
    """Spawns attempts' bash processes and keeps
    what that needs: bash's path, /dev/null, corral's directory and the trust checker.
    `open()` before the first spawn, `close()` after the last."""

    def __init__(self):
        self.bash = bash()  # by absolute path (checked as root), never through PATH
        self.devnull = -1  # < 0: not open
        self._cwd: str | None = None
        self._home = _cwd()  # None: the directory corral started in is gone
        self._dirs: dict[str, str] = {}  # a module's directory as given -> absolute
        self._trust = Checker()  # opens each module to run, checked (as root)

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
