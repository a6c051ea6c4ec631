"""Fault 6: output floods and odd bytes; fault 7: a full disk under the logs."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from corral.procfs import status_kb

from .conftest import Running, attempts, last_run

MIB = 1 << 20


def peak_memory_while(run: Running) -> int:
    """corral's own high-water mark (VmHWM), read until it exits."""
    peak = 0
    while run.proc.poll() is None:
        peak = max(peak, status_kb(run.proc.pid, b"VmHWM") or 0)
        time.sleep(0.1)
    return peak


def test_floods_are_capped_logged_and_do_not_kill_the_module(corral):
    (corral.modules.parent / "corral.yaml").write_text("log_limit: 1M\n")
    # Seconds of `yes` are gigabytes, far past the 1 MiB cap (10 s only made it longer).
    corral.module("yes", body="timeout 2 yes || [[ $? == 124 ]]")
    corral.module("zeros", body="head -c 3G /dev/zero")
    run = Running(corral, "-j", "2", stdout=subprocess.DEVNULL)
    peak = peak_memory_while(run)
    code, _, err = run.finish()
    assert code == 0, err
    assert peak < 100 * MIB, peak / MIB
    mods = attempts(corral.db, last_run(corral.db)["run_id"])
    for name in ("yes", "zeros"):
        row = mods[name]
        assert row["status"] == "ok" and row["exit_code"] == 0, name  # no SIGPIPE
        assert row["log_bytes"] == MIB and Path(row["log_path"]).stat().st_size == MIB
        assert row["log_dropped_bytes"] > 0
    assert mods["zeros"]["log_bytes"] + mods["zeros"]["log_dropped_bytes"] == 3 << 30


def test_without_the_cap_the_log_keeps_everything(corral):
    """The control: the cap is what kept the logs at 1 MiB above."""
    corral.module("five", body="head -c 5M /dev/zero")
    result = corral("run", "--json")
    module = result.json()["modules"][0]
    assert Path(module["log_path"]).stat().st_size == 5 * MIB
    assert module["log_dropped_bytes"] == 0


ODD = (
    b"caf\xc3\xa9 ok\n",
    b"bad \xff\xfe bytes\n",
    b"nul\x00inside\n",
    b"split \xe2\x82",
    b"\xac euro\n",
    b"no newline at the end",
)


def printf_escaped(data: bytes) -> str:
    """printf's own \\xNN escapes: they carry any byte, NUL included."""
    return "".join(f"\\x{b:02x}" for b in data)


def test_odd_bytes_are_logged_byte_for_byte_and_shown_with_replacement(corral):
    # One printf per part with a pause between: the euro sign is split across reads.
    corral.module("odd", body="\n".join(f"printf '{printf_escaped(p)}'; sleep 0.1" for p in ODD))
    result = corral("run")
    assert result.code == 0, result.err
    expected = b"".join(ODD)
    log = Path(attempts(corral.db, last_run(corral.db)["run_id"])["odd"]["log_path"])
    assert hashlib.sha256(log.read_bytes()).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert "café ok" in result.out and "bad \ufffd\ufffd bytes" in result.out
    assert "split € euro" in result.out  # the character split across reads is whole
    assert "no newline at the end" in result.out


@pytest.fixture
def tiny_fs(tmp_path):
    """A 256 KiB tmpfs: a disk that fills up. Skipped where mounting is not allowed."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_loses_the_log_tail_not_the_run_or_the_records(corral, tiny_fs):
    (corral.modules.parent / "corral.yaml").write_text(f"log_dir: {tiny_fs}\n")
    corral.module("chatty", body="head -c 2M /dev/urandom | base64; echo done")
    corral.module("after", "requires: chatty", "echo after")
    result = corral("run", "--json")
    assert result.code == 1
    assert "Traceback" not in result.err
    assert "incomplete" in result.err and "disk full" in result.err
    mods = {m["name"]: m for m in result.json()["modules"]}
    assert mods["chatty"]["status"] == "ok" and mods["after"]["status"] == "ok"
    row = attempts(corral.db, last_run(corral.db)["run_id"])["chatty"]
    assert row["log_incomplete"] == 1 and row["log_dropped_bytes"] > 0
    conn = sqlite3.connect(corral.db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_with_room_the_same_run_is_clean(corral, tmp_path):
    """The control: the same modules with a roomy log directory exit 0, logs complete."""
    roomy = tmp_path / "roomy"
    (corral.modules.parent / "corral.yaml").write_text(f"log_dir: {roomy}\n")
    corral.module("chatty", body="head -c 2M /dev/urandom | base64; echo done")
    result = corral("run")
    assert result.code == 0 and "incomplete" not in result.err
    assert shutil.disk_usage(roomy).free > 0
