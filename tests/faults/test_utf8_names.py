"""File names and paths that are not valid UTF-8.

corral keeps names and paths as text (the database, logs, the terminal). A module file
whose name is not UTF-8 is no module name (an error naming it, as for any name a module
may not have); a modules directory, database (and so its log directory) or config file
whose path is not UTF-8 is a usage error naming it (bytes shown as `cat -v` shows them),
and a command-line value that is not UTF-8 is answered as any unknown name is. A link
with a UTF-8 name reaches such a directory. Never an internal error, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def bytes_module(directory, name: bytes, body: str) -> None:
    """A module file whose name is the raw bytes `name`."""
    path = os.path.join(os.fsencode(directory), name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o755)
    os.write(fd, f"#!/usr/bin/env bash\nset -euo pipefail\n{body}\n".encode())
    os.close(fd)


@pytest.mark.parametrize("command", [("run",), ("check",), ("plan",)])
def test_a_module_named_in_latin1_is_an_error_naming_it(corral, tmp_path, command):
    corral.module("fine", body=f"touch {tmp_path}/fine")
    bytes_module(corral.modules, b"caf\xe9.sh", f"touch {tmp_path}/latin1")
    result = corral(*command)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert "cafM-i.sh:1: module name" in result.err
    assert not (tmp_path / "latin1").exists() and not (tmp_path / "fine").exists()


def test_control_the_same_module_renamed_runs(corral, tmp_path):
    corral.module("fine", body=f"touch {tmp_path}/fine")
    bytes_module(corral.modules, b"cafe.sh", f"touch {tmp_path}/renamed")
    result = corral("run")
    assert result.code == 0 and (tmp_path / "renamed").exists(), result.err
    assert "not allowed" not in result.err


@pytest.mark.parametrize(
    "how", ["--modules", "CORRAL_MODULES", "--db", "CORRAL_DB", "--config", "CORRAL_CONFIG"]
)
def test_a_path_that_is_not_utf8_is_a_usage_error_naming_it(corral, tmp_path, how):
    marker = tmp_path / "ran"
    corral.module("a", body=f"touch {marker}")
    odd = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"d\xe9j\xe0"))
    os.mkdir(odd)
    with open(os.path.join(odd, "a.sh"), "w") as f:
        f.write(f"#!/bin/bash\ntouch {marker}\n")
    with open(os.path.join(odd, "corral.yaml"), "w") as f:
        f.write("jobs: 2\n")
    value = {
        "--modules": odd,
        "--db": os.path.join(odd, "corral.db"),
        "--config": os.path.join(odd, "corral.yaml"),
    }[how.replace("CORRAL_", "--").lower()]
    env = dict(corral.env)
    args = [sys.executable, "-m", "corral"]
    args += ["--modules", str(corral.modules)] if "MODULES" not in how.upper() else []
    args += ["--db", str(corral.db)] if "DB" not in how.upper() else []
    if how.startswith("--"):
        args += [how, value]
    else:
        env[how] = value
    done = subprocess.run([*args, "run"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "dM-ijM-`" in done.stderr and "not valid UTF-8" in done.stderr
    assert "Traceback" not in done.stderr and not marker.exists()


def test_control_a_link_with_a_utf8_name_reaches_the_same_directory(corral, tmp_path):
    marker = tmp_path / "ran"
    odd = os.path.join(os.fsencode(tmp_path), b"d\xe9j\xe0")
    os.mkdir(odd)
    bytes_module(odd, b"a.sh", f"touch {marker}")
    link = tmp_path / "dejà"
    os.symlink(odd, os.fsencode(link))
    result = type(corral)(link, corral.db, corral.env)("run")
    assert result.code == 0 and marker.exists(), result.err


@pytest.mark.parametrize("args", [("history", "MOD"), ("why", "MOD"), ("run", "MOD")])
def test_a_command_line_value_that_is_not_utf8_is_answered_as_an_unknown_name(corral, args):
    corral.module("a")
    odd = os.fsdecode(b"caf\xe9")
    result = corral(*[odd if a == "MOD" else a for a in args])
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
