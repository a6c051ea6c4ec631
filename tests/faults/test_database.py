"""Fault 8: the database. Concurrent writers, writers killed mid-write, corruption."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace

from ..conftest import write_module
from .conftest import Running, db_rows

# One interpreter imports the store once and forks a writer per round (200 fresh
# interpreters spent most of the test starting up). Each writer opens the database
# itself, after the fork, and writes attempts until it is killed; its lines go
# straight to the pipe (os.write: nothing waits in a buffer when SIGKILL lands).
FORKER = r"""
import os, sys
from pathlib import Path
from corral.store import Store

def write(run_id):
    store = Store.open(Path(sys.argv[1]))
    store.insert_run({"run_id": run_id, "started": "x", "status": "running"})
    for i in range(100000):
        os.write(1, f"begin {i}\n".encode())
        store.write_attempts([{"run_id": run_id, "module": f"m{i}", "attempt": 1,
                               "status": "ok", "reason": "x" * 2000}], [])
        os.write(1, f"ack {i}\n".encode())

for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            write(line.strip())
        finally:
            os._exit(1)
    os.write(1, f"pid {pid}\n".encode())
    os.waitpid(pid, 0)
    os.write(1, b"end\n")
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
    forker = subprocess.Popen(
        [sys.executable, "-c", FORKER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        for round_ in range(200):
            forker.stdin.write(f"r{round_}\n")
            forker.stdin.flush()
            # The writer's PID, and its first write begun (on a loaded host start-up can
            # take longer than any fixed sleep, and a writer killed before it made the
            # schema tests nothing); then a few writes, and SIGKILL.
            lines, pid = [], None
            while pid is None or not lines:
                line = forker.stdout.readline()
                assert line, "the forker ended"
                kind, number = line.split()
                if kind == "pid":
                    pid = int(number)
                else:
                    lines.append((kind, number))
            time.sleep(rng.random() * 0.05)
            os.kill(pid, signal.SIGKILL)
            while (line := forker.stdout.readline()) != "end\n":
                assert line, "the forker ended"
                lines.append(tuple(line.split()))
            last_begin = None
            for kind, number in lines:
                if kind == "ack":
                    acked.add((round_, int(number)))
                else:
                    last_begin = int(number)
            if last_begin is not None and (round_, last_begin) not in acked:
                mid_write += 1  # killed between BEGIN and the acknowledgement
    finally:
        forker.stdin.close()
        forker.wait(30)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = {
        (int(r[1:]), int(m[1:])) for r, m in conn.execute("SELECT run_id, module FROM module_runs")
    }
    conn.close()
    assert acked and acked <= stored
    # The control: the kills really landed inside writes, not only between them.
    assert mid_write >= 20, mid_write
