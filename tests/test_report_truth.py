"""The report tells the truth about a run: real runs, read back as a person reads them
(the verdict, the chart's bars, the tables) and through report.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .conftest import db_rows, write_module

OPEN_GATE = ("--max-load", "1000")  # the test's own modules must not be held by a busy host


def docs(corral, out: Path, *args: str) -> tuple[str, dict]:
    result = corral("docs", "--out", str(out), *args)
    assert result.code == 0, result.err
    return (out / "README.md").read_text(), json.loads((out / "report.json").read_text())


def svg_ids(path: Path) -> list[str]:
    return [e.get("id") for e in ET.parse(path).iter() if e.get("id")]


def load(corral):
    """The newest run of the fixture's modules, as the report analyses it."""
    from corral import analysis, report
    from corral.store import Store, module_set_key

    store = Store.open(corral.db)
    try:
        runs = report.load_runs(store, module_set_key([corral.modules]))
        return runs[0], [analysis.load_run(store, r.row) for r in runs]
    finally:
        store.close()


def test_a_throttled_runs_verdict_names_the_throttle(corral, tmp_path):
    corral.module("long", body="sleep 1.2")
    corral.module("short", body="sleep 0.1")
    # Control: with the gate open both run at once and the makespan is the long module.
    assert corral("run", "-q", "-j", "2", *OPEN_GATE).code == 0
    text, data = docs(corral, tmp_path / "open")
    assert data["runs"][0]["verdict"].startswith("critical path")
    # Held: a load target no second module fits under refuses `short` while `long` runs
    # (the gate always lets one start when nothing runs), so it starts when `long` ends.
    assert corral("run", "-q", "-j", "2", "--max-load", "0.01").code == 0
    text, data = docs(corral, tmp_path / "held")
    verdict = data["runs"][0]["verdict"]
    assert verdict.startswith("throttle") and "more jobs would not help" not in verdict
    assert "**Bottleneck:** throttle" in text
    account = data["runs"][0]["critical_path_account_s"]
    assert account["throttle"] >= 1.0 and data["runs"][0]["critical_path"] == ["short"]
    assert abs(sum(account.values()) - data["runs"][0]["makespan_s"]) < 0.01


def test_a_retried_modules_backoff_is_waiting_not_running(corral, tmp_path):
    (corral.modules.parent / "corral.yaml").write_text("retry_backoff: 0.8s\n")
    corral.module("flaky", "retries: 1", "[[ $CORRAL_ATTEMPT -ge 2 ]]")
    corral.module("one", body="sleep 0.6")
    corral.module("two", body="sleep 0.6")
    assert corral("run", "-q", "-j", "2", *OPEN_GATE).code == 0
    text, data = docs(corral, tmp_path / "out")
    flaky = next(m for m in data["timeline"] if m["name"] == "flaky")
    kinds = [s[0] for s in flaky["segments"] if s[0] != "waiting"]
    assert kinds == ["running", "backoff", "running"]
    backoff = next(s for s in flaky["segments"] if s[0] == "backoff")
    assert 0.7 <= backoff[2] - backoff[1] <= 0.85
    attempts = db_rows(corral.db, "SELECT duration_s FROM module_runs WHERE module = 'flaky'")
    running = sum(s[2] - s[1] for s in flaky["segments"] if s[0] == "running")
    assert abs(running - sum(a["duration_s"] for a in attempts)) < 1e-6
    assert "backoff:flaky" in svg_ids(tmp_path / "out" / "gantt.svg")
    # The load chart counts attempts, so it never shows three running at -j 2 ...
    from corral.analysis import running_over_time

    run, _ = load(corral)
    assert max(running_over_time(run)[1]) <= 2
    # ... where folding each module's attempts into one bar (the control) would.
    spans = [(m.start, m.end) for m in run.modules.values()]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 3


def test_chart_and_table_name_the_same_critical_path(corral, tmp_path):
    corral.module("base", body="sleep 0.2")
    corral.module("middle", "requires: base", "sleep 0.3")
    corral.module("top", "requires: middle", "sleep 0.1")
    corral.module("side", "requires: base", "sleep 0.05")
    corral.module("alone", body="sleep 0.1")
    assert corral("run", "-q", "-j", "4", *OPEN_GATE).code == 0
    text, data = docs(corral, tmp_path / "out")
    section = text.split("## Critical path of the last run")[1].split("\n## ")[0]
    table = re.findall(r"^\| \d+ \| (\w+) \|", section, re.M)
    chart = [
        i.split(":", 1)[1]
        for i in svg_ids(tmp_path / "out" / "gantt.svg")
        if i.startswith("critical:")
    ]
    assert table == ["base", "middle", "top"]
    assert chart == table == data["runs"][0]["critical_path"]
    assert "The Gantt chart outlines the same chain" in section


def test_two_module_sets_in_one_database_give_two_reports(corral, tmp_path):
    big = corral.modules
    for name in ("a", "b", "c"):
        corral.module(name, body="sleep 0.1")
    small = tmp_path / "other"
    write_module(small, "solo", body="true")
    assert corral("run", "-q").code == 0
    corral.modules = small
    assert corral("run", "-q").code == 0

    text, data = docs(corral, tmp_path / "small")
    assert [m["name"] for m in data["modules"]] == ["solo"] and len(data["runs"]) == 1
    assert data["module_set"] == str(small.resolve())
    shares = re.findall(r"\| (\d+)% \|$", text.split("## Slowest modules")[1], re.M)
    assert shares and all(int(s) <= 100 for s in shares)
    history = corral("history").out
    assert "solo" not in history and history.count("Z-") == 1
    assert len(corral("history", "--all").out.strip().splitlines()) == 3
    other = corral("history", "a")
    assert other.code != 0 and "no records of module 'a'" in other.err

    corral.modules = big
    text, data = docs(corral, tmp_path / "big")
    assert [m["name"] for m in data["modules"]] == ["a", "b", "c"]
    result = corral("docs", "--all", "--out", str(tmp_path / "all"))
    assert result.code == 0, result.err
    reports = sorted(p.parent.name for p in (tmp_path / "all").glob("*/README.md"))
    assert len(reports) == 2 and reports[0].startswith("modules-")
    # The priorities a run learns from are that set's only.
    from corral.store import Store, module_set_key

    store = Store.open(corral.db)
    assert set(store.history(module_set=module_set_key([small])).durations) == {"solo"}
    assert set(store.history().durations) == {"a", "b", "c", "solo"}  # the control
    store.close()


def test_failure_skip_and_retry_rates_make_flaky_and_never_run_modules_stand_out(corral, tmp_path):
    (corral.modules.parent / "corral.yaml").write_text("retry_backoff: 0.05s\n")
    corral.module("broken", body="exit 1")
    corral.module("never", "requires: broken")
    corral.module("flaky", "retries: 1", "[[ $CORRAL_ATTEMPT -ge 2 ]]")
    corral.module("fine")
    for _ in range(2):
        assert corral("run", "-q", *OPEN_GATE).code == 1
    text, data = docs(corral, tmp_path / "out")
    rates = {m["name"]: m for m in data["modules"]}
    assert rates["broken"]["failure_rate"] == 1 and rates["broken"]["retry_rate"] == 1
    assert rates["never"]["skip_rate"] == 1 and rates["never"]["failure_rate"] == 0
    assert rates["flaky"]["retry_rate"] == 1 and rates["flaky"]["failure_rate"] == 0
    assert rates["fine"]["failure_rate"] == rates["fine"]["skip_rate"] == 0
    assert rates["fine"]["retry_rate"] == 0
    section = text.split("## Modules that failed, warned, were skipped or needed a retry")[1]
    section = section.split("\n## ")[0]
    listed = re.findall(r"^\| (\w+) \| 2 \|", section, re.M)
    assert sorted(listed) == ["broken", "flaky", "never"]
    assert "| never | 2 | 0% | 0% | 100% | - | skipped |" in section


JUMP = """
import os, sys, time
real, marker = time.time, sys.argv.pop(1)
time.time = lambda: real() + (3600.0 if os.path.exists(marker) else 0.0)
sys.argv[0] = "corral"
from corral.cli import main
main()
"""


def test_makespan_comes_from_the_monotonic_clock_across_a_wall_clock_jump(corral, tmp_path):
    """corral's wall clock jumps an hour forward while `first` runs (time.time is
    replaced in the real corral process: what an NTP step does to it)."""
    marker = tmp_path / "jumped"
    corral.module("first", body=f"touch {marker}; sleep 0.2")
    corral.module("second", "requires: first", "sleep 0.2")
    cmd = [sys.executable, "-c", JUMP, str(marker), "--modules", str(corral.modules)]
    cmd += ["--db", str(corral.db), "run", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=corral.env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    rows = {r["module"]: r for r in db_rows(corral.db, "SELECT * FROM module_runs")}
    from datetime import datetime

    # The control: the stored wall timestamps did jump by an hour ...
    stepped = datetime.fromisoformat(rows["second"]["start"]) - datetime.fromisoformat(
        rows["first"]["start"]
    )
    assert stepped.total_seconds() > 3000
    # ... and yet the makespan, recorded and reported, is the 0.4 s the modules took.
    assert 0.35 < run["makespan_s"] < 5
    text, data = docs(corral, tmp_path / "out")
    assert 0.35 < data["runs"][0]["makespan_s"] < 5 and data["runs"][0]["clock"] == "monotonic"


def test_run_ids_log_directories_and_stored_times_say_they_are_utc(corral):
    corral.module("a")
    run = corral("run", "--json").json()
    assert re.fullmatch(r"\d{8}-\d{6}Z-[0-9a-f]{4}", run["run_id"])
    assert Path(run["log_dir"]).name == run["run_id"]
    assert run["started"].endswith("+00:00") and run["modules"][0]["start"].endswith("+00:00")
    row = db_rows(corral.db, "SELECT started, ended FROM runs")[0]
    assert row["started"].endswith("+00:00") and row["ended"].endswith("+00:00")
    # What `status` says about the finished run is UTC too, and says so.
    status = corral("status").out
    assert re.search(r"ended \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", status), status
    # A run's progress lines away from a terminal carry their offset.
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ", corral("run").out)


def test_an_older_database_gets_its_runs_grouped_by_set(corral):
    """Schema v7 on a database whose runs predate it: their set comes from modules_dir;
    the migration only adds what is missing, so running it again changes nothing."""
    import sqlite3

    from corral.store import Store, module_set_key

    corral.module("a")
    assert corral("run", "-q").code == 0
    conn = sqlite3.connect(corral.db)
    conn.execute("UPDATE runs SET module_set = NULL")
    conn.execute("PRAGMA user_version = 6")
    conn.commit()
    conn.close()
    store = Store.open(corral.db)
    assert [s[0] for s in store.module_sets()] == [module_set_key([corral.modules])]
    store.close()
    assert corral("history").out.count("Z-") == 1
