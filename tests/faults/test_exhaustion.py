"""corral itself out of descriptors or memory (`ulimit -n`, `ulimit -v`).

Whatever the limit, corral either runs or stops with one line saying what ran out and
exit 71 (EX_OSERR): never a traceback, never "internal error" (70). Modules it had
started are stopped and recorded (interrupted, with the reason), the run is recorded
as crashed, and no process or cgroup of the run is left. The control: the same run
under the usual limits completes.
"""

from __future__ import annotations

import contextlib
import itertools
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


def limited(corral, limit: str, *args: str, into: list[str] = ()) -> subprocess.CompletedProcess:
    """corral under `limit` (a ulimit), started in the cgroups `into` (none: where this
    test runs)."""
    args = args or ("run", "-q", "-j", str(MODULES))
    cmd = " ".join(shlex.quote(a) for a in corral.argv(*args))
    enter = "".join(f"echo $$ > {shlex.quote(d)}/cgroup.procs && " for d in into)
    return subprocess.run(
        ["bash", "-c", f"{enter}{limit} && exec {cmd}"],
        env=corral.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def own_bases() -> list[str]:
    """The cgroups this test runs in where a corral it starts makes its runs' cgroups
    (v1 memory, and v2 unless that is the root, which is every user's)."""
    bases = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "memory":
                bases.append(f"/sys/fs/cgroup/memory{path}")
            elif controllers == "" and path != "/":
                base = f"/sys/fs/cgroup/unified{path}"
                bases.append(base if os.path.isdir(base) else f"/sys/fs/cgroup{path}")
    return bases


_places = itertools.count()


@pytest.fixture
def place(request, tmp_path_factory):
    """(where to count, where to start corral): cgroups of this test's own, children of
    those it runs in, for the corral it starts, so that the `corral-RUN` directories
    counted there are that corral's only and the test shares the host with the other
    worker's runs. Where they cannot be made or entered, the test counts in its own
    cgroups, which the other worker's runs share, and so runs alone (whole_host)."""
    from ..conftest import whole_host

    made: list[str] = []
    try:
        for base in own_bases():
            made.append(f"{base}/exhaustion-{os.getpid()}-{next(_places)}")
            os.mkdir(made[-1])
        probe = subprocess.run(
            ["bash", "-c", "".join(f"echo $$ > {d}/cgroup.procs && " for d in made) + "true"]
        )
        usable = probe.returncode == 0
    except OSError:
        usable = False
    try:
        if usable:
            yield made, made
        else:
            with whole_host(request.config, tmp_path_factory, alone=True):
                yield own_bases(), []
    finally:
        for path in made:
            with contextlib.suppress(OSError):
                os.rmdir(path)


def own_cgroups(bases: list[str]) -> set[str]:
    """The `corral-RUN` directories in `bases` (where the corral a test starts makes its
    own): the other users of the host have theirs elsewhere."""
    found: set[str] = set()
    for base in bases:
        with contextlib.suppress(OSError):
            found |= {f"{base}/{n}" for n in os.listdir(base) if n.startswith("corral-")}
    return found


def no_new_cgroups(before: set[str], bases: list[str]) -> None:
    """Nothing made in `bases` since `before` is left (what a run made it removes as it
    ends)."""
    end = time.monotonic() + 3
    while (left := own_cgroups(bases) - before) and time.monotonic() < end:
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


@pytest.mark.parametrize("fds", [16, 20, 24, 32, 64])
def test_a_low_descriptor_limit_is_one_message_and_exit_71(busy, fds, place):
    counted, into = place
    before = own_cgroups(counted)
    done = limited(busy, f"ulimit -n {fds}", into=into)
    said_once(done, "ulimit -")
    nothing_left(busy)
    no_new_cgroups(before, counted)


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


@pytest.mark.parametrize("mib", [40, 160, 640])
def test_a_low_address_space_limit_is_one_message_and_exit_71(busy, mib, place):
    counted, into = place
    before = own_cgroups(counted)
    done = limited(busy, f"ulimit -v {mib << 10}", into=into)
    said_once(done, "ulimit -")
    nothing_left(busy)
    no_new_cgroups(before, counted)


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
