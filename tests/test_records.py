"""Per-attempt figures held against oracles the test computes itself.

Every shape runs twice: once through a real `corral run`, once by the test in a cgroup
of its own (the oracle: the same module, entered the same way, read from the kernel's
files by this file's own code). Where the host cannot measure a figure, corral must
record NULL with no source, and the test says which host feature is missing.

Host features: cgroup v2 `cpu.stat` (any writable v2 tree), a memory figure (v2
`memory.peak` with the memory controller, or the v1 `memory` controller of a hybrid
host), an I/O figure (v2 `io.stat` with the io controller; elsewhere the waited-for
tree's rusage).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from .conftest import db_rows

CPU_SLACK = 0.02  # seconds: below this, CPU figures are scheduler-tick noise
# bytes: the kernel charges memory to a cgroup in batches of 64 pages kept per CPU, so
# two runs of one module may differ by that much on each CPU
MEMORY_SLACK = 64 * os.sysconf("SC_PAGE_SIZE") * os.cpu_count()
# Every module ends by writing what getrusage says of it and of everything it waited for
# (bash's `times`): the CPU oracle of that very execution.
TIMES = '\ntimes > "$OUT/$CORRAL_ATTEMPT.$CORRAL_MODULE.times"'

SHAPES = {
    "noop": "true",
    "nap": "sleep 0.05",
    "big_1s": "python3 -c 'import time; x = bytearray(300 << 20); time.sleep(1)'",
    "big_short": "python3 -c 'import time; x = bytearray(300 << 20); time.sleep(0.1)'",
    # four 100 MB children, all alive at once for a moment (a barrier on files), briefly
    "burst": (
        "for i in 1 2 3 4; do python3 -c '\n"
        "import os, sys, time\n"
        "x = bytearray(100 << 20)\n"
        'open(sys.argv[1] + sys.argv[2], "w").close()\n'
        'while len([f for f in os.listdir(sys.argv[1]) if f.startswith("b")]) < 4: '
        "time.sleep(0.005)\n"
        'time.sleep(0.05)\' "$OUT/$CORRAL_ATTEMPT.burst/" b$i & done; wait'
    ),
    # a background child that burns 1 s of CPU after its module has exited, and says
    # how much it burned in all: a bash that waits for it and then writes `times` (its
    # own and the waited-for python's, start to exit: its getrusage before it exits
    # missed its teardown, 7-10 % of the cgroup's figure)
    "late": (
        "(setsid bash -c 'python3 -c \"import time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 1: pass\n"
        '"; times > "$1"\' late "$OUT/$CORRAL_ATTEMPT.late.child" &)'
    ),
    # 2,000 sleeping children, all alive together before they are stopped
    "crowd": "for i in $(seq 2000); do sleep 60 & done; kill $(jobs -p); wait || true",
    "dio": (
        'dd if=/dev/zero of="$OUT/dio.$CORRAL_ATTEMPT" bs=1M count=200 oflag=direct status=none; '
        'dd if="$OUT/dio.$CORRAL_ATTEMPT" of=/dev/null bs=1M iflag=direct status=none; '
        'rm -f "$OUT/dio.$CORRAL_ATTEMPT"'
    ),
}


def own_cgroup(kind: str) -> str | None:
    """This process's cgroup directory in hierarchy `kind` ('' for v2), or None."""
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fs, _, opts = (right.split() + ["", "", ""])[:3]
            if fs == "cgroup2":
                mounts.setdefault("", left.split()[4])
            elif fs == "cgroup" and kind and kind in opts.split(","):
                mounts.setdefault(kind, left.split()[4])
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.strip().split(":", 2)
            mine = (controllers == "" and kind == "") or kind in controllers.split(",")
            if mine and kind in mounts:
                return os.path.join(mounts[kind], path.lstrip("/"))
    return None


def read(path) -> str:
    with open(path) as f:
        return f.read()


class Oracle:
    """A cgroup (v2, plus v1 memory where that is where memory is counted) of the test."""

    def __init__(self, name: str):
        self.dirs = {}
        for kind in ("", "memory"):
            base = own_cgroup(kind)
            if base is None:
                continue
            path = os.path.join(base, f"oracle-{os.getpid()}-{name}")
            try:
                os.mkdir(path)
            except OSError:
                continue
            self.dirs[kind] = path
        if "" not in self.dirs:
            pytest.skip("needs a writable cgroup v2 tree for the oracle (cpu.stat)")

    def start(self, module, env) -> subprocess.Popen:
        enter = "; ".join(f"echo $$ > {d}/cgroup.procs" for d in self.dirs.values())
        return subprocess.Popen(
            # entered as corral enters an attempt: a bash that entered its cgroups execs
            # the module's bash (whose image and the one it replaces both count, briefly)
            ["bash", "-c", f'{enter}; exec bash "$0"', str(module)],
            env=env,
            cwd=module.parent,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )

    def finish(self, proc) -> dict:
        """Wait until everything the module started is gone; its cgroup's figures."""
        assert proc.wait(120) == 0
        v2 = self.dirs[""]
        end = time.monotonic() + 60
        while "populated 1" in read(f"{v2}/cgroup.events"):
            assert time.monotonic() < end
            time.sleep(0.01)
        stat = dict(line.split() for line in read(f"{v2}/cpu.stat").splitlines())
        figures = {"cpu": (int(stat["user_usec"]) + int(stat["system_usec"])) / 1e6}
        for kind, name in (("", "memory.peak"), ("memory", "memory.max_usage_in_bytes")):
            path = os.path.join(self.dirs.get(kind, "/nonexistent"), name)
            if os.path.exists(path):
                figures["peak"] = int(read(path))
                break
        return figures

    def close(self):
        for path in self.dirs.values():
            os.rmdir(path)


@pytest.fixture(scope="module")
def measured(request, tmp_path_factory):
    """One corral run of every shape side by side, and every shape in the oracle; alone
    on the host (2,000 processes, 300 MB at once: what other tests must not share)."""
    from .conftest import Corral, whole_host, write_module

    root = tmp_path_factory.mktemp("records")
    modules = root / "modules"
    out = root / "out"
    out.mkdir()
    for name, body in SHAPES.items():
        write_module(modules, name, body=body + TIMES)
    for attempt in ("1", "o"):
        (out / f"{attempt}.burst").mkdir()  # the burst's barrier
    (root / "corral.yaml").write_text("grace: 30s\n")
    env = {**os.environ, "OUT": str(out)}
    corral = Corral(modules, root / "db.sqlite", env)
    with whole_host(request.config, tmp_path_factory, alone=True):
        oracles = {name: Oracle(name) for name in SHAPES}
        try:
            started = {
                name: oracle.start(
                    modules / f"{name}.sh", {**env, "CORRAL_ATTEMPT": "o", "CORRAL_MODULE": name}
                )
                for name, oracle in oracles.items()
            }
            result = corral("run", "-j", "8", "--max-load", "1000", "--json")
            assert result.code == 0, result.err
            figures = {name: oracles[name].finish(proc) for name, proc in started.items()}
        finally:
            for oracle in oracles.values():
                oracle.close()
    run_id = result.json()["run_id"]
    rows = {
        r["module"]: r
        for r in db_rows(corral.db, "SELECT * FROM module_runs WHERE run_id = ?", run_id)
    }
    for name in SHAPES:  # the CPU oracle: getrusage of the module and its waited-for tree
        figures[name]["rusage"] = rusage_of(out / f"1.{name}.times")
    figures["late"]["rusage"] += rusage_of(out / "1.late.child")
    return rows, figures, out


def rusage_of(path) -> float:
    """CPU seconds in bash's `times` output: the shell's and its children's."""
    total = 0.0
    for field in path.read_text().split():
        minutes, _, seconds = field.rstrip("s").partition("m")
        total += int(minutes) * 60 + float(seconds)
    return total


def memory_feature(rows) -> str | None:
    """None when this host gives a memory figure per attempt; else what is missing."""
    if rows["noop"]["mem_source"] == "cgroup":
        return None
    return "a memory figure per cgroup (v2 memory controller or v1 memory hierarchy)"


@pytest.mark.parametrize("name", list(SHAPES))
def test_cpu_is_the_whole_trees_within_10_percent(measured, name):
    rows, oracles, _ = measured
    row = rows[name]
    assert row["cpu_source"] == "cgroup"
    cpu = row["cpu_user_s"] + row["cpu_sys_s"]
    assert cpu == pytest.approx(oracles[name]["rusage"], rel=0.10, abs=CPU_SLACK)


def test_cpu_of_a_child_that_outlives_its_module_is_counted(measured):
    rows, oracles, _ = measured
    row = rows["late"]
    assert oracles["late"]["rusage"] >= 1.0  # the child's own count is in the oracle
    assert row["cpu_user_s"] + row["cpu_sys_s"] >= 1.0


@pytest.mark.parametrize("name", list(SHAPES))
def test_peak_memory_is_the_trees_within_10_percent_or_unknown(measured, name):
    rows, oracles, _ = measured
    row = rows[name]
    missing = memory_feature(rows)
    if missing:
        assert row["peak_rss_bytes"] is None or row["mem_source"] == "sampled"
        pytest.skip(f"this host lacks {missing}")
    assert row["mem_source"] == "cgroup"
    assert row["peak_rss_bytes"] == pytest.approx(oracles[name]["peak"], rel=0.10, abs=MEMORY_SLACK)


def test_bursts_between_samples_are_in_the_peak(measured):
    rows, _, _ = measured
    if memory_feature(rows):
        pytest.skip(f"this host lacks {memory_feature(rows)}")
    assert rows["burst"]["peak_rss_bytes"] >= 4 * 100 << 20
    assert rows["big_short"]["peak_rss_bytes"] >= 300 << 20


def test_shared_pages_count_once(measured):
    """2,000 sleeping children: each maps the same libc and sleep binary."""
    rows, _, _ = measured
    if memory_feature(rows):
        pytest.skip(f"this host lacks {memory_feature(rows)}")
    assert rows["crowd"]["peak_rss_bytes"] < 1 << 30  # an RSS sum would be 2.5-3 GB


def test_direct_io_is_counted(measured):
    rows, _, _ = measured
    row = rows["dio"]
    assert row["io_source"] in ("cgroup", "rusage")
    assert row["write_bytes"] == pytest.approx(200 << 20, rel=0.10)
    assert row["read_bytes"] == pytest.approx(200 << 20, rel=0.10)


def test_duration_matches_the_modules_own_clock(corral):
    """Alone, so the host's load does not stretch bash's start and exit."""
    t0, t1 = corral.modules.parent / "t0", corral.modules.parent / "t1"
    corral.module(
        "nap", body=f'echo "$EPOCHREALTIME" > {t0}; sleep 0.05; echo "$EPOCHREALTIME" > {t1}'
    )
    result = corral("run", "--json")
    assert result.code == 0, result.err
    inside = float(t1.read_text()) - float(t0.read_text())
    duration = result.json()["modules"][0]["duration_s"]
    # corral's duration also holds bash's start and exit: a few ms on an idle host
    assert inside <= duration <= inside + 0.05


def test_a_short_attempt_is_never_recorded_as_zero(measured):
    rows, _, _ = measured
    for name in ("noop", "nap"):
        row = rows[name]
        assert row["peak_rss_bytes"] is None or row["peak_rss_bytes"] > 0
        assert (row["peak_rss_bytes"] is None) == (row["mem_source"] is None)


def without_address_space() -> int | None:
    """A live process with no memory of its own (a kernel thread), as an exiting
    process is for an instant; None when this host shows none."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status", "rb") as f:
                    status = f.read()
            except OSError:
                continue
            if b"VmHWM:" not in status and b"State:\tZ" not in status:
                return int(name)
    return None


def test_a_process_without_memory_is_no_memory_reading():
    """The cause of a sampled peak of 0 (a short attempt sampled as it exited, whose
    memory goes before it is a zombie): such a process says nothing, and a sampled peak
    of 0 is recorded as unknown. The control: a process with memory is read."""
    from corral.accounting import measure
    from corral.sampler import TreeUsage, tree_usage

    pid = without_address_space()
    if pid is None:
        pytest.skip("no process without an address space is visible here")
    empty = tree_usage(pid, tree=[pid])
    assert empty.samples == 0 and empty.processes == 0 and empty.peak_rss == 0
    me = tree_usage(os.getpid(), tree=[os.getpid()])
    assert me.samples == 1 and me.peak_rss > 0
    assert measure(None, None, TreeUsage(samples=1)).peak_rss_bytes is None
    assert measure(None, None, TreeUsage(samples=1)).mem_source is None


def test_without_cgroups_unknown_is_null_and_every_figure_says_its_source(corral):
    """The fallback (no writable cgroup, forced here): nothing is 0 for want of a
    measurement; what could not be measured is NULL, the rest names its source."""
    corral.module("noop", body="true")
    corral.module("nap", body="sleep 0.3")
    result = corral("run", "--json", "--max-load", "1000", extra_env={"CORRAL_CGROUPS": "0"})
    assert result.code == 0, result.err
    rows = {
        r["module"]: r
        for r in db_rows(
            corral.db, "SELECT * FROM module_runs WHERE run_id = ?", result.json()["run_id"]
        )
    }
    for row in rows.values():
        assert row["cpu_source"] == "rusage"
        assert (row["peak_rss_bytes"] is None) == (row["mem_source"] is None)
        assert row["peak_rss_bytes"] is None or row["peak_rss_bytes"] > 0
    assert rows["nap"]["mem_source"] == "sampled"  # sampled at least once in 0.3 s
    run = db_rows(corral.db, "SELECT containment FROM runs")[0]
    assert run["containment"] == "subreaper"
