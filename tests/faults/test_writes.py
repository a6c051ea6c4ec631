"""Root never writes through someone else's link: attacks by a real `nobody`.

Each test plants what a local user can (a link, a directory of theirs, a FIFO) where a
root corral writes, checks that corral refuses with a message naming the place and that
the root-only file the link points at is unchanged; each control shows the same write
made by name, as root without the protection, does change it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from ..test_lint import need
from .attacker import NOBODY, as_nobody
from .conftest import private_mounts


def refused(result, place) -> None:
    assert result.code == 2, result.err
    assert f"refusing to write as root through {place}: owned by uid {NOBODY}" in result.err
    assert "Traceback" not in result.err


def test_a_log_directory_another_user_owns_is_refused(corral, arena):
    logs = arena.mine / "logs"
    as_nobody(f"mkdir {logs}")
    (corral.modules.parent / "corral.yaml").write_text(f"log_dir: {logs}\n")
    marker = corral.modules.parent / "ran"
    corral.module("chatty", body=f"echo output; touch {marker}")
    refused(corral("run"), arena.mine)
    assert not marker.exists()  # refused before anything ran
    assert arena.precious_intact() and not any(logs.iterdir())


def test_control_a_run_directory_swapped_for_a_link_redirects_roots_writes(arena):
    """Without the protection: root makes the run's directory in nobody's log directory
    and opens a log by name (O_NOFOLLOW on the last step only, as corral did); nobody
    has swapped the run directory for a link to a root-only directory meanwhile."""
    logs = arena.mine / "logs"
    as_nobody(f"mkdir {logs}")
    run_dir = logs / "20260101-000000-abcd"
    run_dir.mkdir()
    as_nobody(f"mv {run_dir} {run_dir}.x && ln -s {arena.precious.parent} {run_dir}")
    fd = os.open(run_dir / "precious", os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    os.write(fd, b"module output\n")
    os.close(fd)
    assert not arena.precious_intact()


def test_a_database_in_a_directory_another_user_owns_is_refused(corral, arena):
    db = arena.mine / "corral.db"
    as_nobody(f"ln -s {arena.empty} {db}")
    corral.module("a")
    refused(corral("--db", str(db), "run"), arena.mine)
    assert arena.precious_intact()


def test_control_sqlite_adopts_a_root_only_file_through_a_planted_link(arena):
    db = arena.mine / "corral.db"
    as_nobody(f"ln -s {arena.empty} {db}")
    conn = sqlite3.connect(db)  # as corral did once the name existed
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    assert not arena.precious_intact()


def test_docs_out_into_a_directory_another_user_owns_is_refused(corral, arena):
    corral.module("a", body="sleep 0.1")
    assert corral("run").code == 0
    www = arena.mine / "www"
    as_nobody(f"mkdir {www} && ln -s {arena.precious} {www}/README.md")
    refused(corral("docs", "--out", str(www)), arena.mine)
    assert arena.precious_intact()
    (www / "README.md").write_text("report\n")  # the control: a write by name follows it
    assert not arena.precious_intact()


def test_docs_out_refuses_a_planted_link_fifo_or_directory_as_a_file(corral, tmp_path):
    corral.module("a", body="sleep 0.1")
    assert corral("run").code == 0
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "history.svg")
    result = corral("docs", "--out", str(out))
    assert result.code == 2 and "Traceback" not in result.err
    assert f"{out}/history.svg: a FIFO, not a regular file" in result.err
    (out / "history.svg").unlink()
    assert corral("docs", "--out", str(out)).code == 0  # the control: nothing planted


LOCK_SCRIPT = r"""
set -u
mount -t tmpfs -o mode=1777 tmpfs /run/lock || exit 99
nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
corral() { "$PYTHON" -m corral --modules "$MODULES" --db "$DB" run "$@"; }
for plant in "mkdir /run/lock/corral" "mkfifo /run/lock/corral" "ln -s /etc /run/lock/corral"; do
  nobody $plant
  corral; echo "rc=$?"
  rm -rf /run/lock/corral
done
corral >/dev/null; echo "clean rc=$?"
stat -c 'mode=%a uid=%u' /run/lock/corral /run/lock/corral/*.lock
# An older corral left the lock readable (0755 dir, 0644 file): nobody opens and holds it.
lock=$(echo /run/lock/corral/*.lock)
chmod 755 /run/lock/corral; chmod 644 "$lock"
nobody bash -c 'exec 9<"$1"; flock 9; exec sleep 30' _ "$lock" </dev/null >/dev/null 2>&1 &
holder=$!
for _ in {1..400}; do flock -n "$lock" true || break; sleep 0.05; done  # until nobody holds it
flock -n "$lock" true; echo "control: root flock -n rc=$?"
corral >/dev/null; echo "hostage rc=$?"
kill "$holder"
"""


def test_the_run_lock_cannot_be_planted_or_held_hostage(corral):
    """In a private mount namespace with its own /run/lock, so the host's is untouched."""
    need("unshare")
    need("flock")
    marker = corral.modules.parent / "ran"
    corral.module("a", body=f"echo x >> {marker}")
    done = private_mounts(corral, LOCK_SCRIPT)
    out = done.stdout + done.stderr
    assert "Traceback" not in out
    for why in (
        f"owned by uid {NOBODY}, not root",
        f"a FIFO owned by uid {NOBODY}",
        "a symbolic link",
    ):
        assert f"refusing to write as root through /run/lock/corral: {why}" in out, out
    assert done.stdout.count("rc=2\n") == 3, out
    assert "clean rc=0" in out and "mode=700 uid=0\nmode=600 uid=0" in out, out
    assert "control: root flock -n rc=1" in out, out  # nobody really held the old file
    assert "hostage rc=0" in out, out
    assert marker.read_text() == "x\nx\n"  # the two runs that were not refused


def test_a_cgroup_another_user_was_delegated_gets_no_attempts(tmp_path):
    """A cgroup subtree delegated to a user is theirs to fill: corral (as root) does not
    put attempts there (the subreaper fallback holds them instead)."""
    from corral.cgroups import FREEZER, Hierarchy, RunCgroups

    own = tmp_path / "cg"
    own.mkdir()
    made = RunCgroups("r1", [Hierarchy(FREEZER, str(own))])  # the control: root's, used
    assert made.enabled and (own / "corral-r1").is_dir()
    (own / "corral-r1").rmdir()
    os.chown(own, NOBODY, -1)
    assert not RunCgroups("r2", [Hierarchy(FREEZER, str(own))]).enabled
    assert not (own / "corral-r2").exists()


def test_a_database_another_user_can_write_is_refused(corral, arena, marked_sleeper):
    """A root-owned database others can write (made under umask 0, or given an ACL):
    what `nobody` writes in it is what recovery acts on. Their forged 'running' run,
    named like another corral's live run, would have its processes killed."""
    home = arena.root / "db"
    home.mkdir(mode=0o755)
    home.chmod(0o755)  # as /var/lib/corral often is
    corral = type(corral)(corral.modules, home / "corral.db", corral.env)
    corral.module("a")
    assert corral("run").code == 0
    victim = marked_sleeper("20261123-000000Z-beef")  # another database's module
    files = [home / f"corral.db{suffix}" for suffix in ("", "-wal", "-shm")]
    for file in files:  # SQLite gives its -wal and -shm the database's mode
        file.touch()
        file.chmod(0o666)
    forge = arena.root / "forge.py"
    forge.write_text(
        "import os, sqlite3\n"
        "c = sqlite3.connect(os.environ['DB'])\n"
        'c.execute("INSERT INTO runs (run_id, started, status, host, pid, pid_start, boot_id)"\n'
        "          \" VALUES ('20261123-000000Z-beef', '2026-11-23T00:00:00+00:00', 'running',\"\n"
        '          " ?, 1, 1, (SELECT boot_id FROM runs LIMIT 1))", (os.uname().nodename,))\n'
        "c.commit()\n"
    )
    as_nobody(f"DB={home / 'corral.db'} /usr/bin/python3 {forge}")
    for args in (("run",), ("run", "--dry-run"), ("check",)):
        result = corral(*args)
        assert result.code == 2, (args, result.err)
        assert f"refusing to write as root through {home / 'corral.db'}: world-writable" in (
            result.err
        )
    assert victim.poll() is None
    for file in files:  # the control: the forged row, once trusted, kills
        file.chmod(0o600)
    assert corral("run").code == 0
    assert victim.wait(timeout=30) is not None


def test_docs_under_another_users_home_never_writes_through_their_font_cache(corral, arena):
    """`sudo corral docs` with the user's HOME kept: matplotlib writes its font cache
    under ~/.cache/matplotlib by name. corral gives it a directory of its own instead,
    so root writes nothing through nobody's link (nor reads their matplotlibrc)."""
    matplotlib = pytest.importorskip("matplotlib.font_manager")
    corral.module("a", body="sleep 0.1")
    assert corral("run").code == 0
    home = arena.mine
    name = f"fontlist-v{matplotlib.FontManager.__version__}.json"
    as_nobody(
        f"mkdir -p {home}/.cache/matplotlib && "
        f"ln -s {arena.precious} {home}/.cache/matplotlib/{name}"
    )
    env = {
        k: v for k, v in corral.env.items() if not k.startswith(("XDG_CACHE", "XDG_CONFIG", "MPL"))
    }
    result = corral("docs", "--out", str(arena.root / "www"), extra_env={**env, "HOME": str(home)})
    assert result.code == 0, result.err
    assert arena.precious_intact()
    assert sorted(p.name for p in home.iterdir()) == [".cache"]  # nothing of root's there
    # the control: matplotlib loaded by root with that HOME writes through the link
    subprocess.run(
        [sys.executable, "-c", "import matplotlib.font_manager"],
        env={**env, "HOME": str(home)},
        check=True,
        capture_output=True,
    )
    assert not arena.precious_intact()
