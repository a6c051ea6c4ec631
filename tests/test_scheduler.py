"""The scheduler's specification: scripted histories through the real loop.

Every test replays a history through the real `Scheduler` with the scripted backend
(`corral.backends.fake`): attempt N of each module ends as its script says, at a
scripted time, on a clock that only the fake moves. No Bash, no sleeps: a history of
minutes takes microseconds, and each rule of the loop is checked by name.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.backends.dryrun import DryRunExecutor
from corral.backends.fake import Ends, FakeClock, FakeExecutor
from corral.config import load_config
from corral.events import ModuleSkipped, ModuleStarted, RunFinished, Sampled, Waiting
from corral.scheduler import MAX_BACKOFF, RunSettings, Scheduler, backoff, fail_fast
from corral.status import Status
from corral.throttle import Block, Host, Jobs, Refusal

from .modeled import modeled

GiB = 1 << 30


class History:
    """One scripted run: what the fake saw and what the scheduler said."""

    def __init__(self, outcome: RunFinished, fake: FakeExecutor, events: list):
        self.outcome, self.fake, self.events = outcome, fake, events

    def status(self, name: str) -> Status:
        return next(m.status for m in self.outcome.modules if m.name == name)

    def summary(self, name: str):
        return next(m for m in self.outcome.modules if m.name == name)

    def starts(self, name: str) -> list[float]:
        return [t for t, n, _ in self.fake.started if n == name]

    def order(self) -> list[str]:
        return [n for _, n, _ in self.fake.started]

    def of(self, kind) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def replay(
    modules: dict[str, dict],
    script: dict[str, list[Ends]] | None = None,
    signals: list[tuple[float, int]] = (),
    jobs: int | None = 4,
    fake: dict | None = None,
    **settings,
) -> History:
    """Run `modules` (name -> header fields) through the real loop on the fake."""
    graph, selection = modeled(**modules)
    clock = FakeClock()
    executor = FakeExecutor(clock, script or {}, list(signals), **(fake or {}))
    events: list = []
    run_settings = RunSettings("test-run", Jobs(jobs), **settings)
    with executor:
        outcome = Scheduler(graph, selection, run_settings, executor, events.append, clock).run()
    return History(outcome, executor, events)


# dependencies and skips ------------------------------------------------------------------


def test_modules_start_when_what_they_wait_on_has_finished():
    h = replay(
        {"a": {}, "b": {"requires": ("a",)}, "c": {"after": ("a",)}},
        {"a": [Ends(2.0)], "b": [Ends(1.0)]},
    )
    assert h.starts("a") == [0.0] and h.starts("b") == [2.0] and h.starts("c") == [2.0]
    assert h.outcome.status == Status.OK and h.outcome.exit_code == 0
    assert h.outcome.makespan_s == 3.0


def test_a_failure_skips_requirers_transitively_and_fails_the_run():
    h = replay(
        {"a": {}, "b": {"requires": ("a",)}, "c": {"requires": ("b",)}, "d": {"wants": ("a",)}},
        {"a": [Ends(1.0, exit=3)]},
    )
    assert h.status("a") == Status.FAILED
    assert h.summary("b").reason == "requires a, which failed"
    assert h.summary("c").reason == "requires b, which was skipped"
    assert h.status("d") == Status.OK  # a want is not a requirement
    assert [e.name for e in h.of(ModuleSkipped)] == ["b", "c"]
    assert h.outcome.exit_code == 1 and h.outcome.status == Status.FAILED


def test_a_module_that_cannot_start_fails_and_skips_its_requirers():
    h = replay({"a": {}, "b": {"requires": ("a",)}}, fake={"fail_start": {"a"}})
    assert h.status("a") == Status.FAILED
    assert h.summary("a").last.reason.startswith("cannot start: ")
    assert h.status("b") == Status.SKIPPED


def test_a_module_the_place_can_never_start_fails_at_once_and_the_rest_runs():
    """A declared need above the host's memory: failed at the run's start, never
    retried, never given to the gate (which would hold it for ever), requirers skipped."""
    h = replay(
        {
            "first": {},
            "huge": {"retries": 3, "memory": 100 * GiB, "requires": ("first",)},
            "needs": {"requires": ("huge",)},
            "wants": {"wants": ("huge",)},
        },
        {"first": [Ends(5.0)]},
        fake={"host": Host(mem_available=GiB, mem_total=2 * GiB)},
        never={"huge": "memory: 100G is more than this host's 2G"},
    )
    assert h.status("huge") == Status.FAILED and "huge" not in h.order()
    assert len(h.summary("huge").attempts) == 1  # no retry of what can never start
    assert h.summary("huge").last.reason == "cannot start: memory: 100G is more than this host's 2G"
    assert h.summary("needs").reason == "requires huge, which failed"
    assert h.starts("wants") == [0.0]  # at once, not after `first`: huge's end is known
    assert h.status("first") == Status.OK and h.outcome.exit_code == 1
    assert h.of(Waiting) == []  # the gate never held anything


def test_without_the_verdict_the_gate_holds_that_module_for_ever():
    """The control: the same need handed to the gate waits (here ten minutes, ten times
    the long-wait notice, until a SIGTERM ends the run)."""
    h = replay(
        {"huge": {"memory": 100 * GiB}},
        signals=[(600.0, signal.SIGTERM)],
        fake={"host": Host(mem_available=GiB, mem_total=2 * GiB)},
    )
    assert h.fake.started == [] and h.of(Waiting)[0].modules == ["huge"]
    assert h.summary("huge").reason == "not started: run interrupted by SIGTERM"


# --jobs ----------------------------------------------------------------------------------


def test_jobs_caps_how_many_run_at_once():
    h = replay({n: {} for n in "abcde"}, jobs=2)
    assert sorted(h.fake.started) == [
        (0.0, "a", 1),
        (0.0, "b", 1),
        (1.0, "c", 1),
        (1.0, "d", 1),
        (2.0, "e", 1),
    ]


# retries and backoff ---------------------------------------------------------------------


def test_backoff_doubles_and_is_capped():
    assert [backoff(n, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff(30, 1.0) == MAX_BACKOFF


def test_a_failed_attempt_is_retried_after_a_growing_delay():
    h = replay(
        {"a": {"retries": 2}},
        {"a": [Ends(1.0, exit=1), Ends(1.0, exit=1), Ends(1.0)]},
        retry_backoff=1.0,
    )
    # ends at 1, waits 1; ends at 3, waits 2; the third attempt succeeds
    assert h.starts("a") == [0.0, 2.0, 5.0]
    assert h.status("a") == Status.OK
    attempts = h.summary("a").attempts
    assert [a.retry_in for a in attempts] == [1.0, 2.0, None]


def test_retries_exhausted_is_a_failure_and_its_requirers_wait_until_then():
    h = replay(
        {"a": {"retries": 1}, "b": {"requires": ("a",)}},
        {"a": [Ends(1.0, exit=1), Ends(1.0, exit=2)]},
        retry_backoff=0.5,
    )
    assert h.starts("a") == [0.0, 1.5]
    assert h.status("a") == Status.FAILED and h.summary("a").last.exit_code == 2
    assert h.status("b") == Status.SKIPPED
    assert h.starts("b") == []


def test_a_timeout_is_retried_like_a_failure():
    h = replay(
        {"a": {"retries": 1, "timeout": 2.0}},
        {"a": [Ends(10.0), Ends(1.0)]},
        retry_backoff=1.0,
    )
    first, second = h.summary("a").attempts
    assert first.status == Status.TIMEOUT and first.signal == signal.SIGTERM
    assert h.starts("a") == [0.0, 3.0]
    assert second.status == Status.OK


def test_a_timeout_skips_requirers_with_timed_out():
    h = replay({"a": {"timeout": 1.0}, "b": {"requires": ("a",)}}, {"a": [Ends(5.0)]})
    assert h.status("a") == Status.TIMEOUT
    assert h.summary("b").reason == "requires a, which timed out"


# fail-fast -------------------------------------------------------------------------------


def test_fail_fast_lets_running_modules_finish_and_starts_nothing_new():
    h = replay(
        {"bad": {}, "slow": {}, "later": {"after": ("bad", "slow")}},
        {"bad": [Ends(1.0, exit=1)], "slow": [Ends(3.0)]},
        jobs=2,
        stop_when=fail_fast,
    )
    assert h.status("slow") == Status.OK  # not stopped
    assert h.fake.stopped == []
    assert h.summary("later").reason == "not started: --fail-fast after bad failed"
    assert h.outcome.exit_code == 1


def test_fail_fast_ends_a_pending_retry_as_it_is():
    h = replay(
        {"flaky": {"retries": 3}, "bad": {}},
        {"flaky": [Ends(1.0, exit=1)], "bad": [Ends(2.0, exit=1)]},
        stop_when=fail_fast,
        retry_backoff=10.0,
    )
    assert h.starts("flaky") == [0.0]  # its retry was due at 11, after bad failed
    assert h.status("flaky") == Status.FAILED


def test_without_fail_fast_the_rest_still_runs():
    h = replay(
        {"bad": {}, "other": {"after": ("bad",)}},
        {"bad": [Ends(1.0, exit=1)]},
    )
    assert h.status("other") == Status.OK and h.outcome.exit_code == 1


# stop policies ---------------------------------------------------------------------------


def test_a_stop_policy_sees_each_settled_module_and_its_reason_skips_the_rest():
    seen = []

    def two_failures(name, status):
        seen.append((name, status))
        failed = [n for n, s in seen if s == Status.FAILED]
        return f"not started: {', '.join(failed)} failed" if len(failed) >= 2 else None

    h = replay(
        {"a": {}, "b": {}, "c": {"after": ("a", "b")}, "d": {"after": ("c",)}},
        {"a": [Ends(1.0, exit=1)], "b": [Ends(2.0, exit=1)]},
        jobs=2,
        stop_when=two_failures,
    )
    assert seen == [("a", Status.FAILED), ("b", Status.FAILED)]  # skipped ones are not told
    assert h.summary("c").reason == h.summary("d").reason == "not started: a, b failed"
    assert h.order() == ["a", "b"] and h.fake.stopped == []


def test_a_stop_policy_that_never_answers_stops_nothing():
    # Control for the test above: the same history, a policy that says None.
    h = replay(
        {"a": {}, "b": {}, "c": {"after": ("a", "b")}},
        {"a": [Ends(1.0, exit=1)], "b": [Ends(2.0, exit=1)]},
        jobs=2,
        stop_when=lambda name, status: None,
    )
    assert h.status("c") == Status.OK


def test_a_stop_policy_is_not_asked_once_a_signal_stopped_the_run():
    asked = []
    h = replay(
        {"a": {}, "b": {"after": ("a",)}},
        {"a": [Ends(2.0)]},
        signals=[(1.0, signal.SIGHUP)],
        stop_when=lambda name, status: asked.append(name),
    )
    assert asked == [] and h.summary("b").reason == "not started: corral got SIGHUP"


# signals ---------------------------------------------------------------------------------


def test_sighup_starts_nothing_new_and_lets_running_modules_finish():
    h = replay(
        {"a": {}, "b": {"after": ("a",)}},
        {"a": [Ends(2.0)]},
        signals=[(1.0, signal.SIGHUP)],
    )
    assert h.status("a") == Status.OK and h.fake.stopped == []
    assert h.summary("b").reason == "not started: corral got SIGHUP"
    assert h.outcome.exit_code == 128 + signal.SIGHUP
    assert h.outcome.status == Status.INTERRUPTED


def test_sigterm_stops_running_modules_as_interrupted():
    h = replay(
        {"a": {}, "b": {"after": ("a",)}},
        {"a": [Ends(10.0)]},
        signals=[(1.0, signal.SIGTERM)],
    )
    assert h.fake.stopped == [(1.0, "a", Status.INTERRUPTED, False)]
    assert h.status("a") == Status.INTERRUPTED
    assert h.summary("b").reason == "not started: run interrupted by SIGTERM"
    assert h.outcome.exit_code == 143


def test_a_second_sigint_kills_at_once():
    h = replay(
        {"a": {}},
        {"a": [Ends(100.0)]},
        signals=[(1.0, signal.SIGINT), (2.0, signal.SIGINT)],
        fake={"obeys_term": False, "grace": 30.0},
    )
    assert h.fake.stopped == [
        (1.0, "a", Status.INTERRUPTED, False),
        (2.0, "a", Status.INTERRUPTED, True),
    ]
    assert h.summary("a").last.end - h.summary("a").last.start == 2.0
    assert h.outcome.exit_code == 130


def test_a_signal_ends_a_pending_retry():
    h = replay(
        {"a": {"retries": 5}},
        {"a": [Ends(1.0, exit=1)]},
        signals=[(1.5, signal.SIGTERM)],
        retry_backoff=10.0,
    )
    assert h.starts("a") == [0.0]
    assert h.status("a") == Status.FAILED and h.outcome.exit_code == 143


# lock pools ------------------------------------------------------------------------------


def test_a_lock_is_held_by_one_module_at_a_time():
    h = replay({n: {"locks": ("db",)} for n in "abc"}, jobs=4)
    assert sorted(t for t, _, _ in h.fake.started) == [0.0, 1.0, 2.0]


def test_a_pool_admits_as_many_as_its_size():
    h = replay({n: {"locks": ("net",)} for n in "abcd"}, jobs=4, pools={"net": 2})
    assert sorted(t for t, _, _ in h.fake.started) == [0.0, 0.0, 1.0, 1.0]


def test_a_module_takes_all_its_locks_or_none():
    h = replay(
        {"ab": {"locks": ("a", "b")}, "a": {"locks": ("a",)}, "b": {"locks": ("b",)}},
        {"a": [Ends(2.0)]},
    )
    assert h.starts("ab") == [2.0]  # b alone ended at 1, but a held "a" until 2
    assert h.summary("ab").last.lock_wait_s == 2.0


def test_pool_sizes_come_from_the_config_file(tmp_path):
    (tmp_path / "modules").mkdir()
    (tmp_path / "corral.yaml").write_text("pools:\n  net: 2\n")
    assert load_config((str(tmp_path / "modules"),)).pools == {"net": 2}


def test_a_lock_no_pool_can_grant_is_a_bug_and_says_stuck():
    with pytest.raises(RuntimeError, match=r"stuck: .*this is a bug"):
        replay({"a": {"locks": ("never",)}}, pools={"never": 0})


# the gate --------------------------------------------------------------------------------


def test_the_gate_holds_back_what_the_place_cannot_take_and_says_why():
    # --jobs auto on one CPU: cpu-bound modules weigh 1 each, so one at a time
    h = replay(
        {"x": {"workload": "cpu"}, "y": {"workload": "cpu"}},
        {"x": [Ends(2.0)], "y": [Ends(2.0)]},
        jobs=None,
        fake={"cpus": 1},
    )
    assert h.starts("y") == [2.0]
    refusals = [e.reason for e in h.of(Waiting) if e.reason is not None]
    assert refusals and refusals[0].kind is Block.JOBS_AUTO
    held = h.summary("y").last
    assert isinstance(held.throttle_reason, Refusal) and held.throttle_wait_s == 2.0


def test_a_declared_need_the_host_cannot_meet_waits_even_when_nothing_runs():
    h = replay(
        {"big": {"memory": 4 * GiB}},
        signals=[(3.0, signal.SIGTERM)],
        fake={"host": Host(0.0, 1 * GiB, 8 * GiB, 0.0, 0.0)},
        min_free_mem=0,
    )
    assert h.fake.started == []
    waiting = h.of(Waiting)[0]
    assert waiting.reason.kind is Block.MEMORY and waiting.modules == ["big"]
    assert h.summary("big").reason == "not started: run interrupted by SIGTERM"


def test_measured_load_of_running_modules_holds_back_a_newcomer():
    h = replay(
        {"hog": {}, "next": {}},
        {"hog": [Ends(5.0, load=2.0)]},
        jobs=4,
        max_load=2.0,
        fake={"host": Host(2.0, 8 * GiB, 8 * GiB, 0.0, 0.0), "cpus": 2},
    )
    # the host already runs 2 of --max-load 2: next waits until nothing runs
    assert h.starts("hog") == [0.0] and h.starts("next") == [5.0]
    assert h.summary("next").last.throttle_reason.kind is Block.LOAD


def test_a_closed_gate_is_asked_once_per_workload_and_every_module_behind_it_waits(
    monkeypatch,
):
    """With hundreds of ready modules and the host above --max-load, each pass asks the
    gate once per workload, not once per module; the modules it did not look at are
    recorded as waiting on the gate all the same, for their workload's reason."""
    import corral.admission

    calls = []

    def counted(*args, **kw):
        calls.append(args[3])
        return admit(*args, **kw)

    admit = corral.admission.admit
    monkeypatch.setattr(corral.admission, "admit", counted)
    n = 300
    h = replay(
        {f"m{i:03d}": {} for i in range(n)},
        jobs=4,
        max_load=2.0,
        fake={"host": Host(5.0, 8 * GiB, 8 * GiB, 0.0, 0.0)},
    )
    # one at a time (nothing running: the gate lets one start), in order
    assert h.order() == [f"m{i:03d}" for i in range(n)]
    # a pass per sample (5 in each module's second) and per exit, one question each;
    # asking every ready module in every pass was about 6 * n * n / 2
    assert len(calls) <= 7 * n
    waited = [h.summary(f"m{i:03d}").last for i in range(1, n)]
    assert all(a.throttle_reason.kind is Block.LOAD for a in waited)
    assert [a.throttle_wait_s for a in waited] == [float(i) for i in range(1, n)]


def test_a_module_held_behind_a_closed_gate_records_the_gate_s_latest_reason(monkeypatch):
    """The gate's reason changes while modules wait (the host's load moves): each module
    records the reason in force when it was last held, also those no pass looked at."""
    from corral.backends import fake as fake_backend

    sample = fake_backend.FakeExecutor.sample

    def moving(self):  # the host's other load: 5 until t=1.5, then 7, from t=3.5 none
        now = self.clock.now
        load = 5.0 if now < 1.5 else 7.0 if now < 3.5 else 0.0
        self.host = Host(load, 8 * GiB, 8 * GiB, 0.0, 0.0)
        return sample(self)

    monkeypatch.setattr(fake_backend.FakeExecutor, "sample", moving)
    h = replay({f"m{i}": {} for i in range(6)}, jobs=4, max_load=2.0)
    # one at a time while the host is busy; once it is idle the rest start in one pass
    assert [h.starts(f"m{i}") for i in range(4)] == [[0.0], [1.0], [2.0], [3.0]]
    assert 3.5 <= h.starts("m4")[0] == h.starts("m5")[0] < 4.0
    reasons = [h.summary(f"m{i}").last.throttle_reason.detail for i in range(1, 6)]
    assert reasons[0].startswith("5.0 other")
    # m5 was first held at t=0 (for 5.0) and never looked at again before it started
    assert reasons[-1].startswith("7.0 other")


def test_a_workload_the_gate_refuses_does_not_hold_back_a_lighter_one():
    h = replay(
        {"c1": {"workload": "cpu"}, "c2": {"workload": "cpu"}, "i1": {"workload": "io"}},
        jobs=4,
        max_load=2.0,
        fake={"host": Host(0.5, 8 * GiB, 8 * GiB, 0.0, 0.0)},
    )
    # c1 counts 1 before it is measured: 0.5 + 1 + 1 > 2 for c2, 0.5 + 1 + 0.5 for i1
    assert h.starts("c1") == [0.0] and h.starts("i1") == [0.0] and h.starts("c2") == [1.0]
    assert h.summary("c2").last.throttle_reason.kind is Block.LOAD


# the dry run is the same loop on another backend ----------------------------------------


def test_the_dry_run_backend_drives_the_same_loop_in_dependency_order():
    graph, selection = modeled(a={}, b={"requires": ("a",)}, c={"after": ("b",)}, d={})
    events: list = []
    with DryRunExecutor() as executor:
        settings = RunSettings("dry", Jobs(1), dry_run=True)
        outcome = Scheduler(graph, selection, settings, executor, events.append).run()
    started = [e.name for e in events if isinstance(e, ModuleStarted)]
    assert started.index("a") < started.index("b") < started.index("c")
    assert outcome.status == Status.OK and not any(isinstance(e, Sampled) for e in events)


def test_every_backend_implements_the_whole_seam():
    import importlib

    from corral.backends import BACKENDS
    from corral.executor import Attempt, Executor, Spec

    spec = Spec("m", "/modules/m.sh", 1, {})
    for backend in (DryRunExecutor(), FakeExecutor(FakeClock())):
        assert isinstance(backend, Executor)
        with backend:
            assert isinstance(backend.start(spec), Attempt)
    for name, module in BACKENDS.items():
        assert callable(importlib.import_module(module).open_executor), name
    local = importlib.import_module(BACKENDS["local"]).LocalExecutor
    members = {"start", "wait", "stop", "sample", "running", "host", "sampling_cpu_s"}
    assert members <= set(dir(local))


def test_the_loop_knows_no_backend_and_no_fleet():
    """The seam holds in the imports: the scheduler and the admission import the seam's
    types, never a backend, the fleet, the sampler or /proc readers (a fleet run is the
    same loop on the fleet backend)."""
    import ast

    import corral

    root = Path(corral.__file__).parent
    banned = ("corral.backends", "corral.fleet", "corral.sampler", "corral.procfs")
    for name in ("scheduler.py", "admission.py", "graph.py"):
        tree = ast.parse((root / name).read_text())
        imported = {
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert not {m for m in imported if m and m.startswith(banned)}, name


# every rule at once, on random graphs -----------------------------------------------------


@st.composite
def histories(draw):
    """A random DAG (requires, wants, locks), a script of ends, and --jobs."""
    n = draw(st.integers(1, 12))
    modules, script = {}, {}
    for i in range(n):
        earlier = [f"m{j}" for j in range(i)]
        pick = st.lists(st.sampled_from(earlier), unique=True, max_size=3) if earlier else None
        requires = tuple(draw(pick)) if pick is not None else ()
        wants = tuple(w for w in (draw(pick) if pick is not None else ()) if w not in requires)
        locks = tuple(draw(st.lists(st.sampled_from(["a", "b"]), unique=True, max_size=2)))
        modules[f"m{i}"] = {"requires": requires, "wants": wants, "locks": locks}
        script[f"m{i}"] = [
            Ends(draw(st.sampled_from([0.5, 1.0, 2.5])), exit=draw(st.sampled_from([0, 0, 1])))
        ]
    return modules, script, draw(st.integers(1, 4))


@settings(max_examples=100, deadline=None)
@given(histories())
def test_random_histories_keep_every_invariant(case):
    modules, script, jobs = case
    h = replay(modules, script, jobs=jobs, fake={"measures": False})
    expected: dict[str, Status] = {}
    for name, fields in modules.items():
        if any(expected[r] != Status.OK for r in fields["requires"]):
            expected[name] = Status.SKIPPED
        else:
            expected[name] = Status.FAILED if script[name][0].exit else Status.OK
    assert {m.name: m.status for m in h.outcome.modules} == expected
    ran = {m.name: m.last for m in h.outcome.modules if m.last is not None}
    assert set(ran) == {n for n, s in expected.items() if s != Status.SKIPPED}
    assert all(len(m.attempts) <= 1 for m in h.outcome.modules)
    for name, result in ran.items():
        for dep in modules[name]["requires"] + modules[name]["wants"]:
            if dep in ran:
                assert result.start >= ran[dep].end, f"{name} started before {dep} ended"
    spans = [(r.start, r.end) for r in ran.values()]
    assert max_overlap(spans) <= jobs
    for lock in ("a", "b"):
        held = [(r.start, r.end) for n, r in ran.items() if lock in modules[n]["locks"]]
        assert max_overlap(held) <= 1, f"lock {lock} was shared"
    assert h.outcome.exit_code == (0 if set(expected.values()) == {Status.OK} else 1)


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one instant (an end at t closes before a start at t)."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


# bounds (no silent hang) -----------------------------------------------------------------


def test_a_deadline_skips_what_has_not_started_and_stops_what_runs_as_timed_out():
    h = replay(
        {"a": {}, "long": {}, "after": {"requires": ("long",)}},
        {"a": [Ends(1.0)], "long": [Ends(600.0)]},
        deadline=30.0,
    )
    assert h.status("a") == Status.OK and h.status("long") == Status.TIMEOUT
    assert h.summary("long").last.reason == "stopped: the run's deadline passed"
    assert h.status("after") == Status.SKIPPED
    assert h.summary("after").reason == "not started: the run's deadline (30s) passed"
    assert h.outcome.exit_code == 1


def test_a_deadline_counts_from_when_the_run_began_a_wait_for_the_lock_included():
    """The run began 25 s before the scheduler did (it waited for the run lock): a 30 s
    deadline passes 5 s in, not 30 s (the test above is the control: begun at 0)."""
    h = replay(
        {"a": {}, "long": {}, "after": {"requires": ("long",)}},
        {"a": [Ends(1.0)], "long": [Ends(600.0)]},
        deadline=30.0,
        begun=-25.0,
    )
    assert h.status("a") == Status.OK and h.status("long") == Status.TIMEOUT
    assert h.summary("long").last.end - h.summary("long").last.start < 30.0
    assert h.summary("after").reason == "not started: the run's deadline (30s) passed"


def test_a_deadline_already_passed_starts_nothing():
    h = replay({"a": {}, "b": {"requires": ("a",)}}, deadline=5.0, begun=-6.0)
    assert h.order() == []
    assert h.summary("a").reason == "not started: the run's deadline (5s) passed"
    assert h.status("b") == Status.SKIPPED and h.outcome.exit_code == 1


def test_without_a_deadline_the_long_module_runs_to_its_end():
    h = replay({"long": {}}, {"long": [Ends(600.0)]})
    assert h.status("long") == Status.OK and h.outcome.makespan_s == 600.0
