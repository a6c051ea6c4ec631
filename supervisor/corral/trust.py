"""Run nothing that someone else could have changed (when corral runs as root).

As root, every module file, every library file in $CORRAL_LIB and the config file must
be a regular file root owns and no one else can write (mode bits and POSIX ACL entries
alike), and so must everything on the way to it: the checks apply to the file actually
run, after its symbolic links. Every directory from / down to the real file must be
root's and writable by no one else; a world-writable directory with the sticky bit
(/tmp) may be passed through, but is never a place modules or libraries are read from;
every symbolic link on the way must be root's. The rule is sshd's StrictModes, applied
through `safepath`: a file is only as trustworthy as the least protected step to it.

What runs is the file checked: `Checker.open_module` opens it once, checks it on that
descriptor, and the executor runs bash from that descriptor.

The environment root hands the modules decides what else runs as root: the bash corral
starts (found by absolute path, never through PATH), the file BASH_ENV names (bash
sources it as it starts), and every directory on PATH (a module's `ls` is whatever the
first of them holds). As root all of them meet the same rules (`environment`): a PATH
entry that is relative (the module's working directory at the time) is refused too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from corral.errors import Problem, exhausted
from corral.safepath import MAX_LINKS, Route, UnsafePath, Walker, writable_by_others

READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def untrusted(paths: Iterable[str | Path], euid: int | None = None) -> list[Problem]:
    """Problems for every file another user could change (itself, a directory above it,
    a link on the way); [] when corral is not root (a user may run their own files)."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return []
    problems: list[Problem] = []
    with Checker() as checker:
        for path in paths:
            try:
                if os.path.isdir(path):
                    checker.check_directory(os.fspath(path))
                else:
                    os.close(checker.open(os.fspath(path)))
            except UnsafePath as exc:
                problems.append(Problem(path, 1, refusal(os.fspath(path), exc)))
            except OSError as exc:
                if exhausted(exc) is not None:  # corral's own want, not the file's fault
                    raise
                why = f"{path} cannot be checked ({exc.strerror})"
                problems.append(Problem(path, 1, f"refusing to run as root: {why}"))
    return problems


def environment(env: dict[str, str], bash: str, euid: int | None = None) -> list[Problem]:
    """Problems for what the environment `env` makes root run besides the modules: the
    `bash` executable, the BASH_ENV file, every PATH entry another user could change (or
    make: a missing entry counts by the directory that would hold it); [] when corral is
    not root."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return []
    problems = untrusted([bash], euid)
    startup = env.get("BASH_ENV", "")
    if startup and not startup.startswith("/"):
        why = f"BASH_ENV={startup} is relative: bash would source it in each module's directory"
        problems.append(Problem(None, 0, f"refusing to run as root: {why}"))
    elif startup:
        for p in untrusted([startup], euid):
            why = f"{p.message} (BASH_ENV names it: bash sources it before each module)"
            problems.append(Problem(p.path, p.line, why))
    with Checker() as checker:
        for entry in env.get("PATH", "").split(":"):
            why = _path_entry(checker, entry)
            if why is not None:
                problems.append(Problem(None, 0, f"refusing to run as root: {why}"))
    return problems


def _path_entry(checker: Checker, entry: str) -> str | None:
    """Why root must not look commands up in the PATH entry `entry`; None when it may."""
    if not entry.startswith("/"):
        return (
            f"the PATH entry '{entry}' is relative: commands would be looked up in "
            "whatever directory a module is in"
        )
    existing = os.path.normpath(entry)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    try:
        checker.check_directory(existing)
    except UnsafePath as exc:
        if existing != os.path.normpath(entry):
            return (
                f"the PATH entry {entry} does not exist, and {exc.path} is {exc.why}: "
                "another user could make it"
            )
        return (
            f"the PATH entry {entry}: {exc.path} is {exc.why}; another user could change what runs"
        )
    except OSError:
        pass  # not a directory, or unreadable: nothing is found in it
    return None


def library_tree(root: Path) -> list[str]:
    """Every directory and file under the library `root`, hidden ones and any name
    included, following links into other directories once: a module may source any of
    them through $CORRAL_LIB, so all of them are checked. [] when `root` is missing."""
    found: list[str] = []
    seen: set[str] = set()
    for directory, _dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:  # a link back up the tree
            _dirs.clear()
            continue
        seen.add(real)
        found.append(directory)
        found += (os.path.join(directory, name) for name in sorted(files))
    return found


def refusal(path: str, exc: UnsafePath, doing: str = "run") -> str:
    """'refusing to run as root: its directory /x is world-writable …'."""
    path = os.path.abspath(path)
    if exc.path == path:
        where = path
    elif exc.link:
        where = f"the link {exc.path} on its way"
    elif path.startswith(exc.path.rstrip("/") + "/"):
        where = f"its directory {exc.path}"
    else:
        where = f"{exc.path}, on the way to the real file,"
    what = "what runs" if doing == "run" else "what is read"
    return f"refusing to {doing} as root: {where} is {exc.why}; another user could change {what}"


def read_checked(path: str | Path) -> bytes:
    """The bytes of the file `path`, read from the descriptor the checks were made on
    (as root); an ordinary user's are read as they are. Raises UnsafePath, or OSError."""
    if os.geteuid() != 0:
        with open(path, "rb") as f:
            return f.read()
    with Checker() as checker:
        fd = checker.open(os.fspath(path))
    with open(fd, "rb") as f:
        return f.read()


class Checker:
    """Opens files to run, checked; remembers the directories it has walked."""

    def __init__(self) -> None:
        self._walker = Walker("run")
        self._bad: dict[str, UnsafePath] = {}  # directory -> why it cannot be trusted
        self._routes: dict[str, Route] = {}  # a module's directory -> its route (run only)

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the directories kept for the run's checks."""
        self._walker.close()
        for route in self._routes.values():
            route.close()
        self._routes.clear()

    def open(self, path: str, links: int = 0) -> int:
        """A read-only descriptor of the file `path` finally names, checked on that
        descriptor. Raises UnsafePath (or OSError when it cannot be read at all)."""
        directory, name = os.path.split(path if path.startswith("/") else os.path.abspath(path))
        if directory in self._bad:
            raise self._bad[directory]
        try:
            dir_fd = self._walker.directory(directory)
        except UnsafePath as exc:
            self._bad[directory] = exc
            raise
        try:
            return self._open_in(dir_fd, directory, name)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            return self._follow(dir_fd, directory, name, links)

    @staticmethod
    def _open_in(dir_fd: int, directory: str, name: str, passed: dict | None = None) -> int:
        """The regular file `name` in the checked directory `dir_fd` (`directory`), not
        through a link (OSError ELOOP), checked on its descriptor (UnsafePath). `passed`
        (a `Route`'s): files that passed, by name, as the check saw them; one unchanged
        since (inode, change time, owner, mode) is not checked again."""
        fd = os.open(name, READ, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath(os.path.join(directory, name), "not a regular file", "run")
            seen = (st.st_dev, st.st_ino, st.st_ctime_ns, st.st_mode, st.st_uid, st.st_gid)
            if passed is None or passed.get(name) != seen:
                why = writable_by_others(fd, st, sticky_ok=False)
                if why is not None:
                    raise UnsafePath(os.path.join(directory, name), why, "run")
                if passed is not None:
                    passed[name] = seen
            return fd  # (O_NONBLOCK means nothing to a regular file)
        except BaseException:
            os.close(fd)
            raise

    def check_directory(self, path: str) -> None:
        """Raises UnsafePath when another user could change the directory `path`, one
        above it or a link on the way (a sticky world-writable one included)."""
        path = os.path.abspath(path)
        if path in self._bad:
            raise self._bad[path]
        try:
            self._walker.directory(path)
        except UnsafePath as exc:
            self._bad[path] = exc
            raise

    def open_module(self, path: str) -> int:
        """A descriptor to run the module `path` from (close-on-exec; the caller closes
        it). As root it is checked as `untrusted` checks, on this very descriptor, every
        directory on the way checked again: UnsafePath when someone else could have
        changed it since the run began."""
        if os.geteuid() != 0:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        # The directories on the way are checked again too: one that became another
        # user's since the run began would let them rename any root file into place.
        # perf: through the directories kept from the last walk when each still is what
        # its name leads to and still passes (docs/architecture.md); otherwise walked
        # afresh, which says what changed.
        directory, name = os.path.split(os.path.abspath(path))
        route = self._routes.get(directory)
        if route is not None and route.holds():
            try:
                return self._open_in(route.fd, directory, name, route.files)
            except (UnsafePath, OSError):
                pass  # (a link, or refused: the fresh walk says why)
        if route is not None:
            route.close()
            del self._routes[directory]
        with Checker() as fresh:
            fd = fresh.open(path)
        route = Route.walk(directory)  # (once per directory, or after a change)
        if route is not None:
            self._routes[directory] = route
        return fd

    def _follow(self, dir_fd: int, directory: str, name: str, links: int) -> int:
        where = os.path.join(directory, name)
        target = self._walker.link_target(dir_fd, name, where)
        if links >= MAX_LINKS:
            raise UnsafePath(where, "too many symbolic links", "run")
        return self.open(os.path.join(directory, target), links + 1)
