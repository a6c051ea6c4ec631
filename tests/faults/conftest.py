"""Fault injection helpers: start corral as a real process, find what it left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ..conftest import db_rows
from ..runtrace import processes_with
from .attacker import arena  # noqa: F401  (a fixture: a place `nobody` can reach)


class Running:
    """A `corral run` in the background, with its database and run id at hand."""

    def __init__(self, corral, *args: str, **popen):
        self.corral = corral
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corral",
                "--modules",
                str(corral.modules),
                "--db",
                str(corral.db),
                "run",
                *args,
            ],
            env=popen.pop("env", corral.env),
            stdin=subprocess.DEVNULL,
            stdout=popen.pop("stdout", subprocess.PIPE),
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )

    def wait_for(self, path, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while not path.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < end, f"{path} never appeared"
            time.sleep(0.02)

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def last_run(db) -> dict:
    return db_rows(db, "SELECT * FROM runs ORDER BY started DESC LIMIT 1")[0]


def attempts(db, run_id: str) -> dict[str, dict]:
    return {
        r["module"]: r
        for r in db_rows(db, "SELECT * FROM module_runs WHERE run_id = ? ORDER BY attempt", run_id)
    }


def leftovers(run_id: str) -> list[int]:
    return processes_with(f"CORRAL_RUN_ID={run_id}")


def wait_gone(run_id: str, timeout: float) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = leftovers(run_id)
        if not left:
            return []
        time.sleep(0.05)
    return leftovers(run_id)


@pytest.fixture
def marked_sleeper():
    """A control: a process marked like a module's, started outside corral. The leak
    detector must find it (so a clean result means something); killed afterwards."""
    procs = []

    def start(run_id: str) -> subprocess.Popen:
        env = {**os.environ, "CORRAL_RUN_ID": run_id}
        proc = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
