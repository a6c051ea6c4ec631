"""No silent hang (issue 12.8): a process no signal can end (frozen by another cgroup
hierarchy's freezer here; waiting in the kernel on a hung NFS server is the same to
corral) is given up on a grace period after SIGKILL, said, and the run goes on: its
requirers run, the run ends. The fault is real: a v1 freezer cgroup, FROZEN."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import db_rows

FREEZER = Path("/sys/fs/cgroup/freezer")


@pytest.fixture
def frozen_cgroup():
    if not (FREEZER / "cgroup.procs").exists() or os.geteuid() != 0:
        pytest.skip("no v1 freezer hierarchy to freeze a process with")
    path = FREEZER / f"corral-test-unkillable-{os.getpid()}"
    path.mkdir()
    yield path
    (path / "freezer.state").write_text("THAWED\n")
    end = time.monotonic() + 10
    while (path / "cgroup.procs").read_text().split() and time.monotonic() < end:
        time.sleep(0.05)  # the KILLs sent while it was frozen land now
    path.rmdir()


def freeze_a_child(cgroup: Path) -> str:
    """Bash that leaves a `sleep` frozen in `cgroup` (and writes its PID to `pid`)."""
    return (
        f"sleep 1000 & echo $! > {cgroup}/cgroup.procs\n"
        f"echo FROZEN > {cgroup}/freezer.state\necho $! > pid"
    )


def test_a_frozen_process_is_really_unkillable(frozen_cgroup, tmp_path):
    """The control: SIGKILL does not end a process in a FROZEN cgroup."""
    subprocess.run(["bash", "-c", freeze_a_child(frozen_cgroup)], cwd=tmp_path, check=True)
    pid = int((tmp_path / "pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert Path(f"/proc/{pid}").exists()


@pytest.mark.parametrize("cgroups", ["1", "0"], ids=["cgroups", "fallback"])
def test_a_process_no_signal_ends_is_left_and_the_run_goes_on(
    corral, frozen_cgroup, tmp_path, cgroups
):
    corral.module("freezer", body=freeze_a_child(frozen_cgroup))
    corral.module("after", "requires: freezer", f"touch {tmp_path}/after")
    env = {"CORRAL_GRACE": "1s", **({"CORRAL_CGROUPS": "0"} if cgroups == "0" else {})}
    result = corral("run", "-q", extra_env=env, timeout=60)
    assert "Traceback" not in result.err and result.code == 0, result.err
    assert (tmp_path / "after").exists()  # its requirer ran
    (said,) = [line for line in result.err.splitlines() if "after SIGKILL" in line]
    assert "freezer: 1 process (" in said and "corral no longer waits for them" in said
    rows = db_rows(corral.db, "SELECT module, status, leftovers FROM module_runs")
    assert {r["module"]: r["status"] for r in rows} == {"freezer": "ok", "after": "ok"}
    assert [r["leftovers"] for r in rows if r["module"] == "freezer"] == [1]
