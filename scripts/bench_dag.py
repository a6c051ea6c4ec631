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
which tells the order's quality apart from what a busy host adds to every spawn; and
make's, from a model of GNU make's walk (`make_order`), so that the two orders are
compared as make really runs. --repeat 0 prints only that (and the learning run),
quickly.

Then where corral's excess over the bound goes, from its own records (the run's JSON):
the order alone; the same order with each module taking what its record says (spawn
to reap: bash's start, the module, its exit and corral's reap); the measured makespan
(the rest: time from an exit to the spawn it allowed). Beside them, per module, the
milliseconds a record holds above the module's sleep and from an exit to the next
spawn (mean).
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import random
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


def make_order(durations: dict, deps: dict, jobs: int) -> float:
    """The makespan of GNU make -j's order with no overhead: it walks `all`'s
    prerequisites in the order it reads them, starts each whose prerequisites are done
    (waiting there for a free slot, while the walk stands still) and passes over the
    others; after a walk it waits for one exit and walks again from the start. (Not a
    list schedule in name order: a walk goes on from where it waited, so it reaches the
    late names sooner. Checked against make 4.3's real runs of these graphs.)"""
    names = sorted(durations)
    done: set[str] = set()
    started: set[str] = set()
    running: list[tuple[float, str]] = []
    now = 0.0

    def reap_one() -> None:
        nonlocal now
        now, name = heapq.heappop(running)
        done.add(name)

    while len(done) < len(names):
        for name in names:
            if name not in started and all(d in done for d in deps[name]):
                while len(running) >= jobs:
                    reap_one()
                started.add(name)
                heapq.heappush(running, (now + durations[name], name))
        if running:
            reap_one()
    return now


def corral_run(cmd: list[str]) -> dict:
    """The run's JSON; a run where a module failed (a timeout on an overloaded host)
    is reported on stderr and still counted: its makespan is what it took."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    run = json.loads(done.stdout)
    if done.returncode != 0:
        failed = [m["name"] for m in run["modules"] if m["status"] != "ok"]
        print(f"(a run ended {run['status']}: {', '.join(failed)})", file=sys.stderr)
    return run


def records(run: dict, durations: dict, jobs: int) -> tuple[dict, float, float]:
    """From a run's records: what each module took (spawn to reap), the mean ms a record
    holds above the module's sleep, and the mean ms from an exit to the spawn after it
    (each spawn once `jobs` have started: the latest exit before it freed its slot or
    released it)."""
    took = {m["name"]: m["duration_s"] or 0.0 for m in run["modules"]}  # skipped: 0
    above = statistics.mean(took[n] - durations[n] for n in durations)
    ran = [
        (datetime.fromisoformat(m["start"]).timestamp(), took[m["name"]])
        for m in run["modules"]
        if m["start"]
    ]
    starts = sorted(start for start, _ in ran)
    ends = sorted(start + span for start, span in ran)
    gaps = []
    for start in starts[jobs:]:
        i = bisect.bisect_right(ends, start)
        if i:
            gaps.append(start - ends[i - 1])
    return took, 1000 * above, 1000 * statistics.mean(gaps) if gaps else float("nan")


def plan_of(corral: list[str], mods: Path, db: Path) -> dict:
    """`plan --json`: the priorities a run on `db` now would start modules by."""
    out = subprocess.run(
        [*corral, "--modules", str(mods), "--db", str(db), "plan", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def one_seed(root: Path, corral: list[str], args, seed: int) -> dict:
    """Makespan / bound of each runner on the graph of `seed` (median of --repeat), and
    where corral's first and history runs spent their excess (medians)."""
    mods, bare = root / f"s{seed}" / "modules", root / f"s{seed}" / "bare"
    mods.mkdir(parents=True)
    bare.mkdir()
    durations, deps = generate(mods, args.modules, seed, timeouts=True)
    generate(bare, args.modules, seed, timeouts=False)
    bound = max(critical_path(durations, deps), sum(durations.values()) / args.jobs)
    run = ["run", "-j", str(args.jobs), "--json", "--max-load", "1000"]
    learned_db = root / f"s{seed}" / "learned.db"
    corral_run([*corral, "--modules", str(mods), "--db", str(learned_db), *run])
    names = sorted(durations)
    makefile = root / f"s{seed}" / "Makefile"
    makefile.write_text(
        f".PHONY: all {' '.join(names)}\nall: {' '.join(names)}\n"
        + "".join(f"{n}: {' '.join(deps[n])}\n\t@bash {mods / (n + '.sh')}\n" for n in names)
    )
    first_plan = plan_of(corral, mods, root / f"s{seed}" / "plan.db")  # no history
    spans: dict[str, list[float]] = {"first": [], "bare": [], "history": [], "make": []}
    # per run: (its order with its records' durations / bound, ms above sleep, ms gap)
    parts: dict[str, list[tuple[float, float, float]]] = {"first": [], "history": []}

    def measure(key: str, plan: dict, db: Path) -> None:
        done = corral_run([*corral, "--modules", str(mods), "--db", str(db), *run])
        spans[key].append(done["makespan_s"])
        took, above, gap = records(done, durations, args.jobs)
        parts[key].append((in_order(plan, took, deps, args.jobs) / bound, above, gap))

    for i in range(args.repeat):
        fresh = root / f"s{seed}" / f"fresh{i}.db"
        measure("first", first_plan, fresh)
        spans["bare"].append(
            corral_run([*corral, "--modules", str(bare), "--db", str(fresh) + "b", *run])[
                "makespan_s"
            ]
        )
        measure("history", plan_of(corral, mods, learned_db), learned_db)
        if shutil.which("make"):
            start = time.perf_counter()
            subprocess.run(["make", "-s", f"-j{args.jobs}", "-f", str(makefile)], check=True)
            spans["make"].append(time.perf_counter() - start)
    out: dict = {k: statistics.median(v) / bound for k, v in spans.items() if v}
    out["bound"] = bound
    out["order first"] = in_order(first_plan, durations, deps, args.jobs) / bound
    history_plan = plan_of(corral, mods, learned_db)
    out["order history"] = in_order(history_plan, durations, deps, args.jobs) / bound
    out["order make"] = make_order(durations, deps, args.jobs) / bound
    out["parts"] = {
        k: tuple(statistics.median(x[j] for x in v) for j in range(3))
        for k, v in parts.items()
        if v
    }
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
    print(
        "\nWhere corral's excess goes, from its records (x the bound, medians): its order "
        "alone;\nthe same order with what each module's record says it took (spawn to "
        "reap); measured\n(adds the time from each exit to the spawn after it). Per "
        "module: ms a record holds\nabove the module's sleep; ms from an exit to the next "
        "spawn.\n"
    )
    print(
        "| seed | run | order only | with its records' durations | measured "
        "| ms above sleep | ms exit to spawn |\n|---:|---|---:|---:|---:|---:|---:|"
    )
    for seed, r in rows.items():
        for key, label in (("first", "first"), ("history", "history")):
            with_records, above, gap = r["parts"][key]
            print(
                f"| {seed} | {label} | {r['order ' + key]:.3f} | {with_records:.3f} | "
                f"{r[key]:.3f} | {above:.1f} | {gap:.2f} |"
            )
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
