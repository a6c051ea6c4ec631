"""The shipped cron entry and systemd units, run the way cron and systemd run them: an
empty environment (`env -i`), --quiet mail, the exit codes, the run lock; under
`systemd-run --wait` where systemd runs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

EXAMPLES = REPO / "examples"


def cron_command() -> list[str]:
    """The command of the example cron entry, corral as this checkout runs it."""
    line = next(
        ln for ln in (EXAMPLES / "corral.cron").read_text().splitlines() if ln.startswith("*/")
    )
    words = shlex.split(line)[6:]  # after the five time fields and the user
    assert words[:5] == ["nice", "-n", "10", "ionice", "-c"], words
    at = words.index("/opt/corral/bin/corral")
    return [*words[:at], sys.executable, "-m", "corral", *words[at + 1 :]]


def as_cron(command: list[str], modules: Path, db: Path, home: Path):
    """`env -i` with what cron sets (and the database and this checkout's code)."""
    command = [str(modules) if w == "/etc/corral/modules" else w for w in command]
    env = [
        "SHELL=/bin/sh",
        "PATH=/usr/bin:/bin",
        f"HOME={home}",
        "LOGNAME=root",
        f"CORRAL_DB={db}",
        f"PYTHONPATH={REPO / 'supervisor'}",
    ]
    return subprocess.run(
        ["env", "-i", *env, *command], capture_output=True, text=True, timeout=120, cwd=home
    )


def test_cron_entry_mails_nothing_when_all_is_well_and_the_report_otherwise(corral, tmp_path):
    if not shutil.which("ionice"):
        pytest.skip("ionice (util-linux) is not installed")
    corral.module("disk", body="echo checked")
    corral.module("certs", "warning-exit: 3", body="exit 0")
    command = cron_command()
    quiet = as_cron(command, corral.modules, corral.db, tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    corral.module("certs", "warning-exit: 3", body="echo 'cert expires in 9 days' >&2; exit 3")
    warned = as_cron(command, corral.modules, corral.db, tmp_path)
    assert warned.returncode == 5, warned.stderr
    assert "cert expires in 9 days" in warned.stdout and "warning" in warned.stdout
    assert "disk " not in warned.stdout  # only what went wrong is mailed
    corral.module("certs", body="exit 2")
    failed = as_cron(command, corral.modules, corral.db, tmp_path)
    assert failed.returncode == 1 and "failed" in failed.stdout
    assert "Traceback" not in warned.stderr + failed.stderr


def test_service_and_timer_say_what_the_docs_say():
    service = (EXAMPLES / "corral.service").read_text()
    for line in (
        "Type=oneshot",
        "SuccessExitStatus=5",
        "Nice=10",
        "IOSchedulingClass=idle",
        "KillMode=mixed",
    ):
        assert re.search(rf"^{re.escape(line)}$", service, re.M), line
    assert re.search(r"^ExecStart=/opt/corral/bin/corral .* run --quiet$", service, re.M)
    assert "OnCalendar=" in (EXAMPLES / "corral.timer").read_text()
    if shutil.which("systemd-analyze"):
        result = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(EXAMPLES / "corral.timer")],
            capture_output=True,
            text=True,
        )
        # it cannot find /opt/corral/bin/corral here; anything else is a mistake
        problems = [
            ln
            for ln in result.stderr.splitlines()
            if ln.strip() and "/opt/corral" not in ln and "corral.service" not in ln
        ]
        assert not [p for p in problems if "corral" in p], problems


@pytest.mark.skipif(not os.path.isdir("/run/systemd/system"), reason="systemd is not running")
def test_the_same_run_under_systemd_run(corral):
    corral.module("audit", "warning-exit: 3", body="echo found one >&2; exit 3")
    result = subprocess.run(
        [
            "systemd-run",
            "--wait",
            "--collect",
            "--quiet",
            "-p",
            "Nice=10",
            "-p",
            "IOSchedulingClass=idle",
            "-p",
            "SuccessExitStatus=5",
            "-p",
            "KillMode=mixed",
            "--setenv",
            f"PYTHONPATH={REPO / 'supervisor'}",
            "--setenv",
            f"CORRAL_DB={corral.db}",
            sys.executable,
            "-m",
            "corral",
            "--modules",
            str(corral.modules),
            "run",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr  # 5 counted as success by the unit
    rows = subprocess.run(
        [sys.executable, "-m", "corral", "--db", str(corral.db), "history", "audit", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "supervisor")},
    )
    assert '"warning"' in rows.stdout
