"""`check` and `run --dry-run` say what `run` would about the places it writes.

The database, the log directory and the run lock's directory: what `run` refuses (exit
2, naming the place) `check` and `run --dry-run` refuse alike, and what `run` only
warns about (a log directory it cannot make) they warn about with the same words.
Each place is planted by a real `nobody` where it matters; each test's control shows
the same commands pass once the place is fine.
"""

from __future__ import annotations

import os

import pytest

from ..conftest import damage
from ..test_lint import need
from .attacker import NOBODY, as_nobody
from .conftest import private_mounts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the places are root's")

COMMANDS = (("check",), ("run", "--dry-run"), ("run",))


def said_alike(corral, *args: str, code: int, text: str) -> None:
    """Every command of COMMANDS (with `args` first) exits `code` saying `text`."""
    for command in COMMANDS:
        result = corral(*args, *command)
        assert result.code == code, (command, result.err)
        assert text in result.err, (command, result.err)
        assert "Traceback" not in result.err


def test_a_log_directory_another_user_owns_is_refused_by_check_and_dry_run(corral, arena):
    logs = arena.mine / "logs"
    as_nobody(f"mkdir {logs}")
    config = corral.modules.parent / "corral.yaml"
    config.write_text(f"log_dir: {logs}\n")
    corral.module("a")
    said_alike(
        corral,
        code=2,
        text=f"refusing to write as root through {arena.mine}: owned by uid {NOBODY}",
    )
    config.write_text(f"log_dir: {arena.root / 'logs'}\n")  # the control: root's place
    assert corral("check").code == 0 and corral("run", "--dry-run").code == 0


def test_a_file_where_the_log_directory_should_be_is_said_alike(corral, tmp_path):
    (tmp_path / "logs").write_text("not a directory\n")
    (corral.modules.parent / "corral.yaml").write_text(f"log_dir: {tmp_path / 'logs' / 'x'}\n")
    corral.module("a", body="echo output")
    for command in COMMANDS:
        result = corral(*command)
        assert result.code in (0, 1), (command, result.err)  # (run: its log is incomplete)
        assert "cannot create the log directory (not a directory" in result.err, command
    (tmp_path / "logs").unlink()  # the control: nothing to say
    for command in COMMANDS:
        result = corral(*command)
        assert result.code == 0 and "cannot create" not in result.err, (command, result.err)


def test_a_database_in_a_directory_another_user_owns_is_refused_by_check_too(corral, arena):
    db = arena.mine / "corral.db"
    corral.module("a")
    said_alike(
        type(corral)(corral.modules, db, corral.env),
        code=2,
        text=f"refusing to write as root through {arena.mine}: owned by uid {NOBODY}",
    )
    assert not db.exists()


LOCK_SCRIPT = r"""
set -u
mount -t tmpfs -o mode=1777 tmpfs /run/lock || exit 99
nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
corral() { "$PYTHON" -m corral --modules "$MODULES" --db "$DB" "$@" 2>&1; echo "rc=$?"; }
for plant in "mkdir /run/lock/corral" "mkfifo /run/lock/corral" "ln -s /etc /run/lock/corral"; do
  nobody $plant
  echo "== $plant"
  corral check; corral run --dry-run; corral run
  rm -rf /run/lock/corral
done
echo "== clean"
corral check
"""


def test_a_run_lock_directory_another_user_planted_is_refused_by_check_and_dry_run(corral):
    """In a private mount namespace with its own /run/lock, so the host's is untouched."""
    need("unshare")
    marker = corral.modules.parent / "ran"
    corral.module("a", body=f"touch {marker}")
    done = private_mounts(corral, LOCK_SCRIPT)
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    parts = out.split("== ")[1:]
    whys = (f"owned by uid {NOBODY}", f"a FIFO owned by uid {NOBODY}", "a symbolic link owned")
    for part, why in zip(parts[:3], whys, strict=True):
        assert part.count("rc=2\n") == 3, part  # check, the dry run and the run alike
        assert part.count(f"refusing to write as root through /run/lock/corral: {why}") == 3
    assert parts[3].endswith("rc=0\n"), parts[3]  # the control: nothing planted
    assert not marker.exists()


def test_a_damaged_database_is_said_by_the_dry_run_and_moved_only_by_run(corral):
    """The dry run warns as check does and changes nothing; run moves it aside."""
    corral.module("a")
    assert corral("run").code == 0
    damage(corral.db)
    for command in (("check",), ("run", "--dry-run")):
        result = corral(*command)
        assert result.code == 0, (command, result.err)
        assert "malformed; the next `corral run` moves it aside" in result.err, result.err
        assert not list(corral.db.parent.glob("*.corrupt-*")), command
    result = corral("run")  # the control: run does move it aside
    assert result.code == 0 and list(corral.db.parent.glob("*.corrupt-*")), result.err
