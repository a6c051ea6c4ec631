"""`run --failed` and `run --resume`: run again what the last run of these modules did
not complete, as `parallel --resume-failed` and Ansible's retry files do."""

from __future__ import annotations

from .conftest import db_rows


def ran(corral, run_id: str) -> dict[str, str]:
    rows = db_rows(corral.db, "SELECT module, status FROM module_runs WHERE run_id = ?", run_id)
    return {r["module"]: r["status"] for r in rows}


def test_failed_runs_only_what_failed_and_resume_also_what_was_skipped(corral):
    flag = corral.modules.parent / "fixed"
    corral.module("base", body="echo base")
    corral.module("flaky", "requires: base", body=f"test -e {flag}")
    corral.module("dep", "requires: flaky")
    corral.module("other", body="true")
    first = corral("run", "--json")
    assert first.code == 1
    again = corral("run", "--failed", "--json")  # still broken: only flaky runs
    assert again.code == 1
    assert ran(corral, again.json()["run_id"]) == {"flaky": "failed"}
    flag.touch()
    resumed = corral("run", "--resume")
    assert resumed.code == 0, resumed.out + resumed.err
    assert "--resume: not completed as of run" in resumed.out
    run_id = db_rows(corral.db, "SELECT run_id FROM runs ORDER BY started DESC LIMIT 1")[0]
    # flaky failed and dep was skipped in the last run; base and other completed earlier
    assert ran(corral, run_id["run_id"]) == {"flaky": "ok", "dep": "ok"}
    nothing = corral("run", "--resume")
    assert nothing.code == 0 and "left nothing to run again" in nothing.err


def test_redo_without_an_earlier_run_or_with_targets_is_a_usage_error(corral):
    corral.module("a")
    result = corral("run", "--failed")
    assert result.code == 2 and "no earlier run" in result.err and "Traceback" not in result.err
    corral("run")
    result = corral("run", "--resume", "a")
    assert result.code == 2 and "no TARGETs" in result.err
