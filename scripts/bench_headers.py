#!/usr/bin/env python3
"""Header cache benchmark: `corral plan` over N generated modules, cold vs warm.

Times the whole process (interpreter start, imports, stat, cache, graph, output),
as a user or cron sees it, of the corral installed in a virtual environment (see
scripts/corral_under_test.py). Target: warm under 0.1 s at 10,000 modules; the cold
parse is reported beside it, and the warm runs' CPU time (user+sys), which a host
shared with other work inflates less than the wall time.

    python3 scripts/bench_headers.py [--modules 10000] [--repeat 5] [--corral VENV]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corral_under_test  # noqa: E402

WARM_TARGET = 0.1  # seconds, whole process


def generate(directory: Path, count: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for i in range(count):
        deps = sorted({f"m{rng.randrange(i)}" for _ in range(rng.randint(0, 3))}) if i else []
        lines = ["#!/usr/bin/env bash", f"# description: generated module {i}"]
        if deps:
            lines.append(f"# requires: {' '.join(deps)}")
        if rng.random() < 0.2:
            lines.append(f"# wants: m{rng.randrange(i)}" if i else "# tags: root")
        lines += [
            f"# timeout: {rng.randint(1, 60)}s",
            f"# tags: t{i % 7}",
            "set -euo pipefail",
            "echo hello",
            "",
        ]
        (directory / f"m{i}.sh").write_text("\n".join(lines))


CPU: list[float] = []  # user+sys seconds of each timed run, in order


def timed(cmd: list[str]) -> float:
    """The wall time of one run of `cmd`; its CPU time (user+sys) is appended to CPU:
    on a shared host the CPU time says more than the wall time of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    corral_under_test.add_argument(parser)
    args = parser.parse_args()
    corral = corral_under_test.command(args.corral)
    with tempfile.TemporaryDirectory() as tmp:
        modules, db = Path(tmp) / "modules", Path(tmp) / "corral.db"
        modules.mkdir()
        generate(modules, args.modules)
        base = [*corral, "--modules", str(modules), "--db", str(db)]
        cold, warm, fresh, warm_cpu = [], [], [], []
        for i in range(args.repeat):
            subprocess.run([*base, "cache", "clear"], check=True, stdout=subprocess.DEVNULL)
            cold.append(timed([*base, "plan", "--json"]))
            warm.append(timed([*base, "plan", "--json"]))
            warm_cpu.append(CPU[-1])
            # Headers cached, but a selection never planned before: the memo cannot answer.
            fresh.append(timed([*base, "plan", "--json", "--exclude", f"m{i}"]))
        stats = subprocess.run(
            [*base, "cache", "stats"], check=True, capture_output=True, text=True
        ).stdout
        baseline = statistics.median(timed([corral[0], "-c", "pass"]) for _ in range(5))
        baseline_cpu = statistics.median(CPU[-5:])
    cold_m, warm_m = statistics.median(cold), statistics.median(warm)
    fresh_m = statistics.median(fresh)
    print(
        f"corral plan --json over {args.modules} modules (median of {args.repeat}, whole process)"
    )
    print(f"  {corral_under_test.describe(corral)}")
    print(f"  cold (empty cache): {cold_m:7.3f} s")
    print(
        f"  warm (all cached):  {warm_m:7.3f} s   target < {WARM_TARGET} s: "
        f"{'met' if warm_m < WARM_TARGET else 'NOT met'}   (user+sys CPU: median "
        f"{statistics.median(warm_cpu):.3f} s, min {min(warm_cpu):.3f} s)"
    )
    print(f"  warm / cold:        {warm_m / cold_m:7.2f}")
    print(f"  headers cached, new selection (plan memo miss): {fresh_m:.3f} s")
    print(f"  python startup:     {baseline:7.3f} s   (user+sys CPU: median {baseline_cpu:.3f} s)")
    print("  last load: " + ", ".join(line.strip() for line in stats.splitlines()))


if __name__ == "__main__":
    main()
