"""The database's tables and their migrations: what a corral database holds.

Version N of the schema is what the first N steps of `_MIGRATIONS` make; a database
records its version in `user_version` and corral's `application_id`. sqlite-utils
makes and changes the tables (imported only when a database needs a migration).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from pathlib import Path

from corral.errors import UsageError

SCHEMA_VERSION = 11
APPLICATION_ID = 0x636F7272  # "corr", in the header of every database corral creates

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


def refuse_other_apps(conn: sqlite3.Connection, path: Path) -> None:
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


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database from its `user_version` to SCHEMA_VERSION in one transaction
    (nothing of it stays when a step fails); raises sqlite3.Error."""
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
    and relative names followed) and sorted, joined with os.pathsep. Text: a resolved
    name's bytes that are not UTF-8 (a link's target) are written as `\\xNN`."""
    return os.pathsep.join(
        sorted(
            {
                os.fsencode(os.path.realpath(d)).decode("utf-8", "backslashreplace")
                for d in directories
                if d
            }
        )
    )


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


def _add_columns(db, tables: dict[str, dict[str, type]]) -> None:
    """Add each table's columns that are missing (a step that only adds columns can run
    again over a database that already has some of them)."""
    for table, columns in tables.items():
        present = set(db[table].columns_dict)
        for column, kind in columns.items():
            if column not in present:
                db[table].add_column(column, kind)


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
    _add_columns(db, V2_COLUMNS)
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
    _add_columns(db, V7_COLUMNS)
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
    _add_columns(db, ACCOUNTING_COLUMNS)


def _schema_v9(db) -> None:
    """Fleets: the fleet runs and how each host ended (fleet_runs, fleet_hosts); the
    gathered runs and attempts of every host carry `host`, and runs the fleet run that
    gathered them (NULL for this machine's own runs)."""
    _add_columns(db, {"runs": {"fleet_run": str}, "module_runs": {"host": str}})
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


def _schema_v10(db) -> None:
    """Which locks (and whose hold on them) each attempt waited for: `lock_reason`, as
    `corral why` says it."""
    _add_columns(db, {"module_runs": {"lock_reason": str}})


def _schema_v11(db) -> None:
    """Who controls each fleet run: the controller's host, PID, the PID's start time and
    the boot id, so that a reader tells a fleet run whose controller was killed (still
    marked running) as crashed, as it does for a run."""
    _add_columns(db, {"fleet_runs": {"host": str, "pid": int, "pid_start": int, "boot_id": str}})


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
    _schema_v10,
    _schema_v11,
]
