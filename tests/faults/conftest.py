"""Fault injection helpers: start corral as a real process, find what it left behind."""

from __future__ import annotations

import contextlib
import os
import sqlite3
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
            corral.argv("run", *args),
            env=popen.pop("env", corral.env),
            stdin=subprocess.DEVNULL,
            stdout=popen.pop("stdout", subprocess.PIPE),
            stderr=subprocess.PIPE,
            text=True,
            **popen,
        )
        self.said: list[str] = []  # stderr lines read while it runs

    def wait_said(self, text: str) -> None:
        """Until corral's stderr has a line with `text` (what it says once something
        happened comes with its loop's next turn: no sleep is sure to be long enough)."""
        for line in self.proc.stderr:
            self.said.append(line)
            if text in line:
                return
        raise AssertionError(f"corral ended without saying {text!r}: {''.join(self.said)}")

    def wait_for(self, path, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while not path.exists():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < end, f"{path} never appeared"
            time.sleep(0.02)

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, "".join(self.said) + err


def marking(corral, tmp_path, names, say: str = ""):
    """Modules `names`, each printing `say NAME` (when given) and then leaving a marker
    file named after itself; returns the markers' directory."""
    marks = tmp_path / "marks"
    marks.mkdir()
    for name in names:
        echo = f"echo {say} {name}; " if say else ""
        corral.module(name, body=f"{echo}touch {marks}/{name}")
    return marks


def private_mounts(corral, script: str) -> subprocess.CompletedProcess:
    """Bash runs `script` in a private mount namespace (its own /run/lock, say, so the
    host's is untouched), with PYTHON, MODULES and DB naming this corral; the test is
    skipped where no namespace can be made (the script exits 99, or never says rc=)."""
    env = {
        **corral.env,
        "PYTHON": sys.executable,
        "MODULES": str(corral.modules),
        "DB": str(corral.db),
    }
    done = subprocess.run(
        ["unshare", "-m", "bash", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if done.returncode == 99 or "rc=" not in done.stdout:
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    return done


def last_run(db) -> dict:
    return db_rows(db, "SELECT * FROM runs ORDER BY started DESC LIMIT 1")[0]


def attempts(db, run_id: str) -> dict[str, dict]:
    return {
        r["module"]: r
        for r in db_rows(db, "SELECT * FROM module_runs WHERE run_id = ? ORDER BY attempt", run_id)
    }


def recorded(db, module: str, status: str, timeout: float = 20.0) -> dict:
    """The newest run's row, once it holds `module` as `status`: what a crash must not
    lose is on disk (the record writer commits a little after the event)."""
    end = time.monotonic() + timeout
    while True:
        with contextlib.suppress(sqlite3.Error, IndexError):
            run = last_run(db)
            if attempts(db, run["run_id"]).get(module, {}).get("status") == status:
                return run
        assert time.monotonic() < end, f"{module} never recorded as {status}"
        time.sleep(0.02)


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


def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


@pytest.fixture
def marked_sleeper():
    """A control: a process marked like a module's, started outside corral. The leak
    detector must find it (so a clean result means something); killed afterwards."""
    procs = []

    def start(run_id: str) -> subprocess.Popen:
        env = {**os.environ, "CORRAL_RUN_ID": run_id}
        proc = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
        procs.append(proc)
        # Popen returns once the exec has begun (its descriptors closed), a moment before
        # the kernel sets up the new environment, which /proc shows empty until then:
        # a detector asked in that moment would miss the mark (seen under load).
        mark = f"CORRAL_RUN_ID={run_id}".encode()
        end = time.monotonic() + 10
        while mark not in _environ(proc.pid):
            assert time.monotonic() < end, "the marked sleeper never showed its mark"
            time.sleep(0.01)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


class Mounts:
    """Real mounts for a test (tmpfs, read-only binds), all undone at teardown."""

    def __init__(self):
        self.points: list = []

    def _mount(self, *args: str) -> None:
        made = subprocess.run(["mount", *args], capture_output=True, text=True)
        if made.returncode != 0:
            if os.environ.get("CORRAL_REQUIRE_TOOLS"):
                pytest.fail(f"mount {' '.join(args)}: {made.stderr.strip()}")
            pytest.skip(f"cannot mount here: {made.stderr.strip()}")
        self.points.append(args[-1])

    def tmpfs(self, path, size: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))

    def read_only(self, path) -> None:
        """`path` bound onto itself, read-only: writes fail with EROFS, even as root."""
        self._mount("--bind", "-o", "ro", str(path), str(path))

    def undo(self) -> None:
        for point in reversed(self.points):
            subprocess.run(["umount", "-l", point], check=False)
        self.points = []


@pytest.fixture
def mounts():
    made = Mounts()
    yield made
    made.undo()


@pytest.fixture
def immutable():
    """chattr +i on paths (root cannot write them either); undone at teardown."""
    done: list = []

    def make(*paths) -> None:
        for path in paths:
            made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
            if made.returncode != 0:
                pytest.skip(f"chattr +i {path}: {made.stderr.strip()}")
            done.append(path)

    yield make
    for path in reversed(done):
        subprocess.run(["chattr", "-i", str(path)], check=False)


def fill(directory) -> None:
    """Fill the filesystem of `directory` up to the last byte (file `filler`)."""
    with open(directory / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    with open(directory / "filler2", "wb", buffering=0) as f:  # the last partial block
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
