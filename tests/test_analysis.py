"""The report's arithmetic, driven by hand: scripted runs in, timelines and accounts out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.analysis import (
    BACKOFF,
    JOBS,
    LOCKS,
    RUNNING,
    THROTTLE,
    Attempt,
    ModuleRun,
    Run,
    analyse,
    module_rates,
    release_chain,
    releaser,
    running_over_time,
    timeline,
    troubled,
    verdict,
)


def attempt(start, duration, status="ok", throttle=0.0, kind=None, lock=0.0, retry_in=None):
    return Attempt(1, status, start, duration, 0.0, None, throttle, kind, lock, retry_in)


def scripted(modules: dict[str, list[Attempt]], edges=None, status=None, jobs=2) -> Run:
    run = Run({"run_id": "r", "jobs": jobs}, {}, edges or {}, [])
    for name, attempts in modules.items():
        for number, a in enumerate(attempts, 1):
            a.number = number
        final = (status or {}).get(name, attempts[-1].status if attempts else "skipped")
        m = ModuleRun(name, final, None, attempts)
        m.settle()
        run.modules[name] = m
    analyse(run)
    return run


def test_the_account_of_the_critical_path_adds_up_to_the_makespan():
    run = scripted(
        {
            "a": [attempt(0.0, 1.0)],
            # ready at 1.0, started at 1.5: 0.3 throttle, 0.1 lock, 0.1 for a slot
            "b": [attempt(1.5, 2.0, throttle=0.3, kind="load", lock=0.1)],
            "c": [attempt(0.0, 0.2)],
        },
        {"b": ["a"]},
    )
    assert run.critical_path == ["a", "b"]
    assert run.makespan == pytest.approx(3.5)
    assert run.account[RUNNING] == pytest.approx(3.0)
    assert run.account[THROTTLE] == pytest.approx(0.3)
    assert run.account[LOCKS] == pytest.approx(0.1)
    assert run.account[JOBS] == pytest.approx(0.1)
    assert run.account.total == pytest.approx(run.makespan)
    assert str(verdict(run)).startswith("critical path (86% of the makespan)")
    assert verdict(run).name == "critical path"


def test_what_released_a_module_is_what_ended_last_before_it_started():
    """`corral why`'s chain and the report's critical path are one walk: a module's
    releaser is the requirement that ended last before it started (one that ended later
    did not hold it back, one that never ran released nothing)."""
    run = scripted(
        {
            "base": [attempt(0.0, 1.0)],
            "side": [attempt(0.0, 0.4)],
            "middle": [attempt(1.0, 1.0)],
            "late": [attempt(0.0, 5.0)],  # ends after top started: not what released it
            "never": [],
            "top": [attempt(2.2, 0.5)],
            "alone": [attempt(0.0, 0.1)],
        },
        {"middle": ["base"], "top": ["middle", "side", "late", "never"]},
    )
    assert releaser(run, run.modules["top"]).name == "middle"
    assert release_chain(run, "top") == ["base", "middle", "top"]
    assert release_chain(run, "alone") == ["alone"]
    assert run.critical_path == release_chain(run, "late") == ["late"]
    assert timeline(run, "top").ready == pytest.approx(2.0)


def test_a_gate_refusal_for_slots_counts_as_jobs_not_throttle():
    run = scripted(
        {"a": [attempt(0.0, 1.0)], "b": [attempt(1.0, 0.1, throttle=1.0, kind="jobs auto")]}
    )
    assert run.critical_path == ["b"]
    assert run.account[JOBS] == pytest.approx(1.0) and run.account[THROTTLE] == 0
    assert str(verdict(run)).startswith("jobs (91% of the makespan)")


def test_a_held_module_names_the_throttle_and_its_kind():
    run = scripted({"a": [attempt(0.0, 1.0)], "b": [attempt(3.0, 2.05, throttle=3.0, kind="load")]})
    bound = verdict(run)
    assert bound.term == THROTTLE and bound.held_for == "load"
    text = str(bound)
    assert text.startswith("throttle (59% of the makespan)") and "held for: load" in text
    assert "more jobs would not help" not in text


def test_backoff_between_attempts_is_waiting_and_only_attempts_are_running():
    run = scripted(
        {
            "flaky": [attempt(0.0, 0.1, "failed", retry_in=1.0), attempt(1.2, 0.3, throttle=0.1)],
            "x": [attempt(0.1, 1.0)],
            "y": [attempt(0.1, 1.0)],
        }
    )
    m = timeline(run, "flaky")
    assert [(s.kind, s.start, s.end) for s in m.segments] == [
        ("running", 0.0, 0.1),
        ("backoff", 0.1, 1.1),
        ("waiting", 1.1, pytest.approx(1.2)),
        ("running", 1.2, pytest.approx(1.5)),
    ]
    assert m.waits[BACKOFF] == pytest.approx(1.0) and m.waits[THROTTLE] == pytest.approx(0.1)
    assert m.running == pytest.approx(0.4)
    assert max(running_over_time(run)[1]) == 2  # the module in backoff is not running


def test_rates_show_never_run_and_always_retried_modules():
    runs = [
        scripted(
            {
                "ok": [attempt(0.0, 0.1)],
                "flaky": [attempt(0.0, 0.1, "failed"), attempt(0.2, 0.1)],
                "never": [],
            },
            status={"never": "skipped"},
        )
        for _ in range(3)
    ]
    rates = {m.name: m for m in module_rates(runs)}
    assert rates["never"].skip_rate == 1 and rates["never"].retry_rate is None
    assert rates["flaky"].retry_rate == 1 and rates["flaky"].failure_rate == 0
    assert [m.name for m in troubled(list(rates.values()))] == ["flaky", "never"]


def test_an_empty_run_is_bound_by_nothing():
    run = scripted({"never": []}, status={"never": "skipped"})
    assert verdict(run).term is None and str(verdict(run)) == "nothing ran"
    assert module_rates([]) == [] and troubled([]) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0, 5),  # start
            st.floats(0, 3),  # duration
            st.floats(0, 2),  # throttle wait
            st.floats(0, 2),  # lock wait
            st.lists(st.integers(0, 30), max_size=3),  # what it requires (by index)
        ),
        min_size=1,
        max_size=30,
    )
)
def test_every_account_adds_up_to_the_makespan(spec):
    """Whatever the schedule, the critical path's terms add up to the makespan and no
    term is negative: the shares the verdict compares are a partition."""
    names = [f"m{i}" for i in range(len(spec))]
    modules, edges = {}, {}
    for i, (start, duration, throttle, lock, deps) in enumerate(spec):
        modules[names[i]] = [attempt(start, duration, throttle=throttle, lock=lock)]
        ends = {names[d] for d in deps if d < i}
        edges[names[i]] = sorted(ends)
    # Dependencies end before their dependents start (as the scheduler guarantees).
    for name, deps in edges.items():
        a = modules[name][0]
        edges[name] = [d for d in deps if modules[d][0].end <= a.start]
    run = scripted(modules, edges)
    assert all(v >= 0 for _, v in run.account.items())
    assert run.account.total == pytest.approx(run.makespan, abs=1e-6)
