"""A reader that stops early (`corral list | head -1`) is normal use, not an error: every
command that writes to stdout exits 0 with nothing on stderr, as `ls | head` does."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from .conftest import Corral, write_module

PIPE_BUFFER = 65536  # what a pipe holds before the writer must wait for the reader
COMMANDS = [
    ["list"],
    ["list", "--json"],
    ["plan"],
    ["plan", "--json"],
    ["graph"],
    ["history"],
    ["history", "--json"],
    ["history", "step_0001_of_a_long_provisioning_run"],
    ["log", "step_0001_of_a_long_provisioning_run"],
    ["why", "step_0001_of_a_long_provisioning_run"],
    ["status"],
    ["status", "--json"],
    ["config"],
    ["docs"],
]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """1,200 modules with long descriptions, one of them printing 200 KB, run once."""
    root = tmp_path_factory.mktemp("pipes")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(HOME=str(root), XDG_STATE_HOME=str(root / "state"))
    corral = Corral(root / "modules", root / "corral.db", env)
    for i in range(1200):
        name, body = f"step_{i:04d}_of_a_long_provisioning_run", "seq 40000" if i == 1 else "true"
        write_module(corral.modules, name, f"description: {'a long line ' * 12}{i}", body)
    assert corral("run", "-j", "4", "-q", timeout=600).code == 0
    return corral


def piped(corral, args: list[str], reader: str) -> tuple[int, str, int]:
    """(corral's exit code, its stderr, bytes it wrote) for `corral ARGS | READER`."""
    cmd = shlex.join(corral.argv(*args))
    err = corral.db.parent / "err"
    done = subprocess.run(
        ["bash", "-c", f"{cmd} 2>{err} | {reader}; echo ${{PIPESTATUS[0]}}"],
        env=corral.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return int(done.stdout.split()[-1]), err.read_text(), len(done.stdout)


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_reader_that_stops_early_is_not_an_error(big, args):
    code, err, _ = piped(big, args, "head -1 >/dev/null")
    assert (code, err) == (0, "")


def test_the_control_the_long_outputs_outgrow_a_pipe(big):
    """`head -1` leaves most of these unread: they really write after the reader left."""
    for args in (
        ["list"],
        ["plan"],
        ["history", "--json"],
        ["log", "step_0001_of_a_long_provisioning_run"],
    ):
        code, _, size = piped(big, args, "cat")
        assert code == 0 and size > 1.5 * PIPE_BUFFER, (args, size)
