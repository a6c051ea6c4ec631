"""The fleet's rows in the controller's database: fleet runs, how each host ended
(fleet_hosts), and the runs and attempts gathered from hosts. Part of the store's API
(`Store` is a `FleetRows`); what they mean is `fleet/records.py`'s and
`fleet/report.py`'s. Writers raise sqlite3.Error; the report's reads StoreError.
"""

from __future__ import annotations

from corral.dbfile import as_dicts, reporting

# How a host of a fleet run whose controller died before hearing back from it is shown.
CONTROLLER_GONE = (
    "the controller ended (killed, or an error) before this host's result came back; it "
    "may have run there: corral fleet gather brings its records"
)


class FleetRows:
    """The fleet's tables, on a `dbfile.Database` (its `conn` and `write`) that has
    `delete_runs` (the `Store`)."""

    def start_fleet_run(self, row: dict, hosts: list[str]) -> None:
        """Write a fleet_runs row (its run_id, started, status, nodes, args, digest,
        module_set and its controller's host, pid, pid_start, boot_id) and a `pending`
        fleet_hosts row for each of `hosts`, in one transaction (each host's row is
        replaced by how it ended: rows per host stay one). Raises sqlite3.Error."""
        cols = self._columns("fleet_runs")
        with self.write():
            self._insert("fleet_runs", {k: v for k, v in row.items() if k in cols})
            self.conn.executemany(
                "INSERT OR REPLACE INTO fleet_hosts (fleet_run, host, status, reason, started) "
                "VALUES (?, ?, 'pending', '', ?)",
                [(row["run_id"], host, row["started"]) for host in hosts],
            )

    def save_host(self, row: dict, gathered: list[tuple[dict, list[dict], str | None]] = ()) -> int:
        """Write (or replace) how a host ended in a fleet run, a fleet_hosts row, with the
        runs it recorded (`add_gathered`'s arguments each): one transaction a host.
        Returns how many gathered rows changed; raises sqlite3.Error."""
        with self.write():
            changed = sum(self._add_gathered(*g) for g in gathered)
            self._insert("fleet_hosts", row, "INSERT OR REPLACE")
        return changed

    def finish_fleet_run(self, run_id: str, ended: str, status: str, exit_code: int) -> None:
        """Close a fleet run, and its hosts still `pending` (its controller is leaving
        on an error: every host that ended has its row) as `lost`; raises sqlite3.Error."""
        with self.write():
            self.conn.execute(
                "UPDATE fleet_runs SET ended = ?, status = ?, exit_code = ? WHERE run_id = ?",
                (ended, status, exit_code, run_id),
            )
            self.conn.execute(
                "UPDATE fleet_hosts SET status = 'lost', reason = ? WHERE fleet_run = ? "
                "AND status = 'pending'",
                (CONTROLLER_GONE, run_id),
            )

    def end_running_fleet_runs(self, module_set: str, ended: str, exit_code: int) -> list[str]:
        """Close every fleet run of `module_set` still marked running as `crashed` with
        `exit_code` (the caller knows their controllers are gone); returns their ids.
        Raises sqlite3.Error."""
        with self.write():
            ids = [
                row[0]
                for row in self.conn.execute(
                    "SELECT run_id FROM fleet_runs WHERE status = 'running' AND module_set = ?",
                    (module_set,),
                )
            ]
            self.conn.execute(
                "UPDATE fleet_runs SET status = 'crashed', exit_code = ?, "
                "ended = coalesce(ended, ?) WHERE status = 'running' AND module_set = ?",
                (exit_code, ended, module_set),
            )
            self.conn.executemany(
                "UPDATE fleet_hosts SET status = 'lost', reason = ? WHERE fleet_run = ? "
                "AND status = 'pending'",
                [(CONTROLLER_GONE, run_id) for run_id in ids],
            )
        return ids

    def gather_marks(self, host: str) -> tuple[str | None, str | None, str | None]:
        """What says where a gather of `host` starts: the start of its oldest gathered run
        still running, of the oldest fleet run that lost it (or never heard back from it:
        its controller died) and has no run of it, and of its newest gathered run (None
        for each there is none of)."""
        return tuple(
            self.conn.execute(sql, (host,)).fetchone()[0]
            for sql in (
                "SELECT min(started) FROM runs WHERE host = ? AND fleet_run IS NOT NULL "
                "AND status = 'running'",
                "SELECT min(started) FROM fleet_hosts WHERE host = ? "
                "AND status IN ('lost', 'pending') AND run_id IS NULL",
                "SELECT max(started) FROM runs WHERE host = ? AND fleet_run IS NOT NULL",
            )
        )

    def own_status(self, run: dict) -> str | None:
        """The status of this database's own row of `run` (a host's run as its host
        recorded it), when that host wrote it here; None when it is not here. The same
        run: same id, start, machine, process and modules directory, and not gathered."""
        row = self.conn.execute(
            "SELECT status FROM runs WHERE run_id = ? AND fleet_run IS NULL AND started IS ? "
            "AND host IS ? AND pid IS ? AND modules_dir IS ?",
            (run["run_id"], *(run.get(k) for k in ("started", "host", "pid", "modules_dir"))),
        ).fetchone()
        return None if row is None else row[0]

    def add_gathered(self, run: dict, attempts: list[dict], own: str | None = None) -> int:
        """Upsert a gathered run (its `fleet_run` set, or None: the fleet run that lost
        its host, else "gather", which is then told the run) and its attempts, dropping
        columns this database lacks; `own`: this database's own row of the run, which
        the gathered one replaces. Returns how many rows changed (a second gather of the
        same rows changes none). Raises sqlite3.Error."""
        with self.write():
            return self._add_gathered(run, attempts, own)

    def _add_gathered(self, run: dict, attempts: list[dict], own: str | None) -> int:
        host, run = run["host"], dict(run)
        run_cols, attempt_cols = self._columns("runs"), self._columns("module_runs")
        if own is not None:
            self.delete_runs([own])
        if run.get("fleet_run") is None:  # a later gather: the fleet run that lost it
            row = self.conn.execute(
                "SELECT fleet_run FROM fleet_hosts WHERE host = ? AND started <= ? "
                "ORDER BY started DESC LIMIT 1",
                (host, run.get("started") or ""),
            ).fetchone()
            run["fleet_run"] = row[0] if row else "gather"
            self.conn.execute(
                "UPDATE fleet_hosts SET run_id = ? WHERE fleet_run = ? AND host = ? "
                "AND run_id IS NULL",
                (run["run_id"], run["fleet_run"], host),
            )
        before = self.conn.total_changes
        self._upsert("runs", {k: v for k, v in run.items() if k in run_cols}, ("run_id",))
        for attempt in attempts:
            a = {k: v for k, v in attempt.items() if k in attempt_cols and k != "id"}
            a.update(run_id=run["run_id"], host=host)
            self._upsert("module_runs", a, ("run_id", "module", "attempt"))
        return self.conn.total_changes - before

    @reporting
    def fleet_runs(self) -> list[tuple[str, str]]:
        """(module set, newest start) of every module set fleet runs were started from,
        newest first; [] when there is no fleet run."""
        return list(
            self.conn.execute(
                "SELECT module_set, max(started) FROM fleet_runs GROUP BY module_set "
                "ORDER BY max(started) DESC"
            )
        )

    @reporting
    def last_fleet_run(self, module_set: str) -> tuple[dict, list[dict]] | None:
        """The newest fleet run of `module_set` (its fleet_runs row) and its hosts'
        fleet_hosts rows, by host; None when there is none."""
        rows = as_dicts(
            self.conn.execute(
                "SELECT * FROM fleet_runs WHERE module_set = ? ORDER BY started DESC LIMIT 1",
                (module_set,),
            )
        )
        if not rows:
            return None
        from corral.recovery import fleet_as_seen

        hosts = self.conn.execute(
            "SELECT * FROM fleet_hosts WHERE fleet_run = ? ORDER BY host", (rows[0]["run_id"],)
        )
        return fleet_as_seen(rows[0], as_dicts(hosts))  # never a dead controller's as running

    @reporting
    def fleet_runs_of(self, module_set: str | None, limit: int = 20) -> list[tuple[dict, list]]:
        """The newest `limit` fleet runs of `module_set` (every set when None), newest
        first, each with its hosts' rows, as they are (a dead controller's: crashed)."""
        from corral.recovery import fleet_as_seen

        where, args = ("WHERE module_set = ? ", (module_set,)) if module_set else ("", ())
        runs = as_dicts(
            self.conn.execute(
                f"SELECT * FROM fleet_runs {where}ORDER BY started DESC LIMIT ?", (*args, limit)
            )
        )
        out = []
        for run in runs:
            hosts = self.conn.execute(
                "SELECT * FROM fleet_hosts WHERE fleet_run = ? ORDER BY host", (run["run_id"],)
            )
            out.append(fleet_as_seen(run, as_dicts(hosts)))
        return out

    @reporting
    def fleet_attempts(self, fleet_run: str) -> tuple[list[tuple], list[tuple]]:
        """What a fleet run's hosts recorded: (host, makespan_s) of each host's run, and
        (host, module, attempt, status, duration_s) of their attempts by attempt."""
        makespans = self.conn.execute(
            "SELECT host, makespan_s FROM runs WHERE fleet_run = ?", (fleet_run,)
        ).fetchall()
        attempts = self.conn.execute(
            "SELECT m.host, m.module, m.attempt, m.status, m.duration_s FROM module_runs AS m "
            "JOIN runs AS r ON r.run_id = m.run_id WHERE r.fleet_run = ? ORDER BY m.attempt",
            (fleet_run,),
        ).fetchall()
        return makespans, attempts

    def _columns(self, table: str) -> set[str]:
        """The columns `table` has here (a database of an older schema may lack some)."""
        known = self.__dict__.setdefault("_fleet_columns", {})
        if table not in known:
            known[table] = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
        return known[table]

    def _insert(self, table: str, row: dict, verb: str = "INSERT") -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" * len(row))
        self.conn.execute(f"{verb} INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))

    def _upsert(self, table: str, row: dict, key: tuple[str, ...]) -> None:
        """Insert `row`, or update the row with the same key where anything differs (an
        unchanged row is not written: a second gather changes nothing)."""
        columns = list(row)
        sets = [c for c in columns if c not in key]
        self.conn.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT({', '.join(key)}) DO UPDATE SET "
            + ", ".join(f"{c} = excluded.{c}" for c in sets)
            + " WHERE "
            + " OR ".join(f"{table}.{c} IS NOT excluded.{c}" for c in sets),
            tuple(row.values()),
        )
