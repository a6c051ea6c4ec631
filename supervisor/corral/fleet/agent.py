"""The host's side of a fleet run: the zipapp's entry point.

`fleet-agent KEY -- ARGS` starts `corral run --json ARGS` on this host, detached (its
own session, stdin/stdout/stderr on files in its run directory, its exit status
written by a Bash wrapper that outlives the SSH connection), then relays the run's
progress from the host's own database and, at the end, the run's JSON object and
its records, as `corral-fleet:KIND JSON` lines on stdout. If the connection goes
away the relay dies with it and the run goes on; `fleet-export` hands its records
to a later gather.

Only the standard library and corral's config are imported here: a host may lack
everything else until the zipapp provides it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

PREFIX = "corral-fleet:"
TICK = 0.25  # seconds between looks at the run's records
# Runs the host's corral in its own session; what it prints goes to files, and its
# exit status is written once it ends, whoever is still listening.
WRAPPER = (
    "trap '' HUP INT\n"
    '"$@" > result.json 2> stderr.log < /dev/null &\n'
    "echo $! > pid\n"
    "wait $!\n"
    "echo $? > rc.tmp && mv rc.tmp rc\n"
)


def main(argv: list[str]) -> None:
    if argv[:1] == ["fleet-agent"]:
        sys.exit(agent(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:]))
    if argv[:1] == ["fleet-export"]:
        sys.exit(export(argv[1] if len(argv) > 1 else ""))
    from corral.cli import main as cli

    cli(args=argv, prog_name="corral")


def here() -> Path:
    """The unpacked bundle this zipapp belongs to."""
    return Path(sys.argv[0]).resolve().parent


def say(kind: str, value: object) -> None:
    sys.stdout.write(f"{PREFIX}{kind} {json.dumps(value, separators=(',', ':'))}\n")
    sys.stdout.flush()


def host_db() -> Path:
    from corral.config import load_config

    return load_config((str(here() / "modules"),)).db


def agent(key: str, args: list[str]) -> int:
    bundle = here()
    rundir = bundle.parent / "runs" / key
    rundir.mkdir(parents=True, exist_ok=True, mode=0o700)
    command = [
        sys.executable,
        "-I",
        "-S",
        str(bundle / "corral.pyz"),
        "--modules",
        str(bundle / "modules"),
        "run",
        "--json",
        *args,
    ]
    try:
        say("hello", {"rundir": str(rundir), "hostname": os.uname().nodename})
        subprocess.Popen(
            ["bash", "-c", WRAPPER, "corral-fleet-run", *command],
            cwd=rundir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return relay(rundir, host_db(), str(bundle / "modules"))
    except BrokenPipeError:
        # The controller went away: the run goes on, and a gather brings its records.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def relay(rundir: Path, db: Path, modules: str) -> int:
    """Relay the run's attempts as they change, then its result; returns its exit code."""
    seen: dict[tuple[str, int], tuple] = {}
    run_id = None
    while True:
        done = (rundir / "rc").exists()
        conn = _connect(db)
        if conn is not None:
            try:
                if run_id is None:
                    run_id = _run_id(conn, rundir, modules)
                if run_id is not None:
                    for row in conn.execute(
                        "SELECT module, attempt, status, duration_s FROM module_runs "
                        "WHERE run_id = ?",
                        (run_id,),
                    ):
                        if seen.get(row[:2]) != row[2:]:
                            seen[row[:2]] = row[2:]
                            say("event", {"m": row[0], "a": row[1], "s": row[2], "d": row[3]})
            except sqlite3.Error:
                pass
            finally:
                conn.close()
        if done:
            break
        time.sleep(TICK)
    rc = int((rundir / "rc").read_text().strip() or 1)
    try:
        run = json.loads((rundir / "result.json").read_text())
    except (OSError, ValueError):
        run = None
    try:
        err = (rundir / "stderr.log").read_text(errors="replace").splitlines()[-20:]
    except OSError:
        err = []
    say("result", {"rc": rc, "run": run, "stderr": err})
    if run_id is not None:
        for record in records(db, "run_id = ?", (run_id,)):
            say("rows", record)
    return rc


def _connect(db: Path) -> sqlite3.Connection | None:
    if not db.exists():
        return None
    try:
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None


def _run_id(conn: sqlite3.Connection, rundir: Path, modules: str) -> str | None:
    try:
        pid = int((rundir / "pid").read_text())
    except (OSError, ValueError):
        return None
    row = conn.execute(
        "SELECT run_id FROM runs WHERE pid = ? AND modules_dir = ? ORDER BY started DESC LIMIT 1",
        (pid, modules),
    ).fetchone()
    return row[0] if row else None


def _columns(db: Path, table: str) -> set[str]:
    conn = _connect(db)
    if conn is None:
        return set()
    try:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    except sqlite3.Error:
        return set()
    finally:
        conn.close()


def records(db: Path, where: str, args: tuple = ()) -> list[dict]:
    """Each matching run's row with its attempt rows, oldest first."""
    conn = _connect(db)
    if conn is None:
        return []
    conn.row_factory = sqlite3.Row
    try:
        out = []
        for run in conn.execute(f"SELECT * FROM runs WHERE {where} ORDER BY started", args):
            attempts = conn.execute(
                "SELECT * FROM module_runs WHERE run_id = ? ORDER BY id", (run["run_id"],)
            )
            out.append({"run": dict(run), "attempts": [dict(a) for a in attempts]})
        return out
    except sqlite3.Error:
        return []
    finally:
        conn.close()


def export(since: str) -> int:
    """`fleet-export [SINCE]`: the records of every fleet run on this host that started
    at or after SINCE (an ISO time; everything when empty)."""
    base = str(here().parent)
    say("hello", {"hostname": os.uname().nodename})
    db = host_db()
    # A database this host shares with a controller also holds what fleet runs gathered
    # (fleet_run set): those are not this host's runs.
    own = " AND fleet_run IS NULL" if "fleet_run" in _columns(db, "runs") else ""
    for record in records(
        db,
        "substr(modules_dir, 1, ?) = ? AND started >= ?" + own,
        (len(base) + 1, base + "/", since),
    ):
        say("rows", record)
    say("result", {"rc": 0})
    return 0
