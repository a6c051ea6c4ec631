"""A run's records written together: the rows that arrived since the last write
(`Batch`) and the statements that write them (`write_rows`).

perf: a run's records are batched (docs/architecture.md): rows of one shape go in one
`executemany`, and an attempt that started and ended within one batch is one row.
Plain SQL: sqlite-utils inspects the table on every insert, which would cost more than
spawning a no-op module.
"""

from __future__ import annotations

import marshal
import sqlite3
from dataclasses import dataclass, field

from corral.status import COMPLETED

ATTEMPT_KEY = ("run_id", "module", "attempt")  # what an update of module_runs is keyed by


@dataclass
class Batch:
    """Records waiting to be written together (see dbfile.Database.write_batch), in
    arrival order."""

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
        """Append `other`'s records after this batch's, kind by kind."""
        for name in ("resets", "runs", "edges", "inserts", "updates", "samples", "ends"):
            getattr(self, name).extend(getattr(other, name))

    def modules(self) -> list[str]:
        """The modules whose records are in the batch, sorted; [] when it holds none."""
        names = {r["module"] for r in self.inserts} | {k[1] for k, _ in self.updates}
        return sorted(names)


def attempt_figures(
    module: str,
    status: str,
    duration: float | None,
    peak_rss: int | None,
    cpu_user: float | None,
    cpu_sys: float | None,
) -> tuple:
    """One attempt as history reads it (a run's list of them is its run_figures record):
    (module, completed, duration, peak RSS, CPU seconds), None where unknown (CPU: when
    its user time is)."""
    cpu = None if cpu_user is None else cpu_user + (cpu_sys or 0.0)
    return (module, status in COMPLETED, duration, peak_rss, cpu)


def write_rows(conn: sqlite3.Connection, batch: Batch) -> None:
    """Write `batch` into the transaction open on `conn`: runs rows, edges, new
    module_runs rows, samples, then updates keyed by (run_id, module, attempt), then
    closing values of runs. Raises sqlite3.Error (the caller rolls back)."""
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
    for run_id in batch.resets:
        conn.execute("DELETE FROM run_edges WHERE run_id = ?", (run_id,))
        conn.execute("DELETE FROM module_runs WHERE run_id = ?", (run_id,))
    for (table, columns), rows in _by_shape(
        [("runs", r) for r in batch.runs]
        + [("module_runs", r) for r in batch.inserts]
        + [("samples", r) for r in batch.samples]
    ):
        verb = "INSERT" if table == "samples" else "INSERT OR REPLACE"
        conn.executemany(
            f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            rows,
        )
    conn.executemany(
        "INSERT INTO run_edges (run_id, module, waits_on) VALUES (?, ?, ?)", batch.edges
    )
    shapes: dict[tuple, list[tuple]] = {}
    for key, values in later:
        shapes.setdefault(tuple(values), []).append((*values.values(), *key))
    for columns, rows in shapes.items():
        conn.executemany(_update("module_runs", columns, ATTEMPT_KEY), rows)
    for run_id, values, figures in batch.ends:
        conn.execute(_update("runs", tuple(values), ("run_id",)), (*values.values(), run_id))
        if figures is not None:
            conn.execute(
                "INSERT OR REPLACE INTO run_figures VALUES (?, ?)",
                (run_id, marshal.dumps(figures)),
            )


def _update(table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """UPDATE of `columns` in the row of `table` whose `key` columns match; its
    parameters are the new values, then the key's."""
    sets = ", ".join(f"{column} = ?" for column in columns)
    return f"UPDATE {table} SET {sets} WHERE " + " AND ".join(f"{k} = ?" for k in key)


def _by_shape(rows: list[tuple[str, dict]]) -> list[tuple[tuple[str, tuple], list[tuple]]]:
    """Group (table, row) pairs by table and column set, keeping each group's order."""
    groups: dict[tuple[str, tuple], list[tuple]] = {}
    for table, row in rows:
        groups.setdefault((table, tuple(row)), []).append(tuple(row.values()))
    return list(groups.items())
