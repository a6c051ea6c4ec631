#!/usr/bin/env python3
"""Throttling under external CPU hogs: corral beside `make -l` and `parallel --load`.

    python3 scripts/bench_throttle.py [--hogs 0,1,2] [--targets 1,4] [--modules 6]
        [--seconds 2] [--repeat 1] [--corral VENV]

For each number of CPU hogs (scripts/loadgen.py) and each load target (by default one
below and one above the CPU count), each runner gets the same modules, each keeping a
CPU busy for --seconds of wall time, at -j --modules. A monitor reads procs_running from
/proc/stat 20 times a second. Reported per runner:
- overshoot: mean excess of the runnable count over the target, share of samples above
  it, maximum;
- makespan against the ideal: the room is target - hogs modules at once (at least one,
  at most -j), so the ideal is ceil(modules / room) x seconds.
Targets: corral's makespan <= 1.25 x the ideal, and corral's mean excess the lowest of
the three runners. The background (the host's runnable count with only the hogs) is
printed first: other work on the host is load too, and the throttle rightly yields to it.
A runner still going after 5 x the ideal is stopped (shown as >).
Then, with nothing else running, the cost of throttling itself: corral with its default
gate against the gate effectively off (--max-load 1000).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corral_under_test  # noqa: E402
from loadgen import Load  # noqa: E402

BUSY = """#!/usr/bin/env bash
# workload: cpu
end=$(( ${{EPOCHREALTIME/./}} + {micros} ))
while (( ${{EPOCHREALTIME/./}} < end )); do :; done
"""
MAKESPAN_TARGET = 1.25
LIMIT = 5  # x the ideal: a runner that needs longer is stopped there


class Monitor:
    """procs_running (minus the monitor itself) sampled at 20 Hz in a thread."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        fd = os.open("/proc/stat", os.O_RDONLY)
        try:
            while not self._stop.wait(0.05):
                data = os.pread(fd, 16384, 0)
                at = data.find(b"procs_running ")
                self.values.append(int(data[at + 14 : data.index(b"\n", at)]) - 1)
        finally:
            os.close(fd)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(cmd, shell: bool, limit: float) -> tuple[float, list[int]]:
    """Wall time and runnable samples; a runner still going after `limit` s is stopped
    (its process group killed) and reported as taking `limit`."""
    with Monitor() as monitor:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            shell=shell,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        took = time.perf_counter() - start
    return took, monitor.values


def excess(values: list[int], target: float) -> tuple[float, float, int]:
    """Mean excess over `target`, share of samples above it, maximum."""
    mean = statistics.fmean(max(0.0, v - target) for v in values)
    return mean, sum(v > target for v in values) / len(values), max(values)


def ideal(modules: int, jobs: int, target: float, hogs: int, seconds: float) -> float:
    room = max(1, min(jobs, math.floor(target - hogs + 1e-9)))
    return math.ceil(modules / room) * seconds


def runners(args, corral, mods: Path, root: Path, target: float) -> dict:
    files = sorted(str(p) for p in mods.glob("*.sh"))
    j, t = args.modules, f"{target:g}"
    out = {
        f"corral -j {j} --max-load {t}": (
            corral + ["run", "-q", "-j", str(j), "--max-load", t],
            False,
        )
    }
    if shutil.which("make"):
        out[f"make -j{j} -l {t}"] = (
            ["make", "-s", f"-j{j}", "-l", t, "-f", str(root / "Makefile")],
            False,
        )
    if shutil.which("parallel"):
        out[f"parallel -j{j} --load {t}"] = (
            f"parallel --will-cite -j{j} --load {t} bash ::: " + " ".join(files),
            True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cpus = len(os.sched_getaffinity(0))
    parser.add_argument("--modules", type=int, default=6, help="modules, and -j")
    parser.add_argument("--seconds", type=float, default=2.0, help="busy seconds per module")
    parser.add_argument("--hogs", default="0,1,2", help="comma-separated CPU hog counts")
    parser.add_argument(
        "--targets",
        default=f"{max(1, cpus // 2)},{cpus * 2}",
        help="comma-separated load targets (default: below and above the CPU count)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per runner (median)")
    corral_under_test.add_argument(parser)
    args = parser.parse_args()
    corral = corral_under_test.command(args.corral)
    hogs_list = [int(h) for h in args.hogs.split(",")]
    targets = [float(t) for t in args.targets.split(",")]
    print(f"# bench_throttle on {cpus} CPUs, {corral_under_test.describe(corral)}")
    print(
        f"{args.modules} modules each busy {args.seconds:g} s at -j {args.modules}; "
        f"median of {args.repeat} (runners interleaved)\n"
    )
    with tempfile.TemporaryDirectory(prefix="corral-throttle-") as tmp:
        root = Path(tmp)
        mods = root / "modules"
        mods.mkdir()
        for i in range(args.modules):
            (mods / f"busy{i}.sh").write_text(BUSY.format(micros=int(args.seconds * 1e6)))
        files = sorted(str(p) for p in mods.glob("*.sh"))
        names = " ".join(f"t{i}" for i in range(len(files)))
        (root / "Makefile").write_text(
            f".PHONY: all {names}\nall: {names}\n"
            + "".join(f"t{i}:\n\t@bash {f}\n" for i, f in enumerate(files))
        )
        db = root / "corral.db"
        base = corral + ["--modules", str(mods), "--db", str(db)]
        print(
            "| hogs | target | runner | makespan s | ideal s | x ideal | mean excess "
            "| samples over | max | makespan <= 1.25 x | lowest excess |"
        )
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|")
        verdicts = []
        for hogs in hogs_list:
            with Load(cpu=hogs, seconds=3600):
                time.sleep(2)  # let the hogs settle
                with Monitor() as background:
                    time.sleep(2)
                for target in targets:
                    best = ideal(args.modules, args.modules, target, hogs, args.seconds)
                    table = runners(args, base, mods, root, target)
                    spans: dict[str, list[float]] = {name: [] for name in table}
                    samples: dict[str, list[int]] = {name: [] for name in table}
                    for _ in range(args.repeat):
                        for name, (cmd, shell) in table.items():
                            took, values = run(cmd, shell, LIMIT * best)
                            spans[name].append(took)
                            samples[name] += values
                    figures = {n: excess(samples[n], target) for n in table}
                    lowest = min(f[0] for f in figures.values())
                    bg = excess(background.values, target)[0]
                    for name in table:
                        span = statistics.median(spans[name])
                        stopped = ">" if span >= LIMIT * best else ""
                        mean, over, top = figures[name]
                        is_corral = name.startswith("corral")
                        fast = span <= MAKESPAN_TARGET * best
                        low = mean <= lowest + 1e-9
                        if is_corral:
                            verdicts.append(fast and low)
                        print(
                            f"| {hogs} | {target:g} | {name} | {stopped}{span:.2f} | {best:.1f} | "
                            f"{span / best:.2f} | {mean:.2f} | {over:.0%} | {top} | "
                            + (
                                f"{'met' if fast else 'NOT met'} | {'met' if low else 'NOT met'} |"
                                if is_corral
                                else " | |"
                            )
                        )
                    print(
                        f"| {hogs} | {target:g} | (background: hogs only, 2 s) | | | | "
                        f"{bg:.2f} | | | | |"
                    )
        print(f"\ncorral met both targets in {sum(verdicts)} of {len(verdicts)} configurations")

        print("\n## Cost of throttling on an idle host (8 x sleep 0.3 at -j 8, median of 3)\n")
        idle = root / "idle"
        idle.mkdir()
        for i in range(8):
            (idle / f"s{i}.sh").write_text("sleep 0.3\n")
        gate = corral + ["--modules", str(idle), "--db", str(root / "idle.db")]
        gate += ["run", "-j", "8", "--json"]
        options = {"default gate": [], "gate off (--max-load 1000)": ["--max-load", "1000"]}
        made: dict[str, list[float]] = {name: [] for name in options}
        for _ in range(3):
            for name, extra in options.items():
                out = subprocess.run(gate + extra, check=True, capture_output=True, text=True)
                made[name].append(json.loads(out.stdout)["makespan_s"])
        on = statistics.median(made["default gate"])
        off = statistics.median(made["gate off (--max-load 1000)"])
        print(f"makespan with the gate {on:.3f} s, without {off:.3f} s: ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
