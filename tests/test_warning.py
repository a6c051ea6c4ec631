"""The warning status: a module that found something without failing (an audit check)
declares the exit codes that mean so (`warning-exit:`); the run shows and records it as
its own status and exits 5 when nothing failed."""

from __future__ import annotations

from .conftest import db_rows


def test_declared_exit_code_is_a_warning_everywhere(corral):
    corral.module(
        "audit", "warning-exit: 3, 4\nretries: 2", body="echo 'two disks over 90%' >&2; exit 3"
    )
    corral.module("report", "requires: audit", body="echo reported")
    result = corral("run")
    assert result.code == 5, result.out + result.err
    assert "⚠ warning (exit 3)" in result.out and "reported" in result.out
    assert "corral: warning: 2 modules (1 warning, 1 ok)" in result.out
    quiet = corral("run", "--quiet")  # what cron mails: the warning and its log's tail
    assert quiet.code == 5 and "audit" in quiet.out and "two disks over 90%" in quiet.out
    assert "report " not in quiet.out
    data = corral("run", "--json").json()
    assert data["status"] == "warning" and data["exit_code"] == 5
    audit = next(m for m in data["modules"] if m["name"] == "audit")
    assert audit["status"] == "warning" and audit["exit_code"] == 3 and audit["attempts"] == 1
    rows = db_rows(corral.db, "SELECT status, exit_code FROM runs")
    assert rows and all(r == {"status": "warning", "exit_code": 5} for r in rows)
    assert "warning" in corral("history", "audit").out


def test_failure_wins_over_a_warning_and_undeclared_codes_fail(corral):
    corral.module("audit", "warning-exit: 3", body="exit 3")
    corral.module("broken", body="exit 4")
    result = corral("run", "--json")
    assert result.code == 1
    status = {m["name"]: m["status"] for m in result.json()["modules"]}
    assert status == {"audit": "warning", "broken": "failed"}


def test_bad_warning_exit_is_a_header_error(corral):
    corral.module("audit", "warning-exit: 0")
    result = corral("check")
    assert result.code == 2 and "audit.sh:2: warning_exit: cannot read '0'" in result.err


def test_quiet_reports_the_final_outcome_not_a_failure_a_retry_fixed(corral):
    flag = corral.modules.parent / "second"
    corral.module("flaky", "retries: 2", body=f"[ -e {flag} ] || {{ touch {flag}; exit 1; }}")
    result = corral("run", "--quiet")
    assert result.code == 0 and result.out == "" and result.err == ""
    one = corral("run", "flaky")
    assert "1 module " in one.out and "1 modules" not in one.out
