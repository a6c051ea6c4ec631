#!/usr/bin/env python3
"""Simulated fleets: the controller's cost per host, and wall time against clush.

    python3 scripts/bench_fleet.py [--hosts 10,100,1000] [--sleep 2] [--fanout 0]
                                   [--compare-upto 100] [--repeat 3]

Each simulated host is a local `corral run` with its own state directory (its own
bundle, database, run directory and run lock), started through ClusterShell's exec
worker: the controller's real code path (shipping, the detached agent, relaying,
gathering) with `bash -c` in place of ssh. Two modules per host: one sleeping
--sleep seconds, one that requires it.

For each fleet size, in a fresh process (so peak RSS is that run's): the controller's
own CPU time and peak RSS (children excluded) and the database rows it wrote, per
host, for a first run (every host gets the bundle) and a second (nothing shipped).
Target: flat per host from 10 to 1,000 hosts.

Then (up to --compare-upto hosts) wall time of the second run against `clush -R exec`
running the same `corral run` on the same hosts (bundles already in place), both with
the same fan-out window (covering every host up to 128), --repeat times each,
interleaved (corral, clush, corral, clush ...) so that a change in the machine's load
falls on both: the medians of wall time and of CPU time (controller and hosts: every
process each of them waited for). Target: corral within 10 % of clush.

A simulated host's command runs under `sh -c`, as clush's does under the exec worker's
`/bin/sh -c` (over ssh each would run under the login shell, once).

The controller and clush run with Python's bytecode cache as an installed program has
it (PYTHONDONTWRITEBYTECODE is taken out of their environment): under it, the corral
tree being measured was compiled afresh at every controller start (about 0.07 s of CPU
here), which an installed corral never does and clush, from its installed package,
did not either. The controller's zipapp cache is the bench's own (a temporary
XDG_CACHE_HOME): in the shared ~/.cache/corral, another checkout's corral replaced it
now and then, and a "second" run built the zipapp again (about 1 s of CPU, 20 MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
HOST_ENV = "env XDG_STATE_HOME={root}/%h HOME={root}/%h"
SHELL = "sh -c"  # the script is POSIX sh (corral.fleet.remote)
# the controller's and clush's environment: bytecode cached, as installed programs have it
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def one_fleet(root: Path, hosts: int, fanout: int) -> dict:
    """Run one simulated fleet in this process; its own CPU and peak RSS."""
    sys.path.insert(0, str(REPO / "supervisor"))
    from corral import api
    from corral.config import load_config

    config = load_config((str(root / "modules"),), str(root / "controller.db"))
    store = api.open_store(config)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    outcome = api.run_fleet(
        config,
        store,
        f"h[1-{hosts}]",
        ["-j", "2"],
        fanout=fanout,
        exec_command=f"{HOST_ENV.format(root=root)} {SHELL}",
    )
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": wall,
        "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "peak_rss_kib": after.ru_maxrss,
        "exit_code": outcome.exit_code,
        "statuses": sorted({h.status for h in outcome.hosts}),
    }


def rows(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return sum(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("runs", "module_runs", "fleet_hosts", "fleet_runs")
        )
    finally:
        conn.close()


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def clush_run(root: Path, hosts: int, fanout: int) -> tuple[float, float]:
    """clush running each host's `corral run` (the bundle the fleet left there): its wall
    and CPU time (clush and every host)."""
    clush = shutil.which("clush")
    if clush is None:
        raise SystemExit("clush not found (pip install ClusterShell)")
    # the bundle the last fleet run used (its .complete touched then): the tree under
    # test may have changed between the runs
    marks = (root / "h1" / "corral" / "fleet").glob("*/.complete")
    bundle = max(marks, key=lambda p: p.stat().st_mtime).parent.name
    base = f"{root}/%h/corral/fleet/{bundle}"
    command = (
        f"{HOST_ENV.format(root=root)} python3 -I -S {base}/corral.pyz "
        f"--modules {base}/modules run -q -j 2"
    )
    cpu = children_cpu()
    start = time.monotonic()
    result = subprocess.run(
        [clush, "-R", "exec", "-f", str(fanout), "-w", f"h[1-{hosts}]", "-q", command],
        capture_output=True,
        text=True,
        env=ENV,
    )
    wall = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"clush failed: {result.stderr[-2000:]}")
    return wall, children_cpu() - cpu


def setup(root: Path, sleep: float) -> None:
    modules = root / "modules"
    modules.mkdir(parents=True)
    (modules / "work.sh").write_text(f"#!/usr/bin/env bash\n# description: work\nsleep {sleep}\n")
    (modules / "after.sh").write_text("#!/usr/bin/env bash\n# requires: work\ntrue\n")


def fleet_run(root: Path, hosts: int, fanout: int) -> dict:
    """One fleet run in a fresh process: its own figures, its rows, its total CPU."""
    before = rows(root / "controller.db") if (root / "controller.db").exists() else 0
    cpu = children_cpu()
    proc = subprocess.run(
        [sys.executable, __file__, "--one", str(root), str(hosts), str(fanout)],
        capture_output=True,
        text=True,
        env=ENV,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    figures = json.loads(proc.stdout.splitlines()[-1])
    figures["rows"] = rows(root / "controller.db") - before
    figures["total_cpu_s"] = children_cpu() - cpu
    return figures


def measure(hosts: int, sleep: float, fanout: int, keep: bool, compare: bool, repeat: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"corral-fleet-{hosts}-"))
    try:
        setup(root, sleep)
        out = {"hosts": hosts, "first": fleet_run(root, hosts, fanout)}
        if compare:
            seconds, clushes = [], []
            for _ in range(repeat):  # interleaved: a change of load falls on both
                seconds.append(fleet_run(root, hosts, fanout))
                clushes.append(clush_run(root, hosts, fanout))
            out["second"] = min(seconds, key=lambda f: f["wall_s"])
            out["second"]["wall_s"] = median([f["wall_s"] for f in seconds])
            out["second"]["total_cpu_s"] = median([f["total_cpu_s"] for f in seconds])
            out["clush_wall_s"] = median([w for w, _ in clushes])
            out["clush_cpu_s"] = median([c for _, c in clushes])
        return out
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="10,100,1000")
    parser.add_argument("--sleep", type=float, default=2.0)
    parser.add_argument("--fanout", type=int, default=0, help="0: as many as hosts, at most 128")
    parser.add_argument(
        "--compare-upto",
        type=int,
        default=100,
        help="the second run and clush only up to this many hosts (1,000 simulated hosts "
        "cost about ten CPU-minutes per run on their own)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="second runs and clush runs, interleaved"
    )
    parser.add_argument("--keep", action="store_true", help="keep the simulated hosts")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        root, hosts, fanout = Path(args.one[0]), int(args.one[1]), int(args.one[2])
        print(json.dumps(one_fleet(root, hosts, fanout)))
        return
    print(
        f"simulated hosts (ClusterShell exec worker), 2 modules each, sleep {args.sleep}s, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'hosts':>6} {'run':>6} {'wall s':>7} {'ctl CPU ms/host':>15} "
        f"{'peak RSS MiB':>12} {'rows/host':>9} {'clush s':>8} {'corral/clush':>12} "
        f"{'CPU s':>7} {'clush CPU s':>11} {'CPU ratio':>9}"
    )
    firsts = []
    cache = tempfile.mkdtemp(prefix="corral-fleet-cache-")
    ENV["XDG_CACHE_HOME"] = cache  # the bench's own zipapp cache: built by the first run
    try:
        sizes(args, firsts)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if len(firsts) > 1:
        (n0, f0), (n1, f1) = firsts[0], firsts[-1]
        grow = (f1["peak_rss_kib"] - f0["peak_rss_kib"]) / (n1 - n0)
        print(f"peak RSS grows {grow:.1f} KiB per host from {n0} to {n1} hosts (first runs)")


def sizes(args, firsts: list) -> None:
    """Measure and print each fleet size of --hosts."""
    for hosts in (int(h) for h in args.hosts.split(",")):
        fanout = args.fanout or min(hosts, 128)
        compare = hosts <= args.compare_upto
        m = measure(hosts, args.sleep, fanout, args.keep, compare, args.repeat)
        firsts.append((hosts, m["first"]))
        for label in ("first", "second"):
            if label not in m:
                continue
            f = m[label]
            second = label == "second"
            ratio = f"{f['wall_s'] / m['clush_wall_s']:.3f}" if second else ""
            clush = f"{m['clush_wall_s']:.2f}" if second else ""
            cpu = (
                f"{f['total_cpu_s']:>7.2f} {m['clush_cpu_s']:>11.2f} "
                f"{f['total_cpu_s'] / m['clush_cpu_s']:>9.3f}"
                if second
                else f"{f['total_cpu_s']:>7.2f} {'':>11} {'':>9}"
            )
            print(
                f"{hosts:>6} {label:>6} {f['wall_s']:>7.2f} {f['cpu_s'] * 1000 / hosts:>15.1f} "
                f"{f['peak_rss_kib'] / 1024:>12.1f} {f['rows'] / hosts:>9.1f} {clush:>8} "
                f"{ratio:>12} {cpu}  {','.join(f['statuses'])} exit {f['exit_code']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
