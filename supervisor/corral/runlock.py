"""One run at a time per modules directory, for cron: an flock with the holder's PID.

The kernel drops an flock when its holder dies, so a stale lock (holder gone) is simply
free: there is nothing to clean up and no PID to trust blindly.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from corral.errors import LockHeld

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

    def acquire(self, wait: float | None = None) -> RunLock:
        """Take the lock; wait up to `wait` seconds (None: not at all, inf: for ever)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    holder = _holder(fd)
                    os.close(fd)
                    dirs = ", ".join(str(d) for d in self.modules)
                    waited = f" after waiting {wait:g}s" if wait else ""
                    raise LockHeld(
                        f"another corral run (PID {holder}) is running {dirs}"
                        f"{waited}; lock file {self.path}. Use --wait-lock to wait"
                    ) from None
                time.sleep(POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip() or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"
