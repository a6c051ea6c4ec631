"""The fleet's rollout through the real scheduler: hosts as units, scripted on the fake
backend. The fan-out window is --jobs, the canary a first wave, the canary gate and
--max-fail a stop policy (corral.fleet.rollout); host outcomes are scripted beside
the fake's exit codes (a host that is not ok ends as a failed attempt)."""

from __future__ import annotations

import signal

from corral.backends.fake import Ends, FakeClock, FakeExecutor
from corral.events import ModuleSkipped
from corral.fleet.hosts import (
    FAILED,
    LOST,
    OK,
    SKIPPED,
    UNREACHABLE,
    HostResult,
    fleet_exit_code,
)
from corral.fleet.rollout import RolloutPolicy, host_plan
from corral.scheduler import RunSettings, Scheduler
from corral.throttle import Jobs

HOSTS = [f"h{n}" for n in range(1, 7)]


class Rollout:
    """One scripted fleet run: `ends` maps a host to (seconds, host status)."""

    def __init__(self, hosts, ends, fanout, canary=0, max_fail=None, signals=()):
        graph, selection = host_plan(hosts, canary)
        self.clock = FakeClock()
        statuses = {h: status for h, (_, status) in ends.items()}
        script = {
            h: [Ends(after, exit=0 if status == OK else 1)] for h, (after, status) in ends.items()
        }
        self.fake = FakeExecutor(self.clock, script, list(signals))
        self.policy = RolloutPolicy(hosts[:canary], max_fail, lambda h: statuses.get(h, OK))
        self.events: list = []
        settings = RunSettings("fleet", Jobs(fanout), stop_when=self.policy)
        with self.fake:
            self.outcome = Scheduler(
                graph, selection, settings, self.fake, self.events.append, self.clock
            ).run()

    def started(self) -> dict[str, float]:
        return {h: t for t, h, _ in self.fake.started}

    def skipped(self) -> dict[str, str]:
        return {e.name: e.reason for e in self.events if isinstance(e, ModuleSkipped)}


def running_at(rollout: Rollout, at: float) -> list[str]:
    durations = {h: (rollout.fake.script.get(h) or [Ends()])[0].after for h in HOSTS}
    return [h for h, t in rollout.started().items() if t <= at < t + durations[h]]


def test_the_window_is_the_job_limit_and_hosts_start_in_node_set_order():
    ends = {"h1": (1.0, OK), "h2": (3.0, FAILED), "h3": (1.0, FAILED)}
    r = Rollout(HOSTS, ends, fanout=2)
    assert list(r.started()) == HOSTS  # in the node set's order
    assert r.started() == {"h1": 0.0, "h2": 0.0, "h3": 1.0, "h4": 2.0, "h5": 3.0, "h6": 3.0}
    for at in (0.0, 0.5, 1.0, 2.5, 3.0, 3.5):
        assert len(running_at(r, at)) <= 2
    assert r.skipped() == {}  # failures alone stop nothing without --max-fail


def test_the_canary_goes_alone_and_releases_the_rest_only_when_all_are_ok():
    r = Rollout(HOSTS, {"h1": (1.0, OK), "h2": (3.0, OK)}, fanout=10, canary=2)
    started = r.started()
    assert started["h1"] == started["h2"] == 0.0
    assert {started[h] for h in HOSTS[2:]} == {3.0}  # after the slower canary, not the first
    assert r.skipped() == {}


def test_a_failed_canary_skips_every_other_host_with_the_reason():
    r = Rollout(HOSTS, {"h1": (1.0, UNREACHABLE), "h2": (2.0, OK)}, fanout=10, canary=2)
    assert list(r.started()) == ["h1", "h2"]
    assert r.fake.stopped == []  # the other canary was not stopped
    assert r.skipped() == dict.fromkeys(HOSTS[2:], "not started: canary h1 unreachable")


def test_canaries_beyond_the_window_all_run_before_the_gate_decides():
    ends = {"h1": (1.0, FAILED), "h2": (1.0, OK), "h3": (1.0, OK)}
    r = Rollout(HOSTS, ends, fanout=1, canary=3)
    assert r.started() == {"h1": 0.0, "h2": 1.0, "h3": 2.0}  # one at a time, canaries first
    assert r.skipped() == dict.fromkeys(HOSTS[3:], "not started: canary h1 failed")


def test_sighup_starts_no_new_host_and_lets_the_running_ones_finish():
    r = Rollout(HOSTS, {"h1": (5.0, OK)}, fanout=1, signals=[(1.0, signal.SIGHUP)])
    assert list(r.started()) == ["h1"] and r.fake.stopped == []
    assert r.skipped() == dict.fromkeys(HOSTS[1:], "not started: corral got SIGHUP")
    assert r.outcome.exit_code == 128 + signal.SIGHUP


def test_max_fail_refuses_new_hosts_once_the_share_of_failures_is_exceeded():
    r = Rollout(HOSTS, {"h1": (1.0, OK), "h2": (1.0, LOST)}, fanout=1, max_fail=40)
    assert list(r.started()) == ["h1", "h2"]
    assert r.skipped() == dict.fromkeys(
        HOSTS[2:], "not started: --max-fail 40%: 1 of 2 finished hosts failed"
    )


def test_max_fail_at_exactly_the_limit_goes_on():
    r = Rollout(HOSTS[:4], {"h1": (1.0, OK), "h2": (1.0, FAILED)}, fanout=1, max_fail=50)
    assert list(r.started()) == HOSTS[:4]  # 50 % is not more than 50 %
    assert r.skipped() == {}


def test_max_fail_lets_running_hosts_finish():
    ends = {"h1": (1.0, FAILED), "h2": (5.0, OK)}
    r = Rollout(HOSTS, ends, fanout=2, max_fail=0)
    assert list(r.started()) == ["h1", "h2"] and r.fake.stopped == []
    assert set(r.skipped()) == set(HOSTS[2:])


def test_sigint_starts_no_new_host_and_stops_the_running_ones():
    r = Rollout(HOSTS, {"h1": (10.0, OK)}, fanout=1, signals=[(1.0, signal.SIGINT)])
    assert list(r.started()) == ["h1"]
    assert [(h, cause.value) for _, h, cause, _ in r.fake.stopped] == [("h1", "interrupted")]
    assert r.outcome.exit_code == 130
    assert set(r.skipped()) == set(HOSTS[1:])


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
