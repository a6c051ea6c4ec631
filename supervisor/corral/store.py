"""The store: what corral keeps in its database and reads back. The header cache and
plan memo (best effort: a fault answers as if nothing were cached), the recorded
runs as history, docs and `why` read them (a fault is a StoreError), and the rows
recovery, retention and the fleet's records read and write (they raise sqlite3.Error,
which each handles as its fault); the fleet's tables are `fleetrows.py`'s.

The only module, with the four it stands on, that talks to the database:
`schema.py` (the tables), `dbfile.py` (opening the file, its faults, writing a batch),
`batch.py` (a run's records written together), `fleetrows.py` (the fleet's rows). The
hot read path of the header cache uses the connection directly, because importing
sqlite-utils costs more than a warm `plan`; nothing here imports it.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from corral.dbfile import Database, as_dicts, best_effort, reporting
from corral.fleetrows import FleetRows
from corral.headers import _FIELDS, PARSER_VERSION, Header
from corral.schema import module_set_key as module_set_key  # where callers look for it
from corral.units import upper_median

MEMO_PLANS = 8  # plans kept: a few target sets of one host
# Cached headers are marshal records (several times faster to load than JSON, and only
# ever read back by corral); the tag changes whenever the parser or marshal format does.
CACHE_TAG = (PARSER_VERSION * 100 + len(_FIELDS)) * 100 + marshal.version


# What validates a cached header: (dev, inode, size, ctime_ns). perf: a plain tuple,
# because a warm load builds and compares 10,000 of them (docs/architecture.md). The
# change time, not the modification time: a file rewritten in place with its size kept
# and its mtime put back (`touch -d`, `cp -p`, `rsync -t`) has a new ctime, which no
# unprivileged call can set back. (It is stored in the column named mtime_ns; rows of
# PARSER_VERSION 4 on carry it.)
FileKey = tuple[int, int, int, int]


def file_key(st: os.stat_result) -> FileKey:
    """What validates a cached header of the file `st` describes (see FileKey)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns)


@dataclass(frozen=True)
class CacheStats:
    """The header cache's size and its last load's hits and misses."""

    entries: int
    hits: int
    misses: int
    loaded_at: float | None  # when these counts were written (a repeated warm load keeps them)

    @property
    def hit_rate(self) -> float:
        """Hits over headers looked up in the last load; 0.0 when none was looked up."""
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0


@dataclass(frozen=True)
class History:
    """Per-module figures from recent runs (see Store.history)."""

    durations: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    cpu_rate: dict[str, float] = field(default_factory=dict)


def _none() -> None:
    return None


class Store(FleetRows, Database):
    """An open corral database (see `dbfile.Database`: opening, faults, writing a run's
    records) with what is cached and recorded in it; use `Store.open`. Cache reads and
    writes are best effort; the reads behind `history`, `docs` and `cache` raise
    StoreError, one message naming the file.
    """

    @staticmethod
    def header_from_record(record: bytes) -> Header | None:
        """The cached header; None for a record that does not read back (a damaged row)."""
        try:
            return Header.from_record(marshal.loads(record))
        except (ValueError, EOFError, TypeError):
            return None

    # header cache ------------------------------------------------------------------------

    @best_effort(dict)
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

    @best_effort(_none)
    def update_header_cache(
        self, parsed: dict[str, tuple[FileKey, Header]], stale: set[str], hits: int
    ) -> None:
        """Store fresh parses, drop rows of deleted files, record this load's hit counts;
        a fault of the file only skips it (best effort)."""
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

    @reporting
    def cache_stats(self) -> CacheStats:
        """Cached headers and the last load's hits and misses (0, 0, None before any)."""
        entries = self.conn.execute("SELECT count(*) FROM header_cache").fetchone()[0]
        row = self.conn.execute("SELECT hits, misses, loaded_at FROM cache_stats").fetchone()
        return CacheStats(entries, *(row or (0, 0, None)))

    @reporting
    def clear_cache(self) -> int:
        """Empty the header cache (and the plans built from it); returns how many header
        entries were dropped."""
        with self.write():
            count = self.conn.execute("SELECT count(*) FROM header_cache").fetchone()[0]
            self.conn.execute("DELETE FROM header_cache")
            self.conn.execute("DELETE FROM cache_stats")
            self.conn.execute("DELETE FROM plan_memo")
        return count

    @best_effort(_none)
    def memo_plan(self, key: str) -> tuple[str, str] | None:
        """(plan JSON, warnings) stored under `key`; None when there is none."""
        row = self.conn.execute(
            "SELECT plan, warnings FROM plan_memo WHERE key = ?", (key,)
        ).fetchone()
        return (row[0], row[1]) if row else None

    @best_effort(_none)
    def save_plan(self, key: str, plan: str, warnings: str) -> None:
        """Keep a plan under `key` (the newest MEMO_PLANS only); a fault skips it."""
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

    @best_effort(_none)
    def count_warm_load(self, hits: int) -> None:
        """Count a load answered from the plan memo (every header was valid in the cache)
        as `hits` hits and no miss; a fault skips it.

        perf: nothing is written when the last load counted the same (docs/architecture.md):
        a write makes SQLite sync the new write-ahead log and, at close, the database,
        four syncs that took longer than the rest of a warm `plan --json`."""
        if self.conn.execute("SELECT hits, misses FROM cache_stats").fetchall() == [(hits, 0)]:
            return
        with self.write():
            self.conn.execute(
                "INSERT OR REPLACE INTO cache_stats (id, hits, misses, loaded_at) "
                "VALUES (1, ?, 0, ?)",
                (hits, time.time()),
            )

    # runs --------------------------------------------------------------------------------

    @reporting
    def edges(self, run_id: str) -> list[tuple[str, str]]:
        """(module, the module it waited on) of every edge of the run's graph; [] for a
        run without edges or not recorded."""
        return list(
            self.conn.execute("SELECT module, waits_on FROM run_edges WHERE run_id = ?", (run_id,))
        )

    @reporting
    def samples(self, run_id: str) -> list[dict]:
        """The run's host samples as rows, oldest first; [] when none was recorded."""
        return as_dicts(
            self.conn.execute("SELECT * FROM samples WHERE run_id = ? ORDER BY t", (run_id,))
        )

    @reporting
    def runs(
        self, limit: int = 20, module_set: str | None = None, host: str | None = None
    ) -> list[dict]:
        """The newest `limit` runs of `module_set` (every set when None), newest first: this
        machine's, or those a fleet run gathered from `host`; [] when none is recorded."""
        from corral.recovery import as_seen

        where, args = _runs_of(module_set, host)
        rows = as_dicts(
            self.conn.execute(
                f"SELECT * FROM runs{where} ORDER BY started DESC LIMIT ?", (*args, limit)
            )
        )
        return as_seen(rows)  # never a dead run as running

    @reporting
    def run(self, run_id: str) -> dict | None:
        """The runs row of `run_id`; None when it is not recorded."""
        rows = as_dicts(self.conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)))
        return rows[0] if rows else None

    @reporting
    def run_ids(self, prefix: str) -> list[str]:
        """The ids of this machine's runs that begin with `prefix`, newest first; [] when
        none does."""
        where, args = _runs_of(None)
        return [
            run_id
            for (run_id,) in self.conn.execute(
                f"SELECT run_id FROM runs{where} AND substr(run_id, 1, ?) = ? "
                "ORDER BY started DESC",
                (*args, len(prefix), prefix),
            )
        ]

    @reporting
    def module_sets(self) -> list[tuple[str, int, str]]:
        """(module set, runs, newest start) of every set this machine recorded, newest
        first; [] for an empty database."""
        where, args = _runs_of(None)
        return list(
            self.conn.execute(
                f"SELECT module_set, count(*), max(started) FROM runs{where} "
                "GROUP BY module_set ORDER BY max(started) DESC",
                args,
            )
        )

    @best_effort(_none)
    def forget_runs(self, run_ids: list[str]) -> None:
        """Delete these runs' rows from every table that has a run_id column (a fleet
        run's: its fleet_runs row and its hosts' fleet_hosts rows); an unknown id deletes
        nothing, and a fault of the file leaves them (best effort)."""
        with self.write():
            self.delete_runs(run_ids)

    def delete_runs(self, run_ids: list[str]) -> None:
        """`forget_runs` inside the caller's write transaction (raises sqlite3.Error)."""
        tables = [
            name
            for (name,) in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if any(col[1] == "run_id" for col in self.conn.execute(f"PRAGMA table_info({name})"))
        ]
        tables.sort(key=lambda t: t == "runs")  # the runs row last: others refer to it
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for table in tables:
                # fleet_hosts.run_id names the host's run a fleet run gathered; the row
                # belongs to its fleet run and goes with it, not with that run
                column = "fleet_run" if table == "fleet_hosts" else "run_id"
                self.conn.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", chunk)

    def unfinished_runs(self, host: str) -> list[tuple]:
        """(run_id, pid, pid_start, boot_id, cgroups) of this machine's runs recorded on
        `host` that are still marked running; raises sqlite3.Error."""
        return self.conn.execute(
            "SELECT run_id, pid, pid_start, boot_id, cgroups FROM runs "
            "WHERE status = 'running' AND host = ? AND fleet_run IS NULL",
            (host,),
        ).fetchall()

    def record_crash(self, run_id: str, ended: str) -> int:
        """Mark the run crashed (ended at `ended` unless it has an end) and its attempts
        still running interrupted by the crash, in one transaction; returns how many
        attempts were. Raises sqlite3.Error."""
        with self.write():
            unfinished = self.conn.execute(
                "UPDATE module_runs SET status = 'interrupted', reason = 'corral crashed' "
                "WHERE run_id = ? AND status = 'running'",
                (run_id,),
            ).rowcount
            self.conn.execute(
                "UPDATE runs SET status = 'crashed', ended = coalesce(ended, ?) WHERE run_id = ?",
                (ended, run_id),
            )
        return unfinished

    def left_cgroups(self, host: str) -> list[tuple[str, str]]:
        """(run_id, cgroups) of the ended runs on `host` that left cgroups behind (the
        directories joined by os.pathsep); raises sqlite3.Error."""
        return self.conn.execute(
            "SELECT run_id, cgroups FROM runs WHERE cgroups IS NOT NULL AND host = ? "
            "AND status != 'running'",
            (host,),
        ).fetchall()

    def forget_cgroups(self, run_ids: list[str]) -> None:
        """These runs left no cgroups any more; raises sqlite3.Error."""
        with self.write():
            self.conn.executemany(
                "UPDATE runs SET cgroups = NULL WHERE run_id = ?", [(r,) for r in run_ids]
            )

    def ended_runs(self, module_set: str | None = None) -> tuple[list, list, list]:
        """What retention may forget, newest first, as (run id, group, started): this
        machine's ended runs (group: their module set), ended fleet runs (likewise), and
        ended runs fleet runs gathered (group: their host). With `module_set`, only its
        own, its fleet runs' and what those gathered (or whose fleet run is gone)."""
        where, args = ("AND module_set = ? ", (module_set,)) if module_set is not None else ("", ())
        local = self.conn.execute(
            "SELECT run_id, module_set, started FROM runs WHERE status != 'running' "
            f"AND fleet_run IS NULL {where}ORDER BY started DESC",
            args,
        ).fetchall()
        fleets = self.conn.execute(
            "SELECT run_id, module_set, started FROM fleet_runs "
            f"WHERE status != 'running' {where}ORDER BY started DESC",
            args,
        ).fetchall()
        gathered = self.conn.execute(
            "SELECT r.run_id, r.host, r.started "
            "FROM runs AS r LEFT JOIN fleet_runs AS f ON f.run_id = r.fleet_run "
            "WHERE r.status != 'running' AND r.fleet_run IS NOT NULL "
            + ("AND (f.module_set IS NULL OR f.module_set = ?) " if module_set is not None else "")
            + "ORDER BY r.started DESC",
            args,
        ).fetchall()
        return local, fleets, gathered

    @reporting
    def latest_statuses(self, module_set: str, runs: int = 50) -> dict[str, str]:
        """Each module's status at the end of the newest of the last `runs` runs of the
        module set that ran or skipped it; {} when the set has no runs."""
        return dict(
            self.conn.execute(
                "SELECT m.module, m.status FROM module_runs AS m JOIN (SELECT run_id, started "
                "FROM runs WHERE module_set = ? ORDER BY started DESC LIMIT ?) AS r "
                "USING (run_id) ORDER BY r.started, m.attempt",
                (module_set, runs),
            ).fetchall()
        )

    @reporting
    def final_statuses(self, run_id: str) -> dict[str, str]:
        """Each module's status at the end of a run: its last attempt's (or its skip); {}
        for a run not recorded."""
        return dict(
            self.conn.execute(
                "SELECT module, status FROM module_runs WHERE run_id = ? ORDER BY attempt",
                (run_id,),
            ).fetchall()
        )

    @reporting
    def recorded_modules(self, module_set: str | None = None, host: str | None = None) -> set[str]:
        """The names of the modules with an attempt recorded, in runs of `module_set` and/or
        of `host` (None: any); an empty set when there are none."""
        sql = (
            "SELECT DISTINCT m.module FROM module_runs AS m "
            "LEFT JOIN runs AS r ON r.run_id = m.run_id WHERE 1"
        )
        args: list[str] = []
        if module_set is not None:
            sql += " AND r.module_set = ?"
            args.append(module_set)
        if host:
            sql += " AND coalesce(m.host, r.host) = ?"
            args.append(host)
        return {row[0] for row in self.conn.execute(sql, args)}

    @reporting
    def attempts(
        self,
        run_id: str | None = None,
        module: str | None = None,
        limit: int = 1000,
        module_set: str | None = None,
        host: str | None = None,
    ) -> list[dict]:
        """At most `limit` module_runs rows, newest first, filtered by run, module, module
        set and/or host (None: any); each carries `host` (a local row: the host its run
        recorded). An attempt still `running` in a run that is not (ended, or its corral
        gone) is `interrupted`, as the next start records it. [] when nothing matches."""
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
        from corral.recovery import attempts_as_seen

        sql = (
            "SELECT m.*, coalesce(m.host, r.host) AS host, r.status AS run_status, "
            "r.host AS run_host, r.pid AS run_pid, r.pid_start AS run_pid_start, "
            "r.boot_id AS run_boot_id FROM module_runs AS m "
            "LEFT JOIN runs AS r ON r.run_id = m.run_id"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = as_dicts(
            self.conn.execute(f"{sql} ORDER BY m.start DESC, m.id DESC LIMIT ?", (*args, limit))
        )
        return attempts_as_seen(rows)  # never an attempt of a dead run as running

    @reporting
    def timings(self, run_id: str) -> list[tuple]:
        """The run's module_runs rows as the analysis reads them, by module and attempt:
        (module, attempt, status, reason, start, start_mono, duration_s, CPU seconds,
        peak_rss_bytes, throttle_wait_s, throttle_kind, lock_wait_s, retry_in_s,
        mem_source); [] for a run not recorded. perf: tuples (docs/architecture.md)."""
        return self.conn.execute(
            "SELECT module, attempt, status, reason, start, start_mono, duration_s, "
            "cpu_user_s + cpu_sys_s, peak_rss_bytes, throttle_wait_s, throttle_kind, "
            "lock_wait_s, retry_in_s, mem_source FROM module_runs WHERE run_id = ? "
            "ORDER BY module, attempt",
            (run_id,),
        ).fetchall()

    def history(self, recent: int = 10, module_set: str | None = None) -> History:
        """What the last `recent` runs of `module_set` (of every set when None) say about
        each module: the median duration of its
        successful attempts, its highest peak RSS, and the CPUs it kept busy (median CPU
        time / wall time of successful attempts over 50 ms).
        Empty when there is no history.

        A finished run's figures are one record (run_figures); the attempt rows are read
        only for runs without one (crashed, or recorded before it existed)."""
        return self.history_of(self.recent_figures(recent, module_set))

    @best_effort(list)
    def recent_figures(
        self, recent: int = 10, module_set: str | None = None
    ) -> list[tuple[str, bytes | None]]:
        """(run id, its run_figures record, None when it has none) of the last `recent`
        runs of `module_set` (of every set when None), newest first: what `history_of`
        reads. [] when there are none (or the file is at fault)."""
        where, args = _runs_of(module_set)
        return self.conn.execute(
            f"SELECT r.run_id, f.figures FROM (SELECT run_id, started FROM runs{where} "
            "ORDER BY started DESC LIMIT ?) AS r LEFT JOIN run_figures AS f USING (run_id)",
            (*args, recent),
        ).fetchall()

    @best_effort(History)
    def history_of(self, figures: list[tuple[str, bytes | None]]) -> History:
        """`history` of these runs (`recent_figures`); the attempt rows of those without a
        record are read."""
        rows: list = []
        unsummed = []
        for run_id, record in figures:
            if record is None:
                unsummed.append(run_id)
            else:
                rows += marshal.loads(record)
        if unsummed:
            from corral.batch import attempt_figures  # perf: docs/architecture.md

            rows += [
                attempt_figures(*row)
                for row in self.conn.execute(
                    "SELECT module, status, duration_s, peak_rss_bytes, cpu_user_s, cpu_sys_s "
                    f"FROM module_runs WHERE run_id IN ({', '.join('?' * len(unsummed))})",
                    unsummed,
                )
            ]
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
            {m: upper_median(v, 0.0) for m, v in durations.items()},
            peaks,
            {m: upper_median(v, 0.0) for m, v in rates.items()},
        )


def _runs_of(module_set: str | None, host: str | None = None) -> tuple[str, tuple]:
    """The WHERE clause (and its parameters) of runs rows of `module_set` (every set
    when None) recorded on this machine, or gathered by a fleet run from `host`."""
    where = ["fleet_run IS NULL" if host is None else "host = ?"]
    args = [] if host is None else [host]
    if module_set is not None:
        where.insert(0, "module_set = ?")
        args.insert(0, module_set)
    return " WHERE " + " AND ".join(where), tuple(args)


def known_hosts(path: Path | None) -> list[str]:
    """The hosts the database at `path` has records of (fleet runs gathered them), for
    shell completion: read only, never created or migrated; [] when there are none."""
    if path is None or not path.is_file():
        return []
    hosts: set[str] = set()
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=0.2)
    except sqlite3.Error:
        return []
    try:
        for sql in (
            "SELECT DISTINCT host FROM fleet_hosts",
            "SELECT DISTINCT host FROM runs WHERE fleet_run IS NOT NULL",
        ):
            with contextlib.suppress(sqlite3.Error):  # an older schema lacks them
                hosts.update(h for (h,) in conn.execute(sql) if h)
    finally:
        conn.close()
    return sorted(hosts)
