"""The header cache: hits, invalidation, sharing, and surviving a broken database."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time

from .conftest import Corral, damage, db_rows


def stats(corral: Corral) -> dict:
    out = corral("cache", "stats").out
    return {k.strip(): v.strip() for k, v in (line.split(":") for line in out.splitlines())}


def test_second_load_hits_and_a_changed_file_is_reparsed(corral):
    for i in range(5):
        corral.module(f"m{i}", "description: v1")
    assert corral("plan").code == 0
    assert stats(corral)["misses"] == "5"
    assert corral("plan").code == 0
    assert stats(corral) == {"entries": "5", "hits": "5", "misses": "0", "hit rate": "100.0%"}
    path = corral.module("m1", "description: v2 with a longer text")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1000))
    plan = corral("plan", "--json").json()
    assert stats(corral)["misses"] == "1"
    assert plan["modules"][[m["name"] for m in plan["modules"]].index("m1")]["description"] == (
        "v2 with a longer text"
    )


def test_same_size_same_mtime_edit_is_caught_by_inode(corral):
    path = corral.module("m", "requires: a")
    corral.module("a")
    corral.module("b")
    corral("plan")
    st = path.stat()
    replacement = path.with_suffix(".tmp")
    replacement.write_text(path.read_text().replace("requires: a", "requires: b"))
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    replacement.rename(path)  # new inode, same size and mtime
    assert corral("plan", "--json").json()["modules"][-1]["requires"] == ["b"]


def test_an_in_place_rewrite_with_size_and_mtime_put_back_is_reparsed(corral):
    path = corral.module("m", "requires: a")
    corral.module("a")
    corral.module("b")
    assert corral("plan").code == 0
    st = path.stat()
    with open(path, "r+b") as f:  # the same inode, the same size
        data = f.read()
        f.seek(0)
        f.write(data.replace(b"requires: a", b"requires: b"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
    )  # the control: everything an mtime-based key looks at is as it was
    assert corral("plan", "--json").json()["modules"][-1]["requires"] == ["b"]


def test_deleted_module_is_dropped_from_the_cache(corral):
    corral.module("a")
    gone = corral.module("b")
    corral("plan")
    gone.unlink()
    corral("plan")
    assert stats(corral)["entries"] == "1"


def test_clear_empties_the_cache(corral):
    corral.module("a")
    corral("plan")
    assert "cleared 1 entry" in corral("cache", "clear").out
    assert stats(corral)["entries"] == "0"


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(corral):
    corral.module("a")
    corral.db.write_bytes(b"this is not sqlite" * 100)
    result = corral("plan", "--json")
    assert result.code == 2 and "is not a SQLite database" in result.err
    assert corral.db.read_bytes() == b"this is not sqlite" * 100
    assert not list(corral.db.parent.glob("corral.db.corrupt-*"))


def test_a_damaged_database_still_plans_with_one_warning_and_is_not_moved(corral):
    corral.module("a")
    assert corral("plan").code == 0
    damage(corral.db)
    result = corral("plan", "--json")
    assert result.code == 0 and result.json()["order"] == ["a"]
    assert result.err.count("warning") == 1 and "malformed" in result.err
    assert not list(corral.db.parent.glob("corral.db.corrupt-*"))


def test_unwritable_database_location_still_plans(corral, tmp_path):
    corral.module("a")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = corral("--db", str(blocker / "sub" / "c.db"), "plan", "--json")
    assert result.code == 0 and result.json()["order"] == ["a"]
    assert result.err.count("warning") == 1


def test_concurrent_processes_share_one_database(corral):
    for i in range(50):
        corral.module(f"m{i}")
    cmd = corral.argv("plan", "--json")
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=corral.env)
        for _ in range(6)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert b'"m49"' in out


def test_memoised_plan_follows_every_input_it_depends_on(corral):
    corral.module("net", "provides: networking")
    corral.module("app", "requires: $network")
    (corral.modules.parent / "corral.yaml").write_text("facilities:\n  $network: []\n")
    first = corral("plan", "--json")
    assert first.code == 0 and corral("plan", "--json").out == first.out  # answered warm
    assert stats(corral)["hits"] == "2" and stats(corral)["misses"] == "0"
    by_name = {m["name"]: m for m in first.json()["modules"]}
    assert by_name["app"]["requires"] == []
    # A config change, a new file, an edited header and new history each show at once.
    (corral.modules.parent / "corral.yaml").write_text("facilities:\n  $network: [net]\n")
    assert {m["name"]: m for m in corral("plan", "--json").json()["modules"]}["app"][
        "requires"
    ] == ["net"]
    corral.module("extra")
    assert "extra" in corral("plan", "--json").json()["order"]
    path = corral.module("extra", "description: now described")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1000))
    described = {m["name"]: m for m in corral("plan", "--json").json()["modules"]}
    assert described["extra"]["description"] == "now described"
    corral.module("app", "requires: $network", "sleep 0.3")
    before = {m["name"]: m["priority"] for m in corral("plan", "--json").json()["modules"]}
    assert corral("run", "-q").code == 0
    after = {m["name"]: m["priority"] for m in corral("plan", "--json").json()["modules"]}
    assert after != before  # durations from history feed the priorities


def test_what_counts_as_a_module_file(corral):
    """A `*.sh` regular file, or a link to one; not a dangling link, a directory or
    another suffix. The same whether the plan is memoised or not."""
    corral.module("real")
    target = corral.module("elsewhere")
    os.rename(target, corral.modules / "elsewhere.txt")
    os.symlink(corral.modules / "elsewhere.txt", corral.modules / "linked.sh")
    os.symlink(corral.modules / "gone.txt", corral.modules / "dangling.sh")
    (corral.modules / "dir.sh").mkdir()
    for _ in range(2):  # cold, then from the memo
        plan = corral("plan", "--json").json()
        assert plan["order"] == ["linked", "real"]


def test_a_memoised_plan_says_what_click_said(corral):
    # entry.py answers a memo hit without click: the same JSON, warnings and status as
    # the miss before it (click's), for each spelling it takes; and click stays unloaded.
    corral.module("a")
    corral.module("b", "requires: a\ntags: t")
    (corral.modules / "b.sh~").write_text("#!/bin/sh\n")  # a warning: not run
    for args in (
        ("plan", "--json"),
        ("plan", "--json", "b"),
        ("plan", "--tag=t", "--json"),
        ("plan", "--json", "--exclude", "b", "a"),
    ):
        first, again = corral(*args), corral(*args)
        assert first.code == 0 and "b.sh~" in first.err
        assert (again.code, again.out, again.err) == (first.code, first.out, first.err)
    argv = corral.argv("plan", "--json")
    loaded = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True, env=corral.env
    ).stderr
    assert "corral.memo" in loaded and not re.search(r"\|\s+click$", loaded, re.M)


def test_only_the_plainest_plan_json_skips_click():
    from corral.entry import plan_json_args

    given = plan_json_args(
        ["--modules", "d", "--modules=e", "--db", "x.db", "plan", "--json", "t", "--tag", "a"]
        + ["--exclude=b", "u"]
    )
    assert given is not None
    assert (given.modules, given.db, given.config) == (["d", "e"], "x.db", None)
    assert (given.targets, given.tags, given.exclude) == (["t", "u"], ["a"], ["b"])
    for args in (
        ["plan"],  # a table: the graph is needed
        ["run", "--json"],
        ["-h"],
        ["plan", "--json", "--help"],
        ["plan", "--json", "--"],
        ["plan", "--json", "--tag"],
        ["plan", "--json", "--tag", ""],  # a usage error is click's to say
        ["plan", "--json", " "],
        ["--db", "x", "--db", "y", "plan", "--json"],
        ["--modules", "-x", "plan", "--json"],
        ["--modules", "d", "--version", "plan", "--json"],
        ["plan", "--json", "--modules", "d"],  # a global option after the command
        ["plan", "--json", "--json=1"],
        ["plan", "--json", "caf\udce9"],
    ):
        assert plan_json_args(args) is None, args


def test_a_repeated_warm_plan_writes_nothing(corral):
    # perf (docs/architecture.md): the counts of a warm load are written only when they
    # change, so a repeated warm plan leaves the database as it was (no write, no sync).
    corral.module("a")
    corral("plan", "--json")  # cold: 1 miss
    corral("plan", "--json")  # warm: 1 hit, written
    written = db_rows(corral.db, "SELECT * FROM cache_stats")
    assert corral("plan", "--json").code == 0
    assert db_rows(corral.db, "SELECT * FROM cache_stats") == written
    assert stats(corral)["hits"] == "1" and stats(corral)["misses"] == "0"


def test_the_memo_follows_history_with_and_without_a_run_s_record(corral):
    # The key names the recent runs' records (perf: no medians worked out for a hit); a
    # run without one (a crash) is keyed by the durations its attempt rows give.
    corral.module("a", body="sleep 0.1")
    corral.module("b", "requires: a")
    assert corral("run", "-q").code == 0
    first = corral("plan", "--json")
    assert corral("plan", "--json").out == first.out

    def change(sql: str) -> None:
        conn = sqlite3.connect(corral.db)
        with conn:
            conn.execute(sql)
        conn.close()

    change("DELETE FROM run_figures")
    assert corral("plan", "--json").out == first.out  # the same durations, from the rows
    change("UPDATE module_runs SET duration_s = 50 WHERE module = 'b'")
    priority = {m["name"]: m["priority"] for m in corral("plan", "--json").json()["modules"]}
    assert priority["a"] > {m["name"]: m["priority"] for m in first.json()["modules"]}["a"]
