#!/usr/bin/env python3
"""Throttling under an external CPU hog: corral beside `make -l` and `parallel --load`.

    python3 scripts/bench_throttle.py [--modules 8] [--seconds 1.0]

With one CPU hog per CPU running (scripts/loadgen.py), each runner gets the same
CPU-bound modules at -j 8 and a load target of CPUs + 1. A monitor reads procs_running
from /proc/stat 20 times a second and reports how far above the target the host went
(overshoot: mean excess over the target, share of samples above it, maximum) and how
long the runner took. Then, with nothing else running, the cost of throttling itself:
corral with its default gate against the gate effectively off (--max-load 1000).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import Load  # noqa: E402

BUSY = """#!/usr/bin/env bash
# workload: cpu
end=$(( ${{EPOCHREALTIME/./}} + {micros} ))
while (( ${{EPOCHREALTIME/./}} < end )); do :; done
"""


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


def run(cmd, shell=False) -> tuple[float, list[int]]:
    with Monitor() as monitor:
        start = time.perf_counter()
        subprocess.run(
            cmd, shell=shell, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        took = time.perf_counter() - start
    return took, monitor.values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=8)
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="seconds each module keeps a CPU busy"
    )
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    target = cpus + 1
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="corral-throttle-") as tmp:
        root = Path(tmp)
        mods = root / "modules"
        mods.mkdir()
        for i in range(args.modules):
            (mods / f"busy{i}.sh").write_text(BUSY.format(micros=int(args.seconds * 1e6)))
        files = sorted(str(p) for p in mods.glob("*.sh"))
        (root / "Makefile").write_text(
            ".PHONY: all "
            + " ".join(f"t{i}" for i in range(len(files)))
            + "\nall: "
            + " ".join(f"t{i}" for i in range(len(files)))
            + "\n"
            + "".join(f"t{i}:\n\t@bash {f}\n" for i, f in enumerate(files))
        )
        db = root / "corral.db"
        corral = [sys.executable, "-m", "corral", "--modules", str(mods), "--db", str(db)]
        runners = {
            f"corral -j {args.modules} --max-load {target}": (
                corral + ["run", "-q", "-j", str(args.modules), "--max-load", str(target)],
                False,
            )
        }
        if shutil.which("make"):
            runners[f"make -j{args.modules} -l {target}"] = (
                [
                    "make",
                    "-s",
                    f"-j{args.modules}",
                    "-l",
                    str(target),
                    "-f",
                    str(root / "Makefile"),
                ],
                False,
            )
        if shutil.which("parallel"):
            runners[f"parallel -j{args.modules} --load {target}"] = (
                f"parallel --will-cite -j{args.modules} --load {target} bash ::: "
                + " ".join(files),
                True,
            )
        print(
            f"# bench_throttle on {cpus} CPUs: {cpus} hogs, {args.modules} modules of "
            f"{args.seconds:g} s busy each, load target {target}\n"
        )
        print("| runner | wall s | mean runnable | mean excess | samples over | max |")
        print("|---|---:|---:|---:|---:|---:|")
        with Load(cpu=cpus, seconds=600):
            time.sleep(3)  # let the hogs settle
            for name, (cmd, shell) in runners.items():
                took, values = run(cmd, shell)
                excess = statistics.fmean(max(0, v - target) for v in values)
                over = sum(v > target for v in values) / len(values)
                print(
                    f"| {name} | {took:.2f} | {statistics.fmean(values):.2f} | "
                    f"{excess:.2f} | {over:.0%} | {max(values)} |"
                )

        print("\n## Cost of throttling on an idle host (8 x sleep 0.3 at -j 8, median of 3)\n")
        idle = root / "idle"
        idle.mkdir()
        for i in range(8):
            (idle / f"s{i}.sh").write_text("sleep 0.3\n")
        base = [
            sys.executable,
            "-m",
            "corral",
            "--modules",
            str(idle),
            "--db",
            str(root / "idle.db"),
            "run",
            "-j",
            "8",
            "--json",
        ]
        spans: dict[str, list[float]] = {"default gate": [], "gate off (--max-load 1000)": []}
        for _ in range(3):
            for name, extra in (
                ("default gate", []),
                ("gate off (--max-load 1000)", ["--max-load", "1000"]),
            ):
                out = subprocess.run(
                    base + extra, check=True, capture_output=True, text=True
                ).stdout
                spans[name].append(json.loads(out)["makespan_s"])
        on = statistics.median(spans["default gate"])
        off = statistics.median(spans["gate off (--max-load 1000)"])
        print(f"makespan with the gate {on:.3f} s, without {off:.3f} s: ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
