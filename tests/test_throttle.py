"""The throttle: the pure gate by hypothesis, then real pressure on the real host."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.sampler import HostSampler, tree_usage
from corral.throttle import (
    SLACK,
    WEIGHT,
    Block,
    Host,
    Jobs,
    Limits,
    Refusal,
    Running,
    admit,
    weight,
)

from .conftest import REPO, db_rows

sys.path.insert(0, str(REPO / "scripts"))
from loadgen import Load  # noqa: E402

CPU_BUSY = """
end=$(( ${EPOCHREALTIME/./} + 500000 ))
while (( ${EPOCHREALTIME/./} < end )); do :; done
"""

workloads = st.sampled_from(sorted(WEIGHT))
runnings = st.lists(
    st.builds(
        Running,
        workloads,
        st.floats(0, 10),
        st.integers(0, 2**32),
        st.integers(0, 2**32),
        st.floats(0, 4),
    ),
    max_size=12,
)
hosts = st.builds(
    Host,
    st.none() | st.floats(0, 64),
    st.none() | st.integers(0, 2**36),
    st.just(2**36),
    st.none() | st.floats(0, 100),
    st.none() | st.floats(0, 100),
)
limits = st.builds(
    Limits,
    st.builds(Jobs, st.none() | st.integers(1, 16)),
    st.integers(1, 64),
    st.none() | st.floats(0.5, 64),
    st.integers(0, 2**34),
)


@given(runnings, limits, hosts, workloads, st.integers(0, 2**34))
def test_gate_never_exceeds_jobs_and_always_lets_one_start(running, limits, host, workload, memory):
    reason = admit(running, limits, host, workload, memory)
    if limits.jobs.fixed is not None and len(running) >= limits.jobs.fixed:
        assert reason is not None and reason.kind is Block.JOBS
    if not running:
        assert reason is None  # never stall on its own accounting
    assert reason is None or isinstance(reason, Refusal)


@given(limits, hosts, workloads, st.integers(1, 2**36))
def test_only_a_declared_memory_need_can_hold_the_first_module(limits, host, workload, need):
    reason = admit([], limits, host, workload, need, declared=True)
    if reason is not None:
        assert reason.kind is Block.MEMORY
        assert host.mem_available is not None
        assert host.mem_available - need < limits.min_free_mem


@given(runnings, limits, workloads)
def test_an_idle_host_never_delays_what_jobs_allow(running, limits, workload):
    idle = Host(0.0, 2**36, 2**36, 0.0, 0.0)
    reason = admit([r for r in running if r.age_s > 60], limits, idle, workload)
    assert reason is None or reason.kind in (Block.JOBS, Block.JOBS_AUTO)


def one_pass(running, limits, host, workload, load=1.0) -> int:
    """How many modules of `workload` the scheduler starts in one pass: each admitted one
    joins the running list at age 0 with its expected load, as the scheduler's batch does."""
    started = 0
    running = list(running)
    while started <= 64 and admit(running, limits, host, workload) is None:
        running.append(Running(workload, 0.0, 0, 0, load))
        started += 1
    return started


@given(runnings, limits, hosts, workloads, st.floats(0, 4))
def test_one_pass_starts_between_one_and_what_jobs_leave(running, limits, host, workload, load):
    started = one_pass(running, limits, host, workload, load)
    assert started >= 0
    if limits.jobs.fixed is not None:
        assert started <= max(0, limits.jobs.fixed - len(running))
    if not running:
        assert started >= 1


quiet = st.builds(Host, st.floats(0, 16), st.just(2**36), st.just(2**36), st.just(0.0))


@given(runnings, st.integers(1, 8), st.floats(0.5, 16), quiet, workloads)
def test_the_gate_uses_the_room_it_has_and_no_more(running, cpus, target, host, workload):
    """Load counts every module once, as itself: what is left below the target is room."""
    limits = Limits(Jobs(len(running) + 1), cpus, target)
    reason = admit(running, limits, host, workload)
    expected = host.others_avg + sum(r.load for r in running) + weight(workload)
    if not running or expected <= target:
        assert reason is None
    elif expected > target + SLACK:
        assert reason is not None and reason.kind is Block.LOAD


def converge(hogs: int, target: float, modules: int, seconds: float, jobs: int) -> float:
    """Scripted host: `hogs` always-runnable tasks, cpu modules busy `seconds` each, sampled
    every 0.2 s as the scheduler samples (each module measured as 1 runnable task from its
    first sample, the others' average exactly `hogs`). Returns the simulated makespan."""
    step, now, done = 0.2, 0.0, 0
    queue, running = modules, []  # running: start times
    limits = Limits(Jobs(jobs), 2, target)
    while done < modules:
        host = Host(float(hogs), 2**36, 2**36, 0.0, 0.0)
        seen = [Running("cpu", now - t, 0, 0, 1.0) for t in running]
        while queue and admit(seen, limits, host, "cpu") is None:
            seen.append(Running("cpu", 0.0, 0, 0, 1.0))
            running.append(now)
            queue -= 1
        assert len(running) <= max(1, int(target - hogs)), "above the room"
        now = round(now + step, 6)
        finished = [t for t in running if now - t >= seconds - 1e-9]
        running = [t for t in running if now - t < seconds - 1e-9]
        done += len(finished)
    return now


def test_the_gate_converges_on_its_target_on_a_scripted_host():
    """Two hogs, target 4: two modules at a time, from the first pass to the last."""
    assert converge(hogs=2, target=4, modules=6, seconds=2.0, jobs=6) == 6.0
    assert converge(hogs=0, target=4, modules=6, seconds=2.0, jobs=6) == 4.0
    assert converge(hogs=1, target=4, modules=6, seconds=2.0, jobs=6) == 4.0
    assert converge(hogs=2, target=1, modules=3, seconds=2.0, jobs=6) == 6.0  # one at a time


def test_sampler_reads_the_host_and_a_process_tree():
    sampler = HostSampler()
    try:
        first = sampler.sample()
        child = subprocess.Popen(["bash", "-c", "sleep 5 & sleep 5 & wait"])
        time.sleep(0.3)
        second = sampler.sample()
        usage = tree_usage(child.pid)
        child.kill()
        child.wait()
    finally:
        sampler.close()
    assert 0 < first.mem_available <= first.mem_total
    assert second.t > first.t and 0.0 <= second.cpu_busy <= 1.0
    assert usage.processes == 3 and usage.rss > 0


def last_samples(db) -> tuple[list[tuple], dict]:
    conn = sqlite3.connect(db)
    run_id = conn.execute("SELECT run_id FROM runs ORDER BY started DESC LIMIT 1").fetchone()[0]
    samples = conn.execute(
        "SELECT runnable, runnable_avg, running, gate FROM samples WHERE run_id = ? ORDER BY t",
        (run_id,),
    ).fetchall()
    mods = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT module, status, throttle_wait_s, throttle_reason FROM module_runs "
            "WHERE run_id = ?",
            (run_id,),
        )
    }
    conn.close()
    return samples, mods


def background(seconds: float = 1.0) -> float:
    """The host's runnable count averaged as the gate averages it (tau = 1 s), without
    corral: what the host does by itself."""
    sampler = HostSampler()
    try:
        sample = sampler.sample()
        for _ in range(int(seconds / 0.2)):
            time.sleep(0.2)
            sample = sampler.sample()
        return sample.runnable_avg
    finally:
        sampler.close()


@pytest.mark.whole_host  # (the host's load and memory are what it judges)
def test_cpu_hog_keeps_runnable_at_the_target_and_the_run_finishes(corral):
    """Two hogs and --max-load 3 leave room for one cpu module: corral runs them one at
    a time, each later one held back for the load, and the run finishes.

    Overshoot is judged as the gate and docs/throttle.md define it: the runnable count
    averaged over about a second may exceed the target by at most half a task. A
    snapshot is not judged: with the gate filled to its target (2 hogs + 1 module = 3),
    a snapshot over it caught corral's own short-lived tasks (found by scanning
    /proc/*/task for runnable tasks whenever the count was over: the posix_spawn child
    and the bash being readied in its cgroup for the next attempt, and corral's record
    writer thread), about 1 run in 5 with 2 of 11 samples over. The average is judged
    only when the host besides the hogs left room for a module before and after the
    run (on a shared host other work fills it, and the gate then rightly runs one
    module at a time, which the decisions below still check)."""
    for i in range(4):
        corral.module(f"busy{i}", "workload: cpu", CPU_BUSY)
    with Load(cpu=2, seconds=60):
        time.sleep(1.0)
        before = background()
        result = corral("run", "-j", "4", "--max-load", "3")
        after = background()
    assert result.code == 0, result.err
    assert "waiting: load" in result.out
    samples, mods = last_samples(corral.db)
    # The gate's decisions: never two modules at once (room for one; a busier host
    # only has less), every module but the first held back for the load.
    assert max(s[2] for s in samples) == 1, samples
    delayed = [m for m in mods.values() if m[1] > 0]
    assert len(delayed) == 3 and all(m[2].startswith("load") for m in delayed), mods
    if max(before, after) <= 3 - 1 + SLACK:  # the host left room for a module
        assert all(s[1] <= 3 + 2 * SLACK for s in samples), (before, after, samples)


@pytest.mark.whole_host  # (the host's load and memory are what it judges)
def test_module_needing_memory_waits_for_the_ballast_to_go(corral):
    corral.module("big", "memory: 1G", "echo ran")
    sampler = HostSampler()
    available = sampler.sample().mem_available
    sampler.close()
    keep = available - (1 << 30) - (256 << 20)  # fits now, not with 1 GiB of ballast
    with Load(mem=1 << 30) as load:
        proc = subprocess.Popen(
            corral.argv("run", "--json", "--min-free-mem", str(keep)),
            env=corral.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        errors: list[str] = []
        reader = threading.Thread(target=lambda: errors.append(proc.stderr.read()))
        reader.start()
        held = False  # until a sample says the gate holds it for memory (a loaded host
        end = time.monotonic() + 30  # can take a while just to start corral)
        while not held and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.05)
            with contextlib.suppress(sqlite3.Error):  # (connect would make a missing file)
                held = corral.db.exists() and bool(
                    db_rows(corral.db, "SELECT 1 FROM samples WHERE gate LIKE 'memory%'")
                )
        time.sleep(1.0)
        assert held and proc.poll() is None, "it started despite the ballast"
        load.release_mem()
        out = proc.stdout.read()
        proc.wait(30)
        reader.join()
    assert proc.returncode == 0, errors
    module = json.loads(out)["modules"][0]
    assert module["status"] == "ok"
    assert module["throttle_wait_s"] >= 1.0
    assert module["throttle_reason"].startswith("memory")


@pytest.mark.whole_host  # (the host's load and memory are what it judges)
def test_an_idle_host_costs_no_throttle_time(corral):
    # All four run together for 0.3 s whatever the host's pace (a barrier: each waits
    # until all have started), so a sample (every 0.2 s) sees four running.
    started = corral.modules.parent / "started"
    started.mkdir()
    barrier = (
        f"touch {started}/$CORRAL_MODULE; "
        f"for _ in {{1..1000}}; do (( $(ls {started} | wc -l) >= 4 )) && break; sleep 0.01; done"
    )
    for i in range(4):
        corral.module(f"s{i}", body=f"{barrier}; sleep 0.3")
    result = corral("run", "-j", "4", "--json")
    assert result.code == 0
    run = result.json()
    assert run["throttle_s"] == 0.0
    assert all(m["throttle_wait_s"] == 0.0 for m in run["modules"])
    samples, _ = last_samples(corral.db)
    assert samples and max(s[2] for s in samples) == 4


@pytest.mark.whole_host  # (the host's load and memory are what it judges)
def test_terminal_status_line_says_why_modules_wait(corral):
    import pexpect

    for i in range(3):
        corral.module(f"busy{i}", "workload: cpu", CPU_BUSY)
    with Load(cpu=2, seconds=60):
        time.sleep(1.0)
        command, *args = corral.argv("run", "-j", "3", "--max-load", "3")
        child = pexpect.spawn(
            command,
            args,
            env=corral.env,
            encoding="utf-8",
            timeout=30,
        )
        child.expect(r"running 1: busy\d [\d.]+s · waiting: load: ")
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 0
