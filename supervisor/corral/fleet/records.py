"""The fleet's records in the controller's database.

Each host's runs and attempts land as that host recorded them, with `host` set and
the run id prefixed by the host (`web01/20261123-061502-3fa2`: run ids are unique per
host, not across a fleet). Rows are upserted on their unique keys (a run's id; an
attempt's run, module and attempt), so gathering twice never duplicates and a run
first seen `running` is completed by a later gather. How each host ended is one
fleet_hosts row per fleet run and host.
"""

from __future__ import annotations

import datetime as dt
import json
import time

from corral.fleet.hosts import (
    FleetEvent,
    HostFinished,
    HostRecords,
    HostResult,
)
from corral.records import iso
from corral.store import Store

SKEW_S = 86400.0


def host_run_id(host: str, run_id: str) -> str:
    return f"{host}/{run_id}"


class FleetRecorder:
    """A fleet run listener: host records and host outcomes become rows at once, so a
    host that finished is recorded whatever happens to the others."""

    def __init__(self, store: Store, fleet_run: str):
        self.store = store
        self.fleet_run = fleet_run
        self.last_run: dict[str, str] = {}  # host -> its run id, as recorded here
        self.rows = 0

    def __call__(self, event: FleetEvent) -> None:
        if isinstance(event, HostRecords):
            self.rows += add_records(self.store, event.host, event.record, self.fleet_run)
            self.last_run[event.host] = host_run_id(event.host, event.record["run"]["run_id"])
        elif isinstance(event, HostFinished):
            save_host(self.store, self.fleet_run, event.host, self.last_run.get(event.host.host))


def _columns(store: Store, table: str) -> set[str]:
    return {row[1] for row in store.conn.execute(f"PRAGMA table_info({table})")}


def add_records(store: Store, host: str, record: dict, fleet_run: str | None) -> int:
    """Upsert one host run and its attempts; returns how many rows were new.

    When the controller is one of its hosts and shares the host's database, the host's
    own rows of that run are already here: they become the gathered ones (one copy),
    once the run has ended; while it still runs (a gather of a lost host), nothing is
    taken and a later gather does it."""
    run = dict(record["run"])
    own = _own_status(store, run)
    if own == "running":
        return 0
    run_id = host_run_id(host, run["run_id"])
    run.update(run_id=run_id, host=host)
    run_cols, attempt_cols = _columns(store, "runs"), _columns(store, "module_runs")
    with store.write():
        if own is not None:
            store.delete_runs([record["run"]["run_id"]])
        if fleet_run is None:  # a later gather: the fleet run that lost this host
            row = store.conn.execute(
                "SELECT fleet_run FROM fleet_hosts WHERE host = ? AND started <= ? "
                "ORDER BY started DESC LIMIT 1",
                (host, run.get("started") or ""),
            ).fetchone()
            fleet_run = row[0] if row else "gather"
            store.conn.execute(
                "UPDATE fleet_hosts SET run_id = ? WHERE fleet_run = ? AND host = ? "
                "AND run_id IS NULL",
                (run_id, fleet_run, host),
            )
        run["fleet_run"] = fleet_run
        before = store.conn.total_changes
        _upsert(store, "runs", {k: v for k, v in run.items() if k in run_cols}, ("run_id",))
        for attempt in record["attempts"]:
            a = {k: v for k, v in attempt.items() if k in attempt_cols and k != "id"}
            a.update(run_id=run_id, host=host)
            _upsert(store, "module_runs", a, ("run_id", "module", "attempt"))
        new = store.conn.total_changes - before
    return new


def _own_status(store: Store, run: dict) -> str | None:
    """The status of this database's own row of `run` (a host's run as its host
    recorded it), when that host wrote it here; None when it is not here. The same run:
    same id, start, machine, process and modules directory, and not gathered."""
    row = store.conn.execute(
        "SELECT status FROM runs WHERE run_id = ? AND fleet_run IS NULL AND started IS ? "
        "AND host IS ? AND pid IS ? AND modules_dir IS ?",
        (run["run_id"], *(run.get(k) for k in ("started", "host", "pid", "modules_dir"))),
    ).fetchone()
    return None if row is None else row[0]


def _upsert(store: Store, table: str, row: dict, key: tuple[str, ...]) -> None:
    """Insert `row`, or update the row with the same key where anything differs (an
    unchanged row is not written: a second gather changes nothing)."""
    columns = list(row)
    sets = [c for c in columns if c not in key]
    store.conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in sets)
        + " WHERE "
        + " OR ".join(f"{table}.{c} IS NOT excluded.{c}" for c in sets),
        tuple(row.values()),
    )


def start_fleet_run(
    store: Store, run_id: str, nodes: str, args: list[str], digest: str, module_set: str
) -> None:
    with store.write():
        store.conn.execute(
            "INSERT INTO fleet_runs (run_id, started, status, nodes, args, digest, module_set) "
            "VALUES (?, ?, 'running', ?, ?, ?, ?)",
            (run_id, iso(time.time()), nodes, json.dumps(args), digest, module_set),
        )


def save_host(store: Store, fleet_run: str, r: HostResult, run_id: str | None) -> None:
    with store.write():
        store.conn.execute(
            "INSERT OR REPLACE INTO fleet_hosts (fleet_run, host, status, exit_code, reason, "
            "run_id, started, ended) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                fleet_run,
                r.host,
                r.status,
                r.exit_code,
                r.reason,
                run_id,
                iso(r.started) or iso(r.ended),
                iso(r.ended),
            ),
        )


def finish_fleet_run(store: Store, run_id: str, status: str, exit_code: int) -> None:
    with store.write():
        store.conn.execute(
            "UPDATE fleet_runs SET ended = ?, status = ?, exit_code = ? WHERE run_id = ?",
            (iso(time.time()), status, exit_code, run_id),
        )


def gather_since(store: Store, host: str) -> str:
    """Where a gather of `host` must start: its oldest run still `running` here, else the
    oldest fleet run that lost it and has no run of it (a day earlier: that time is the
    controller's clock, the host's may be behind), else its newest run ('' when the
    host has no records here). The host compares these in its own clock, the one its
    runs were recorded in: a run retention forgot here is not sent again."""
    row = store.conn.execute(
        "SELECT min(started) FROM runs WHERE host = ? AND fleet_run IS NOT NULL "
        "AND status = 'running'",
        (host,),
    ).fetchone()
    if row[0]:
        return row[0]
    row = store.conn.execute(
        "SELECT min(started) FROM fleet_hosts WHERE host = ? AND status = 'lost' "
        "AND run_id IS NULL",
        (host,),
    ).fetchone()
    if row[0]:
        return _earlier(row[0])
    row = store.conn.execute(
        "SELECT max(started) FROM runs WHERE host = ? AND fleet_run IS NOT NULL", (host,)
    ).fetchone()
    return row[0] or ""


def _earlier(when: str) -> str:
    """A day before `when`: host clocks may be behind the controller's."""
    return iso(dt.datetime.fromisoformat(when).timestamp() - SKEW_S) or ""
