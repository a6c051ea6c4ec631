"""What a user notices: `list` shows the whole header and whole descriptions, the DOT
graph labels `before:` edges the way they read, `--dry-run` shows waves, lock sharing
and the expected duration, `history --json` rows carry their host."""

from __future__ import annotations

import os

LONG = "checks every mounted filesystem for space and inodes and warns well before it fills up"


def test_list_shows_the_header_and_does_not_cut_descriptions(corral):
    corral.module(
        "disk",
        f"description: {LONG}\nprovides: space\ntimeout: 2m\nretries: 2\n"
        "workload: io\nlocks: apt\nwarning-exit: 3",
    )
    corral.module("other", "description: short")
    line = next(ln for ln in corral("list").out.splitlines() if ln.startswith("disk"))
    assert LONG in line  # a pipe is as wide as it needs to be
    for part in ("provides: space", "timeout: 120s", "retries: 2", "workload: io", "locks: apt"):
        assert part in line, part
    assert "warning-exit: 3" in line


def test_dot_labels_a_before_edge_the_way_it_reads(corral):
    corral.module("first", "before: second")
    corral.module("second")
    dot = corral("graph").out
    assert '"second" -> "first" [style=dotted, label="after (first: before)"];' in dot


def test_dry_run_shows_waves_shared_locks_and_the_expected_duration(corral):
    corral.module("base", body="sleep 0.2")
    corral.module("pkg_a", "locks: pkgdb", body="sleep 0.3")
    corral.module("pkg_b", "locks: pkgdb\nrequires: base", body="sleep 0.2")
    first = corral("run", "-n")
    assert "3 modules in 2 waves, no history to estimate the duration" in first.out
    assert corral("run", "-q").code == 0
    dry = corral("run", "-n", "-j", "1")
    lines = dry.out.splitlines()
    step = next(ln for ln in lines if "pkg_b" in ln and "wave" in ln)
    assert "wave 1" in step and "~0." in step and "locks: pkgdb" in step
    assert any("lock pkgdb: pkg_a, pkg_b wait for each other" in ln for ln in lines)
    assert "3 modules in 2 waves, expected about 0." in dry.out and "at -j 1" in dry.out


def test_every_history_row_carries_its_host(corral):
    """As docs/usage.md says: an attempt of this machine's run carries, as `host`, the
    host its run recorded (its own host column is empty: only gathered rows fill it)."""
    corral.module("a")
    assert corral("run", "-q").code == 0
    host = os.uname().nodename
    assert [r["host"] for r in corral("history", "--json").json()] == [host]
    attempts = corral("history", "a", "--json").json()
    assert [a["host"] for a in attempts] == [host]
    assert not any(key.startswith("host_") for a in attempts for key in a)
