"""Which files of the modules directories are modules, and their headers: one listing
of each directory (files that look like scripts but are not modules are warnings),
headers read through the store's cache and parsed where it has none.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from corral.config import Config
from corral.errors import Problem, UsageError, exhausted
from corral.headers import Header, parse_header
from corral.store import FileKey, Store, file_key

TYPE_CHECKING = False  # perf: the graph is not imported for a memoised `plan --json`
if TYPE_CHECKING:  # (docs/architecture.md)
    from corral.graph import Module


@dataclass(frozen=True)
class Loaded:
    """Modules read from disk, and how the header cache did."""

    modules: list[Module]
    hits: int
    misses: int


# Each modules directory with its `*.sh` files as (name, cache key), sorted by name;
# a Scan adds a warning for each file that looks like a script but is not a module.
Files = list[tuple[Path, list[tuple[str, FileKey]]]]
Scan = list[tuple[Path, list[tuple[str, FileKey]], list[Problem]]]

# Names that look like scripts but are not modules: editor backups and package
# managers' leftovers (run-parts skips the same), and Bash files without `.sh`.
BACKUP_SUFFIXES = (
    "~",
    ".swp",
    ".swo",
    ".bak",
    ".orig",
    ".rej",
    ".old",
    ".dpkg-old",
    ".dpkg-dist",
    ".dpkg-new",
    ".dpkg-tmp",
    ".dpkg-bak",
    ".ucf-old",
    ".ucf-dist",
    ".ucf-new",
    ".rpmsave",
    ".rpmnew",
    ".rpmorig",
)


def module_files(config: Config) -> Files:
    """Each modules directory with its regular `*.sh` files (symlinks followed), sorted."""
    return [(directory, files) for directory, files, _ in scan_modules(config)]


def scan_modules(config: Config) -> Scan:
    """Each modules directory, its regular `*.sh` files (symlinks followed) with their
    cache keys, sorted, and a warning for each file that looks like a script but is not
    a module (so it is not run).

    perf: names from one listdir, then one stat each relative to the directory's
    descriptor: no DirEntry objects, and the stat is the header cache's key as well
    (docs/architecture.md); other names are looked at only when they look like scripts."""
    out = []
    for directory in config.modules:
        if not _recordable(str(directory.absolute())):
            raise UsageError(
                f"{directory.absolute()}: the modules directory's path is not valid UTF-8, "
                "and corral records it as text: rename it"
            )
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise NoModulesDir(missing_modules_dir(config, directory)) from None
        except OSError as exc:
            message = f"{directory}: cannot read modules directory: {exc.strerror}"
            raise UsageError(message) from None
        try:
            files, ignored = [], []
            for name in sorted(os.listdir(fd)):
                if name.endswith(".sh"):
                    try:
                        st = os.stat(name, dir_fd=fd)
                    except OSError:
                        why = "a module must be a regular file (a link to nothing)"
                    else:
                        if stat.S_ISREG(st.st_mode):
                            files.append((name, file_key(st)))
                            continue
                        why = "a module must be a regular file"
                else:
                    why = _not_a_module(fd, name)
                if why is not None:
                    path = os.path.join(directory, name)
                    ignored.append(Problem(path, 1, f"not run: {why}", "warning"))
        finally:
            os.close(fd)
        out.append((directory, files, ignored))
    return out


class NoModulesDir(UsageError):
    """The modules directory is not there (the CLI adds what a file target suggests)."""


def file_target_hint(args: list[str]) -> str:
    """'; ./checks/disk.sh is in /srv/checks: corral --modules /srv/checks run disk' for
    the first argument that is a module file, when no modules directory was found; ''
    when none is."""
    for arg in args:
        if arg.endswith(".sh") and os.path.isfile(arg):
            where = os.path.dirname(os.path.abspath(arg))
            command = next((a for a in args if a in ("run", "plan")), "run")
            name = os.path.basename(arg)[:-3]
            return f"; {arg} is in {where}: `corral --modules {where} {command} {name}`"
    return ""


def missing_modules_dir(config: Config, directory: Path) -> str:
    """Where corral looked for a modules directory, why there, and how to name another."""
    source = config.sources.get("modules", "default")
    where = f"modules directory not found: {directory.absolute()}"
    if directory.exists():
        where = f"not a directory: {directory.absolute()} (the modules directory)"
    cwd = os.environ.get("PWD") or "."
    with contextlib.suppress(OSError):
        cwd = os.getcwd()
    if source.startswith("flag"):
        return f"{where}, as given by --modules (current directory {cwd})"
    if source.startswith("env"):
        return (
            f"{where}, from $CORRAL_MODULES={os.environ.get('CORRAL_MODULES', '')} "
            f"(current directory {cwd}); unset it or give --modules DIR"
        )
    if source.startswith("config"):
        return f"{where}, from `modules:` in {config.config_file} (current directory {cwd})"
    return (
        f"{where}: no --modules given and $CORRAL_MODULES is not set, so corral looked for "
        f"./modules in the current directory {cwd}; name the directory with "
        "`corral --modules DIR COMMAND` or CORRAL_MODULES=DIR"
    )


def _not_a_module(fd: int, name: str) -> str | None:
    """Why a file (not `*.sh`) that looks like a script is not a module; None when it
    looks like nothing of the kind (a README, a data file, a subdirectory)."""
    if any(name.endswith(suffix) for suffix in BACKUP_SUFFIXES):
        return "an editor or package backup (modules end in .sh)"
    if name.endswith(".bash"):
        return "modules end in .sh, not .bash"
    if name.startswith("."):
        return None
    try:
        st = os.stat(name, dir_fd=fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        script = bool(st.st_mode & 0o111)
        if not script:
            head = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
            try:
                script = os.read(head, 2) == b"#!"
            finally:
                os.close(head)
    except OSError:
        return None
    if script:
        return "a script without .sh (run-parts style name); rename it NAME.sh to run it"
    return None


def load_modules(config: Config, store: Store, files: Files | None = None) -> Loaded:
    """Every `*.sh` module of the modules directories, headers from the cache where valid."""
    from corral.graph import Module

    modules: list[Module] = []
    parsed: dict[str, tuple[FileKey, Header]] = {}
    stale: set[str] = set()
    hits = 0
    for directory, entries in files if files is not None else module_files(config):
        absolute = directory.absolute()
        given = os.fspath(directory)
        cached = store.cached_headers(absolute)
        present: set[str] = set()
        for name, key in entries:
            key_path = f"{absolute}{os.sep}{name}"
            path = os.path.join(given, name)
            if not _recordable(name):  # (not a module name either: graph.py says so)
                modules.append(Module(name[:-3], path, _parse_file(Path(path))))
                continue
            present.add(key_path)
            hit = cached.get(key_path)
            header = store.header_from_record(hit[1]) if hit is not None and hit[0] == key else None
            if header is not None:
                hits += 1
            else:
                header = _parse_file(Path(path))
                parsed[key_path] = (key, header)
            modules.append(Module(name[:-3], path, header))
        stale |= set(cached) - present
    store.update_header_cache(parsed, stale, hits)
    return Loaded(modules, hits, len(parsed))


def _recordable(text: str) -> bool:
    """Can `text` (a path) be stored as SQLite text? Not when it holds bytes that are not
    UTF-8 (Python's surrogate escapes of a file name)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_file(path: Path) -> Header:
    try:
        data = path.read_bytes()
    except OSError as exc:
        if exhausted(exc) is not None:  # corral's own want, not the module's fault
            raise
        problem = Problem(None, 1, f"cannot read module: {exc.strerror}")
        return Header(problems=(problem,))
    return parse_header(data)
