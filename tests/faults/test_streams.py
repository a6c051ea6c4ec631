"""Output faults never touch the run (issue 12.4): a reader that goes away, a full
device, closed stdout or stderr, an encoding that cannot carry the output, a working
directory deleted before or during the run. Each is real (a pipe closed by `head`,
/dev/full, a closed descriptor, PYTHONIOENCODING / the C locale, rmdir), the modules
leave markers and print more than the stream takes, and afterwards every module ran,
every record is written, the exit code is the run's and stderr has no traceback."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import db_rows

NAMES = ("a", "b", "c")
LINES = 300  # each module prints more than a pipe buffer, with characters ASCII lacks


@pytest.fixture
def chatty(corral, tmp_path):
    """Three modules printing LINES lines of `café ✔ N` each, then leaving a marker."""
    marks = tmp_path / "marks"
    marks.mkdir()
    for name in NAMES:
        corral.module(
            name,
            "colour: blue",  # an unknown key: a warning, so stderr is written to as well
            f'for i in $(seq {LINES}); do echo "café ✔ $i"; done\ntouch {marks}/{name}',
        )
    return marks


def shell(corral, redirect: str, *, cwd=None, env=None, args=("run",)) -> tuple[int, str]:
    """`corral ARGS REDIRECT` in Bash; returns corral's own exit code and stderr."""
    cmd = shlex.join(corral.argv(*args))
    script = f"{cmd} 2>>{shlex.quote(str(corral.db.parent / 'err'))} {redirect}"
    if "2>&-" in redirect:
        script = f"{cmd} {redirect}"
    done = subprocess.run(
        ["bash", "-c", f"{script}; echo ${{PIPESTATUS[0]}} > {corral.db.parent}/code"],
        env={**corral.env, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    err_file = corral.db.parent / "err"
    err = err_file.read_text() if err_file.exists() else ""
    err_file.unlink(missing_ok=True)
    assert "Traceback" not in err + done.stderr, err + done.stderr
    return int((corral.db.parent / "code").read_text()), err


def all_recorded(corral, marks) -> None:
    assert {p.name for p in marks.iterdir()} == set(NAMES)
    run = db_rows(corral.db, "SELECT * FROM runs ORDER BY started DESC LIMIT 1")[0]
    assert run["status"] == "ok" and run["exit_code"] == 0
    sql = "SELECT module, status FROM module_runs WHERE run_id = ?"
    rows = db_rows(corral.db, sql, run["run_id"])
    assert {r["module"]: r["status"] for r in rows} == dict.fromkeys(NAMES, "ok")


FAULTS = {
    "reader gone (| head -1)": ("| head -1 >/dev/null", {}),
    "stdout on a full device": (">/dev/full", {}),
    "stdout closed": (">&-", {}),
    "stderr closed": ("2>&- >/dev/null", {}),
    "both closed": (">&- 2>&-", {}),
    "PYTHONIOENCODING=ascii": (">/dev/null", {"PYTHONIOENCODING": "ascii"}),
    "C locale, no UTF-8 mode": (
        ">/dev/null",
        {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_an_output_fault_never_touches_the_run(corral, chatty, fault):
    redirect, env = FAULTS[fault]
    code, _ = shell(corral, redirect, env=env)
    assert code == 0
    all_recorded(corral, chatty)


def test_the_controls_the_streams_really_fail_or_mangle(corral, chatty, tmp_path):
    """`head -1` really leaves most of the output unread, /dev/full really refuses
    writes, and the ASCII stream really cannot carry the output as it is."""
    out = tmp_path / "out"
    code, _ = shell(corral, f"> {out}")
    assert code == 0 and out.read_text().count("café ✔") >= LINES  # far more than one line
    with pytest.raises(OSError), open("/dev/full", "w") as full:
        full.write("x")
        full.flush()
    code, _ = shell(corral, f"> {out}", env=FAULTS["PYTHONIOENCODING=ascii"][1])
    text = out.read_bytes()
    assert code == 0 and b"caf? ? 1" in text and "✔".encode() not in text


def test_a_working_directory_deleted_before_the_run(corral, chatty, tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    # Bash enters it, removes it, then starts corral there (with absolute paths).
    script = f"cd {gone} && rmdir {gone} && " + " ".join(
        shlex.quote(a) for a in corral.argv("run", "-q")
    )
    done = subprocess.run(["bash", "-c", script], env=corral.env, capture_output=True, text=True)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    all_recorded(corral, chatty)


def _in_a_deleted_directory(corral, tmp_path, *args: str) -> subprocess.CompletedProcess:
    """corral ARGS started by Bash in a directory it removed first (the paths in ARGS
    relative to it: they name nothing now)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    cmd = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "corral", *args))
    script = f"cd {gone} && rmdir {gone} && {cmd}"
    return subprocess.run(["bash", "-c", script], env=corral.env, capture_output=True, text=True)


@pytest.mark.parametrize(
    "given",
    [
        ("--db", "rel.db", "--modules", "ABS"),
        ("--db", "ABSDB", "--modules", "modules"),
        ("--db", "ABSDB", "--modules", "ABS", "--config", "corral.yaml"),
    ],
    ids=["db", "modules", "config"],
)
def test_a_relative_path_with_the_working_directory_deleted_is_a_usage_error(
    corral, tmp_path, given
):
    marker = tmp_path / "ran"
    corral.module("a", body=f"touch {marker}")
    subs = {"ABS": str(corral.modules), "ABSDB": str(corral.db)}
    args = [subs.get(a, a) for a in given]
    done = _in_a_deleted_directory(corral, tmp_path, *args, "run")
    assert done.returncode == 2, done.stderr
    relative = next(a for a in given if a in ("rel.db", "modules", "corral.yaml"))
    assert f"{relative}: a relative path (given by " in done.stderr
    assert "the current directory no longer exists" in done.stderr
    assert "Traceback" not in done.stderr and not marker.exists()
    # The control: the same paths, absolute, run there.
    done = _in_a_deleted_directory(
        corral, tmp_path, "--db", str(corral.db), "--modules", str(corral.modules), "run"
    )
    assert done.returncode == 0 and marker.exists(), done.stderr


def test_docs_out_relative_with_the_working_directory_deleted_is_a_usage_error(corral, tmp_path):
    corral.module("a")
    assert corral("run").code == 0
    done = _in_a_deleted_directory(
        corral,
        tmp_path,
        "--db",
        str(corral.db),
        "--modules",
        str(corral.modules),
        "docs",
        "--out",
        "report",
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "report: a relative path (given by --out)" in done.stderr, done.stderr


def test_relative_paths_given_before_the_working_directory_goes_still_work(corral, tmp_path):
    """--modules and --db relative to a directory a module removes: the run goes on, and
    every record and log lands where the paths named when corral started."""
    here = tmp_path / "here"
    here.mkdir()
    corral.module("remover", body=f"rmdir {here}")
    corral.module("after", "requires: remover", "echo still here")
    args = ["--modules", "../modules", "--db", "../rel.db", "run", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "corral", *args],
        env=corral.env,
        cwd=here,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert not here.exists()
    rows = db_rows(tmp_path / "rel.db", "SELECT module, status, log_path FROM module_runs")
    assert {r["module"]: r["status"] for r in rows} == {"remover": "ok", "after": "ok"}
    log = next(r["log_path"] for r in rows if r["module"] == "after")
    assert log.startswith(str(tmp_path)) and "still here" in Path(log).read_text()
    runs = db_rows(tmp_path / "rel.db", "SELECT modules_dir, module_set FROM runs")
    assert os.path.normpath(runs[0]["modules_dir"]) == str(corral.modules)


def test_a_working_directory_deleted_during_the_run(corral, chatty, tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    corral.module("remover", body=f"rmdir {here}")
    done = subprocess.run(
        [sys.executable, "-m", "corral", "--modules", str(corral.modules), "--db", str(corral.db)]
        + ["run", "-q"],
        env=corral.env,
        cwd=here,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert not here.exists() and {p.name for p in chatty.iterdir()} == set(NAMES)
    rows = db_rows(corral.db, "SELECT module, status FROM module_runs")
    assert {r["module"] for r in rows} == {*NAMES, "remover"}


def test_a_failing_run_keeps_its_exit_code_when_the_reader_goes_away(corral, chatty):
    corral.module("bad", body="echo broken; exit 3")
    code, _ = shell(corral, "| head -1 >/dev/null")
    assert code == 1
    run = db_rows(corral.db, "SELECT * FROM runs")[0]
    assert run["status"] == "failed" and run["exit_code"] == 1
    assert os.path.exists(chatty / "a")
