"""The Plan, driven by hand: what is ready, what a finished module releases or skips.

The plan never starts anything; the scheduler takes ready modules and reports finished
ones. These tests are that conversation, one step at a time.
"""

from __future__ import annotations

import pytest

from corral.graph import NONE, Plan
from corral.status import FAILURES, Status

from .modeled import modeled


def plan_of(**headers) -> Plan:
    graph, selection = modeled(**headers)
    return Plan(selection, graph)


def take(plan: Plan, limit: int = 100, refuse: set[str] = frozenset()) -> list[str]:
    return plan.take_ready(lambda name: name not in refuse, limit)


def test_only_modules_whose_dependencies_finished_are_ready():
    plan = plan_of(a={}, b={"requires": ("a",)}, c={"after": ("b",)})
    assert take(plan) == ["a"]
    assert take(plan) == []  # nothing more until a finishes
    assert plan.finished("a", Status.OK) == []
    assert take(plan) == ["b"]
    plan.finished("b", Status.OK)
    assert take(plan) == ["c"]
    plan.finished("c", Status.OK)
    assert not plan.more_to_do()


def test_take_ready_honours_the_limit_and_priority():
    # x heads a longer chain, so it goes first; the limit holds the others back
    plan = plan_of(
        durations={"x": 1, "y": 1, "z": 1, "tail": 10},
        x={},
        y={},
        z={},
        tail={"after": ("x",)},
    )
    assert take(plan, limit=1) == ["x"]
    assert take(plan, limit=1) == ["y"]
    assert sorted(plan.ready()) == ["z"]


def test_a_refused_module_stays_ready_and_the_next_one_is_offered():
    plan = plan_of(a={}, b={})
    assert take(plan, refuse={"a"}) == ["b"]
    assert plan.ready() == ["a"]
    assert take(plan) == ["a"]


def test_a_failed_requirement_skips_its_users_and_their_users():
    plan = plan_of(a={}, b={"requires": ("a",)}, c={"requires": ("b",)}, d={})
    take(plan)
    skipped = plan.finished("a", Status.FAILED)
    assert skipped == [("b", "requires a, which failed"), ("c", "requires b, which was skipped")]
    assert take(plan) == []  # d already started with a
    assert plan.more_to_do()  # d still runs
    plan.finished("d", Status.OK)
    assert not plan.more_to_do()


def test_a_failed_want_releases_its_wanters():
    plan = plan_of(a={}, b={"wants": ("a",)}, c={"after": ("a",)})
    take(plan)
    assert plan.finished("a", Status.FAILED) == []
    assert sorted(take(plan)) == ["b", "c"]


@pytest.mark.parametrize("status", sorted(FAILURES))
def test_every_failure_skips_requirers_with_its_own_verb(status):
    plan = plan_of(a={}, b={"requires": ("a",)})
    take(plan)
    assert plan.finished("a", status) == [("b", f"requires a, which {status.verb}")]


def test_skip_rest_skips_what_has_not_started_and_leaves_running_alone():
    plan = plan_of(a={}, b={}, c={"requires": ("a",)})
    assert take(plan, limit=1) == ["a"]
    skipped = plan.skip_rest("not started: corral got SIGHUP")
    assert sorted(n for n, _ in skipped) == ["b", "c"]
    assert plan.ready() == []
    assert plan.more_to_do()  # a still runs
    assert plan.finished("a", Status.OK) == []
    assert not plan.more_to_do()


def test_a_skipped_module_never_becomes_ready_when_its_other_dependency_ends():
    plan = plan_of(a={}, b={}, c={"requires": ("a",), "after": ("b",)})
    take(plan)
    plan.finished("a", Status.FAILED)
    plan.finished("b", Status.OK)
    assert take(plan) == []
    assert not plan.more_to_do()


def test_modules_without_edges_share_their_empty_sets_and_the_rest_still_release():
    # perf (docs/architecture.md): no set per module and kind of edge it lacks; the
    # modules that wait on others keep sets of their own, which the plan empties.
    graph, selection = modeled(a={}, b={}, c={"requires": ("a",), "after": ("b",)})
    assert graph.waits["a"] is graph.waits["b"] and graph.waits["a"]["requires"] is NONE
    assert graph.waits["c"]["requires"] == {"a"} and graph.waits["c"]["wants"] is NONE
    assert selection.waits["a"] is NONE and selection.waits["c"] == {"a", "b"}
    plan = Plan(selection, graph)
    assert sorted(plan.take_ready(lambda name: True, 2)) == ["a", "b"]
    plan.finished("a", Status.OK)
    assert plan.ready() == []  # c still waits on b
    plan.finished("b", Status.OK)
    assert plan.ready() == ["c"] and plan.missing["a"] is NONE
