"""The fleet section of the report, from rows as a fleet run gathers them (no hosts)."""

from __future__ import annotations

from corral.document import Table
from corral.fleet.hosts import HostResult
from corral.fleet.records import add_records, save_host, start_fleet_run
from corral.fleet.report import fleet_section, spread
from corral.store import Store


def record(host: str, durations: dict[str, float], failed: str | None = None) -> dict:
    run_id = f"20261123-0600{len(host):02d}-{host}"
    return {
        "run": {
            "run_id": run_id,
            "started": "2026-11-23T06:00:00+00:00",
            "status": "failed" if failed else "ok",
            "makespan_s": sum(durations.values()),
            "host": "remote-name",
        },
        "attempts": [
            {
                "run_id": run_id,
                "module": name,
                "attempt": 1,
                "status": "failed" if name == failed else "ok",
                "duration_s": d,
                "id": 7,
            }
            for name, d in durations.items()
        ],
    }


def test_spread_median_p95_and_fence():
    median, p95, fence = spread([1.0] * 19 + [9.0])
    assert median == 1.0 and p95 == 1.0 and fence == 1.5
    assert spread([2.0]) == (2.0, 2.0, float("inf"))


def test_fleet_section_names_slow_failing_hosts_and_outliers(tmp_path):
    store = Store.open(tmp_path / "c.db")
    start_fleet_run(store, "F1", "web[1-6]", [], "d", "/m", [f"web{n}" for n in range(1, 7)])
    for n in range(1, 6):
        host = f"web{n}"
        slow = 5.0 if n == 4 else 1.0
        add_records(store, host, record(host, {"a": slow, "b": 0.1}, "b" if n == 2 else None), "F1")
        r = HostResult(host, "failed" if n == 2 else "ok", 1 if n == 2 else 0, "b failed")
        save_host(store, "F1", r, f"{host}/x")
    save_host(store, "F1", HostResult("web6", "unreachable", 255, "refused"), None)
    blocks, charts = fleet_section(store, "/m")
    assert list(charts) == ["fleet.svg"] and charts["fleet.svg"].startswith(b"<?xml")
    assert fleet_section(store, "/other") == ([], {})
    tables = [b.rows for b in blocks if isinstance(b, Table)]
    grid = {row[0]: row[1:] for row in tables[0]}
    assert grid["web2"] == ["ok 1.00s", "failed 0.10s"] and "web6" not in grid
    assert [row[0] for row in tables[1]][0] == "web4"  # slowest first
    assert {row[0]: row[1] for row in tables[2]} == {"web2": "failed", "web6": "unreachable"}
    spreads = {row[0]: row for row in tables[3]}
    assert spreads["a"][2] == "1.00s" and "web4 (5.00s)" in spreads["a"][6]
    assert spreads["b"][5] == "1"
    # Gathered rows keep the name the fleet used, not the one the host calls itself.
    assert {r[0] for r in store.conn.execute("SELECT DISTINCT host FROM runs")} == {
        f"web{n}" for n in range(1, 6)
    }
