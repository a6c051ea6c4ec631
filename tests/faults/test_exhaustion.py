"""corral itself out of descriptors or memory (`ulimit -n`, `ulimit -v`).

Whatever the limit, corral either runs or stops with one line saying what ran out and
exit 71 (EX_OSERR): never a traceback, never "internal error" (70). Modules it had
started are stopped and recorded (interrupted, with the reason), the run is recorded
as crashed, and no process or cgroup of the run is left. The control: the same run
under the usual limits completes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time

import pytest

from ..conftest import db_rows
from .conftest import leftovers

MODULES = 8


@pytest.fixture
def busy(corral, tmp_path):
    """MODULES modules that each hold their slot a little while (all at once: -j 8)."""
    for i in range(MODULES):
        corral.module(f"m{i}", body=f"sleep 0.3; touch {tmp_path}/m{i}")
    return corral


def limited(corral, limit: str, *args: str) -> subprocess.CompletedProcess:
    args = args or ("run", "-q", "-j", str(MODULES))
    cmd = " ".join(shlex.quote(a) for a in corral.argv(*args))
    return subprocess.run(
        ["bash", "-c", f"{limit} && exec {cmd}"],
        env=corral.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def own_cgroups() -> set[str]:
    """The `corral-RUN` directories in the cgroups this test runs in (where the corral
    it starts makes its own): the other users of the host have theirs elsewhere."""
    found: set[str] = set()
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "memory":
                base = f"/sys/fs/cgroup/memory{path}"
            elif controllers == "" and path != "/":  # (the root is every user's)
                base = f"/sys/fs/cgroup/unified{path}"
                base = base if os.path.isdir(base) else f"/sys/fs/cgroup{path}"
            else:
                continue
            with contextlib.suppress(OSError):
                found |= {f"{base}/{n}" for n in os.listdir(base) if n.startswith("corral-")}
    return found


def no_new_cgroups(before: set[str]) -> None:
    """Nothing made since `before` is left (what a run made it removes as it ends)."""
    end = time.monotonic() + 3
    while (left := own_cgroups() - before) and time.monotonic() < end:
        time.sleep(0.05)
    assert not left, left


def nothing_left(corral) -> None:
    for run in db_rows(corral.db, "SELECT * FROM runs") if corral.db.exists() else []:
        assert leftovers(run["run_id"]) == []
        assert not [
            d for d in (run["cgroups"] or "").split(os.pathsep) if d and os.path.isdir(d)
        ], run["cgroups"]
        assert run["status"] != "running"
        rows = db_rows(corral.db, "SELECT * FROM module_runs WHERE run_id = ?", run["run_id"])
        assert all(r["status"] != "running" for r in rows), rows
    found = subprocess.run(
        ["find", "/sys/fs/cgroup", "-maxdepth", "6", "-type", "d", "-name", "corral-*"],
        capture_output=True,
        text=True,
    ).stdout.split()
    runs = (
        {r["run_id"] for r in db_rows(corral.db, "SELECT run_id FROM runs")}
        if (corral.db.exists())
        else set()
    )
    assert not [d for d in found if d.rsplit("corral-", 1)[-1] in runs], found


def said_once(done: subprocess.CompletedProcess, what: str) -> None:
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr
    assert done.returncode in (0, 71), (done.returncode, done.stderr)
    if done.returncode == 71:
        lines = [line for line in done.stderr.splitlines() if what in line]
        assert len(lines) == 1, done.stderr


@pytest.mark.whole_host  # (any corral-RUN cgroup made beside this test counts)
@pytest.mark.parametrize("fds", [16, 20, 24, 32, 64])
def test_a_low_descriptor_limit_is_one_message_and_exit_71(busy, fds):
    before = own_cgroups()
    done = limited(busy, f"ulimit -n {fds}")
    said_once(done, "ulimit -")
    nothing_left(busy)
    no_new_cgroups(before)


@pytest.mark.parametrize("fds", [8, 12])
@pytest.mark.parametrize("command", ["check", "run"])
def test_a_very_low_descriptor_limit_is_never_a_refusal_of_the_files(busy, fds, command):
    """Out of descriptors while checking the modules and the library is corral's want,
    not something wrong with the files: never "refusing to run as root: cannot be
    checked" or "cannot read module" (exit 2)."""
    done = limited(busy, f"ulimit -n {fds}", command)
    said_once(done, "ulimit -")
    assert "refusing" not in done.stderr and "cannot read" not in done.stderr


def test_some_descriptor_limit_does_stop_the_run_and_the_usual_one_does_not(busy):
    """The control: the limits above do reach corral's own needs (one of them stops the
    run), and the usual limit lets the same run complete."""
    codes = {fds: limited(busy, f"ulimit -n {fds}").returncode for fds in (20, 32, 48)}
    assert 71 in codes.values(), codes
    done = limited(busy, "ulimit -n 1024")
    assert done.returncode == 0, done.stderr
    assert limited(busy, f"ulimit -v {30 << 10}").returncode == 71  # and so does memory


@pytest.mark.whole_host  # (any corral-RUN cgroup made beside this test counts)
@pytest.mark.parametrize("mib", [40, 160, 640])
def test_a_low_address_space_limit_is_one_message_and_exit_71(busy, mib):
    before = own_cgroups()
    done = limited(busy, f"ulimit -v {mib << 10}")
    said_once(done, "ulimit -")
    nothing_left(busy)
    no_new_cgroups(before)


@pytest.mark.parametrize("mib", [100, 180])
def test_docs_under_a_low_address_space_limit_is_one_message_and_exit_71(corral, tmp_path, mib):
    """The charts load numpy, whose OpenBLAS ends the process itself (exit 1, its own
    message) when it cannot map its buffers: corral says it first (the control: the
    usual limit draws them)."""
    pytest.importorskip("matplotlib")
    corral.module("a")
    assert corral("run").code == 0
    out = tmp_path / "report"
    done = limited(corral, f"ulimit -v {mib << 10}", "docs", "--out", str(out))
    said_once(done, "ulimit -")
    assert "OpenBLAS" not in done.stderr
    assert limited(corral, "ulimit -v unlimited", "docs", "--out", str(out)).returncode == 0
