"""Bash passes shellcheck, Python passes ruff, lib/ passes its bats tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO


def need(tool: str) -> str:
    """The tool's path (beside this Python first: a venv's bin/ need not be on PATH)."""
    beside = Path(sys.executable).parent / tool
    path = str(beside) if os.access(beside, os.X_OK) else shutil.which(tool)
    if path is None:
        if os.environ.get("CORRAL_REQUIRE_TOOLS"):
            pytest.fail(f"{tool} is not installed (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed")
    return path


def bash_files() -> list[str]:
    return sorted(str(p) for d in ("modules", "lib") for p in (REPO / d).glob("*.sh"))


def test_shellcheck_modules_and_lib():
    result = subprocess.run(
        [need("shellcheck"), "-f", "gcc", *bash_files()], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff():
    result = subprocess.run(
        [need("ruff"), "check", "supervisor", "tests", "scripts"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    result = subprocess.run(
        [need("ruff"), "format", "--check", "supervisor", "tests", "scripts"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bats_lib():
    result = subprocess.run(
        [need("bats"), "tests/lib.bats"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_modules_pass_check_strict(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral",
            "--modules",
            str(REPO / "modules"),
            "--db",
            str(tmp_path / "c.db"),
            "check",
            "--strict",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
