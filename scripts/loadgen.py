#!/usr/bin/env python3
"""Reproducible background pressure for tests and benchmarks, bounded and cleaned up.

    python3 scripts/loadgen.py --cpu 2 --mem 1G --io 1 --seconds 30

CPU hogs use stress-ng when it is installed, else busy Bash loops; memory ballast is a
Python process holding that many touched (resident) bytes; I/O is stress-ng --hdd, else
a dd loop writing and deleting a file. Everything runs in one new process group that
is killed on exit, on Ctrl-C/SIGTERM, and when --seconds runs out. From Python:

    with Load(cpu=2, mem=2**30) as load:
        ...   # pressure on; load.release_mem() drops the ballast early
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BALLAST = r"""
import os, sys, time
size = int(sys.argv[1])
block = bytearray(size)
for i in range(0, size, 4096):
    block[i] = 1          # touch every page: resident, not just reserved
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""


def parse_size(text: str) -> int:
    units = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}
    text = text.strip().lower().rstrip("b").rstrip("i")
    unit = text[-1] if text[-1] in units else ""
    return int(float(text[: len(text) - len(unit)]) * units[unit])


class Load:
    """Starts the requested pressure on enter, stops all of it on exit."""

    def __init__(
        self,
        cpu: int = 0,
        mem: int = 0,
        io: int = 0,
        seconds: float = 300.0,
        use_stress_ng: bool | None = None,
    ):
        self.cpu, self.mem, self.io, self.seconds = cpu, mem, io, seconds
        self.stress_ng = shutil.which("stress-ng") if use_stress_ng is not False else None
        self.procs: list[subprocess.Popen] = []
        self.ballast: subprocess.Popen | None = None
        self.tmp: str | None = None

    def __enter__(self) -> Load:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, cmd: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(
            cmd,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=kw.pop("stdout", subprocess.DEVNULL),
            stderr=subprocess.DEVNULL,
            **kw,
        )
        self.procs.append(proc)
        return proc

    def _start(self) -> None:
        limit = f"{self.seconds:g}"
        if self.cpu:
            if self.stress_ng:
                self._spawn(
                    [
                        self.stress_ng,
                        "--cpu",
                        str(self.cpu),
                        "--cpu-method",
                        "int64",
                        "--timeout",
                        f"{int(self.seconds)}s",
                        "--quiet",
                    ]
                )
            else:
                for _ in range(self.cpu):
                    self._spawn(["timeout", limit, "bash", "-c", "while :; do :; done"])
        if self.io:
            self.tmp = tempfile.mkdtemp(prefix="corral-loadgen-")
            if self.stress_ng:
                self._spawn(
                    [
                        self.stress_ng,
                        "--hdd",
                        str(self.io),
                        "--hdd-bytes",
                        "64M",
                        "--temp-path",
                        self.tmp,
                        "--timeout",
                        f"{int(self.seconds)}s",
                        "--quiet",
                    ]
                )
            else:
                for i in range(self.io):
                    target = os.path.join(self.tmp, f"io{i}")
                    self._spawn(
                        [
                            "timeout",
                            limit,
                            "bash",
                            "-c",
                            f"while :; do dd if=/dev/zero of={target} bs=1M count=64 "
                            f"conv=fsync status=none; rm -f {target}; done",
                        ]
                    )
        if self.mem:
            self.ballast = self._spawn(
                [sys.executable, "-c", BALLAST, str(self.mem), limit],
                stdout=subprocess.PIPE,
                text=True,
            )
            if self.ballast.stdout.readline().strip() != "ready":
                raise RuntimeError("memory ballast did not start")

    def release_mem(self) -> None:
        """Drop the memory ballast now (the rest keeps running)."""
        if self.ballast is not None:
            _kill(self.ballast)
            self.ballast = None

    def stop(self) -> None:
        for proc in self.procs:
            _kill(proc)
        self.procs.clear()
        self.ballast = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _kill(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(2)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.stdout:
        proc.stdout.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", type=int, default=0, help="CPU hogs")
    parser.add_argument("--mem", type=parse_size, default=0, help="ballast, e.g. 1G")
    parser.add_argument("--io", type=int, default=0, help="I/O writers")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--no-stress-ng",
        action="store_true",
        help="use the Bash/Python fallbacks even if stress-ng is installed",
    )
    args = parser.parse_args()
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with Load(
        args.cpu,
        args.mem,
        args.io,
        args.seconds,
        use_stress_ng=False if args.no_stress_ng else None,
    ):
        print(
            f"loadgen: cpu={args.cpu} mem={args.mem} io={args.io} for {args.seconds:g}s "
            f"(pid {os.getpid()}); Ctrl-C stops",
            flush=True,
        )
        end = time.monotonic() + args.seconds
        while not stop["now"] and time.monotonic() < end:
            time.sleep(0.1)


if __name__ == "__main__":
    main()
