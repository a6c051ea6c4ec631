"""The run lock's waits and faults, with the real lock file: a signal while `--wait-lock`
waits ends corral with one line and 128 + the signal (nothing run, nothing recorded,
nothing left), and a lock directory that cannot be made or written (a full tmpfs, in a
private mount namespace) is one message naming it, never a traceback."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from corral.runlock import lock_path

from ..conftest import db_rows
from .conftest import private_mounts


@contextlib.contextmanager
def held(corral):
    """The modules directory's run lock, held by this test process (as another corral
    would hold it), with its PID in the file."""
    path = lock_path((corral.modules,))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield path


def first_line(proc: subprocess.Popen, stream, timeout: float = 30.0) -> str:
    """The first line `proc` writes on `stream`, waited for at most `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([stream], [], [], 0.1)
        if ready:
            return stream.readline()
        assert proc.poll() is None, proc.communicate()
    raise AssertionError("no line")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_waiting_for_the_run_lock_is_one_line_and_its_exit_code(
    corral, tmp_path, signum, code
):
    marker = tmp_path / "ran"
    corral.module("a", body=f"touch {marker}")
    with held(corral) as path:
        proc = subprocess.Popen(
            corral.argv("run", "--wait-lock"),
            env=corral.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        waiting = first_line(proc, proc.stderr)
        assert "waiting for ever for it" in waiting, waiting
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    name = signal.Signals(signum).name
    assert proc.returncode == code, err
    assert err == (
        f"corral: stopped by {name} while waiting for the run lock {path} (held by PID "
        f"{os.getpid()}); nothing was run\n"
    )
    assert out == "" and not marker.exists()
    assert not corral.db.exists() or db_rows(corral.db, "SELECT * FROM runs") == []
    logs = corral.db.parent / "logs"
    assert not logs.exists() or not [p for p in logs.iterdir() if p.name != "latest"]
    # nothing left: the lock is free again at once (corral held no descriptor of it)
    with open(path) as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_signal_ignored_from_the_start_stays_ignored_while_waiting(corral):
    """`nohup corral run --wait-lock`: SIGHUP was ignored when corral started, so the
    wait goes on through it (a SIGTERM then ends it as above)."""
    corral.module("a")
    with held(corral):
        proc = subprocess.Popen(
            corral.argv("run", "--wait-lock"),
            env=corral.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
        )
        assert "waiting for ever" in first_line(proc, proc.stderr)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and "stopped by SIGTERM while waiting" in err, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_control_a_python_waiting_in_sleep_does_not_say_it_so(signum):
    """The control: the interpreter's own handling of the same signal in the same kind of
    wait is a traceback (SIGINT) or death by the signal (SIGTERM): the checks above can
    fail."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; print('w', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first_line(proc, proc.stdout) == "w\n"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    if signum == signal.SIGINT:
        assert proc.returncode == -signal.SIGINT and "Traceback" in err, err
        assert "KeyboardInterrupt" in err
    else:
        assert proc.returncode == -signal.SIGTERM


FULL_SCRIPT = r"""
set -u
mount -t tmpfs -o size=64k,nr_inodes=16,mode=1777 tmpfs /run/lock || exit 99
corral() { "$PYTHON" -m corral --modules "$MODULES" --db "$DB" run "$@"; }
fill_inodes() { i=0; while touch "$1/f$i" 2>/dev/null; do i=$((i + 1)); done; }
# 1. no inode left for the lock directory
fill_inodes /run/lock
corral; echo "no dir rc=$?"
rm -f /run/lock/f*
# 2. the directory is there, no inode left for the lock file
mkdir -m 700 /run/lock/corral
fill_inodes /run/lock
corral; echo "no file rc=$?"
rm -f /run/lock/f*
# 3. the lock file made, no block left for the holder's PID: the lock holds all the same
corral >/dev/null; echo "made rc=$?"
head -c 1M /dev/zero > /run/lock/filler 2>/dev/null
corral >/dev/null; echo "no block rc=$?"
rm -f /run/lock/filler
# 4. read-only
mount -o remount,ro /run/lock
rm -rf /run/lock/corral 2>/dev/null
corral; echo "read-only rc=$?"
mount -o remount,rw /run/lock
rm -rf /run/lock/corral
# 5. the control: room again
corral >/dev/null; echo "room rc=$?"
"""


def test_a_lock_directory_on_a_full_or_read_only_filesystem_is_named(corral):
    """In a private mount namespace with its own small /run/lock (the host's untouched)."""
    if os.geteuid() != 0:
        pytest.skip("the run lock is in /run/lock as root only")
    marker = corral.modules.parent / "ran"
    corral.module("a", body=f"echo x >> {marker}")
    done = private_mounts(corral, FULL_SCRIPT)
    out, err = done.stdout, done.stderr
    assert "Traceback" not in err and "internal error" not in err, err
    lock = lock_path((corral.modules,)).name
    full = f"cannot take the run lock /run/lock/corral/{lock}: No space left on device "
    assert err.count(full + "(free space or inodes on the filesystem of /run/lock/corral)") == 2
    assert "no dir rc=2\n" in out and "no file rc=2\n" in out, out
    assert "made rc=0\n" in out and "no block rc=0\n" in out, out
    assert f"/run/lock/corral/{lock}: Read-only file system" in err
    assert "read-only rc=2\n" in out and "room rc=0\n" in out, out
    assert marker.read_text() == "x\n" * 3  # the refused runs ran nothing
