#!/usr/bin/env python3
"""Spawn overhead, sleep packing and scheduling latency: corral beside its peers.

    python3 scripts/bench_spawn.py [--modules 1000] [--repeat 5] [--corral VENV]

corral is the one installed in a virtual environment (scripts/corral_under_test.py
says which); the Python reference rows run on that environment's interpreter.

1. 1000 no-op modules at -j 2 through corral, `xargs -P2`, `make -j2` and GNU
   parallel (whichever are installed), run interleaved, median wall time of each,
   printed as ratios to xargs. Targets: corral <= 1.15 x xargs, >= 3 x faster than
   parallel. Two reference rows say where corral's time goes: `python3 -c pass`
   (the interpreter's start-up, which any Python tool pays) and scripts/spawn_floor.py
   (a Python loop that starts the modules exactly as corral does and keeps no records).
2. 4/8/12 modules of `sleep 0.5` at -j 4: corral's makespan (first spawn to last
   exit, from its records) and the whole process's wall time. Target: within 20 ms
   of 0.5/1.0/1.5 s.
4. Supervisor cost: corral's CPU while 4 modules sleep, and its peak RSS (VmHWM) over
   10,000 no-op modules. Targets: <= 2 % of one core, < 80 MB.
3. Scheduling latency over a 200-module chain-and-fan-out graph: from the moment a
   module's last command ran (it writes $EPOCHREALTIME, then exits) to corral's spawn
   of a dependent it released. Median and 99th percentile; target p99 < 5 ms.

Ratios, not absolute times: these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corral_under_test  # noqa: E402

sys.path.insert(0, str(corral_under_test.REPO / "supervisor"))
from corral.procfs import status_kb  # noqa: E402

CORRAL = [sys.executable, "-m", "corral"]  # replaced by the chosen corral in main()
SPAWN_TARGET, PARALLEL_TARGET = 1.15, 3.0


def write(path: Path, text: str) -> None:
    path.write_text(text)


def noop_modules(root: Path, count: int) -> Path:
    d = root / "noop"
    d.mkdir()
    for i in range(count):
        write(d / f"m{i:05d}.sh", f"#!/usr/bin/env bash\n# description: no-op {i}\ntrue\n")
    return d


def corral_cmd(modules: Path, db: Path, *args: str) -> list[str]:
    return [*CORRAL, "--modules", str(modules), "--db", str(db), *args]


def timed(cmd, **kw) -> float:
    return timed_cpu(cmd, **kw)[0]


def timed_cpu(cmd, **kw) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and everything it waited for)."""
    before, start = os.times(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)
    wall, after = time.perf_counter() - start, os.times()
    cpu = after.children_user - before.children_user + after.children_system
    return wall, cpu - before.children_system


def load() -> str:
    """The host's load averages (1, 5, 15 min): what other work shared the CPUs."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def spawn_overhead(root: Path, count: int, repeat: int) -> None:
    modules = noop_modules(root, count)
    files = sorted(str(p) for p in modules.glob("*.sh"))
    db = root / "noop.db"
    makefile = root / "Makefile"
    targets = " ".join(f"t{i}" for i in range(count))
    write(
        makefile,
        f".PHONY: all {targets}\nall: {targets}\n"
        + "".join(f"t{i}:\n\t@bash {f}\n" for i, f in enumerate(files)),
    )
    listing = root / "files.txt"
    write(listing, "\n".join(files) + "\n")
    peers: dict[str, list[str] | str] = {
        "corral": corral_cmd(modules, db, "run", "-j", "2", "--quiet"),
        # On a busy host the gate rightly runs one module at a time: this row tells the
        # spawn path's cost apart from the throttle's restraint.
        "corral, gate off (--max-load 1000)": corral_cmd(
            modules, db, "run", "-j", "2", "--quiet", "--max-load", "1000"
        ),
        "xargs -P2": f"xargs -P2 -n1 bash < {listing}",
    }
    # the same without a cgroup per attempt: what kernel containment costs here
    fallback = " ".join(shlex.quote(a) for a in peers["corral"])
    peers["corral, CORRAL_CGROUPS=0 (reference)"] = f"CORRAL_CGROUPS=0 {fallback}"
    if os.environ.get("BENCH_BEFORE"):  # another checkout's corral, for a before/after
        before = os.environ["BENCH_BEFORE"]
        peers["corral before (reference)"] = f"PYTHONPATH={shlex.quote(before)} {fallback}"
    if shutil.which("make"):
        peers["make -j2"] = ["make", "-s", "-j2", "-f", str(makefile)]
    if shutil.which("parallel"):
        peers["parallel -j2"] = f"parallel --will-cite -j2 bash < {listing}"
    peers["python3 -c pass (reference)"] = [CORRAL[0], "-c", "pass"]
    peers["python floor, no records (reference)"] = [
        CORRAL[0],
        str(Path(__file__).with_name("spawn_floor.py")),
        "2",
        *files,
    ]
    subprocess.run(peers["corral"], check=True)  # warm the header cache: a normal day
    times: dict[str, list[float]] = {name: [] for name in peers}
    cpus: dict[str, list[float]] = {name: [] for name in peers}
    loads = [load()]
    for _ in range(repeat):
        for name, cmd in peers.items():
            wall, cpu = timed_cpu(cmd, shell=isinstance(cmd, str))
            times[name].append(wall)
            cpus[name].append(cpu)
    loads.append(load())
    base = statistics.median(times["xargs -P2"])
    base_cpu = statistics.median(cpus["xargs -P2"])
    print(f"\n## {count} no-op modules, 2 at a time (median of {repeat})\n")
    print(
        f"load (1/5/15 min) {loads[0]} before, {loads[1]} after. CPU: user + system "
        "seconds of the runner and its modules; on a host whose CPUs are all busy the "
        "wall ratio tends to the CPU ratio.\n"
    )
    print("| runner | wall s | vs xargs | CPU s | CPU vs xargs |\n|---|---:|---:|---:|---:|")
    for name, values in times.items():
        m, c = statistics.median(values), statistics.median(cpus[name])
        print(f"| {name} | {m:.3f} | {m / base:.2f} | {c:.2f} | {c / base_cpu:.2f} |")
    corral_t = statistics.median(times["corral"])
    if "parallel -j2" in times:
        faster = statistics.median(times["parallel -j2"]) / corral_t
        print(
            f"\ncorral is {faster:.1f}x faster than GNU parallel (target >= "
            f"{PARALLEL_TARGET:g}x): {'met' if faster >= PARALLEL_TARGET else 'NOT met'}"
        )
    ratio = corral_t / base
    print(
        f"corral / xargs = {ratio:.2f} (target <= {SPAWN_TARGET}): "
        f"{'met' if ratio <= SPAWN_TARGET else 'NOT met'}"
    )
    off = statistics.median(times["corral, gate off (--max-load 1000)"]) / base
    print(f"with the gate off: corral / xargs = {off:.2f} (the spawn path alone)")


def sleep_packing(root: Path) -> None:
    print("\n## N x `sleep 0.5` at -j 4\n")
    print(
        "makespan: first spawn to last exit, from corral's records; xargs -P4 over the "
        "same files is the floor (bash + sleep start-up).\n"
    )
    print(
        "| modules | ideal s | corral makespan s | off by ms | xargs -P4 s | "
        "corral process wall s |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (4, 8, 12):
        d = root / f"sleep{n}"
        d.mkdir()
        for i in range(n):
            write(d / f"s{i:02d}.sh", "#!/usr/bin/env bash\nsleep 0.5\n")
        db = root / f"sleep{n}.db"
        start = time.perf_counter()
        out = subprocess.run(
            corral_cmd(d, db, "run", "-j", "4", "--json"),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        wall = time.perf_counter() - start
        run = json.loads(out)
        ideal = 0.5 * ((n + 3) // 4)
        files = " ".join(str(p) for p in sorted(d.glob("*.sh")))
        floor = timed(f"printf '%s\\n' {files} | xargs -P4 -n1 bash", shell=True)
        print(
            f"| {n} | {ideal:.1f} | {run['makespan_s']:.3f} | "
            f"{(run['makespan_s'] - ideal) * 1000:+.1f} | {floor:.3f} | {wall:.3f} |"
        )


def latency(root: Path, stages: int = 40, fan: int = 4) -> None:
    d = root / "latency"
    d.mkdir()
    trace = root / "latency.trace"
    last = 'echo "$CORRAL_MODULE $EPOCHREALTIME" >> "$TRACE"\n'
    deps: dict[str, list[str]] = {}
    previous: list[str] = []
    for s in range(stages):
        hub = f"h{s:03d}"
        deps[hub] = previous
        leaves = [f"l{s:03d}_{k}" for k in range(fan)]
        for leaf in leaves:
            deps[leaf] = [hub]
        previous = leaves
    for name, needs in deps.items():
        header = f"# requires: {' '.join(needs)}\n" if needs else ""
        write(d / f"{name}.sh", f"#!/usr/bin/env bash\n{header}{last}")
    db = root / "latency.db"
    env = {**os.environ, "TRACE": str(trace)}
    subprocess.run(corral_cmd(d, db, "plan"), check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run(
        corral_cmd(d, db, "run", "-j", str(fan * 2), "--json"),
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    run = json.loads(out)
    ended = {}
    for line in trace.read_text().splitlines():
        name, t = line.split()
        ended[name] = float(t)
    started = {m["name"]: datetime.fromisoformat(m["start"]).timestamp() for m in run["modules"]}
    samples = [
        (started[n] - max(ended[x] for x in needs)) * 1000 for n, needs in deps.items() if needs
    ]
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(
        f"\n## Scheduling latency, {len(deps)} modules ({stages} stages of 1 hub + {fan} "
        f"leaves), -j {fan * 2}\n"
    )
    print(
        f"exit of a requirement -> spawn of the dependent it released: "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {samples[-1]:.2f} ms (target p99 < 5 ms)"
    )


def supervisor_cost(root: Path, big: int) -> None:
    """corral's own CPU while its modules sleep, and its peak RSS over `big` modules."""
    tick = os.sysconf("SC_CLK_TCK")
    d = root / "sleepers"
    d.mkdir()
    for i in range(4):
        write(d / f"z{i}.sh", "#!/usr/bin/env bash\nsleep 5\n")
    proc = subprocess.Popen(corral_cmd(d, root / "sleepers.db", "run", "-j", "4", "-q"))
    time.sleep(1.0)

    def cpu() -> float:
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    before, t0 = cpu(), time.monotonic()
    time.sleep(3.0)
    share = (cpu() - before) / (time.monotonic() - t0)
    proc.wait()
    modules = noop_modules_named(root, "big", big)
    proc = subprocess.Popen(corral_cmd(modules, root / "big.db", "run", "-j", "8", "-q"))
    peak = 0
    while proc.poll() is None:
        peak = max(peak, status_kb(proc.pid, b"VmHWM") or 0)
        time.sleep(0.1)
    print(
        f"\n## Supervisor cost\n\nCPU while 4 modules sleep: {share:.2%} of one core "
        f"(target <= 2 %: {'met' if share <= 0.02 else 'NOT met'}); peak RSS over {big} "
        f"no-op modules: {peak / 2**20:.1f} MiB (target < 80 MB: "
        f"{'met' if peak < 80e6 else 'NOT met'})"
    )


def noop_modules_named(root: Path, name: str, count: int) -> Path:
    d = root / name
    d.mkdir()
    for i in range(count):
        write(d / f"m{i:05d}.sh", f"#!/usr/bin/env bash\n# description: no-op {i}\ntrue\n")
    return d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--big", type=int, default=10000, help="modules in the supervisor-RSS run")
    parser.add_argument(
        "--only",
        choices=("spawn", "sleep", "latency", "cost"),
        action="append",
        help="run only these parts (repeatable)",
    )
    corral_under_test.add_argument(parser)
    args = parser.parse_args()
    CORRAL[:] = corral_under_test.command(args.corral)
    parts = set(args.only or ("spawn", "sleep", "latency", "cost"))
    print(f"# bench_spawn on {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}")
    print(corral_under_test.describe(CORRAL))
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        root = Path(tmp)
        os.environ["CORRAL_DB"] = str(root / "default.db")
        # Let Python cache corral's bytecode, as it does on any normal install (a dev
        # shell with PYTHONDONTWRITEBYTECODE would recompile corral on every start).
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        if "spawn" in parts:
            spawn_overhead(root, args.modules, args.repeat)
        if "sleep" in parts:
            sleep_packing(root)
        if "latency" in parts:
            latency(root)
        if "cost" in parts:
            supervisor_cost(root, args.big)


if __name__ == "__main__":
    main()
