"""`corral run` as a user (and cron) sees it: real Bash modules, real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from .conftest import db_rows, write_module
from .runtrace import processes_with, wait_for


def by_name(result):
    return {m["name"]: m for m in result.json()["modules"]}


def test_a_failure_is_shown_with_its_log_tail_and_its_exit_code_recorded(corral):
    """What skips whom is the fast layer's (tests/test_plan.py, test_scheduler.py); here
    a real module's exit code and output: the plain (cron) output names the failure and
    shows its log tail, and the records keep its exit code and its requirer's skip."""
    corral.module("bad", body="echo broken; exit 3")
    corral.module("needs_bad", "requires: bad")
    corral.module("wants_bad", "wants: bad")
    plain = corral("run")
    assert plain.code == 1
    assert "last lines of bad" in plain.out and "broken" in plain.out
    assert "\x1b[" not in plain.out
    rows = {r["module"]: r for r in db_rows(corral.db, "SELECT * FROM module_runs")}
    assert rows["bad"]["status"] == "failed" and rows["bad"]["exit_code"] == 3
    assert rows["needs_bad"]["reason"] == "requires bad, which failed"
    assert rows["wants_bad"]["status"] == "ok"


def test_dry_run_prints_the_order_and_touches_nothing(corral):
    marker = corral.modules.parent / "ran"
    corral.module("a", body=f"touch {marker}")
    corral.module("b", "requires: a", f"touch {marker}")
    result = corral("run", "--dry-run")
    assert result.code == 0, result.err
    order = re.findall(r"^ +\d+\. (\S+) +wave (\d+)", result.out, re.MULTILINE)
    assert order == [("a", "0"), ("b", "1")]
    assert "would run, in this order, 2 modules" in result.out
    assert "(run " not in result.out  # no id of a run that is recorded nowhere
    assert "nothing was run" in result.out
    assert not marker.exists()
    assert db_rows(corral.db, "SELECT * FROM runs") == []
    assert not (corral.db.parent / "logs").exists()


def test_module_sees_design_environment_cwd_and_no_stdin(corral):
    sub = corral.modules / "nested"
    corral.module(
        "env",
        body="""
        echo "module=$CORRAL_MODULE attempt=$CORRAL_ATTEMPT run=$CORRAL_RUN_ID"
        echo "lib=$CORRAL_LIB logdir=$CORRAL_LOG_DIR cwd=$PWD"
        [[ -f "$CORRAL_LIB/log.sh" ]] && echo lib-ok
        if read -r -t 1 line; then echo "stdin: $line"; else echo stdin-empty; fi
        [[ "$(ps -o sid= -p $$ | tr -d ' ')" == "$$" ]] && echo own-session
    """,
        mode=0o644,
    )  # not executable: corral runs `bash FILE` anyway
    sub.mkdir()
    result = corral("run", "--json", input="secret\n")
    assert result.code == 0, result.err
    run = result.json()
    log = (corral.db.parent / "logs" / run["run_id"] / "env.log").read_text()
    assert f"module=env attempt=1 run={run['run_id']}" in log
    assert f"cwd={corral.modules}" in log
    assert f"logdir={corral.db.parent / 'logs' / run['run_id']}" in log
    assert "lib-ok" in log and "stdin-empty" in log and "own-session" in log
    assert by_name(result)["env"]["log_path"].endswith("env.log")


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_each_attempt_sees_its_own_environment_directory_and_name(corral, tmp_path, locale):
    """Attempts after the first are handed to a bash started (and contained) ahead of
    time, with the environment the previous one had: what differs must reach it exactly,
    whatever bytes it holds and whatever the locale, and what was unset must be gone."""
    modules = tmp_path / "mod ul'es é"
    modules.mkdir()
    body = (
        'printf "%s|" "$0" "$PWD" "$CORRAL_MODULE" "$CORRAL_ATTEMPT" "$ODD" "${GONE-unset}"; '
        'echo "$LINENO"'
    )
    for i in range(6):
        write_module(modules, f"m{i}", body=body)
    odd = "x\udcff y'z\\ $HOME `id` \n\tend é"
    env = {**corral.env, "ODD": odd, "LC_ALL": locale}
    argv = [a if a != str(corral.modules) else str(modules) for a in corral.argv("run", "-j", "2")]
    proc = subprocess.run(
        argv, env={k: os.fsencode(v) for k, v in env.items()}, capture_output=True
    )
    assert proc.returncode == 0, proc.stderr
    logs = corral.db.parent / "logs"
    for i in range(6):
        seen = next(logs.glob(f"2*/m{i}.log")).read_bytes().split(b"|")
        assert seen[:4] == [
            os.fsencode(f"{modules}/m{i}.sh"),
            os.fsencode(modules),
            f"m{i}".encode(),
            b"1",
        ]
        assert seen[4] == os.fsencode(odd) and seen[5] == b"unset"
        text = (modules / f"m{i}.sh").read_text().splitlines()
        line = next(n for n, t in enumerate(text, 1) if "printf" in t)
        assert seen[6].strip() == str(line).encode()  # the module's own line numbers


def test_timeout_terms_the_group_then_kills_what_ignores_term(corral):
    (corral.modules.parent / "corral.yaml").write_text("grace: 0.5s\n")
    # Sleeps longer than the run's bound (60 s): a run that waited for one fails.
    corral.module("polite", "timeout: 0.3s", "sleep 300 & wait")
    # (a timeout long enough that bash has set its trap first, on a loaded host too)
    corral.module("stubborn", "timeout: 1s", "trap '' TERM\nsleep 300 & wait; sleep 300")
    corral.module("stopped", "timeout: 0.3s", "kill -STOP $$")
    corral.module("after_polite", "requires: polite")
    result = corral("run", "-j", "3", "--json", timeout=60)
    assert result.code == 1
    mods = by_name(result)
    assert mods["polite"]["status"] == "timeout" and mods["polite"]["signal"] == 15
    assert mods["stubborn"]["status"] == "timeout" and mods["stubborn"]["signal"] == 9
    assert mods["stopped"]["status"] == "timeout"
    assert mods["after_polite"]["reason"] == "requires polite, which timed out"
    assert processes_with(f"CORRAL_RUN_ID={result.json()['run_id']}") == []


def test_daemonising_module_does_not_hang_the_run_and_is_cleaned_up(corral):
    (corral.modules.parent / "corral.yaml").write_text("grace: 0.5s\n")  # not 5 s a leftover
    corral.module("daemon", body="sleep 300 &\n(setsid sleep 301 &)\necho started")
    corral.module("next", "requires: daemon")
    result = corral("run", "--json")  # (a wait for a 300 s sleep: past its 120 s bound)
    assert result.code == 0, result.err
    assert by_name(result)["next"]["status"] == "ok"
    assert processes_with(f"CORRAL_RUN_ID={result.json()['run_id']}") == []


def test_exit_code_survives_many_short_children(corral):
    corral.module("forky", body="for i in $(seq 50); do true & done; wait; exit 7")
    result = corral("run", "--json")
    assert by_name(result)["forky"]["exit_code"] == 7 and result.code == 1


def test_quiet_prints_nothing_on_success_and_the_failure_otherwise(corral):
    corral.module("fine", body="echo chatter")
    assert corral("run", "--quiet").out == ""
    corral.module("bad", body="echo 'it broke'; exit 2")
    result = corral("run", "-q")
    assert result.code == 1
    assert "bad" in result.out and "it broke" in result.out and "chatter" not in result.out


def test_records_are_written_and_history_shows_them(corral):
    corral.module("a", body="echo hi")
    corral.module("b", "requires: a", "exit 5")
    first = corral("run", "--json").json()
    runs = db_rows(corral.db, "SELECT * FROM runs")
    assert len(runs) == 1 and runs[0]["status"] == "failed" and runs[0]["exit_code"] == 1
    assert runs[0]["ended"] and runs[0]["makespan_s"] > 0
    history = corral("history")
    assert history.code == 0 and first["run_id"] in history.out
    module = corral("history", "b")
    assert "failed" in module.out and " 5 " in module.out
    data = corral("history", "--json").json()
    assert {m["module"] for m in data[0]["modules"]} == {"a", "b"}
    figures = data[0]["figures"]
    assert figures["critical_path"] == ["a", "b"] and figures["speedup"] > 0
    assert figures["parallel_efficiency"] is not None and "verdict" in figures


def test_second_run_exits_3_naming_the_holder_or_waits(corral):
    gate, go = corral.modules.parent / "gate", corral.modules.parent / "go"
    # Holds the run lock until the test lets it go (at most 30 s).
    corral.module(
        "hold",
        body=f"touch {gate}; for _ in {{1..600}}; do [[ -e {go} ]] && break; sleep 0.05; done",
    )
    first = subprocess.Popen(corral.argv("run", "-q"), env=corral.env)
    try:
        wait_for(gate, first)
        second = corral("run")
        assert second.code == 3
        assert f"PID {first.pid}" in second.err and "--wait-lock" in second.err
        waited = subprocess.Popen(
            corral.argv("run", "-q", "--wait-lock=30"),
            env=corral.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for said in waited.stderr:  # it waits while the first run holds the lock …
            if "waiting up to" in said:
                break
        assert f"(PID {first.pid})" in said and "waiting up to 30s" in said, said
        go.touch()
        out, err = waited.communicate(timeout=60)
        assert waited.returncode == 0, err  # … and runs once it is free
    finally:
        go.touch()
        first.wait(30)
    assert first.returncode == 0


def test_unknown_target_and_bad_header_run_nothing(corral):
    marker = corral.modules.parent / "ran"
    corral.module("a", "timeout: never", f"touch {marker}")
    result = corral("run")
    assert result.code == 2 and "a.sh:2" in result.err
    corral.module("a", body=f"touch {marker}")
    result = corral("run", "ghost")
    assert result.code == 2 and "ghost" in result.err
    assert not marker.exists()


def test_run_leaves_no_descriptor_or_zombie_in_process(tmp_path):
    """The in-process API: same descriptors before and after, no child left unreaped."""
    from corral import api
    from corral.config import load_config

    from .conftest import write_module

    modules = tmp_path / "modules"
    for i in range(5):
        write_module(modules, f"m{i}", body="echo out; echo err >&2; sleep 0.05 &")
    config = load_config((str(modules),), str(tmp_path / "db.sqlite"))
    store = api.open_store(config)
    before = sorted(os.listdir("/proc/self/fd"))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)}
    outcome = api.run_modules(config, store)
    assert outcome.exit_code == 0
    after = sorted(os.listdir("/proc/self/fd"))
    assert len(after) == len(before)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    try:
        os.waitpid(-1, os.WNOHANG)
        raise AssertionError("a child is left")
    except ChildProcessError:
        pass
    store.close()


def test_relative_database_and_log_paths_mean_from_where_corral_started(corral, tmp_path):
    # A run changes directory into its modules' directory before it writes records;
    # `--db st/a.db` is still the file beside the caller, for every spawn path.
    for i in range(3):  # m0's record is written while m2 still runs
        corral.module(f"m{i}", body=f"echo hello; sleep {i * 0.3}")
    (tmp_path / "st").mkdir()
    argv = [a if a != str(corral.db) else "st/a.db" for a in corral.argv("run", "-j", "2")]
    for cgroups in ("0", "1"):
        env = {**corral.env, "CORRAL_CGROUPS": cgroups}
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "removed or replaced" not in proc.stderr
    assert not (corral.modules / "st").exists()
    assert len(list((tmp_path / "st" / "logs").glob("2*/m0*"))) == 2
    assert len(db_rows(tmp_path / "st" / "a.db", "SELECT * FROM module_runs")) == 6
