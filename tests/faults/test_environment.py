"""The environment is never a reason not to run (issue 12): a time zone no datetime
can write, and anything else that makes the display fail, leave the run as it is.
Real runs with real TZ values; afterwards every module ran, every record is written,
the exit code is the run's and stderr has no traceback."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from corral.api import _display
from corral.errors import exhausted

from ..conftest import db_rows
from .conftest import marking

NAMES = ("a", "b", "c")


@pytest.fixture
def marked(corral, tmp_path):
    """Three modules that print a line and leave a marker file; the markers' directory."""
    return marking(corral, tmp_path, NAMES, "hello from")


def run_capped(corral, limit: int) -> subprocess.CompletedProcess:
    """`corral run -q` under `ulimit -f` of `limit` bytes."""
    import resource

    def capped():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        corral.argv("run", "-q"),
        env=corral.env,
        preexec_fn=capped,
        capture_output=True,
        text=True,
        timeout=120,
    )


def newest(db) -> str:
    return db_rows(db, "SELECT run_id FROM runs ORDER BY started DESC LIMIT 1")[0]["run_id"]


# POSIX TZ strings glibc takes whose offset is a day or more: datetime refuses it.
ODD_ZONES = ["EST+99999999", "UTC-24:59", "<+99>-30"]


@pytest.mark.parametrize("zone", ODD_ZONES)
def test_a_time_zone_datetime_cannot_write_does_not_stop_the_run(corral, marked, zone):
    # The control: the zone is real, and datetime refuses it.
    probe = "import datetime as d; d.datetime.now().astimezone()"
    done = subprocess.run(
        [sys.executable, "-c", probe], env={**os.environ, "TZ": zone}, capture_output=True
    )
    assert done.returncode != 0 and b"ValueError" in done.stderr
    result = corral("run", extra_env={"TZ": zone})  # plain: every line is stamped
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert {p.name for p in marked.iterdir()} == set(NAMES)
    assert "corral: ok: 3 modules" in result.out
    rows = db_rows(corral.db, "SELECT module, status FROM module_runs")
    assert {r["module"]: r["status"] for r in rows} == dict.fromkeys(NAMES, "ok")


def test_a_display_that_fails_is_dropped_and_said_once(capsys):
    """What shows a run never stops it: a listener that raises is said once and left
    out; the control: running out of memory still stops the run."""
    seen = []

    def broken(event):
        seen.append(event)
        raise ValueError("cannot render")

    shown = _display(broken)
    for event in range(3):
        shown(event)
    assert seen == [0]
    err = capsys.readouterr().err
    assert err.count("the run's display failed (ValueError: cannot render)") == 1

    def starved(event):
        raise MemoryError

    assert exhausted(MemoryError())
    with pytest.raises(MemoryError):
        _display(starved)(0)


def test_every_line_of_a_run_is_stamped_in_local_time_or_utc():
    from corral.units import local_stamp

    stamp = dt.datetime.fromisoformat(local_stamp())
    assert stamp.utcoffset() is not None


def test_a_file_size_limit_loses_output_not_the_run(corral, marked, tmp_path):
    """Under `ulimit -f` (RLIMIT_FSIZE) a write past the limit fails (corral ignores the
    SIGXFSZ that would kill it): a module printing more than that runs to the end, the
    log is flagged, the warning names the limit, and the run's exit code says it."""
    import resource

    assert corral("run").code == 0  # the database exists (its schema is past the limit)
    db_rows(corral.db, "PRAGMA wal_checkpoint(TRUNCATE)")  # and its log is far below it
    for mark in marked.iterdir():
        mark.unlink()
    corral.module("big", body=f"head -c 300000 /dev/zero | tr '\\0' x; touch {marked}/big")
    limit = 256 * 1024

    def capped():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    # The control: the limit is real (a plain shell writing past it is killed).
    done = subprocess.run(
        ["bash", "-c", f"head -c 300000 /dev/zero > {tmp_path}/probe"], preexec_fn=capped
    )
    assert done.returncode != 0
    result = run_capped(corral, limit)
    assert "Traceback" not in result.stderr and result.returncode == 1, result.stderr
    assert {p.name for p in marked.iterdir()} == {*NAMES, "big"}
    assert f"the file size limit is {limit} bytes (ulimit -f)" in result.stderr
    sql = "SELECT module, status, log_incomplete FROM module_runs WHERE run_id = ?"
    rows = db_rows(corral.db, sql, newest(corral.db))
    assert {r["module"]: r["status"] for r in rows} == dict.fromkeys([*NAMES, "big"], "ok")
    assert {r["module"] for r in rows if r["log_incomplete"]} == {"big"}


def test_a_database_past_the_file_size_limit_names_what_was_not_recorded(corral, marked):
    """The database's write-ahead log cannot grow under `ulimit -f` at its size: every
    module runs, and the one warning names what was not recorded and the limit."""
    assert corral("run").code == 0
    for mark in marked.iterdir():
        mark.unlink()
    wal = corral.db.with_name("corral.db-wal")
    limit = max(corral.db.stat().st_size, wal.stat().st_size)
    result = run_capped(corral, limit)
    assert "Traceback" not in result.stderr and result.returncode == 1, result.stderr
    assert {p.name for p in marked.iterdir()} == set(NAMES)
    (lost,) = [line for line in result.stderr.splitlines() if "not recorded" in line]
    assert f"the file size limit is {limit} bytes (ulimit -f)" in lost
    assert "the records of 3 modules (a, b, c)" in lost
    assert len(db_rows(corral.db, "SELECT * FROM runs")) == 1  # the control: the first run


@pytest.mark.parametrize(("term", "escapes"), [("dumb", False), ("xterm", True)])
def test_a_dumb_terminal_gets_no_escape_sequences(corral, marked, term, escapes):
    """TERM=dumb (an editor's shell, a session's log) can neither colour nor redraw: a
    real pseudo-terminal gets plain lines; the control, TERM=xterm, gets colour."""
    import pexpect

    argv = corral.argv("run")
    env = {**corral.env, "TERM": term}
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "corral: ok: 3 modules" in child.before
    assert ("\x1b" in child.before) == escapes
