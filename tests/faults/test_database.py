"""Fault 8: the database. Concurrent writers, writers killed mid-write, corruption."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace

from ..conftest import write_module
from .conftest import Running, db_rows

WRITER = r"""
import sys, time
from pathlib import Path
from corral.store import Store
store = Store.open(Path(sys.argv[1]))
store.insert_run({"run_id": sys.argv[2], "started": "x", "status": "running"})
for i in range(100000):
    print("begin", i, flush=True)
    store.write_attempts([{"run_id": sys.argv[2], "module": f"m{i}", "attempt": 1,
                           "status": "ok", "reason": "x" * 2000}], [])
    print("ack", i, flush=True)
"""


def test_two_runs_writing_one_database_lose_nothing(corral, tmp_path):
    other = tmp_path / "other"
    for i in range(40):
        corral.module(f"a{i}", body="true")
        write_module(other, f"b{i}", body="true")
    first = Running(corral, "-j", "4")
    argv = replace(corral, modules=other).argv("run", "-j", "4", "-q")
    second = subprocess.Popen(argv, env=corral.env)
    assert first.finish()[0] == 0
    assert second.wait(60) == 0
    runs = db_rows(corral.db, "SELECT run_id, status FROM runs")
    assert len(runs) == 2 and {r["status"] for r in runs} == {"ok"}
    rows = db_rows(corral.db, "SELECT module, status FROM module_runs")
    assert len(rows) == 80 and {r["status"] for r in rows} == {"ok"}


def test_a_writer_killed_200_times_keeps_every_acknowledged_row(tmp_path):
    db = tmp_path / "killed.db"
    acked: set[int] = set()
    mid_write = 0
    rng = random.Random(7)
    for round_ in range(200):
        run_id = f"r{round_}"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db), run_id], stdout=subprocess.PIPE, text=True
        )
        # Started up (the first write begins; on a loaded host start-up alone can take
        # longer than any fixed sleep, and a writer killed before it made the schema
        # tests nothing), then a few writes.
        first = proc.stdout.readline()
        time.sleep(rng.random() * 0.1)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        lines = (first + out).split()
        last_begin = None
        for kind, number in zip(lines[::2], lines[1::2], strict=False):
            if kind == "ack":
                acked.add((round_, int(number)))
            else:
                last_begin = int(number)
        if last_begin is not None and (round_, last_begin) not in acked:
            mid_write += 1  # killed between BEGIN and the acknowledgement
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {
        (int(r[1:]), int(m[1:])) for r, m in conn.execute("SELECT run_id, module FROM module_runs")
    }
    conn.close()
    assert acked and acked <= stored
    # The control: the kills really landed inside writes, not only between them.
    assert mid_write >= 20, mid_write
