"""Shared helpers: real module files in tmp dirs, the real `corral` in a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
