#!/usr/bin/env python3
"""`corral docs` time and peak RSS after 1,000 / 5,000 / 20,000-module runs.

How the database is filled (say which when quoting a figure):
- `--fill store` (default): synthetic runs written through corral's own store API
  (Store.insert_run / insert_edges / write_attempts / update_run, the calls the
  recorder makes), from a simulated -j 8 schedule of a random DAG: durations, CPU,
  memory, a few failures, retries with backoff and skips, throttle and lock waits, host
  samples every 0.2 s. No module is run.
- `--fill real`: a real `corral run -j 2` of that many no-op modules (a chain of
  `requires:` every 50 modules), as a user would run them; slow for 20,000.

Then `corral docs` runs as a user runs it (the installed corral, a fresh process; see
scripts/corral_under_test.py) and its wall time, CPU time and peak RSS (wait4's
rusage) are printed beside the targets: under 10 s and 500 MB at 20,000 modules.

    python3 scripts/bench_report.py [--sizes 1000,5000,20000] [--runs 3] [--fill store]
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "supervisor"))
sys.path.insert(0, str(REPO / "scripts"))

import corral_under_test  # noqa: E402

from corral.batch import Batch  # noqa: E402
from corral.store import Store, module_set_key  # noqa: E402

TARGET_S, TARGET_MB = 10.0, 500.0
JOBS = 8


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="microseconds")


def fill_store(db: Path, modules: Path, size: int, runs: int, seed: int = 1) -> None:
    """`runs` synthetic runs of `size` modules through the store API."""
    rng = random.Random(seed)
    names = [f"m{i:05d}" for i in range(size)]
    deps = {
        n: sorted({names[rng.randrange(i)] for _ in range(rng.choice((0, 1, 1, 2)))}) if i else []
        for i, n in enumerate(names)
    }
    base = rng.uniform(0.01, 0.5)
    typical = {n: rng.choice((0.005, 0.02, 0.1, 0.5, 2.0)) * base * 4 for n in names}
    flaky = set(rng.sample(names, max(1, size // 200)))
    broken = set(rng.sample(names, max(1, size // 1000)))
    store = Store.open(db)
    key = module_set_key([modules])
    wall0 = time.time() - runs * 3600
    mono0 = 1000.0
    for r in range(runs):
        run_id = time.strftime("%Y%m%d-%H%M%SZ-", time.gmtime(wall0)) + f"{r:04x}"
        store.insert_run(
            {
                "run_id": run_id,
                "started": iso(wall0),
                "status": "running",
                "jobs": JOBS,
                "modules_dir": str(modules),
                "module_set": key,
                "full": 1,
                "targets": "",
                "host": os.uname().nodename,
                "module_count": size,
                "selected": size,
                "cache_hits": size,
                "cache_misses": 0,
            }
        )
        store.write_batch(Batch(edges=[(run_id, n, d) for n in names for d in deps[n]]))
        inserts, figures = [], []
        end_of: dict[str, float] = {}
        failed: set[str] = set()
        free = [0.0] * JOBS  # when each slot frees (a heap)
        for n in names:  # names are in a topological order
            if any(d in failed for d in deps[n]):
                failed.add(n)
                inserts.append(
                    {
                        "run_id": run_id,
                        "module": n,
                        "attempt": 0,
                        "status": "skipped",
                        "reason": f"requires {deps[n][0]}, which failed",
                    }
                )
                continue
            ready = max([end_of[d] for d in deps[n]] + [0.0])
            attempts = 2 if n in flaky or n in broken else 1
            due = ready
            for attempt in range(1, attempts + 1):
                slot = heapq.heappop(free)
                throttle = rng.choice((0.0, 0.0, 0.0, 0.05))
                start = max(due, slot) + throttle
                duration = typical[n] * rng.uniform(0.8, 1.25)
                ok = not (n in broken or (n in flaky and attempt == 1))
                retry = 0.5 if not ok and attempt < attempts else None
                inserts.append(
                    {
                        "run_id": run_id,
                        "module": n,
                        "attempt": attempt,
                        "status": "ok" if ok else "failed",
                        "exit_code": 0 if ok else 1,
                        "start": iso(wall0 + start),
                        "start_mono": mono0 + start,
                        "end": iso(wall0 + start + duration),
                        "duration_s": duration,
                        "cpu_user_s": duration * 0.3,
                        "cpu_sys_s": duration * 0.05,
                        "peak_rss_bytes": rng.randrange(2 << 20, 64 << 20),
                        "read_bytes": 0,
                        "write_bytes": 4096,
                        "throttle_wait_s": throttle,
                        "throttle_kind": "load" if throttle else None,
                        "lock_wait_s": 0.0,
                        "retry_in_s": retry,
                        "log_path": f"/var/log/corral/{run_id}/{n}.log",
                        "pid": 10_000 + len(inserts),
                    }
                )
                figures.append((n, ok, duration, inserts[-1]["peak_rss_bytes"], duration * 0.35))
                heapq.heappush(free, start + duration)
                due = start + duration + (retry or 0.0)
            end_of[n] = start + duration
            if not ok:
                failed.add(n)
        makespan = max(end_of.values())
        samples = [
            {
                "run_id": run_id,
                "t": wall0 + i * 0.2,
                "mono": mono0 + i * 0.2,
                "load1": 3.0,
                "runnable": JOBS,
                "runnable_avg": JOBS * 0.9,
                "mem_available": 8 << 30,
                "cpu_busy": 0.9,
                "running": JOBS,
                "waiting": 2,
                "gate": None,
            }
            for i in range(int(makespan / 0.2) + 1)
        ]
        for i in range(0, len(inserts), 5000):
            store.write_attempts(inserts[i : i + 5000], [], samples if i == 0 else [])
        ending = {
            "ended": iso(wall0 + makespan),
            "status": "failed" if failed else "ok",
            "exit_code": 1 if failed else 0,
            "makespan_s": makespan,
            "work_s": sum(f[2] for f in figures),
        }
        store.write_batch(Batch(ends=[(run_id, ending, figures)]))
        wall0 += makespan + 600
        mono0 += makespan + 600
    store.close()


def fill_real(cmd: list[str], db: Path, modules: Path, size: int, runs: int) -> None:
    """`runs` real runs of `size` no-op modules."""
    for i in range(size):
        needs = f"# requires: n{i - 1:05d}\n" if i % 50 else ""
        (modules / f"n{i:05d}.sh").write_text(f"#!/bin/bash\n{needs}true\n")
    for _ in range(runs):
        subprocess.run(
            [*cmd, "--modules", str(modules), "--db", str(db), "run", "-q", "-j", "2"],
            check=False,
        )


def measure_docs(
    cmd: list[str], db: Path, modules: Path, out: Path
) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS MiB, exit status) of one `corral docs`."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [*cmd, "--modules", str(modules), "--db", str(db), "docs", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode:
        print(err, file=sys.stderr)
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--runs", type=int, default=3, help="runs recorded per size")
    parser.add_argument("--fill", choices=("store", "real"), default="store")
    corral_under_test.add_argument(parser)
    args = parser.parse_args()
    cmd = corral_under_test.command(args.corral)
    how = (
        "through the store API (synthetic runs)"
        if args.fill == "store"
        else "by real runs of no-op modules"
    )
    print(
        f"# bench_report: `corral docs` after runs of N modules; {args.runs} runs recorded "
        f"per size, filled {how}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} "
        "(wall time stretches with the load; CPU time does not)"
    )
    print(f"# {corral_under_test.describe(cmd)}")
    print(
        "| modules | docs wall s | docs CPU s | target s | peak RSS MB | target MB | met "
        "| gantt.svg KB | report.json KB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
            tmp = Path(tmp)
            modules = tmp / "modules"
            modules.mkdir()
            db = tmp / "corral.db"
            if args.fill == "store":
                fill_store(db, modules, size, args.runs)
            else:
                fill_real(cmd, db, modules, size, args.runs)
            seconds, cpu, mb, code = measure_docs(cmd, db, modules, tmp / "out")
            kb = [
                (tmp / "out" / name).stat().st_size / 1024 if (tmp / "out" / name).exists() else 0
                for name in ("gantt.svg", "report.json")
            ]
            met = code == 0 and seconds < TARGET_S and mb < TARGET_MB
            print(
                f"| {size} | {seconds:.2f} | {cpu:.2f} | {TARGET_S:.0f} | {mb:.0f} | "
                f"{TARGET_MB:.0f} | {'yes' if met else 'NO'}"
                f"{'' if code == 0 else f' (exit {code})'} | {kb[0]:.0f} | {kb[1]:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
