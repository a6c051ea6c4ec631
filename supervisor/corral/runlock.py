"""One run at a time per modules directory, for cron: an flock with the holder's PID.

The kernel drops an flock when its holder dies, so a stale lock (holder gone) is simply
free: there is nothing to clean up and no PID to trust blindly.

No one else may hold the lock: an flock needs only an open descriptor, so the lock file
is mode 0600 in a directory of mode 0700 that corral made (reached without following
anyone's link). A directory, FIFO or link someone else put in its place is refused with
an error naming it (exit 2), never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path

from corral import procfs, safepath
from corral.errors import LockHeld, RunLockError
from corral.signals import Stopped

POLL = 0.1  # seconds between attempts while --wait-lock waits


def lock_dir() -> Path:
    """/run/lock/corral for root, $XDG_RUNTIME_DIR/corral, else /tmp/corral-UID."""
    if os.geteuid() == 0 and os.path.isdir("/run/lock"):
        return Path("/run/lock/corral")
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "corral"
    return Path(f"/tmp/corral-{os.geteuid()}")


def lock_path(modules: tuple[Path, ...]) -> Path:
    """Named by the directories' device and inode: one lock however a directory is
    reached (symlink, relative path, bind mount)."""
    keys = sorted({(st.st_dev, st.st_ino) for st in (os.stat(d) for d in modules)})
    return lock_dir() / f"{'+'.join(f'{dev:x}-{ino:x}' for dev, ino in keys)}.lock"


class RunLock:
    """Held for the whole run; `acquire` raises LockHeld (exit 3) naming the holder."""

    def __init__(self, modules: tuple[Path, ...]):
        self.modules = modules
        self.path = lock_path(modules)
        self.fd: int | None = None
        self._open_fd: int | None = None  # the lock file while acquire waits on it

    def acquire(
        self, wait: float | None = None, on_wait: Callable[[str], None] | None = None
    ) -> RunLock:
        """Take the lock; wait up to `wait` seconds (None: not at all, inf: for ever),
        telling `on_wait` once that it waits, and for whom (no silent hang). Raises
        LockHeld (exit 3) when another run keeps it, RunLockError (exit 2, naming the
        file) when it cannot be made (a full or read-only filesystem)."""
        try:
            return self._acquire(wait, on_wait)
        except OSError as exc:
            raise RunLockError(_cannot(self.path, exc)) from None
        except Stopped as stop:  # Ctrl-C (SIGTERM ...) while waiting: nothing was run
            holder = "unknown"
            if self._open_fd is not None:
                holder = _holder(self._open_fd)
                with contextlib.suppress(OSError):
                    os.close(self._open_fd)
            stop.during = (
                f"while waiting for the run lock {self.path} (held by PID {holder}); "
                "nothing was run"
            )
            raise
        finally:
            self._open_fd = None

    def _acquire(self, wait: float | None, on_wait: Callable[[str], None] | None) -> RunLock:
        fd = self._open_fd = _open(self.path)
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _linked(fd, self.path):
                    break
                # Replaced since we opened it (see below): the lock is the new file.
                os.close(fd)
                fd = self._open_fd = _open(self.path)
                continue
            except BlockingIOError:
                if _held_by_stranger(fd):
                    # Another user opened the file while an older corral left it readable
                    # and holds it: a new file replaces it (only we can open that one).
                    os.unlink(self.path)
                    os.close(fd)
                    fd = self._open_fd = _open(self.path)
                    continue
                if on_wait is not None and deadline is not None:
                    how_long = "for ever" if wait == float("inf") else f"up to {wait:g}s"
                    on_wait(
                        f"another corral run (PID {_holder(fd)}) holds {self.path}; "
                        f"waiting {how_long} for it"
                    )
                    on_wait = None
                if deadline is None or time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    dirs = ", ".join(str(d.absolute()) for d in self.modules)
                    # Suggest --wait-lock only to whoever did not give it.
                    tail = f" after waiting {wait:g}s" if wait else ""
                    tail += f"; lock file {self.path}; `corral status` shows what it does"
                    tail += "" if wait else ". Use --wait-lock[=DURATION] to wait for it"
                    raise LockHeld(
                        f"another corral run (PID {holder}) is running {dirs}{tail}"
                    ) from None
                time.sleep(POLL)
        with contextlib.suppress(OSError):  # (a full disk: the lock holds all the same)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Let the lock go (its file emptied first); nothing when it is not held."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _open(path: Path) -> int:
    """The lock file, made if missing; UnsafePath when someone else controls it."""
    try:
        dir_fd = safepath.open_dir(path.parent, 0o700)
    except safepath.UnsafePath as exc:
        raise safepath.UnsafePath(
            exc.path, f"{exc.why}; remove it (rm -r {exc.path}) and run again"
        ) from None
    try:
        owner = os.fstat(dir_fd).st_uid
        if owner != os.geteuid():
            raise safepath.UnsafePath(
                str(path.parent),
                f"owned by uid {owner}, not {os.geteuid()}; another user made it: "
                f"remove it (rm -r {path.parent}) and run again",
            )
        fd = safepath.open_in(dir_fd, path.name, os.O_RDWR | os.O_CREAT, 0o600, shown=path)
    finally:
        os.close(dir_fd)
    if os.fstat(fd).st_mode & 0o077:  # made by an older corral: no one else may open it
        os.fchmod(fd, 0o600)
    return fd


def _cannot(path: Path, exc: OSError) -> str:
    """Why the lock file at `path` cannot be had, for the user."""
    import errno

    why = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why += f" (free space or inodes on the filesystem of {path.parent})"
    elif exc.errno == errno.EROFS:
        why += f" ({path.parent} is on a read-only filesystem)"
    return f"cannot take the run lock {path}: {why}; nothing was run"


def probe(modules: tuple[Path, ...]) -> None:
    """Raise what taking the run lock would raise for its directory and file (UnsafePath,
    RunLockError), making and changing nothing: for `check` and `run --dry-run`."""
    path = lock_path(modules)
    try:
        _probe(path)
    except OSError as exc:
        raise RunLockError(_cannot(path, exc)) from None


def _probe(path: Path) -> None:
    try:
        safepath.probe_dirs(path.parent)
    except safepath.UnsafePath as exc:
        raise safepath.UnsafePath(
            exc.path, f"{exc.why}; remove it (rm -r {exc.path}) and run again"
        ) from None
    if not os.path.isdir(path.parent):
        return  # made by the run, as it must be
    owner = os.stat(path.parent).st_uid
    if owner != os.geteuid():
        raise safepath.UnsafePath(
            str(path.parent),
            f"owned by uid {owner}, not {os.geteuid()}; another user made it: "
            f"remove it (rm -r {path.parent}) and run again",
        )
    if not os.path.lexists(path):
        return
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    if safepath.strict():
        with safepath.Walker() as walker:
            os.close(walker.open_file(path, os.O_RDWR))
    else:
        os.close(os.open(path, flags))


def _linked(fd: int, path: Path) -> bool:
    """Is `path` still the file open on `fd`?"""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _held_by_stranger(fd: int) -> bool:
    """Is the flock on `fd`'s file held by another user? /proc/locks names the process
    that took it (`1: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF`), which may since
    have exited and left the descriptor to another; so: not taken by a live process of
    ours, and open in a process of another user."""
    st = os.fstat(fd)
    takers = procfs.flock_takers(st)
    if takers is None or any(procfs.euid(pid) == os.geteuid() for pid in takers):
        return False
    for pid in procfs.pids():
        if procfs.euid(pid) not in (None, os.geteuid()) and procfs.has_open(pid, st):
            return True
    return False


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip() or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"
