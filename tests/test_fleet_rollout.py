"""The fleet's plan, driven by hand: the fan-out window, the canary gate, --max-fail."""

from __future__ import annotations

from corral.fleet.controller import (
    FAILED,
    LOST,
    OK,
    SKIPPED,
    UNREACHABLE,
    HostResult,
    Rollout,
    fleet_exit_code,
)

HOSTS = [f"h{n}" for n in range(1, 7)]


def test_the_window_never_holds_more_than_fanout_hosts():
    plan = Rollout(HOSTS, fanout=2, canary=0, max_fail=None)
    assert plan.take() == ["h1", "h2"]
    assert plan.take() == []  # the window is full
    assert plan.done("h1", OK) == []
    assert plan.take() == ["h3"]
    for host in ("h2", "h3"):
        plan.done(host, FAILED)
    assert plan.take() == ["h4", "h5"]  # failures alone stop nothing without --max-fail
    plan.done("h4", OK)
    plan.done("h5", OK)
    assert plan.take() == ["h6"]
    plan.done("h6", OK)
    assert not plan.more_to_do()


def test_the_canary_goes_alone_and_releases_the_rest_only_when_all_are_ok():
    plan = Rollout(HOSTS, fanout=10, canary=2, max_fail=None)
    assert plan.take() == ["h1", "h2"]
    assert plan.done("h1", OK) == []
    assert plan.take() == []  # h2 is still a canary running
    assert plan.done("h2", OK) == []
    assert plan.take() == ["h3", "h4", "h5", "h6"]


def test_a_failed_canary_skips_every_other_host_with_the_reason():
    plan = Rollout(HOSTS, fanout=10, canary=2, max_fail=None)
    plan.take()
    assert plan.done("h1", UNREACHABLE) == []
    skipped = plan.done("h2", OK)
    assert [h for h, _ in skipped] == ["h3", "h4", "h5", "h6"]
    assert {why for _, why in skipped} == {"not started: canary h1 unreachable"}
    assert plan.take() == [] and not plan.more_to_do()


def test_max_fail_refuses_new_hosts_once_the_share_of_failures_is_exceeded():
    plan = Rollout(HOSTS, fanout=1, canary=0, max_fail=40)
    assert plan.take() == ["h1"]
    assert plan.done("h1", OK) == []
    plan.take()
    skipped = plan.done("h2", LOST)  # 1 of 2 = 50 % > 40 %
    assert [h for h, _ in skipped] == ["h3", "h4", "h5", "h6"]
    assert "--max-fail 40%: 1 of 2 finished hosts failed" in skipped[0][1]
    assert plan.take() == []


def test_max_fail_at_exactly_the_limit_goes_on():
    plan = Rollout(HOSTS[:4], fanout=1, canary=0, max_fail=50)
    plan.take()
    plan.done("h1", OK)
    plan.take()
    assert plan.done("h2", FAILED) == []  # 50 % is not more than 50 %
    assert plan.take() == ["h3"]


def test_exit_codes_a_host_problem_wins_over_a_module_failure():
    def hosts(*statuses):
        return [HostResult(f"h{i}", s) for i, s in enumerate(statuses)]

    assert fleet_exit_code(hosts(OK, OK)) == 0
    assert fleet_exit_code(hosts(OK, FAILED)) == 1
    for problem in (UNREACHABLE, LOST, SKIPPED, "locked"):
        assert fleet_exit_code(hosts(FAILED, problem)) == 4
    assert fleet_exit_code(hosts(OK), stopped=2) == 130
    warned = hosts(OK, OK)
    warned[1].exit_code = 5
    assert fleet_exit_code(warned) == 5
    assert fleet_exit_code([*warned, HostResult("x", FAILED)]) == 1
