#!/usr/bin/env python3
"""A heterogeneous DAG: corral's makespan against the lower bound and against make -j.

    python3 scripts/bench_dag.py [--modules 60] [--jobs 4] [--seed 11]

Random modules sleeping 0.05 to 1.0 s (no CPU contention, so the bound is exact) with
random requirements on earlier modules. The lower bound of any schedule is
max(critical path, total work / jobs). corral runs the graph once to learn the
durations, then again with priorities from history (longest remaining path weighted
by measured durations); `make -j` runs the same graph from a Makefile. Target:
corral <= 1.05 x the bound, and shorter than make.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(directory: Path, count: int, seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    durations, deps = {}, {}
    for i in range(count):
        name = f"m{i:03d}"
        # A few long modules, late in name order (where make, which starts targets in
        # the order it reads them, gets to them last): start them early or pay at the end.
        late = i >= count * 3 // 4
        durations[name] = (
            rng.choice([0.8, 1.0, 1.2])
            if late and rng.random() < 0.5
            else rng.choice([0.05, 0.1, 0.2, 0.3])
        )
        earlier = [f"m{j:03d}" for j in range(i)]
        deps[name] = sorted(rng.sample(earlier, k=min(len(earlier), rng.choice([0, 0, 1, 2]))))
        header = f"# requires: {' '.join(deps[name])}\n" if deps[name] else ""
        (directory / f"{name}.sh").write_text(
            f"#!/usr/bin/env bash\n{header}sleep {durations[name]}\n"
        )
    return durations, deps


def critical_path(durations: dict, deps: dict) -> float:
    longest: dict[str, float] = {}
    for name in sorted(durations):  # names are in topological order by construction
        longest[name] = durations[name] + max((longest[d] for d in deps[name]), default=0.0)
    return max(longest.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="corral-dag-") as tmp:
        root = Path(tmp)
        mods = root / "modules"
        mods.mkdir()
        durations, deps = generate(mods, args.modules, args.seed)
        work = sum(durations.values())
        cp = critical_path(durations, deps)
        bound = max(cp, work / args.jobs)
        corral = [
            sys.executable,
            "-m",
            "corral",
            "--modules",
            str(mods),
            "--db",
            str(root / "dag.db"),
            "run",
            "-j",
            str(args.jobs),
            "--json",
            "--max-load",
            "1000",
        ]
        first = json.loads(
            subprocess.run(corral, check=True, capture_output=True, text=True).stdout
        )["makespan_s"]
        runs = [
            json.loads(subprocess.run(corral, check=True, capture_output=True, text=True).stdout)[
                "makespan_s"
            ]
            for _ in range(3)
        ]
        learned = sorted(runs)[1]
        print(f"# bench_dag: {args.modules} modules, -j {args.jobs}, seed {args.seed}\n")
        print(
            f"total work {work:.2f} s, critical path {cp:.2f} s, "
            f"lower bound max(cp, work/jobs) = {bound:.2f} s\n"
        )
        print("| runner | makespan s | vs bound |\n|---|---:|---:|")
        print(f"| corral, first run (no history) | {first:.3f} | {first / bound:.3f} |")
        print(
            f"| corral, priorities from history (median of 3) | {learned:.3f} | "
            f"{learned / bound:.3f} |"
        )
        if shutil.which("make"):
            names = sorted(durations)
            makefile = root / "Makefile"
            makefile.write_text(
                f".PHONY: all {' '.join(names)}\nall: {' '.join(names)}\n"
                + "".join(
                    f"{n}: {' '.join(deps[n])}\n\t@bash {mods / (n + '.sh')}\n" for n in names
                )
            )
            spans = []
            for _ in range(3):
                start = time.perf_counter()
                subprocess.run(["make", "-s", f"-j{args.jobs}", "-f", str(makefile)], check=True)
                spans.append(time.perf_counter() - start)
            made = sorted(spans)[1]
            print(
                f"| make -j{args.jobs} (whole process, median of 3) | {made:.3f} | "
                f"{made / bound:.3f} |"
            )
            print(
                f"\ncorral with history takes {learned / made:.2f} x make's makespan "
                f"(target: < 1); {learned / bound:.3f} x the bound (target <= 1.05)"
            )


if __name__ == "__main__":
    main()
