"""Bounded state: keep_runs/keep_days applied at the end of every run, and `corral prune`:
old runs' rows (in every table) and log directories go, the newest stay."""

from __future__ import annotations

import sqlite3

from .conftest import db_rows


def counts(db) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        tables = [
            t
            for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if any(c[1] == "run_id" for c in conn.execute(f"PRAGMA table_info({t})"))
        ]
        return {
            t: conn.execute(f"SELECT count(DISTINCT run_id) FROM {t}").fetchone()[0] for t in tables
        }
    finally:
        conn.close()


def test_a_run_keeps_only_the_newest_runs_of_its_module_set(corral):
    (corral.modules.parent / "corral.yaml").write_text("keep_runs: 2\n")
    corral.module("a", body="echo hello; sleep 0.3")
    ids = [corral("run", "--json").json()["run_id"] for _ in range(4)]
    assert [
        r["run_id"] for r in db_rows(corral.db, "SELECT run_id FROM runs ORDER BY started")
    ] == ids[2:]
    assert all(n <= 2 for n in counts(corral.db).values()), counts(corral.db)
    logs = corral.db.parent / "logs"
    assert sorted(p.name for p in logs.iterdir() if p.name != "latest") == sorted(ids[2:])
    assert "hello" in corral("log", "a").out


def test_prune_by_age_and_count_and_its_dry_run(corral):
    corral.module("a", body="echo hello")
    ids = [corral("run", "--json").json()["run_id"] for _ in range(3)]
    conn = sqlite3.connect(corral.db)
    with conn:
        conn.execute(
            "UPDATE runs SET started = '2020-01-01T00:00:00+00:00' WHERE run_id = ?", (ids[0],)
        )
    conn.close()
    dry = corral("prune", "--keep-days", "30", "-n")
    assert dry.code == 0 and "would remove 1 run and" in dry.out
    # a small run's logs are counted in bytes, not as '0.0 MiB'
    logs = sum(p.stat().st_size for p in (corral.db.parent / "logs" / ids[0]).iterdir())
    assert f"would remove 1 run and {logs} bytes of logs" in dry.out, (logs, dry.out)
    assert len(db_rows(corral.db, "SELECT * FROM runs")) == 3
    done = corral("prune", "--keep-days", "30")
    assert "removed 1 run and" in done.out
    assert [
        r["run_id"] for r in db_rows(corral.db, "SELECT run_id FROM runs ORDER BY started")
    ] == ids[1:]
    assert not (corral.db.parent / "logs" / ids[0]).exists()
    assert "removed 1 run and" in corral("prune", "--keep-runs", "1").out
    assert db_rows(corral.db, "SELECT DISTINCT run_id FROM module_runs") == [{"run_id": ids[2]}]
    bad = corral("prune", "--keep-runs", "-1")
    assert bad.code == 2
