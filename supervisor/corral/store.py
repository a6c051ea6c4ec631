"""The SQLite store (one file, WAL): header cache, runs, module_runs, samples.

The only module that talks to the database. sqlite-utils creates and migrates the
schema and writes rows; the hot read path of the header cache uses the same
connection directly, because importing sqlite-utils costs more than a warm `plan`.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from corral import safepath
from corral.headers import _FIELDS, PARSER_VERSION, Header

SCHEMA_VERSION = 9
MEMO_PLANS = 8  # plans kept: a few target sets of one host
# Cached headers are marshal records (several times faster to load than JSON, and only
# ever read back by corral); the tag changes whenever the parser or marshal format does.
CACHE_TAG = (PARSER_VERSION * 100 + len(_FIELDS)) * 100 + marshal.version
BUSY_TIMEOUT_MS = 30_000


# What validates a cached header: (dev, inode, size, mtime_ns). perf: a plain tuple,
# because a warm load builds and compares 10,000 of them (docs/architecture.md).
FileKey = tuple[int, int, int, int]


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


class Store:
    """An open corral database. Use `Store.open`; never raises on a broken file."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None):
        self.conn = conn
        self.path = path
        self._db = None

    @classmethod
    def open(cls, path: Path, on_warning: Callable[[str], None] = warn) -> Store:
        """Open or create `path`. A corrupt file is moved aside; an unusable one means memory."""
        try:
            return cls._open(path)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())  # UTC, as run ids
            aside = path.with_name(f"{path.name}.corrupt-{stamp}")
            try:
                for suffix in ("", "-wal", "-shm"):
                    src = Path(f"{path}{suffix}")
                    if src.exists():
                        src.rename(f"{aside}{suffix}")
                store = cls._open(path)
                on_warning(
                    f"{path}: database is unreadable ({exc}); moved it to {aside} "
                    "and started a new one"
                )
                return store
            except (OSError, sqlite3.DatabaseError) as exc2:
                on_warning(
                    f"{path}: database is unusable ({exc2}); nothing will be recorded "
                    "this time and headers are parsed from the files"
                )
                return cls._open(None)
        except OSError as exc:
            on_warning(
                f"{path}: cannot open database ({exc}); nothing will be recorded "
                "this time and headers are parsed from the files"
            )
            return cls._open(None)

    @classmethod
    def _open(cls, path: Path | None) -> Store:
        if path is not None:
            _prepare(path)
        conn = sqlite3.connect(
            str(path) if path else ":memory:",
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        try:
            if path is not None:
                _wal(conn)
                conn.execute("PRAGMA synchronous=NORMAL")
            store = cls(conn, path)
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                store._migrate()
            return store
        except sqlite3.DatabaseError:
            conn.close()
            raise

    def close(self) -> None:
        self.conn.close()

    @staticmethod
    def header_from_record(record: bytes) -> Header:
        return Header.from_record(marshal.loads(record))

    @property
    def db(self):
        """The sqlite-utils view of the same connection (imported on first use)."""
        if self._db is None:
            self._db = sqlite_utils().Database(self.conn)
        return self._db

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so writers queue, not fail."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self.write():
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for step in _MIGRATIONS[version:]:
                step(self.db)
            self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # header cache ------------------------------------------------------------------------

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

    def cache_stats(self) -> CacheStats:
        entries = self.conn.execute("SELECT count(*) FROM header_cache").fetchone()[0]
        row = self.conn.execute("SELECT hits, misses, loaded_at FROM cache_stats").fetchone()
        return CacheStats(entries, *(row or (0, 0, None)))

    def clear_cache(self) -> int:
        """Empty the header cache (and the plans built from it); returns how many header
        entries were dropped."""
        with self.write():
            count = self.conn.execute("SELECT count(*) FROM header_cache").fetchone()[0]
            self.conn.execute("DELETE FROM header_cache")
            self.conn.execute("DELETE FROM cache_stats")
            self.conn.execute("DELETE FROM plan_memo")
        return count

    def memo_plan(self, key: str) -> tuple[str, str] | None:
        """(plan JSON, warnings) stored under `key`; None when there is none."""
        row = self.conn.execute(
            "SELECT plan, warnings FROM plan_memo WHERE key = ?", (key,)
        ).fetchone()
        return (row[0], row[1]) if row else None

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

    def insert_run(self, row: dict) -> None:
        with self.write():
            self._insert("runs", row)

    def update_run(
        self,
        run_id: str,
        values: dict,
        figures: list[tuple[str, bool, float, int, float]] | None = None,
    ) -> None:
        """Set a run's closing values; `figures` (module, ok, duration, peak RSS, CPU
        seconds) per attempt are what `history` reads back, in one record."""
        with self.write():
            self._update("runs", "run_id", run_id, values)
            if figures is not None:
                self.conn.execute(
                    "INSERT OR REPLACE INTO run_figures VALUES (?, ?)",
                    (run_id, marshal.dumps(figures)),
                )

    def insert_edges(self, run_id: str, edges: list[tuple[str, str]]) -> None:
        with self.write():
            self.conn.executemany(
                "INSERT INTO run_edges (run_id, module, waits_on) VALUES (?, ?, ?)",
                [(run_id, a, b) for a, b in edges],
            )

    def edges(self, run_id: str) -> list[tuple[str, str]]:
        return list(
            self.conn.execute("SELECT module, waits_on FROM run_edges WHERE run_id = ?", (run_id,))
        )

    def samples(self, run_id: str) -> list[dict]:
        cur = self.conn.execute("SELECT * FROM samples WHERE run_id = ? ORDER BY t", (run_id,))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def write_attempts(
        self, inserts: list[dict], updates: list[tuple[tuple, dict]], samples: list[dict] = ()
    ) -> None:
        """In one transaction: new module_runs rows, then updates keyed by
        (run_id, module, attempt), then samples. Rows of one shape go in one executemany."""
        # An attempt that started and ended within one batch becomes one complete row.
        pending = {(r["run_id"], r["module"], r["attempt"]): r for r in inserts}
        later = []
        for key, values in updates:
            row = pending.get(key)
            if row is not None:
                row.update(values)
            else:
                later.append((key, values))
        with self.write():
            for (table, columns), rows in _by_shape(
                [("module_runs", r) for r in inserts] + [("samples", r) for r in samples]
            ):
                self.conn.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})",
                    rows,
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

    def _insert(self, table: str, row: dict) -> int:
        sql = f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})"
        return self.conn.execute(sql, tuple(row.values())).lastrowid

    def _update(self, table: str, pk: str, key: object, values: dict) -> None:
        sets = ", ".join(f"{column} = ?" for column in values)
        self.conn.execute(f"UPDATE {table} SET {sets} WHERE {pk} = ?", (*values.values(), key))

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

    def module_sets(self) -> list[tuple[str, int, str]]:
        """(module set, runs, newest start) of every set recorded, newest first."""
        return list(
            self.conn.execute(
                "SELECT module_set, count(*), max(started) FROM runs WHERE fleet_run IS NULL "
                "GROUP BY module_set "
                "ORDER BY max(started) DESC"
            )
        )

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

    def final_statuses(self, run_id: str) -> dict[str, str]:
        """Each module's status at the end of a run: its last attempt's (or its skip)."""
        return dict(
            self.conn.execute(
                "SELECT module, status FROM module_runs WHERE run_id = ? ORDER BY attempt",
                (run_id,),
            ).fetchall()
        )

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
    wait here, up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
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
