"""The database file: opening it, and what a fault of it means.

`Database` is an open corral database (`Store` adds what is read and cached in it). A
fault of the file (read-only, full, locked, damaged, gone) never stops a run: the
database then answers from memory (`path` is None, `problem` says why) and says so
once; `write_batch` tries the file again, so a run's records land as soon as it is
usable, and a damaged file of corral's is moved aside (`RUN`). What a fault means
depends on what the database was opened for (`RUN`, `CACHE`, `READ`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from corral import safepath
from corral.errors import CorralError, StoreError, UsageError
from corral.schema import APPLICATION_ID, SCHEMA_VERSION, migrate, refuse_other_apps
from corral.units import plural
from corral.visible import text as visible_text

TYPE_CHECKING = False  # perf: typing is not imported for `plan` (docs/architecture.md)
if TYPE_CHECKING:  # perf: the write path is imported only by what writes a run
    # (docs/architecture.md): `plan` opens the store for its cache only
    from typing import Self

    from corral.batch import Batch

BUSY_TIMEOUT_MS = 30_000  # how long a record waits for another writer
# How long anything before the first spawn waits for another writer: the header cache
# and the plan memo are worth no delay, and the run's records wait in the writer thread.
BRIEF_BUSY_MS = 1_000
SQLITE_MAGIC = b"SQLite format 3\x00"
# What a store is opened for decides what a fault of the file means.
RUN = "run"  # record a run: a damaged file of ours is moved aside; else run unrecorded
CACHE = "cache"  # plan, check, list, graph: the file only caches; parse without it
READ = "read"  # history, docs, cache: the records are the point; a fault is an error


def warn(message: str) -> None:
    """Say `message` on stderr as a warning (the default `on_warning`)."""
    print(visible_text(f"corral: warning: {message}"), file=sys.stderr)


def best_effort(default: Callable[[], object]):
    """A cache operation: a fault of the file is said once (Database._fault) and the
    operation answers `default()`, as if there were nothing cached."""

    def wrap(method):
        @functools.wraps(method)
        def safe(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as exc:
                self._fault(exc)
                return default()

        return safe

    return wrap


def reporting(method):
    """A read whose answer is the point (history, docs, cache): a fault is StoreError."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(
                f"{self.wanted}: cannot use the database ({_why(exc, self.wanted)})"
            ) from None

    return checked


def as_dicts(cursor: sqlite3.Cursor) -> list[dict]:
    """The cursor's rows as dicts by column name; [] when there are none."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def _code(exc: BaseException) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


def _corrupt(exc: BaseException) -> bool:
    return _code(exc).startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def _busy(exc: BaseException) -> bool:
    return _code(exc).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _why(exc: BaseException, path: Path | None = None) -> str:
    """What went wrong with the file at `path`, in words: the OS's or SQLite's, with
    what a user can do."""
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if _corrupt(exc):
        if path is not None and not _ours(path):
            return f"{exc}: not a database of corral's, which corral leaves alone; move it away"
        return f"{exc}; the next `corral run` moves it aside and starts a new one"
    if _busy(exc):
        return f"{exc}: another process holds a write lock on it"
    return (
        f"{exc}{_beside(path)}{file_size_limit() if _code(exc).startswith('SQLITE_IOERR') else ''}"
    )


def _beside(path: Path | None) -> str:
    """'; /var/lib/corral/corral.db-wal is a directory' when a file SQLite keeps beside
    the database (its write-ahead log, shared memory index, journal) is not a file it
    can use, which SQLite's own words ('disk I/O error') do not say; '' otherwise."""
    for suffix in ("-wal", "-shm", "-journal") if path is not None else ():
        try:
            st = os.lstat(f"{path}{suffix}")
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            return f"; {path}{suffix} is not a regular file: move it away"
    return ""


def file_size_limit() -> str:
    """'; the file size limit is 10240 bytes (ulimit -f)' when corral runs under one (a
    write past it fails as an I/O error: SQLite and the logs say no more); '' when none."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if soft == resource.RLIM_INFINITY:
        return ""
    return f"; the file size limit is {plural(soft, 'byte')} (ulimit -f)"


def _identity(path: Path | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st else None


def _header(path: Path) -> bytes | None:
    """The first 100 bytes of the file (SQLite's header); None when unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read(100)
    except OSError:
        return None


def _refuse_foreign(path: Path) -> None:
    """Raise UsageError when what is at `path` is not corral's to open: a directory,
    a device, or a file with content that is not SQLite. Nothing else at the path."""
    try:
        st = path.stat()
    except OSError:
        return  # nothing there (or an unreachable parent): opening says why
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(
            f"{path}: is a directory, not a corral database; corral leaves it alone "
            "(give --db or CORRAL_DB the path of a file)"
        )
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path}: is not a regular file; corral will not use it as its database")
    head = _header(path)
    if st.st_size and head is not None and not head.startswith(SQLITE_MAGIC):
        raise UsageError(
            f"{path}: is not a SQLite database; corral will not use, move or replace it "
            "(if it is a corral database whose first page is destroyed, move it away)"
        )


def _ours(path: Path) -> bool:
    """A SQLite file corral made: its application id, or a schema version corral wrote."""
    head = _header(path)
    if head is None or len(head) < 72 or not head.startswith(SQLITE_MAGIC):
        return False
    version = int.from_bytes(head[60:64], "big")
    return int.from_bytes(head[68:72], "big") == APPLICATION_ID or 0 < version <= SCHEMA_VERSION


def _connect(path: Path | None, create: bool = True) -> sqlite3.Connection:
    """A connection to `path` (None: memory) with the schema in place, waiting at most
    BRIEF_BUSY_MS for another writer; raises OSError or sqlite3.Error."""
    if path is not None and create:
        _prepare(path)  # as root: only where no one else can reach (UnsafePath)
    conn = sqlite3.connect(
        str(path) if path else ":memory:",
        timeout=BRIEF_BUSY_MS / 1000,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout={BRIEF_BUSY_MS}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        old = version < SCHEMA_VERSION
        if version == 0 and path is not None:  # never migrated by corral: whose is it?
            refuse_other_apps(conn, path)  # before anything is written to it
        if path is not None:
            _wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
        if old:
            migrate(conn)
        return conn
    except BaseException:
        conn.close()
        raise


def _prepare(path: Path) -> None:
    """Make the database's directory and file, as root only where no one else can reach
    (UnsafePath otherwise). SQLite then opens them by name (and its -wal and -shm files
    beside them): in a directory only root can change, the name is the file checked."""
    dir_fd = safepath.open_dir(path.parent, 0o700)
    try:
        os.close(safepath.open_in(dir_fd, path.name, os.O_RDONLY | os.O_CREAT, 0o600, path))
        for suffix in ("-wal", "-shm", "-journal"):  # SQLite's own, where they exist
            with contextlib.suppress(FileNotFoundError):
                name = path.name + suffix
                os.close(safepath.open_in(dir_fd, name, os.O_RDONLY, 0o600, path.parent / name))
    finally:
        os.close(dir_fd)


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL once. Two corrals creating one database at the same moment: the
    switch needs the file to itself and SQLite answers "locked" without waiting, so
    wait here, as long as anything before the first spawn waits."""
    deadline = time.monotonic() + BRIEF_BUSY_MS / 1000
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _wal_header_sound(wal: Path) -> bool:
    """The write-ahead log's 32-byte header has SQLite's magic number and its own
    checksum (SQLite's: 32-bit words, summed in pairs); True also when there is no log."""
    try:
        with open(wal, "rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if len(head) < 32:
        return len(head) == 0
    magic = int.from_bytes(head[:4], "big")
    if magic not in (0x377F0682, 0x377F0683):
        return False
    order = "big" if magic & 1 else "little"
    s1 = s2 = 0
    for i in range(0, 24, 8):
        s1 = (s1 + int.from_bytes(head[i : i + 4], order) + s2) & 0xFFFFFFFF
        s2 = (s2 + int.from_bytes(head[i + 4 : i + 8], order) + s1) & 0xFFFFFFFF
    return (s1, s2) == (int.from_bytes(head[24:28], "big"), int.from_bytes(head[28:32], "big"))


class Database:
    """An open corral database (its file, or memory after a fault); use `open`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path | None,
        wanted: Path | None = None,
        purpose: str = CACHE,
        on_warning: Callable[[str], None] = warn,
    ):
        self.conn = conn
        self.path = path  # the file in use; None: memory
        self.wanted = wanted if wanted is not None else path  # the file asked for
        self.purpose = purpose
        self.on_warning = on_warning
        self.problem: str | None = None  # why `wanted` is not in use, or failed last
        self.repaired = 0  # how many times a damaged file was moved aside
        self.generation = 0  # +1 whenever the file in use changes (see Recorder)
        self.identity = _identity(path)  # (dev, inode) of the file in use
        self.busy_ms = BRIEF_BUSY_MS  # how long a write waits for another writer (patient)
        self._said: set[str] = set()

    @classmethod
    def open(
        cls, path: Path | None, on_warning: Callable[[str], None] = warn, purpose: str = CACHE
    ) -> Self:
        """Open or create `path` (None: memory). Raises UsageError for something at `path`
        that is not corral's (a directory, a file that is not SQLite) and, for READ,
        StoreError when the file cannot be read; otherwise never raises."""
        if path is None:
            return cls(_connect(None), None, purpose=purpose, on_warning=on_warning)
        _refuse_foreign(path)
        if purpose == READ and not path.exists():
            return cls(_connect(None), None, path, purpose, on_warning)  # nothing recorded
        try:
            conn = _connect(path, create=purpose != READ)
        except (OSError, sqlite3.Error) as exc:
            store = cls(_connect(None), None, path, purpose, on_warning)
            if purpose == READ:
                raise StoreError(f"{path}: cannot read the database ({_why(exc, path)})") from None
            store._fault(exc, opening=True)
            return store
        return cls(conn, path, path, purpose, on_warning)

    def reopen(self) -> bool:
        """Try the file asked for again (it was unusable); True when it is now in use."""
        if self.path is not None or self.wanted is None:
            return self.path is not None
        try:
            conn = _connect(self.wanted)
        except (OSError, sqlite3.Error, CorralError) as exc:
            self.problem = str(exc) if isinstance(exc, CorralError) else _why(exc, self.wanted)
            return False
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        self.conn, self.path, self.problem = conn, self.wanted, None
        self.identity = _identity(self.wanted)
        self.generation += 1
        return True

    def patient(self, ms: int | None = None) -> None:
        """From now on wait `ms` for other writers (the last `ms` given, when None; at
        first BRIEF_BUSY_MS), also on a file opened again."""
        if ms is not None:
            self.busy_ms = ms
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute(f"PRAGMA busy_timeout={int(self.busy_ms)}")

    def _fault(self, exc: BaseException, opening: bool = False) -> None:
        """A fault of the file: say so once; move a damaged file of ours aside (RUN) or
        answer from memory from now on. Another writer holding the file is no fault."""
        why = _why(exc, self.wanted)
        if _busy(exc) and not opening:
            return
        self.problem = why
        wanted = self.wanted
        if _corrupt(exc) and self.purpose == RUN and wanted is not None and _ours(wanted):
            aside = self._move_aside(wanted)
            if aside is not None:
                self._to_memory()
                if self.reopen():
                    self.repaired += 1
                    self._say(
                        "repaired",
                        f"{wanted}: database is damaged ({exc}); moved it to {aside} "
                        "and started a new one",
                    )
                    return
        if self.path is not None and (opening or _corrupt(exc)):
            self._to_memory()
        consequence = {
            RUN: "the modules run; their records are kept and written as soon as it "
            "can be, or reported as lost",
            CACHE: "headers are parsed from the files",
        }.get(self.purpose, "")
        self._say("fault", f"{wanted}: cannot use the database ({why}); {consequence}")

    def _to_memory(self) -> None:
        """Leave the file: answer from an empty database in memory from now on."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        self.conn, self.path = _connect(None), None

    def _say(self, kind: str, message: str) -> None:
        if kind not in self._said:
            self._said.add(kind)
            self.on_warning(message)

    @staticmethod
    def _move_aside(path: Path) -> Path | None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())  # UTC, as run ids
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{path}{suffix}")
                if src.exists():
                    src.rename(f"{aside}{suffix}")
        except OSError:
            return None
        return aside

    def fold_log(self) -> str | None:
        """Copy what the write-ahead log holds into the file itself (a passive checkpoint:
        it waits for no one, and readers keep it short): a run ends with os._exit, which
        closes no connection, so without it the log would hold every run since the last
        reader's close, and a log removed, copied without, or overwritten would lose
        them all in silence. A log whose header another process overwrote is not copied
        (its pages would land in the file): returns what was lost then; None otherwise.
        Never raises."""
        if self.path is None:
            return None
        if not _wal_header_sound(Path(f"{self.path}-wal")):
            return (
                f"{self.path}-wal: the database's write-ahead log was overwritten during "
                "the run: this run's records, and those of runs since the log was last "
                "copied into the file, are not in the database"
            )
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return None

    def close(self) -> None:
        """Close the connection; never raises."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so writers queue, not fail.
        After a failed statement or COMMIT nothing of it stays (SQLite may have rolled
        back already: then there is nothing to roll back). For a run, the writes before
        the first spawn (the header cache, the recovery of dead runs) share one brief wait:
        once another writer has held the file through it, they no longer wait."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _busy(exc) and self.purpose == RUN and self.busy_ms == BRIEF_BUSY_MS:
                self.patient(0)
            raise
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise

    # a run's records ---------------------------------------------------------------------

    def insert_run(self, row: dict) -> None:
        """Write one runs row now (see write_batch)."""
        from corral.batch import Batch

        self.write_batch(Batch(runs=[row]))

    def write_attempts(
        self, inserts: list[dict], updates: list[tuple[tuple, dict]], samples: list[dict] = ()
    ) -> None:
        """Write module_runs rows and updates (and samples) now (see write_batch)."""
        from corral.batch import Batch

        self.write_batch(Batch(inserts=inserts, updates=updates, samples=list(samples)))

    def write_batch(self, batch: Batch) -> None:
        """Write `batch` in one transaction: runs rows, edges, new module_runs rows,
        samples, then updates keyed by (run_id, module, attempt), then closing values of
        runs. Rows of one shape go in one executemany. Raises sqlite3.Error (or OSError)
        when the file cannot take it; a store answering from memory first tries its file
        again, and raises when that fails too: records never go to memory."""
        from corral.batch import write_rows

        self.follow()
        try:
            with self.write():
                write_rows(self.conn, batch)
        except sqlite3.DatabaseError as exc:
            if _corrupt(exc):
                self._fault(exc)  # a damaged file of ours is moved aside (RUN)
            raise

    def follow(self) -> None:
        """Use the file now at the path asked for: one removed or replaced since it was
        opened is left (`generation` goes up), one unusable until now is tried again.
        Raises sqlite3.Error when there is none that can be used."""
        if self.path is not None and _identity(self.path) != self.identity:
            # Removed or replaced under us: what SQLite writes now would land in a file
            # nobody will ever read. Write into the file now at the path instead.
            self._say(
                "replaced",
                f"{self.path}: the database file was removed or replaced during the run; "
                "this run's records go to the one now there",
            )
            self._to_memory()
        if self.path is None:
            if not self.reopen():
                raise sqlite3.OperationalError(self.problem or "no database")
            self.patient()
