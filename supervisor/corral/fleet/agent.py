"""The host's side of a fleet run: the zipapp's entry point.

`fleet-agent KEY -- ARGS` runs `corral run --json ARGS` on this host in a child of
its own, detached (forked, not a second interpreter: its own session, stdin on
/dev/null, stdout and stderr on files in its run directory), and relays the run's
events as they happen (the run writes them on a pipe to this process) and, once the
run has ended, its JSON object and its records, as `corral-fleet:KIND JSON` lines on
stdout. If the connection goes away the relay dies with it and the run goes on (it
drops what the pipe cannot take, and writes nothing once nobody reads); `fleet-export`
hands its records to a later gather.

Only the standard library is imported here before the fork (the child imports corral
for its run, so the fork copies few pages): a host may lack everything else until the
zipapp provides it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

PREFIX = "corral-fleet:"
UNUSED_S = 7 * 86400  # bundles and run directories untouched this long are removed
ABANDONED_S = 86400  # an unpacking this old was cut off (its connection dropped mid-copy)


def main(argv: list[str]) -> None:
    """The bundle's entry point on a host: `fleet-agent KEY [--] ARGS` (the host's run,
    relayed), `fleet-export [SINCE]` (the records of its fleet runs), anything else the
    corral CLI. Never returns."""
    if argv[:1] == ["fleet-agent"]:
        code = agent(argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
        # Every line is written (os.write); the interpreter's teardown, with corral
        # loaded, would cost the host more than the relay did.
        os._exit(code)
    if argv[:1] == ["fleet-export"]:
        sys.exit(export(argv[1] if len(argv) > 1 else ""))
    from corral.cli import main as cli

    cli(args=argv, prog_name="corral")


def here() -> Path:
    """The unpacked bundle this zipapp belongs to."""
    return Path(sys.argv[0]).resolve().parent


def line(kind: str, value: object) -> bytes:
    """One relay line: the prefix, `kind`, and `value` as compact JSON, then a newline."""
    return f"{PREFIX}{kind} {json.dumps(value, separators=(',', ':'))}\n".encode()


def say(kind: str, value: object) -> None:
    """Write one relay line on stdout, whole (raises OSError when stdout is gone)."""
    write_all(1, line(kind, value))


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`, however many writes it takes (raises OSError)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def host_db() -> Path:
    """The database this host's runs of the bundle's modules record into (its config's `db`)."""
    from corral.config import load_config

    return load_config((str(here() / "modules"),)).db


def agent(key: str, args: list[str]) -> int:
    """Run the bundle's modules on this host in run directory `key` (a detached `corral run
    ARGS`), relaying its events and then its records as lines on stdout; returns the exit
    code to leave with."""
    bundle = here()
    rundir = bundle.parent / "runs" / key
    try:
        rundir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:  # a read-only or full disk: said as the host's reason
        say("error", f"cannot create {rundir}: {exc.strerror or exc}")
        return 98
    argv = ["--modules", str(bundle / "modules"), "run", "--json", *args]
    try:
        say("hello", {"rundir": str(rundir), "hostname": os.uname().nodename})
        # perf: one interpreter per host; the run is a fork of this one, made before
        # corral is imported so that few pages are copied (docs/architecture.md)
        read_end, write_end = os.pipe()  # close-on-exec: the modules never hold it
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            _run_detached(rundir, write_end, argv)  # never returns
        os.close(write_end)
        prune(bundle)  # while the run starts
        return relay(read_end, pid, rundir)
    except BrokenPipeError:
        # The controller went away: the run goes on, and a gather brings its records.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def prune(bundle: Path) -> None:
    """Mark `bundle` used now (its .complete), and remove the bundles and run directories
    beside it that were not used for a week (a run still using one would have touched
    it), and unpackings a day old (their copy was cut off: one takes seconds). Never
    raises: pruning is housekeeping, not the run."""
    now = time.time()
    base, cutoff = bundle.parent, now - UNUSED_S
    old = []
    with contextlib.suppress(OSError):
        os.utime(bundle / ".complete")
        for entry in os.scandir(base):
            if entry.name.startswith(".unpack."):  # a copy cut off leaves its directory
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < now - ABANDONED_S:
                        old.append(entry.path)
            elif entry.name != "runs" and not entry.name.startswith("."):
                with contextlib.suppress(OSError):
                    if os.stat(Path(entry.path) / ".complete").st_mtime < cutoff:
                        old.append(entry.path)
        for entry in os.scandir(base / "runs"):
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    old.append(entry.path)
    if old:
        import shutil

        for path in old:
            shutil.rmtree(path, ignore_errors=True)


def _run_detached(rundir: Path, events: int, argv: list[str]) -> None:
    """The forked child: `corral run` in a session of its own, its output on files, its
    events on `events` for as long as someone reads them; exits with the run's code.
    Its first line on `events` names the host's database (for the agent, not relayed)."""
    code = 70
    try:
        os.setsid()
        for sig in (signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        os.chdir(rundir)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open("result.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open("stderr.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd, target in ((null, 0), (out, 1), (err, 2)):
            os.dup2(fd, target)
            os.close(fd)
        db = None  # a config the run cannot read: the run itself says so, on stderr
        with contextlib.suppress(Exception):
            db = str(host_db())
        write_all(events, json.dumps(db).encode() + b"\n")
        os.set_blocking(events, False)
        from corral import api
        from corral.cli import main as cli

        api.ATTACHED.append(EventPipe(events))
        try:
            cli(args=argv, prog_name="corral")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


class EventPipe:
    """A run listener writing each module's start and end as a relay line on a pipe.
    Never blocks the run: a line the pipe cannot take now is dropped (the records at the
    end carry the truth), and once the reader is gone nothing more is written."""

    def __init__(self, fd: int):
        self.fd: int | None = fd

    def __call__(self, event: object) -> None:
        """Write a module's start, end or skip as one line; any other event, or a pipe that is
        full or gone, writes nothing."""
        from corral.events import ModuleFinished, ModuleSkipped, ModuleStarted

        if self.fd is None:
            return
        if isinstance(event, ModuleStarted):
            value = {"m": event.name, "a": event.attempt, "s": "running", "d": None}
        elif isinstance(event, ModuleFinished):
            r = event.result
            value = {"m": r.name, "a": r.attempt, "s": str(r.status), "d": r.duration_s}
        elif isinstance(event, ModuleSkipped):
            value = {"m": event.name, "a": 0, "s": "skipped", "d": None}
        else:
            return
        try:
            os.write(self.fd, line("event", value))  # one line is far below PIPE_BUF
        except BlockingIOError:
            pass
        except OSError:
            os.close(self.fd)
            self.fd = None


def relay(events: int, pid: int, rundir: Path) -> int:
    """Copy the run's event lines to stdout until the run ends, then say its result and
    its records; returns its exit code."""
    db, head = None, b""
    while chunk := os.read(events, 65536):
        if head is not None:  # the child's first line: where its records are (or null)
            head += chunk
            first, newline, chunk = head.partition(b"\n")
            if not newline:
                continue
            head, where = None, json.loads(first)
            db = Path(where) if where else None
        if chunk:
            write_all(1, chunk)
    os.close(events)
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    rc = 128 - rc if rc < 0 else rc  # killed by a signal: as a shell says it
    try:
        run = json.loads((rundir / "result.json").read_text())
    except (OSError, ValueError):
        run = None
    try:
        err = (rundir / "stderr.log").read_text(errors="replace").splitlines()[-20:]
    except OSError:
        err = []
    if run is None and (rc > 128 or not any(x.strip() for x in err)):
        err.append(_silent_end(rundir, rc))
    say("result", {"rc": rc, "run": run, "stderr": err})
    run_id = run.get("run_id") if isinstance(run, dict) else None
    if run_id is not None and db is not None:
        for record in records(db, "run_id = ?", (run_id,)):
            say("rows", record)
    return rc


def _silent_end(rundir: Path, rc: int) -> str:
    """Why a run that wrote neither its result nor a word on stderr ended: a signal, or
    a disk with no room left for them."""
    if rc > 128:
        name = signal.Signals(rc - 128).name if rc - 128 in signal.valid_signals() else rc - 128
        return f"corral was killed there by {name} (exit {rc})"
    with contextlib.suppress(OSError):
        if os.statvfs(rundir).f_bavail == 0:
            return f"no space left on the device of {rundir} (corral exited {rc})"
    return f"corral exited {rc} and wrote nothing in {rundir}"


def _connect(db: Path) -> sqlite3.Connection | None:
    if not db.exists():
        return None
    try:
        return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None


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
