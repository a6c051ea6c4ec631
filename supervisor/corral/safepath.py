"""Open paths as root without following anyone else's link.

A root process that opens `/var/log/corral/run/x.log` by name follows whatever links
other users planted on the way. Here a path is walked from `/` one component at a time
(`openat` with O_NOFOLLOW | O_DIRECTORY from the descriptor of the directory before), so
every directory is checked on the descriptor that is then used:

- a directory must be root's and writable by no one else: not by its group (unless that
  is root's), not by others, not through a POSIX ACL entry. A world-writable directory
  with the sticky bit (/tmp, /run/lock) may be passed through, because no one else can
  rename or replace root's entries in it, but never written into;
- a symbolic link is followed only if root owns it (the directory holding it is already
  trusted, so no one else can replace it); its target is walked the same way;
- a file is opened with O_NOFOLLOW in its checked directory and must be a regular file
  root owns that no one else can write (mode bits or ACL): a planted FIFO, directory or
  link is refused, never opened, and so is a file another user could fill (a database
  whose runs recovery would act on).

Anything else raises UnsafePath naming the path and what is wrong with it. As an
ordinary user corral writes its own files as that user can, and nothing is checked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from corral.errors import CorralError

ACL_XATTR = "system.posix_acl_access"
# POSIX ACL xattr entries (linux/posix_acl_xattr.h): a 4-byte version, then 8-byte
# (tag: u16, perm: u16, id: u32) entries, little endian.
ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK = 0x02, 0x04, 0x08, 0x10
ACL_WRITE = 0x02
MAX_LINKS = 40  # as the kernel's own limit on links in one lookup
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(CorralError):
    """A path corral would write (or run) as root that another user controls."""

    def __init__(self, path: str, why: str, doing: str = "write", link: bool = False):
        self.path, self.why = path, why
        self.link = link  # `path` is a symbolic link (one that may not be followed)
        super().__init__(f"refusing to {doing} as root through {path}: {why}")


def strict() -> bool:
    """The checks apply to root only: an ordinary user may use their own files."""
    return os.geteuid() == 0


def acl_writers(fd: int, st: os.stat_result) -> str | None:
    """Who other than root may write the file or directory open on `fd` through a POSIX
    ACL ('user 1000', 'group 33'); None when nobody."""
    try:
        data = os.getxattr(fd, ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        return f"an ACL that cannot be read ({exc.strerror})"
    entries = [
        (
            int.from_bytes(data[i : i + 2], "little"),
            data[i + 2],
            int.from_bytes(data[i + 4 : i + 8], "little"),
        )
        for i in range(4, len(data) - 7, 8)
    ]
    mask = next((perm for tag, perm, _ in entries if tag == ACL_MASK), 0x07)
    for tag, perm, ident in entries:
        if not perm & mask & ACL_WRITE:
            continue
        if tag == ACL_USER and ident != 0:
            return f"user {ident}"
        if tag == ACL_GROUP and ident != 0:
            return f"group {ident}"
        if tag == ACL_GROUP_OBJ and st.st_gid != 0:
            return f"group {st.st_gid}"
    return None


def writable_by_others(fd: int, st: os.stat_result, sticky_ok: bool) -> str | None:
    """Why someone other than root could change what is in (or at) `fd`; None when no
    one can. `sticky_ok`: a world-writable directory with the sticky bit is acceptable."""
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root"
    mode = stat.S_IMODE(st.st_mode)
    if mode & stat.S_IWOTH and not (sticky_ok and mode & stat.S_ISVTX):
        sticky = " (sticky, but anyone may add to it)" if mode & stat.S_ISVTX else ""
        return f"world-writable (mode {mode:04o}){sticky}"
    if mode & stat.S_IWGRP and st.st_gid != 0:
        return f"writable by group {st.st_gid} (mode {mode:04o})"
    if (who := acl_writers(fd, st)) is not None:
        return f"writable by {who} through its ACL"
    return None


class Walker:
    """Resolves paths component by component; remembers the directories it has checked.

    `doing` names the act in messages ('write', 'run'). Use as a context manager: the
    directory descriptors it keeps are closed at the end."""

    def __init__(self, doing: str = "write"):
        self.doing = doing
        self._dirs: dict[str, int] = {}  # checked directory (as resolved) -> descriptor

    def __enter__(self) -> Walker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close every directory descriptor the walker kept."""
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    def directory(
        self, path: str | os.PathLike, create: bool = False, mode: int = 0o755, through=False
    ) -> int:
        """A checked descriptor of directory `path` (owned by the walker: do not close);
        missing directories are made with `mode` when `create`; `through`: `path` is
        only passed through (a sticky one is fine), as on the way to a directory below.
        Raises UnsafePath, or OSError when a component is missing or unreadable."""
        path = _absolute(path)
        key = f"{path}/\0" if through else path  # checked by another rule: kept apart
        fd = self._dirs.get(key)
        if fd is None:
            fd = self._walk(path, create, mode, through)
            self._dirs[key] = fd
        return fd

    def _walk(self, path: str, create: bool, mode: int, through: bool = False) -> int:
        """The descriptor of the directory `path`, every step checked."""
        fd = os.open("/", DIR_FLAGS)
        chain = ["/"]  # the real directories walked: '..' goes back along it
        parts = _parts(path)
        links = 0
        try:
            self._check_dir(fd, "/", last=not parts and not through)
            while parts:
                name = parts.pop(0)
                if name == "..":
                    if len(chain) > 1:
                        chain.pop()
                        fd = _replace(fd, os.open("..", DIR_FLAGS, dir_fd=fd))
                    continue
                where = os.path.join(chain[-1], name)
                try:
                    child = self._open_dir(fd, name, create, mode)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    target = self.link_target(fd, name, where)
                    links += 1
                    if links > MAX_LINKS:
                        raise UnsafePath(where, "too many symbolic links", self.doing) from None
                    parts[:0] = _parts(target)
                    if target.startswith("/"):
                        fd = _replace(fd, os.open("/", DIR_FLAGS))
                        chain = ["/"]
                    continue
                fd = _replace(fd, child)
                chain.append(where)
                self._check_dir(fd, where, last=not parts and not through)
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _open_dir(fd: int, name: str, create: bool, mode: int) -> int:
        try:
            return os.open(name, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
        # Made meanwhile (by us or by someone else) is fine: the caller checks it.
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=fd)
        child = os.open(name, DIR_FLAGS, dir_fd=fd)
        st = os.fstat(child)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(child, mode)  # the umask does not decide who may write
        return child

    def link_target(self, dir_fd: int, name: str, where: str) -> str:
        """The target of the link `name` (in `dir_fd`, shown as `where`), if root owns
        it; else UnsafePath (NotADirectoryError when it is no link but root's)."""
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            kind = _kind(st.st_mode)
            if st.st_uid != 0:  # planted where a directory should be
                raise UnsafePath(
                    where, f"a {kind} owned by uid {st.st_uid}, not a directory", self.doing
                )
            raise NotADirectoryError(errno.ENOTDIR, f"not a directory but a {kind}", where)
        if st.st_uid != 0:
            why = f"a symbolic link owned by uid {st.st_uid}, not root"
            raise UnsafePath(where, why, self.doing, link=True)
        return os.readlink(name, dir_fd=dir_fd)

    def _check_dir(self, fd: int, where: str, last: bool) -> None:
        why = writable_by_others(fd, os.fstat(fd), sticky_ok=not last)
        if why is not None:
            raise UnsafePath(where, why, self.doing)

    def open_file(self, path: str | os.PathLike, flags: int, mode: int = 0o600) -> int:
        """Open the file `path` in its checked directory without following a link; it
        must be a regular file root owns (a FIFO never blocks the open). The caller owns
        the descriptor."""
        directory, name = os.path.split(_absolute(path))
        return self.open_at(self.directory(directory), name, flags, mode, path)

    def open_at(self, dir_fd: int, name: str, flags: int, mode: int, shown=None) -> int:
        """As `open_file`, for `name` in a directory this walker returned."""
        shown = shown if shown is not None else name
        try:
            fd = os.open(
                name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dir_fd
            )
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(str(shown), "a symbolic link", self.doing, link=True) from None
            if exc.errno in (errno.EISDIR, errno.ENXIO):
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                raise UnsafePath(
                    str(shown), f"a {_kind(st.st_mode)}, not a regular file", self.doing
                ) from None
            raise
        st = os.fstat(fd)
        why = None
        if not stat.S_ISREG(st.st_mode):
            why = f"a {_kind(st.st_mode)}, not a regular file"
        else:  # what another user could write is theirs: root neither reads nor adds to it
            why = writable_by_others(fd, st, sticky_ok=False)
        if why is not None:
            os.close(fd)
            raise UnsafePath(str(shown), why, self.doing)
        os.set_blocking(fd, True)
        return fd


class Route:
    """The directories from / to a directory reached without a link, each kept open and
    checked as the walk checks them: to see cheaply, on each later use, that every one
    is still what its name leads to and still passes (root's, writable by no one else;
    the sticky rule for all but the last).

    perf: a directory whose inode change time, owner and mode are as when it last
    passed is not checked again (a chmod, chown or ACL change sets the change time)."""

    def __init__(self, steps: list[tuple[str, int]]):
        self.steps = steps  # (absolute path, descriptor), from / down
        self._passed: list[tuple | None] = [None] * len(steps)  # see holds
        self.files: dict[str, tuple] = {}  # for its user: files in it that passed

    @property
    def fd(self) -> int:
        """The directory itself (open while the route is)."""
        return self.steps[-1][1]

    @classmethod
    def walk(cls, path: str) -> Route | None:
        """The route to the absolute directory `path`; None when a link, '..', or
        anything the walk would refuse is on the way (its users then walk afresh)."""
        steps: list[tuple[str, int]] = []
        try:
            steps.append(("/", os.open("/", DIR_FLAGS)))
            for name in path.split("/"):
                if name in ("", "."):
                    continue
                if name == "..":
                    raise OSError(errno.ELOOP, "'..' on the way", path)
                where = os.path.join(steps[-1][0], name)
                steps.append((where, os.open(name, DIR_FLAGS, dir_fd=steps[-1][1])))
        except OSError:
            for _, fd in steps:
                os.close(fd)
            return None
        route = cls(steps)
        if route.holds():
            return route
        route.close()
        return None

    def holds(self) -> bool:
        """Is every directory on the way still the one its path names (and no link), and
        does it still pass the checks?"""
        last = len(self.steps) - 1
        try:
            for i, (where, fd) in enumerate(self.steps):
                st = os.fstat(fd)
                named = os.stat(where, follow_symlinks=False)
                if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
                    return False
                seen = (st.st_ctime_ns, st.st_mode, st.st_uid, st.st_gid)
                if seen != self._passed[i]:
                    if writable_by_others(fd, st, sticky_ok=i != last) is not None:
                        return False
                    self._passed[i] = seen
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Close the descriptors it keeps."""
        for _, fd in self.steps:
            os.close(fd)
        self.steps = []


def _absolute(path: str | os.PathLike) -> str:
    """`path` from / (not normalised: '..' is walked, after the links before it)."""
    path = os.fspath(path)
    return path if path.startswith("/") else os.path.join(os.getcwd(), path)


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _replace(old: int, new: int) -> int:
    os.close(old)
    return new


def _kind(mode: int) -> str:
    for test, word in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return word
    return "regular file"


def make_dirs(path: str | os.PathLike, mode: int = 0o755) -> None:
    """Make directory `path` (and what is missing above it); as root, only through
    directories no one else controls (UnsafePath otherwise)."""
    if not strict():
        os.makedirs(path, mode=mode, exist_ok=True)
        return
    with Walker() as walker:
        walker.directory(path, create=True, mode=mode)


def open_dir(path: str | os.PathLike, mode: int = 0o755) -> int:
    """A descriptor of directory `path`, made if missing; the caller closes it. As root
    reached only through directories no one else controls (UnsafePath otherwise)."""
    if not strict():
        os.makedirs(path, mode=mode, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    with Walker() as walker:
        return os.dup(walker.directory(path, create=True, mode=mode))


def open_in(dir_fd: int, name: str, flags: int, mode: int = 0o600, shown=None) -> int:
    """Open `name` in a directory from `open_dir` without following a link; as root it
    must turn out to be a regular file root owns (UnsafePath otherwise)."""
    if not strict():
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    return Walker().open_at(dir_fd, name, flags, mode, shown)


def probe_dirs(path: str | os.PathLike) -> None:
    """Raise what making directory `path` (`make_dirs`) and then writing into it would
    raise, making and changing nothing: UnsafePath (as root), or OSError (a file where
    a directory should be, no permission, a read-only file system). For `check` and
    `run --dry-run`, which must refuse and warn as a run would."""
    path = os.path.normpath(_absolute(path))
    existing = path
    while not os.path.lexists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    if strict():
        with Walker() as walker:
            walker.directory(existing, through=existing != path)
    st = os.stat(existing)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), existing)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), existing)
