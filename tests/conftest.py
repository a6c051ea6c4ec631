"""Shared helpers: real module files in tmp dirs, the real `corral` in a subprocess."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# The tests send signals to what they start, which inherits this process's ignored
# signals: a suite started in the background of a non-interactive shell (SIGINT and
# SIGQUIT ignored, as POSIX shells do without job control) or under nohup (SIGHUP)
# would start every corral with them ignored, and corral rightly keeps them so. The
# tests start from the defaults; a test that wants an ignored signal sets it itself.
for _signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
    if signal.getsignal(_signum) == signal.SIG_IGN:
        signal.signal(
            _signum, signal.default_int_handler if _signum == signal.SIGINT else signal.SIG_DFL
        )


class _HostShare:
    """This worker's hold on the host under pytest-xdist: a shared flock on a file of
    the session's workers, or an exclusive one. A turnstile flock, taken before either
    and kept by an exclusive holder, makes later shared requests wait behind it, so a
    test that waits to run alone does not wait for ever."""

    def __init__(self) -> None:
        self.mode: str | None = None  # None, "shared" or "alone"
        self.files: tuple = ()

    def take(self, base: Path, alone: bool) -> None:
        if not self.files:
            self.files = (open(base / "turnstile.lock", "a"), open(base / "host.lock", "a"))  # noqa: SIM115
        turnstile, host = self.files
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(host, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        self.mode = "alone" if alone else "shared"

    def give_back(self) -> None:
        turnstile, host = self.files
        fcntl.flock(host, fcntl.LOCK_UN)
        fcntl.flock(turnstile, fcntl.LOCK_UN)
        self.mode = None


_SHARE = _HostShare()


@contextlib.contextmanager
def whole_host(config: pytest.Config, factory: pytest.TempPathFactory, alone: bool):
    """Under pytest-xdist, the host's share this test (or fixture) runs with: `alone`,
    no test runs in another worker meanwhile (it loads the host on purpose, or judges
    how loaded it is); otherwise shared with every test but those. Nested uses hold
    what the outer one holds (a shared hold becomes alone for the inner one's time).
    Without xdist, there is nothing to share."""
    if not hasattr(config, "workerinput") or _SHARE.mode == "alone":
        yield
        return
    base = factory.getbasetemp().parent  # one directory for the session's workers
    outer = _SHARE.mode
    if outer == "shared" and not alone:
        yield
        return
    if outer == "shared":
        _SHARE.give_back()
    _SHARE.take(base, alone)
    try:
        yield
    finally:
        _SHARE.give_back()
        if outer == "shared":
            _SHARE.take(base, alone=False)


@pytest.fixture(autouse=True)
def _share_the_host(request, tmp_path_factory) -> Iterator[None]:
    alone = request.node.get_closest_marker("whole_host") is not None
    with whole_host(request.config, tmp_path_factory, alone):
        yield


def write_module(
    directory: Path, name: str, header: str = "", body: str = "true", mode: int = 0o755
) -> Path:
    """Write NAME.sh with a `# key: value` header block and a Bash body."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = ["#!/usr/bin/env bash"]
    lines += [
        f"# {line.strip()}" for line in textwrap.dedent(header).strip().splitlines() if line.strip()
    ]
    lines += ["set -euo pipefail", textwrap.dedent(body).strip(), ""]
    path = directory / f"{name}.sh"
    path.write_text("\n".join(lines))
    path.chmod(mode)
    return path


def db_rows(db, sql: str, *args) -> list[dict]:
    """Rows of a query on a corral database, as dicts."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def damage(db: Path) -> None:
    """Zero every page of a SQLite file but the first (its header and schema stay
    readable: SQLite opens it and fails on the first read of a table)."""
    db_rows(db, "PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    size = int.from_bytes(data[16:18], "big") or 65536
    data[size:] = bytes(len(data) - size)
    db.write_bytes(bytes(data))


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@dataclass
class Corral:
    """Runs the installed corral against one modules dir and one database."""

    modules: Path
    db: Path
    env: dict

    def __call__(
        self,
        *args: str,
        timeout: float = 120,
        extra_env: dict | None = None,
        input: str | None = None,
    ) -> Result:
        cmd = self.argv(*args)
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL if input is None else None,
            input=input,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def argv(self, *args: str) -> list[str]:
        """The command line of this corral (its modules and database) with `args`."""
        return [
            sys.executable,
            "-m",
            "corral",
            "--modules",
            str(self.modules),
            "--db",
            str(self.db),
            *args,
        ]

    def module(self, name: str, header: str = "", body: str = "true", **kw) -> Path:
        return write_module(self.modules, name, header, body, **kw)


@pytest.fixture
def corral(tmp_path: Path) -> Iterator[Corral]:
    # COLUMNS and LINES would size a terminal test's pty for corral whatever its real
    # size (shutil.get_terminal_size reads them first): a shell exporting COLUMNS=80,
    # or pytest-xdist's workers, cut the status line a test reads at 80 columns.
    drop = ("COLUMNS", "LINES")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_") and k not in drop}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    # The load gate is tested where it is the subject (test_throttle, test_scheduler);
    # elsewhere a busy test host must not hold the test's own modules back.
    env["CORRAL_MAX_LOAD"] = "1000"
    modules = tmp_path / "modules"
    modules.mkdir()
    made = Corral(modules, tmp_path / "corral.db", env)
    yield made
    remove_cgroups(made.db)


def remove_cgroups(db: Path) -> None:
    """A test's runs leave no empty cgroups on the host: those its runs recorded (a
    crashed run's, a detached daemon's) go as the next start of corral would remove
    them; a busy one stays."""
    from corral import cgroups

    if not db.is_file():  # (a test's FIFO or directory there is left alone)
        return
    try:
        rows = db_rows(db, "SELECT cgroups FROM runs WHERE cgroups IS NOT NULL")
    except sqlite3.Error:
        return
    for row in rows:
        cgroups.remove_run(row["cgroups"].split(os.pathsep))
