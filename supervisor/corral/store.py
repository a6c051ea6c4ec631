"""The SQLite store (one file, WAL): header cache, runs, module_runs, samples.

The only module that talks to the database. sqlite-utils creates and migrates the
schema and writes rows; the hot read path of the header cache uses the same
connection directly, because importing sqlite-utils costs more than a warm `plan`.
"""

from __future__ import annotations

import contextlib
import functools
import marshal
import os
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from corral import safepath
from corral.errors import CorralError, StoreError, UsageError
from corral.headers import _FIELDS, PARSER_VERSION, Header

SCHEMA_VERSION = 9
MEMO_PLANS = 8  # plans kept: a few target sets of one host
# Cached headers are marshal records (several times faster to load than JSON, and only
# ever read back by corral); the tag changes whenever the parser or marshal format does.
CACHE_TAG = (PARSER_VERSION * 100 + len(_FIELDS)) * 100 + marshal.version
BUSY_TIMEOUT_MS = 30_000  # how long a record waits for another writer
# How long anything before the first spawn waits for another writer: the header cache
# and the plan memo are worth no delay, and the run's records wait in the writer thread.
BRIEF_BUSY_MS = 1_000
SQLITE_MAGIC = b"SQLite format 3\x00"
APPLICATION_ID = 0x636F7272  # "corr", in the header of every database corral creates
# What a store is opened for decides what a fault of the file means.
RUN = "run"  # record a run: a damaged file of ours is moved aside; else run unrecorded
CACHE = "cache"  # plan, check, list, graph: the file only caches; parse without it
READ = "read"  # history, docs, cache: the records are the point; a fault is an error


# What validates a cached header: (dev, inode, size, ctime_ns). perf: a plain tuple,
# because a warm load builds and compares 10,000 of them (docs/architecture.md). The
# change time, not the modification time: a file rewritten in place with its size kept
# and its mtime put back (`touch -d`, `cp -p`, `rsync -t`) has a new ctime, which no
# unprivileged call can set back. (It is stored in the column named mtime_ns; rows of
# PARSER_VERSION 4 on carry it.)
FileKey = tuple[int, int, int, int]


def file_key(st: os.stat_result) -> FileKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns)


@dataclass(frozen=True)
class CacheStats:
    entries: int
    hits: int
    misses: int
    loaded_at: float | None

    @property
    def hit_rate(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0


def warn(message: str) -> None:
    print(f"corral: warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class History:
    """Per-module figures from recent runs (see Store.history)."""

    durations: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    cpu_rate: dict[str, float] = field(default_factory=dict)


def _none() -> None:
    return None


def _best_effort(default: Callable[[], object]):
    """A cache operation: a fault of the file is said once (Store._fault) and the
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


def _reporting(method):
    """A read whose answer is the point (history, docs, cache): a fault is StoreError."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.wanted}: cannot use the database ({_why(exc)})") from None

    return checked


def _code(exc: BaseException) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


def _corrupt(exc: BaseException) -> bool:
    return _code(exc).startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))


def _busy(exc: BaseException) -> bool:
    return _code(exc).startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


def _why(exc: BaseException) -> str:
    """What went wrong, in words: the OS's or SQLite's, with what a user can do."""
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if _corrupt(exc):
        return f"{exc}; the next `corral run` moves it aside and starts a new one"
    if _busy(exc):
        return f"{exc}: another process holds a write lock on it"
    return str(exc)


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
            _refuse_other_apps(conn, path)  # before anything is written to it
        if path is not None:
            _wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
        if old:
            _migrate(conn)
        return conn
    except BaseException:
        conn.close()
        raise


CORRAL_TABLES = {
    "header_cache",
    "cache_stats",
    "runs",
    "module_runs",
    "samples",
    "run_edges",
    "plan_memo",
    "run_figures",
}


def _refuse_other_apps(conn: sqlite3.Connection, path: Path) -> None:
    """Before corral adds its tables: a SQLite database of another program (its own
    application id, or tables corral never makes) is refused, not changed."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    others = sorted(t for t in tables - CORRAL_TABLES if not t.startswith("sqlite_"))
    if app not in (0, APPLICATION_ID) or others:
        what = f"tables {', '.join(others[:5])}" if others else f"application id {app:#x}"
        raise UsageError(
            f"{path}: is another program's SQLite database ({what}); corral will not "
            "change it (give --db or CORRAL_DB another path)"
        )


def _migrate(conn: sqlite3.Connection) -> None:
    db = sqlite_utils().Database(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for step in _MIGRATIONS[version:]:
            step(db)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


@dataclass
class Batch:
    """Records waiting to be written together (see Store.write_batch), in arrival order."""

    runs: list[dict] = field(default_factory=list)  # new runs rows
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (run, module, on)
    inserts: list[dict] = field(default_factory=list)  # new module_runs rows
    updates: list[tuple[tuple, dict]] = field(default_factory=list)  # (run, module, attempt)
    samples: list[dict] = field(default_factory=list)
    # (run_id, closing values, per-attempt figures) of runs that ended
    ends: list[tuple[str, dict, list | None]] = field(default_factory=list)
    resets: list[str] = field(default_factory=list)  # runs written again from scratch

    def __bool__(self) -> bool:
        return bool(
            self.runs
            or self.edges
            or self.inserts
            or self.updates
            or self.samples
            or self.ends
            or self.resets
        )

    def extend(self, other: Batch) -> None:
        for name in ("resets", "runs", "edges", "inserts", "updates", "samples", "ends"):
            getattr(self, name).extend(getattr(other, name))

    def modules(self) -> list[str]:
        """The modules whose records are in the batch, sorted."""
        names = {r["module"] for r in self.inserts} | {k[1] for k, _ in self.updates}
        return sorted(names)


class Store:
    """An open corral database; use `Store.open`.

    A fault of the file (read-only, full, locked, damaged, gone) never stops a run: the
    store then answers from memory (`path` is None, `problem` says why) and says so
    once, and `write_batch` tries the file again, so a run's records land as soon as
    it is usable. Cache reads and writes are best effort; the reads behind `history`,
    `docs` and `cache` raise StoreError, one message naming the file.
    """

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
        self._said: set[str] = set()
        self._db = None

    @classmethod
    def open(
        cls, path: Path | None, on_warning: Callable[[str], None] = warn, purpose: str = CACHE
    ) -> Store:
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
                raise StoreError(f"{path}: cannot read the database ({_why(exc)})") from None
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
            self.problem = str(exc) if isinstance(exc, CorralError) else _why(exc)
            return False
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        self.conn, self.path, self.problem, self._db = conn, self.wanted, None, None
        self.identity = _identity(self.wanted)
        self.generation += 1
        return True

    def patient(self) -> None:
        """From now on wait for other writers as long as a record may wait."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    def _fault(self, exc: BaseException, opening: bool = False) -> None:
        """A fault of the file: say so once; move a damaged file of ours aside (RUN) or
        answer from memory from now on. Another writer holding the file is no fault."""
        why = _why(exc)
        if _busy(exc) and not opening:
            return
        self.problem = why
        wanted = self.wanted
        if _corrupt(exc) and self.purpose == RUN and wanted is not None and _ours(wanted):
            aside = self._move_aside(wanted)
            if aside is not None:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.close()
                self.conn, self.path, self._db = _connect(None), None, None
                if self.reopen():
                    self.repaired += 1
                    self._say(
                        "repaired",
                        f"{wanted}: database is damaged ({why}); moved it to {aside} "
                        "and started a new one",
                    )
                    return
        if self.path is not None and (opening or _corrupt(exc)):
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn, self.path, self._db = _connect(None), None, None
        consequence = {
            RUN: "the modules run; their records are kept and written as soon as it "
            "can be, or reported as lost",
            CACHE: "headers are parsed from the files",
        }.get(self.purpose, "")
        self._say("fault", f"{wanted}: cannot use the database ({why}); {consequence}")

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

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    @staticmethod
    def header_from_record(record: bytes) -> Header | None:
        """The cached header; None for a record that does not read back (a damaged row)."""
        try:
            return Header.from_record(marshal.loads(record))
        except (ValueError, EOFError, TypeError):
            return None

    @property
    def db(self):
        """The sqlite-utils view of the same connection (imported on first use)."""
        if self._db is None:
            self._db = sqlite_utils().Database(self.conn)
        return self._db

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so writers queue, not fail.
        After a failed statement or COMMIT nothing of it stays (SQLite may have rolled
        back already: then there is nothing to roll back)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise

    # header cache ------------------------------------------------------------------------

    @_best_effort(dict)
    def cached_headers(self, directory: Path) -> dict[str, tuple[FileKey | None, bytes]]:
        """Cached (FileKey, header record) by path for files under `directory`; {} when none.

        The key is None for rows an older parser wrote, so they never count as hits.
        """
        prefix = f"{directory}{os.sep}"
        rows = self.conn.execute(
            "SELECT path, dev, ino, size, mtime_ns, parser, header FROM header_cache "
            "WHERE substr(path, 1, ?) = ?",
            (len(prefix), prefix),
        )
        return {
            path: ((dev, ino, size, mtime_ns) if parser == CACHE_TAG else None, header)
            for path, dev, ino, size, mtime_ns, parser, header in rows
        }

    @_best_effort(_none)
    def update_header_cache(
        self, parsed: dict[str, tuple[FileKey, Header]], stale: set[str], hits: int
    ) -> None:
        """Store fresh parses, drop rows of deleted files, record this load's hit counts."""
        with self.write():
            if parsed:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO header_cache "
                    "(path, dev, ino, size, mtime_ns, parser, header) VALUES (?,?,?,?,?,?,?)",
                    (
                        (path, *k, CACHE_TAG, marshal.dumps(h.to_record()))
                        for path, (k, h) in parsed.items()
                    ),
                )  # one record at a time
            self.conn.executemany("DELETE FROM header_cache WHERE path = ?", [(p,) for p in stale])
            self.conn.execute(
                "INSERT OR REPLACE INTO cache_stats (id, hits, misses, loaded_at) "
                "VALUES (1, ?, ?, ?)",
                (hits, len(parsed), time.time()),
            )

    @_reporting
    def cache_stats(self) -> CacheStats:
        entries = self.conn.execute("SELECT count(*) FROM header_cache").fetchone()[0]
        row = self.conn.execute("SELECT hits, misses, loaded_at FROM cache_stats").fetchone()
        return CacheStats(entries, *(row or (0, 0, None)))

    @_reporting
    def clear_cache(self) -> int:
        """Empty the header cache (and the plans built from it); returns how many header
        entries were dropped."""
        with self.write():
            count = self.conn.execute("SELECT count(*) FROM header_cache").fetchone()[0]
            self.conn.execute("DELETE FROM header_cache")
            self.conn.execute("DELETE FROM cache_stats")
            self.conn.execute("DELETE FROM plan_memo")
        return count

    @_best_effort(_none)
    def memo_plan(self, key: str) -> tuple[str, str] | None:
        """(plan JSON, warnings) stored under `key`; None when there is none."""
        row = self.conn.execute(
            "SELECT plan, warnings FROM plan_memo WHERE key = ?", (key,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    @_best_effort(_none)
    def save_plan(self, key: str, plan: str, warnings: str) -> None:
        """Keep a plan under `key` (the newest MEMO_PLANS only)."""
        with self.write():
            self.conn.execute(
                "INSERT OR REPLACE INTO plan_memo (key, plan, warnings, saved) VALUES (?, ?, ?, ?)",
                (key, plan, warnings, time.time()),
            )
            self.conn.execute(
                "DELETE FROM plan_memo WHERE key NOT IN (SELECT key FROM "
                "plan_memo ORDER BY saved DESC LIMIT ?)",
                (MEMO_PLANS,),
            )

    @_best_effort(_none)
    def count_warm_load(self, hits: int) -> None:
        """A load answered from the plan memo: every header was valid in the cache."""
        with self.write():
            self.conn.execute(
                "INSERT OR REPLACE INTO cache_stats (id, hits, misses, loaded_at) "
                "VALUES (1, ?, 0, ?)",
                (hits, time.time()),
            )

    # runs --------------------------------------------------------------------------------

    # Runs are written row by row as they happen, with plain SQL: sqlite-utils inspects
    # the table on every insert, which would cost more than spawning a no-op module.

    @_reporting
    def edges(self, run_id: str) -> list[tuple[str, str]]:
        return list(
            self.conn.execute("SELECT module, waits_on FROM run_edges WHERE run_id = ?", (run_id,))
        )

    @_reporting
    def samples(self, run_id: str) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM samples WHERE run_id = ? ORDER BY t", (run_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def insert_run(self, row: dict) -> None:
        self.write_batch(Batch(runs=[row]))

    def write_attempts(
        self, inserts: list[dict], updates: list[tuple[tuple, dict]], samples: list[dict] = ()
    ) -> None:
        self.write_batch(Batch(inserts=inserts, updates=updates, samples=list(samples)))

    def write_batch(self, batch: Batch) -> None:
        """Write `batch` in one transaction: runs rows, edges, new module_runs rows,
        samples, then updates keyed by (run_id, module, attempt), then closing values of
        runs. Rows of one shape go in one executemany. Raises sqlite3.Error (or OSError)
        when the file cannot take it; a store answering from memory first tries its file
        again, and raises when that fails too: records never go to memory."""
        if self.path is not None and _identity(self.path) != self.identity:
            # Removed or replaced under us: what SQLite writes now would land in a file
            # nobody will ever read. Write into the file now at the path instead.
            self._say(
                "replaced",
                f"{self.path}: the database file was removed or replaced during the run; "
                "this run's records go to the one now there",
            )
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn, self.path, self._db = _connect(None), None, None
        if self.path is None:
            if not self.reopen():
                raise sqlite3.OperationalError(self.problem or "no database")
            self.patient()
        try:
            self._write_batch(batch)
        except sqlite3.DatabaseError as exc:
            if _corrupt(exc):
                self._fault(exc)  # a damaged file of ours is moved aside (RUN)
            raise

    def _write_batch(self, batch: Batch) -> None:
        # An attempt that started and ended within one batch becomes one complete row.
        pending = {(r["run_id"], r["module"], r["attempt"]): r for r in batch.inserts}
        later = []
        for key, values in batch.updates:
            row = pending.get(key)
            if row is not None:
                row.update(values)
            else:
                later.append((key, values))
        # OR REPLACE: a batch retried after a COMMIT whose outcome was unknown (an I/O
        # error) must not fail for good on rows it already wrote.
        with self.write():
            for run_id in batch.resets:
                self.conn.execute("DELETE FROM run_edges WHERE run_id = ?", (run_id,))
                self.conn.execute("DELETE FROM module_runs WHERE run_id = ?", (run_id,))
            for (table, columns), rows in _by_shape(
                [("runs", r) for r in batch.runs]
                + [("module_runs", r) for r in batch.inserts]
                + [("samples", r) for r in batch.samples]
            ):
                verb = "INSERT" if table == "samples" else "INSERT OR REPLACE"
                self.conn.executemany(
                    f"{verb} INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})",
                    rows,
                )
            self.conn.executemany(
                "INSERT INTO run_edges (run_id, module, waits_on) VALUES (?, ?, ?)", batch.edges
            )
            shapes: dict[tuple, list[tuple]] = {}
            for key, values in later:
                shapes.setdefault(tuple(values), []).append((*values.values(), *key))
            for columns, rows in shapes.items():
                sets = ", ".join(f"{column} = ?" for column in columns)
                self.conn.executemany(
                    f"UPDATE module_runs SET {sets} WHERE run_id = ? AND module = ? "
                    "AND attempt = ?",
                    rows,
                )
            for run_id, values, figures in batch.ends:
                self._update("runs", "run_id", run_id, values)
                if figures is not None:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO run_figures VALUES (?, ?)",
                        (run_id, marshal.dumps(figures)),
                    )

    def _insert(self, table: str, row: dict) -> int:
        sql = f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
        return self.conn.execute(sql, tuple(row.values())).lastrowid

    def _update(self, table: str, pk: str, key: object, values: dict) -> None:
        sets = ", ".join(f"{column} = ?" for column in values)
        self.conn.execute(f"UPDATE {table} SET {sets} WHERE {pk} = ?", (*values.values(), key))

    @_reporting
    def runs(
        self, limit: int = 20, module_set: str | None = None, host: str | None = None
    ) -> list[dict]:
        """The newest `limit` runs of `module_set` (every set when None), newest first: this
        machine's, or those a fleet run gathered from `host`."""
        where, args = _set_filter(module_set)
        where += (" AND " if where else " WHERE ") + (
            "fleet_run IS NULL" if host is None else "host = ?"
        )
        args += () if host is None else (host,)
        return list(
            self.db.query(
                f"SELECT * FROM runs{where} ORDER BY started DESC LIMIT ?", [*args, limit]
            )
        )

    @_reporting
    def module_sets(self) -> list[tuple[str, int, str]]:
        """(module set, runs, newest start) of every set recorded, newest first."""
        return list(
            self.conn.execute(
                "SELECT module_set, count(*), max(started) FROM runs WHERE fleet_run IS NULL "
                "GROUP BY module_set "
                "ORDER BY max(started) DESC"
            )
        )

    @_best_effort(_none)
    def forget_runs(self, run_ids: list[str]) -> None:
        """Delete these runs' rows from every table that has a run_id column."""
        tables = [
            name
            for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if any(col[1] == "run_id" for col in self.conn.execute(f"PRAGMA table_info({name})"))
        ]
        tables.sort(key=lambda t: t == "runs")  # the runs row last: others refer to it
        with self.write():
            for start in range(0, len(run_ids), 500):
                chunk = run_ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                for table in tables:
                    self.conn.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", chunk)

    @_reporting
    def latest_statuses(self, module_set: str, runs: int = 50) -> dict[str, str]:
        """Each module's status at the end of the newest of the last `runs` runs of the
        module set that ran or skipped it."""
        return dict(
            self.conn.execute(
                "SELECT m.module, m.status FROM module_runs AS m JOIN (SELECT run_id, started "
                "FROM runs WHERE module_set = ? ORDER BY started DESC LIMIT ?) AS r "
                "USING (run_id) ORDER BY r.started, m.attempt",
                (module_set, runs),
            ).fetchall()
        )

    @_reporting
    def final_statuses(self, run_id: str) -> dict[str, str]:
        """Each module's status at the end of a run: its last attempt's (or its skip)."""
        return dict(
            self.conn.execute(
                "SELECT module, status FROM module_runs WHERE run_id = ? ORDER BY attempt",
                (run_id,),
            ).fetchall()
        )

    @_reporting
    def attempts(
        self,
        run_id: str | None = None,
        module: str | None = None,
        limit: int = 1000,
        module_set: str | None = None,
        host: str | None = None,
    ) -> list[dict]:
        """module_runs rows, newest first, filtered by run, module, module set and/or host;
        each carries `host` (a local row: the host its run recorded)."""
        where, args = [], []
        if module_set is not None:
            where.append("m.run_id IN (SELECT run_id FROM runs WHERE module_set = ?)")
            args.append(module_set)
        if run_id:
            where.append("m.run_id = ?")
            args.append(run_id)
        if module:
            where.append("m.module = ?")
            args.append(module)
        if host:
            where.append("coalesce(m.host, r.host) = ?")
            args.append(host)
        sql = (
            "SELECT m.*, coalesce(m.host, r.host) AS host FROM module_runs AS m "
            "LEFT JOIN runs AS r ON r.run_id = m.run_id"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        return list(
            self.db.query(f"{sql} ORDER BY m.start DESC, m.id DESC LIMIT ?", [*args, limit])
        )

    @_best_effort(History)
    def history(self, recent: int = 10, module_set: str | None = None) -> History:
        """What the last `recent` runs of `module_set` (of every set when None) say about
        each module: the median duration of its
        successful attempts, its highest peak RSS, and the CPUs it kept busy (median CPU
        time / wall time of successful attempts over 50 ms).
        Empty when there is no history.

        A finished run's figures are one record (run_figures); the attempt rows are read
        only for runs without one (crashed, or recorded before it existed)."""
        rows: list = []
        unsummed = []
        where, args = _set_filter(module_set)
        for run_id, figures in self.conn.execute(
            f"SELECT r.run_id, f.figures FROM (SELECT run_id, started FROM runs{where} "
            f"{'AND' if where else 'WHERE'} fleet_run IS NULL ORDER BY started DESC LIMIT ?) "
            "AS r LEFT JOIN run_figures AS f USING (run_id)",
            (*args, recent),
        ):
            if figures is None:
                unsummed.append(run_id)
            else:
                rows += marshal.loads(figures)
        if unsummed:
            rows += self.conn.execute(
                "SELECT module, status IN ('ok', 'warning'), duration_s, peak_rss_bytes, "
                "cpu_user_s + cpu_sys_s FROM module_runs"
                f" WHERE run_id IN ({', '.join('?' * len(unsummed))})",
                unsummed,
            )
        durations: dict[str, list[float]] = {}
        rates: dict[str, list[float]] = {}
        peaks: dict[str, int] = {}
        for module, ok, duration, peak, cpu in rows:
            if peak is not None and peak > peaks.get(module, -1):
                peaks[module] = peak
            if ok and duration is not None:
                durations.setdefault(module, []).append(duration)
                if duration > 0.05 and cpu is not None:
                    rates.setdefault(module, []).append(cpu / duration)
        return History(
            {m: _median(v) for m, v in durations.items()},
            peaks,
            {m: _median(v) for m, v in rates.items()},
        )


def _prepare(path: Path) -> None:
    """Make the database's directory and file, as root only where no one else can reach
    (UnsafePath otherwise). SQLite then opens them by name (and its -wal and -shm files
    beside them): in a directory only root can change, the name is the file checked."""
    dir_fd = safepath.open_dir(path.parent, 0o700)
    try:
        os.close(safepath.open_in(dir_fd, path.name, os.O_RDONLY | os.O_CREAT, 0o600, path))
    finally:
        os.close(dir_fd)


def sqlite_utils():
    """sqlite-utils, imported without numpy and pandas: it imports them when they are
    installed (numpy is, for matplotlib) only to convert their values, which corral
    never stores, and numpy alone costs 20 MB and 0.1 s. A None in sys.modules makes
    an import fail; the names are freed again for whoever needs the real thing."""
    blocked = [m for m in ("numpy", "pandas") if m not in sys.modules]
    if "sqlite_utils" not in sys.modules:
        sys.modules.update(dict.fromkeys(blocked))
        try:
            import sqlite_utils
        finally:
            for name in blocked:
                del sys.modules[name]
    import sqlite_utils

    return sqlite_utils


def module_set_key(directories) -> str:
    """What groups runs into one module set: the modules directories, resolved (symlinks
    and relative names followed) and sorted, joined with os.pathsep."""
    return os.pathsep.join(sorted({os.path.realpath(d) for d in directories if d}))


def _set_filter(module_set: str | None) -> tuple[str, tuple]:
    return ("", ()) if module_set is None else (" WHERE module_set = ?", (module_set,))


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _by_shape(rows: list[tuple[str, dict]]) -> list[tuple[tuple[str, tuple], list[tuple]]]:
    """Group (table, row) pairs by table and column set, keeping each group's order."""
    groups: dict[tuple[str, tuple], list[tuple]] = {}
    for table, row in rows:
        groups.setdefault((table, tuple(row)), []).append(tuple(row.values()))
    return list(groups.items())


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


def _schema_v1(db) -> None:
    db["header_cache"].create(
        {
            "path": str,
            "dev": int,
            "ino": int,
            "size": int,
            "mtime_ns": int,
            "parser": int,
            "header": bytes,
        },
        pk="path",
        if_not_exists=True,
    )
    db["cache_stats"].create(
        {"id": int, "hits": int, "misses": int, "loaded_at": float}, pk="id", if_not_exists=True
    )
    db["runs"].create(
        {
            "run_id": str,
            "started": str,
            "ended": str,
            "status": str,
            "exit_code": int,
            "jobs": int,
            "modules_dir": str,
            "targets": str,
            "host": str,
            "pid": int,
            "boot_id": str,
            "makespan_s": float,
            "work_s": float,
            "module_count": int,
            "cache_hits": int,
            "cache_misses": int,
        },
        pk="run_id",
        if_not_exists=True,
    )
    db["module_runs"].create(
        {
            "id": int,
            "run_id": str,
            "module": str,
            "attempt": int,
            "status": str,
            "exit_code": int,
            "signal": int,
            "reason": str,
            "start": str,
            "end": str,
            "start_mono": float,
            "duration_s": float,
            "cpu_user_s": float,
            "cpu_sys_s": float,
            "peak_rss_bytes": int,
            "read_bytes": int,
            "write_bytes": int,
            "throttle_wait_s": float,
            "log_path": str,
            "pid": int,
            "pgid": int,
            "log_bytes": int,
            "log_dropped_bytes": int,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "run_id")],
        if_not_exists=True,
    )
    db["module_runs"].create_index(["run_id"], if_not_exists=True)
    db["module_runs"].create_index(["module", "start"], if_not_exists=True)
    db["samples"].create(
        {
            "run_id": str,
            "t": float,
            "load1": float,
            "runnable": int,
            "mem_available": int,
            "psi_cpu": float,
            "psi_mem": float,
            "psi_io": float,
            "running": int,
        },
        foreign_keys=[("run_id", "runs", "run_id")],
        if_not_exists=True,
    )
    db["samples"].create_index(["run_id", "t"], if_not_exists=True)


V2_COLUMNS = {
    "runs": {
        "exit_signal": int,
        "selected": int,
        "peak_load": float,
        "throttle_s": float,
        "sampler_cpu_s": float,
        "supervisor_cpu_s": float,
        "pid_start": int,
    },
    "module_runs": {
        "log_incomplete": int,
        "throttle_reason": str,
        "lock_wait_s": float,
        "leftovers": int,
    },
    "samples": {"cpu_busy": float, "runnable_avg": float, "waiting": int, "gate": str},
}


def _schema_v2(db) -> None:
    """Throttle, profiling and reliability figures; the edges of each run's graph.

    Adds only what is missing, so it also completes a database that a development
    build of v2 created with fewer columns (which is what v3 re-runs it for).
    """
    for table, columns in V2_COLUMNS.items():
        present = set(db[table].columns_dict)
        for column, kind in columns.items():
            if column not in present:
                db[table].add_column(column, kind)
    db["run_edges"].create(
        {"run_id": str, "module": str, "waits_on": str},
        foreign_keys=[("run_id", "runs", "run_id")],
        if_not_exists=True,
    )
    db["run_edges"].create_index(["run_id"], if_not_exists=True)
    db["module_runs"].create_index(["run_id", "module", "attempt"], unique=True, if_not_exists=True)
    db["runs"].create_index(["started"], if_not_exists=True)


def _schema_v4(db) -> None:
    """Plans memoised by a digest of everything they depend on."""
    db["plan_memo"].create(
        {"key": str, "plan": str, "warnings": str, "saved": float}, pk="key", if_not_exists=True
    )


def _schema_v5(db) -> None:
    """module_runs(run_id) duplicates the leading column of (run_id, module, attempt):
    one index fewer to update for every attempt written."""
    db.execute("DROP INDEX IF EXISTS idx_module_runs_run_id")


def _schema_v6(db) -> None:
    """run_figures: each finished run's per-attempt figures in one record, which is
    what history reads (a thousand attempt rows cost 16 ms to fetch; the record 1)."""
    db["run_figures"].create({"run_id": str, "figures": bytes}, pk="run_id", if_not_exists=True)


V7_COLUMNS = {
    "runs": {"module_set": str, "full": int},
    "module_runs": {"retry_in_s": float, "throttle_kind": str},
    "samples": {"mono": float},
}


def _schema_v7(db) -> None:
    """Runs grouped by module set (history, docs and priorities read one set); whether a
    run covered its whole set; the backoff after a failed attempt and what kind of gate
    refusal delayed it; samples on the monotonic clock, as attempts' start_mono are.

    Adds only what is missing; older runs get their set from their modules_dir."""
    for table, columns in V7_COLUMNS.items():
        present = set(db[table].columns_dict)
        for column, kind in columns.items():
            if column not in present:
                db[table].add_column(column, kind)
    unset = db.execute("SELECT run_id, modules_dir FROM runs WHERE module_set IS NULL").fetchall()
    db.conn.executemany(
        "UPDATE runs SET module_set = ? WHERE run_id = ?",
        [(module_set_key((dirs or "").split(os.pathsep)), rid) for rid, dirs in unset],
    )
    db["runs"].create_index(["module_set", "started"], if_not_exists=True)


ACCOUNTING_COLUMNS = {
    "runs": {"containment": str, "cgroups": str},
    "module_runs": {"mem_source": str, "cpu_source": str, "io_source": str},
}


def _schema_v8(db) -> None:
    """Where each attempt's figures came from (`cgroup`, `rusage`, `sampled`; NULL with
    the figure when nothing could measure it), how the run held its attempts together
    (`cgroup` or `subreaper`) and its cgroup directories, for recovery after a crash.

    Adds only what is missing."""
    for table, columns in ACCOUNTING_COLUMNS.items():
        present = set(db[table].columns_dict)
        for column, kind in columns.items():
            if column not in present:
                db[table].add_column(column, kind)


def _schema_v9(db) -> None:
    """Fleets: the fleet runs and how each host ended (fleet_runs, fleet_hosts); the
    gathered runs and attempts of every host carry `host`, and runs the fleet run that
    gathered them (NULL for this machine's own runs)."""
    for table, column in (("runs", "fleet_run"), ("module_runs", "host")):
        if column not in db[table].columns_dict:
            db[table].add_column(column, str)
    db["runs"].create_index(["host", "started"], if_not_exists=True)
    db["fleet_runs"].create(
        {
            "run_id": str,
            "started": str,
            "ended": str,
            "status": str,
            "exit_code": int,
            "nodes": str,
            "args": str,
            "digest": str,
            "module_set": str,
        },
        pk="run_id",
        if_not_exists=True,
    )
    db["fleet_hosts"].create(
        {
            "fleet_run": str,
            "host": str,
            "status": str,
            "exit_code": int,
            "reason": str,
            "run_id": str,
            "started": str,
            "ended": str,
        },
        pk=("fleet_run", "host"),
        if_not_exists=True,
    )


_MIGRATIONS = [
    _schema_v1,
    _schema_v2,
    _schema_v2,
    _schema_v4,
    _schema_v5,
    _schema_v6,
    _schema_v7,
    _schema_v8,
    _schema_v9,
]
