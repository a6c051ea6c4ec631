"""The database is never a reason not to run (issue 12.1) and nothing at its path that
is not corral's is touched (12.2). Each fault is real: a read-only bind mount, chattr
+i, a full tmpfs, a sqlite3 process holding BEGIN EXCLUSIVE, zeroed pages, a garbage
WAL. Afterwards every module has run (its marker file exists) and is either recorded
or named in the message saying what was not recorded."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess

import pytest

from ..conftest import damage, db_rows
from .conftest import Running, fill, marking

NAMES = ("a", "b", "c")


@pytest.fixture
def marked(corral, tmp_path):
    """Three modules that each leave a marker file; returns the markers' directory."""
    return marking(corral, tmp_path, NAMES)


def ran(marks) -> set[str]:
    return {p.name for p in marks.iterdir()}


def rows(db, run_id: str) -> dict[str, str]:
    return {
        r["module"]: r["status"]
        for r in db_rows(db, "SELECT module, status FROM module_runs WHERE run_id = ?", run_id)
    }


def accounted(corral, result) -> dict[str, str]:
    """Every module ran, no traceback, and each is recorded or said to be not recorded.
    Returns the recorded statuses."""
    assert "Traceback" not in result.err, result.err
    run = result.json()
    assert {m["name"]: m["status"] for m in run["modules"]} == dict.fromkeys(NAMES, "ok")
    try:
        stored = rows(corral.db, run["run_id"])
    except sqlite3.Error:
        stored = {}
    lost = [line for line in result.err.splitlines() if "not recorded" in line]
    for name in NAMES:
        assert stored.get(name) == "ok" or (lost and name in lost[0]), (name, result.err)
    return stored


def sqlite_write_fails(db) -> str:
    """The control: the sqlite3 shell cannot write either; returns its complaint."""
    done = subprocess.run(
        [need_sqlite3(), "-cmd", ".timeout 100", str(db), "CREATE TABLE probe (x)"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0, "the fault is not real: sqlite3 could write"
    return done.stderr


def need_sqlite3() -> str:
    from ..test_lint import need

    return need("sqlite3")


@pytest.mark.parametrize("fault", ["read-only mount", "immutable file"])
def test_a_database_that_cannot_be_written_does_not_stop_the_run(
    corral, marked, mounts, immutable, fault
):
    corral.db = corral.db.parent / "state" / "corral.db"
    assert corral("run").code == 0  # the database exists, with one run
    for marker in marked.iterdir():
        marker.unlink()
    if fault == "read-only mount":
        mounts.read_only(corral.db.parent)
    else:
        db_rows(corral.db, "PRAGMA wal_checkpoint(TRUNCATE)")
        immutable(corral.db)
    sqlite_write_fails(corral.db)
    result = corral("run", "--json")
    assert ran(marked) == set(NAMES)
    assert result.code == 1 and result.json()["status"] == "ok"
    assert accounted(corral, result) == {}
    assert result.err.count("not recorded") == 1
    assert len(db_rows(corral.db, "SELECT * FROM runs")) == 1


def test_a_full_disk_loses_nothing_once_space_comes_back_within_the_run(
    corral, marked, mounts, tmp_path
):
    small = tmp_path / "small"
    mounts.tmpfs(small, "1m")
    corral.db = small / "corral.db"
    assert corral("run").code == 0
    fill(small)
    sqlite_write_fails(corral.db)
    # New modules: their headers miss the cache, so the cache write meets the full disk.
    corral.module("free", body=f"sleep 1; rm {small}/filler")
    corral.module("late", "requires: free", "sleep 1.5")
    result = corral("run", "--json", "free", "late", *NAMES)
    assert "Traceback" not in result.err and result.code == 0, result.err
    assert ran(marked) == set(NAMES)
    assert "recording again" in result.err
    assert rows(corral.db, result.json()["run_id"]) == dict.fromkeys([*NAMES, "free", "late"], "ok")


def test_a_disk_that_stays_full_says_what_was_not_recorded(corral, marked, mounts, tmp_path):
    small = tmp_path / "small"
    mounts.tmpfs(small, "1m")
    fill(small)
    corral.db = small / "corral.db"  # does not exist yet: it cannot even be created
    result = corral("run", "--json")
    assert ran(marked) == set(NAMES)
    assert result.code == 1
    accounted(corral, result)
    assert result.err.count("not recorded") == 1


def test_a_write_lock_held_by_another_process_delays_records_not_modules(corral, marked):
    assert corral("run").code == 0
    for marker in marked.iterdir():
        marker.unlink()
    holder = subprocess.Popen(
        [need_sqlite3(), str(corral.db)], stdin=subprocess.PIPE, text=True, stdout=subprocess.PIPE
    )
    holder.stdin.write("BEGIN EXCLUSIVE;\nSELECT 'held';\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "held"
    try:
        sqlite_write_fails(corral.db)  # the control: the lock is real
        run = Running(corral, "--json")
        for name in NAMES:  # every module ran while the lock was still held
            run.wait_for(marked / name)
        assert holder.poll() is None
    finally:
        holder.stdin.write("COMMIT;\n")
        holder.stdin.close()
        holder.wait(10)
    code, out, err = run.finish()
    assert code == 0 and "Traceback" not in err, err
    assert rows(corral.db, json.loads(out)["run_id"]) == dict.fromkeys(NAMES, "ok")


class Holder:
    """A real sqlite3 shell holding BEGIN EXCLUSIVE on the database until `release`."""

    def __init__(self, db):
        self.proc = subprocess.Popen(
            [need_sqlite3(), str(db)], stdin=subprocess.PIPE, text=True, stdout=subprocess.PIPE
        )
        self.proc.stdin.write("BEGIN EXCLUSIVE;\nSELECT 'held';\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "held"
        sqlite_write_fails(db)  # the control: the lock is real

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("COMMIT;\n")
            self.proc.stdin.close()
        self.proc.wait(10)


def test_the_deadline_bounds_the_last_write_to_a_held_database(corral, marked):
    """--deadline bounds everything, the records' last wait for a held database too:
    the run ends once the deadline has passed (it waits at least a second), says at
    once, under -q, that it waits, and names what was not recorded; never the 30 s a
    record may wait for another writer."""
    assert corral("run").code == 0
    for marker in marked.iterdir():
        marker.unlink()
    holder = Holder(corral.db)
    try:
        # The hang bound (20 s) is below the 30 s a record waits without a deadline.
        result = corral("run", "-q", "--deadline", "2s", timeout=20)
        assert holder.proc.poll() is None  # it held the lock all along
    finally:
        holder.release()
    assert ran(marked) == set(NAMES)
    assert result.code == 1 and "Traceback" not in result.err, result.err
    said = result.err.splitlines()
    assert [line for line in said if "waiting up to" in line], result.err
    assert [line for line in said if "not recorded (database is locked" in line], result.err
    assert "the records of 3 modules (a, b, c)" in result.err
    assert len(db_rows(corral.db, "SELECT * FROM runs")) == 1  # the first run only


def test_without_a_deadline_the_last_write_waits_for_the_database(corral, marked):
    """The control: the same run without a deadline is still waiting 3 s after its
    modules ran (it says so), and records everything once the lock is let go."""
    assert corral("run").code == 0
    holder = Holder(corral.db)
    try:
        run = Running(corral, "-q", "--json")
        run.wait_said("waiting up to")
        with pytest.raises(subprocess.TimeoutExpired):
            run.proc.wait(3)
    finally:
        holder.release()
    code, out, err = run.finish()
    assert code == 0 and "not recorded" not in err, err
    assert rows(corral.db, json.loads(out)["run_id"]) == dict.fromkeys(NAMES, "ok")


def test_a_damaged_database_of_ours_is_moved_aside_and_the_run_recorded(corral, marked):
    assert corral("run").code == 0
    damage(corral.db)
    with pytest.raises(sqlite3.DatabaseError):  # the control: the damage is real
        db_rows(corral.db, "SELECT * FROM module_runs")
    result = corral("run", "--json")
    assert result.code == 0 and "moved it to" in result.err, result.err
    assert accounted(corral, result) == dict.fromkeys(NAMES, "ok")
    aside = [
        p
        for p in corral.db.parent.glob("corral.db.corrupt-*")
        if not p.name.endswith(("-wal", "-shm"))
    ]
    assert len(aside) == 1, aside


# What was written so far is folded into the file (as another reader's last close does),
# then every page but the first is zeroed in place.
ZERO_PAGES = (
    "sqlite3 {db} 'PRAGMA wal_checkpoint(TRUNCATE)' >/dev/null; "
    "dd if=/dev/zero of={db} bs=4096 seek=1 count=400 conv=notrunc 2>/dev/null"
)


@pytest.mark.parametrize("last", [False, True], ids=["mid-run", "at the last write"])
def test_a_database_damaged_during_the_run_is_moved_aside_and_the_run_recorded(
    corral, marked, last
):
    """Pages zeroed in place while the run writes (its rows in the write-ahead log, the
    history they stand on in the file): the run moves the file aside, records itself
    in a new one, whole (what went to the old file too), and says so."""
    for n in range(40):
        corral.module(f"old{n}")
    assert corral("run").code == 0  # a history on many pages
    db_rows(corral.db, "PRAGMA wal_checkpoint(TRUNCATE)")
    for marker in marked.iterdir():
        marker.unlink()
    # Last: found by the run's last write, which must then write the whole run again.
    names = [*NAMES, "damager"] if last else [*NAMES, "damager", "late"]
    corral.module("damager", "requires: a b c", ZERO_PAGES.format(db=corral.db))
    corral.module("late", "requires: damager", "sleep 0.3")
    result = corral("run", "--json", *names)
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert "moved it to" in result.err and result.err.count("database is damaged") == 1
    assert ran(marked) == set(NAMES)
    recorded = rows(corral.db, result.json()["run_id"])
    assert recorded == dict.fromkeys(names, "ok")
    (aside,) = [
        p
        for p in corral.db.parent.glob("corral.db.corrupt-*")
        if p.suffix == "" or not p.name.endswith(("-wal", "-shm"))
    ]
    with pytest.raises(sqlite3.DatabaseError):  # the control: the damage was real
        db_rows(aside, "SELECT count(*) FROM module_runs WHERE module LIKE 'old%'")


def test_a_database_replaced_by_a_file_not_ours_during_the_run_is_left_alone(corral, marked):
    """A file that is not SQLite put at the path during the run is neither written nor
    moved; the run names what it could not record, and what to do."""
    assert corral("run").code == 0
    mine = "my notes\n" * 100
    corral.module("swap", "requires: a", f"rm -f {corral.db}*; printf '{mine}' > {corral.db}")
    corral.module("late", "requires: swap", "sleep 0.3")
    result = corral("run", "--json", *NAMES, "swap", "late")
    assert result.code == 1 and "Traceback" not in result.err, result.err
    assert ran(marked) == set(NAMES)
    (lost,) = [line for line in result.err.splitlines() if "not recorded" in line]
    assert "not a database of corral's" in lost and "moves it aside" not in lost
    assert "the records of 5 modules" in lost  # `a` too: it went to the removed file
    assert corral.db.read_text() == mine
    assert not list(corral.db.parent.glob("corral.db.corrupt-*"))


def test_a_garbage_wal_is_ignored_and_the_run_recorded(corral, marked):
    assert corral("run").code == 0
    db_rows(corral.db, "PRAGMA wal_checkpoint(TRUNCATE)")
    wal = corral.db.with_name("corral.db-wal")
    wal.write_bytes(bytes(range(256)) * 400)
    result = corral("run", "--json")
    assert result.code == 0, result.err
    assert accounted(corral, result) == dict.fromkeys(NAMES, "ok")
    assert len(db_rows(corral.db, "SELECT * FROM runs")) == 2


def test_a_database_path_under_a_file_runs_unrecorded(corral, marked, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    corral.db = blocker / "corral.db"
    result = corral("run", "--json")
    assert ran(marked) == set(NAMES) and result.code == 1
    accounted(corral, result)
    assert result.err.count("cannot use the database") == 1 and "not a directory" in result.err


def test_a_database_removed_during_the_run_gets_the_whole_run_again(corral, marked):
    assert corral("run").code == 0
    corral.module("remover", body=f"rm -f {corral.db} {corral.db}-wal {corral.db}-shm")
    corral.module("late", "requires: remover", "sleep 0.5")
    result = corral("run", "--json")
    assert result.code == 0 and "removed or replaced" in result.err, result.err
    recorded = rows(corral.db, result.json()["run_id"])
    assert recorded == dict.fromkeys([*NAMES, "remover", "late"], "ok")
    # the control: the first run's row went with the old file (an inode number may be
    # reused, so that is what shows the file is new)
    assert db_rows(corral.db, "SELECT status FROM runs") == [{"status": "ok"}]


def test_another_program_s_sqlite_database_is_refused_and_left_alone(corral, marked):
    conn = sqlite3.connect(corral.db)
    conn.execute("CREATE TABLE invoices (n)")
    conn.commit()
    conn.close()
    before = corral.db.read_bytes()
    result = corral("run")
    assert result.code == 2 and "another program's SQLite database" in result.err
    assert not ran(marked) and corral.db.read_bytes() == before


@pytest.mark.parametrize("thing", ["directory", "text file"])
def test_what_is_not_a_corral_database_is_refused_and_left_alone(corral, marked, thing):
    if thing == "directory":
        corral.db.mkdir()
        (corral.db / "keep").write_text("mine")
    else:
        corral.db.write_text("my notes\n" * 100)
    before = sorted(p.name for p in corral.db.parent.iterdir())
    for command in (["run"], ["history"], ["plan"], ["docs", "--out", str(corral.db.parent)]):
        result = corral(*command)
        assert result.code == 2 and str(corral.db) in result.err, (command, result.err)
        assert "Traceback" not in result.err
    assert not ran(marked)
    assert sorted(p.name for p in corral.db.parent.iterdir()) == before
    if thing == "directory":
        assert (corral.db / "keep").read_text() == "mine"
    else:
        assert corral.db.read_text() == "my notes\n" * 100


def test_every_command_on_a_damaged_database_gives_one_message(corral, marked):
    assert corral("run").code == 0
    damage(corral.db)
    out = corral.db.parent / "report"
    expect = {
        ("history",): 1,
        ("history", "a"): 1,
        ("docs", "--out", str(out)): 1,
        ("cache", "stats"): 1,
        ("cache", "clear"): 1,
        ("plan",): 0,
        ("check",): 0,
    }
    for command, code in expect.items():
        result = corral(*command)
        assert result.code == code and "Traceback" not in result.err, (command, result.err)
        assert len(result.err.strip().splitlines()) <= 2, (command, result.err)  # check: +1
        assert "malformed" in result.err, (command, result.err)
    assert not list(corral.db.parent.glob("corral.db.corrupt-*"))  # reading moves nothing
    # The control: the same commands on a sound database give no such message.
    shutil.move(corral.db, corral.db.with_name("damaged.db"))
    assert corral("run").code == 0
    for command in [("history",), ("cache", "stats"), ("plan",)]:
        result = corral(*command)
        assert "malformed" not in result.err and result.code == 0, (command, result.err)


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_a_directory_beside_the_database_is_named_in_what_sqlite_says(tmp_path, suffix):
    """SQLite's own words for a write-ahead log or index that is a directory ('disk I/O
    error') do not say which file; corral's do (as root the run refuses it before, see
    test_writes; this is what another user's run says)."""
    from corral.dbfile import _why

    db = tmp_path / "corral.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    db.with_name(f"corral.db{suffix}").unlink(missing_ok=True)
    db.with_name(f"corral.db{suffix}").mkdir()
    with pytest.raises(sqlite3.Error) as caught:  # the control: the fault is real
        conn = sqlite3.connect(db)
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
    why = _why(caught.value, db)
    assert f"{db}{suffix} is not a regular file: move it away" in why, why
    assert "is not a regular file" not in _why(caught.value, tmp_path / "other.db")


GARBAGE_WAL = "head -c 40000 /dev/urandom | dd of={wal} bs=4096 conv=notrunc 2>/dev/null"


def test_a_log_overwritten_between_runs_loses_no_earlier_run(corral, marked, tmp_path):
    """A run ends with os._exit (no connection closed, so SQLite folds nothing back):
    corral folds the write-ahead log into the file itself at the end of each run, so a
    log overwritten (or removed, or left behind by a copy) afterwards loses nothing."""
    # The control: a WAL database whose writer leaves as corral does loses its rows
    # when the log is overwritten.
    probe = tmp_path / "probe.db"
    script = (
        "import os, sqlite3; c = sqlite3.connect(os.environ['DB'], isolation_level=None); "
        "c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE t (x)'); "
        "c.execute('INSERT INTO t VALUES (1)'); os._exit(0)"
    )
    subprocess.run(["python3", "-c", script], env={"DB": str(probe)}, check=True)
    subprocess.run(["bash", "-c", GARBAGE_WAL.format(wal=f"{probe}-wal")], check=True)
    with pytest.raises(sqlite3.OperationalError):  # no such table: it was all in the log
        db_rows(probe, "SELECT * FROM t")
    assert corral("run").code == 0
    wal = corral.db.with_name("corral.db-wal")
    assert wal.exists()  # corral left as it does: the log is still there
    subprocess.run(["bash", "-c", GARBAGE_WAL.format(wal=wal)], check=True)
    result = corral("run", "--json")
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert [r["status"] for r in db_rows(corral.db, "SELECT status FROM runs")] == ["ok", "ok"]


def test_a_log_overwritten_during_the_run_is_said_and_not_folded_in(corral, marked):
    """Overwritten while the run writes: its records are lost (the log's header no
    longer vouches for them), which is said, and the log is not copied into the file
    (its pages would damage it): the next run runs and records, the earlier runs stay."""
    assert corral("run").code == 0
    wal = corral.db.with_name("corral.db-wal")
    corral.module("spoiler", "requires: a", GARBAGE_WAL.format(wal=wal))
    corral.module("late", "requires: spoiler", "sleep 0.3")
    result = corral("run", "-q")
    assert result.code == 1 and "Traceback" not in result.err, result.err
    assert ran(marked) == set(NAMES)
    (said,) = [line for line in result.err.splitlines() if "overwritten during the run" in line]
    assert f"{wal}:" in said
    (corral.modules / "spoiler.sh").unlink()
    (corral.modules / "late.sh").unlink()
    result = corral("run", "--json")
    assert result.code == 0, result.err
    assert db_rows(corral.db, "PRAGMA integrity_check") == [{"integrity_check": "ok"}]
    assert [r["status"] for r in db_rows(corral.db, "SELECT status FROM runs")] == ["ok", "ok"]
