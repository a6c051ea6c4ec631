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
    """The id a host's run is recorded under here (`HOST/RUN`), so two hosts' runs never
    collide."""
    return f"{host}/{run_id}"


class FleetRecorder:
    """A fleet run listener: host records and host outcomes become rows at once, so a
    host that finished is recorded whatever happens to the others."""

    def __init__(self, store: Store, fleet_run: str):
        self.store = store
        self.fleet_run = fleet_run
        self.pending: dict[str, list] = {}  # host -> its records, written as it ends
        self.rows = 0

    def __call__(self, event: FleetEvent) -> None:
        """Record a host's records, or how it ended, at once; other events record nothing."""
        if isinstance(event, HostRecords):
            gathered = as_gathered(self.store, event.host, event.record, self.fleet_run)
            if gathered is not None:
                self.pending.setdefault(event.host, []).append(gathered)
        elif isinstance(event, HostFinished):
            # perf: one transaction a host, its records with how it ended (records come
            # just before the connection closes; docs/architecture.md)
            gathered = self.pending.pop(event.host.host, [])
            run_id = gathered[-1][0]["run_id"] if gathered else None
            self.rows += save_host(self.store, self.fleet_run, event.host, run_id, gathered)


def as_gathered(
    store: Store, host: str, record: dict, fleet_run: str | None
) -> tuple[dict, list[dict], str | None] | None:
    """One host run and its attempts as `Store.add_gathered` takes them; None when there
    is nothing to take yet.

    When the controller is one of its hosts and shares the host's database, the host's
    own rows of that run are already here: they become the gathered ones (one copy),
    once the run has ended; while it still runs (a gather of a lost host), nothing is
    taken and a later gather does it."""
    run = record["run"]
    own = store.own_status(run)
    if own == "running":
        return None
    gathered = {**run, "run_id": host_run_id(host, run["run_id"]), "host": host}
    gathered["fleet_run"] = fleet_run
    return gathered, record["attempts"], run["run_id"] if own is not None else None


def add_records(store: Store, host: str, record: dict, fleet_run: str | None) -> int:
    """Upsert one host run and its attempts; returns how many rows were new."""
    gathered = as_gathered(store, host, record, fleet_run)
    return 0 if gathered is None else store.add_gathered(*gathered)


def start_fleet_run(
    store: Store,
    run_id: str,
    nodes: str,
    args: list[str],
    digest: str,
    module_set: str,
    hosts: list[str],
) -> None:
    """The fleet run's row, with who controls it (this process: a reader tells it dead
    as it tells a dead run), and every host's row, `pending`."""
    import os

    from corral.procfs import boot_id, start_time

    store.start_fleet_run(
        {
            "run_id": run_id,
            "started": iso(time.time()),
            "status": "running",
            "nodes": nodes,
            "args": json.dumps(args),
            "digest": digest,
            "module_set": module_set,
            "host": os.uname().nodename,
            "pid": os.getpid(),
            "pid_start": start_time(os.getpid()),
            "boot_id": boot_id(),
        },
        hosts,
    )


def save_host(
    store: Store, fleet_run: str, r: HostResult, run_id: str | None, gathered: list = ()
) -> int:
    """How host `r` ended, with the runs it recorded (`as_gathered`'s), in one
    transaction; returns how many gathered rows changed."""
    return store.save_host(
        {
            "fleet_run": fleet_run,
            "host": r.host,
            "status": r.status,
            "exit_code": r.exit_code,
            "reason": r.reason,
            "run_id": run_id,
            "started": iso(r.started) or iso(r.ended),
            "ended": iso(r.ended),
        },
        gathered,
    )


def finish_fleet_run(store: Store, run_id: str, status: str, exit_code: int) -> None:
    """Record fleet run `run_id` as ended now, with `status` and `exit_code`."""
    store.finish_fleet_run(run_id, iso(time.time()), status, exit_code)


def abandon_fleet_run(store: Store, run_id: str, exc: BaseException) -> None:
    """The controller of fleet run `run_id` is leaving on `exc` (an error of its own, or a
    stopping signal outside the run's handling): its row ends now, `crashed` with exit 70
    (`interrupted` with 128 + the signal), never left `running`. A database that cannot
    take it leaves it to the next start (`recovery.end_dead_fleet_runs`)."""
    import contextlib
    import sqlite3

    from corral.errors import StoreError
    from corral.recovery import CRASH_EXIT
    from corral.signals import Stopped

    if isinstance(exc, Stopped):
        status, code = "interrupted", exc.exit_code
    else:
        status, code = "crashed", CRASH_EXIT
    with contextlib.suppress(sqlite3.Error, StoreError, OSError):
        finish_fleet_run(store, run_id, status, code)


def gather_since(store: Store, host: str) -> str:
    """Where a gather of `host` must start: its oldest run still `running` here, else the
    oldest fleet run that lost it and has no run of it (a day earlier: that time is the
    controller's clock, the host's may be behind), else its newest run ('' when the
    host has no records here). The host compares these in its own clock, the one its
    runs were recorded in: a run retention forgot here is not sent again."""
    running, lost, newest = store.gather_marks(host)
    if running:
        return running
    if lost:
        return _earlier(lost)
    return newest or ""


def _earlier(when: str) -> str:
    """A day before `when`: host clocks may be behind the controller's."""
    return iso(dt.datetime.fromisoformat(when).timestamp() - SKEW_S) or ""
