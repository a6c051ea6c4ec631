#!/usr/bin/env python3
"""A heterogeneous DAG: corral's makespan against the lower bound and against make -j.

    python3 scripts/bench_dag.py [--modules 60] [--jobs 4] [--seeds 11,12,13,14,15]
        [--repeat 5] [--corral VENV]

For each graph seed: random modules sleeping 0.05 to 1.2 s (no CPU contention, so the
bound is exact) with random requirements on earlier modules; the long ones are late in
name order, where make (which starts targets in the order it reads them) gets to them
last. Each module declares a `timeout:` as an administrator would: a round figure a few
times (3 to 10) what it takes, at least 2 s, an upper bound and no more. The lower bound of any
schedule is max(critical path, total work / jobs).

Per seed, interleaved, median of --repeat:
- corral's first run (a fresh database: no history; priorities from the graph and the
  declared timeouts), and the same graph with its timeouts removed (nothing declared:
  only the graph's shape to go on), reported for reference;
- corral with priorities from history (the database of the first runs);
- make -j over the same graph (whole process).
corral's makespan is first spawn to last exit, from its records.
Targets: first run <= 1.10 x the bound and shorter than make; with history <= 1.02 x
the bound and shorter than make. The worst seed is what counts.
Beside them, "order only": the makespan corral's order would have with no overhead at
all (a list schedule of the true durations in the priorities `plan --json` reports),
which tells the order's quality apart from what a busy host adds to every spawn.
--repeat 0 prints only that (and the learning run), quickly.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corral_under_test  # noqa: E402

ROUND = [2, 3, 5, 10, 15, 20, 30, 60]  # seconds: the timeouts people write
FIRST, HISTORY = 1.10, 1.02


def generate(directory: Path, count: int, seed: int, timeouts: bool) -> tuple[dict, dict]:
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
        limit = next(r for r in ROUND if r >= durations[name] * rng.uniform(3, 10))
        header = f"# requires: {' '.join(deps[name])}\n" if deps[name] else ""
        header += f"# timeout: {limit}s\n" if timeouts else ""
        (directory / f"{name}.sh").write_text(
            f"#!/usr/bin/env bash\n{header}sleep {durations[name]}\n"
        )
    return durations, deps


def critical_path(durations: dict, deps: dict) -> float:
    longest: dict[str, float] = {}
    for name in sorted(durations):  # names are in topological order by construction
        longest[name] = durations[name] + max((longest[d] for d in deps[name]), default=0.0)
    return max(longest.values())


def in_order(plan: dict, durations: dict, deps: dict, jobs: int) -> float:
    """The makespan of corral's order with no overhead at all: a list schedule of the true
    durations on `jobs` slots, highest `priority` of `plan --json` first (between
    equals, the module releasing more, then the name, as corral's plan breaks ties)."""
    priority = {m["name"]: m["priority"] for m in plan["modules"]}
    users: dict[str, list[str]] = {n: [] for n in durations}
    for n, ds in deps.items():
        for d in ds:
            users[d].append(n)
    missing = {n: len(deps[n]) for n in durations}

    def key(n: str) -> tuple:
        return (-priority[n], -len(users[n]), n)

    ready = [key(n) for n in durations if not missing[n]]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < jobs:
            name = heapq.heappop(ready)[-1]
            heapq.heappush(running, (now + durations[name], name))
        now, name = heapq.heappop(running)
        for user in users[name]:
            missing[user] -= 1
            if not missing[user]:
                heapq.heappush(ready, key(user))
    return now


def makespan(cmd: list[str]) -> float:
    """The run's makespan; a run where a module failed (a timeout on an overloaded host)
    is reported on stderr and still counted: its makespan is what it took."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    run = json.loads(done.stdout)
    if done.returncode != 0:
        failed = [m["name"] for m in run["modules"] if m["status"] != "ok"]
        print(f"(a run ended {run['status']}: {', '.join(failed)})", file=sys.stderr)
    return run["makespan_s"]


def one_seed(root: Path, corral: list[str], args, seed: int) -> dict[str, float]:
    """Makespan / bound of each runner on the graph of `seed` (median of --repeat)."""
    mods, bare = root / f"s{seed}" / "modules", root / f"s{seed}" / "bare"
    mods.mkdir(parents=True)
    bare.mkdir()
    durations, deps = generate(mods, args.modules, seed, timeouts=True)
    generate(bare, args.modules, seed, timeouts=False)
    bound = max(critical_path(durations, deps), sum(durations.values()) / args.jobs)
    run = ["run", "-j", str(args.jobs), "--json", "--max-load", "1000"]
    learned_db = root / f"s{seed}" / "learned.db"
    makespan([*corral, "--modules", str(mods), "--db", str(learned_db), *run])
    names = sorted(durations)
    makefile = root / f"s{seed}" / "Makefile"
    makefile.write_text(
        f".PHONY: all {' '.join(names)}\nall: {' '.join(names)}\n"
        + "".join(f"{n}: {' '.join(deps[n])}\n\t@bash {mods / (n + '.sh')}\n" for n in names)
    )
    spans: dict[str, list[float]] = {"first": [], "bare": [], "history": [], "make": []}
    for i in range(args.repeat):
        fresh = root / f"s{seed}" / f"fresh{i}.db"
        spans["first"].append(makespan([*corral, "--modules", str(mods), "--db", str(fresh), *run]))
        spans["bare"].append(
            makespan([*corral, "--modules", str(bare), "--db", str(fresh) + "b", *run])
        )
        spans["history"].append(
            makespan([*corral, "--modules", str(mods), "--db", str(learned_db), *run])
        )
        if shutil.which("make"):
            start = time.perf_counter()
            subprocess.run(["make", "-s", f"-j{args.jobs}", "-f", str(makefile)], check=True)
            spans["make"].append(time.perf_counter() - start)
    out = {k: statistics.median(v) / bound for k, v in spans.items() if v}
    out["bound"] = bound
    for key, db in (("order first", root / f"s{seed}" / "plan.db"), ("order history", learned_db)):
        plan = subprocess.run(
            [*corral, "--modules", str(mods), "--db", str(db), "plan", "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        out[key] = in_order(json.loads(plan), durations, deps, args.jobs) / bound
    # make's order: the targets as it reads them, in name order
    by_name = {"modules": [{"name": n, "priority": -i} for i, n in enumerate(names)]}
    out["order make"] = in_order(by_name, durations, deps, args.jobs) / bound
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--seeds", default="11,12,13,14,15", help="comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    corral_under_test.add_argument(parser)
    args = parser.parse_args()
    corral = corral_under_test.command(args.corral)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"# bench_dag: {args.modules} modules, -j {args.jobs}, seeds {args.seeds}")
    print(f"{corral_under_test.describe(corral)}; median of {args.repeat} per seed\n")
    print(
        "| seed | bound s | first run | nothing declared (reference) | with history "
        f"| make -j{args.jobs} | order only, first | order only, history | make's order only |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = {}
    with tempfile.TemporaryDirectory(prefix="corral-dag-") as tmp:
        for seed in seeds:
            r = rows[seed] = one_seed(Path(tmp), corral, args, seed)
            nan = float("nan")
            print(
                f"| {seed} | {r['bound']:.2f} | {r.get('first', nan):.3f} | "
                f"{r.get('bare', nan):.3f} | {r.get('history', nan):.3f} | "
                f"{r.get('make', nan):.3f} | {r['order first']:.3f} | "
                f"{r['order history']:.3f} | {r['order make']:.3f} |"
            )
    if args.repeat == 0:
        for key in ("order first", "order history", "order make"):
            print(f"worst {key}: {max(r[key] for r in rows.values()):.3f} x the bound")
        shorter = all(r["order first"] < r["order make"] for r in rows.values())
        print(f"first-run order shorter than make's on every seed: {shorter}")
        return
    worst = {k: max(r[k] for r in rows.values()) for k in ("first", "bare", "history")}
    beats = {
        k: all(r[k] < r["make"] for r in rows.values()) if all("make" in r for r in rows.values())
        else None
        for k in ("first", "history")
    }  # fmt: skip
    print("\nx the bound max(critical path, work / jobs); worst seed:\n")
    print("| figure | worst | target | met |\n|---|---:|---|---|")
    for key, limit, label in (
        ("first", FIRST, "first run (no history)"),
        ("history", HISTORY, "priorities from history"),
    ):
        print(
            f"| {label} | {worst[key]:.3f} | <= {limit:.2f} x | "
            f"{'met' if worst[key] <= limit else 'NOT met'} |"
        )
        print(
            f"| {label} shorter than make on every seed | | < make | "
            f"{'met' if beats[key] else 'NOT met'} |"
        )
    print(f"| nothing declared, first run (reference) | {worst['bare']:.3f} | | |")


if __name__ == "__main__":
    main()
