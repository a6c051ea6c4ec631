#!/usr/bin/env python3
"""What running a module from its checked descriptor costs, beside `bash FILE`.

    PYTHONPATH=supervisor python3 scripts/bench_prelude.py [--modules 300] [--repeat 9]

Spawns no-op modules one after another, the old way (`bash PATH`) and corral's way
(open and check through trust.Checker, then `bash -c '. /dev/fd/3' PATH` with the
descriptor as fd 3), interleaved, and reports the CPU time per module (this process
plus its children: far steadier than wall time on a loaded machine) and the check
alone. Ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from corral.cgroups import MODULE_FD, command
from corral.trust import Checker


def cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def spawn_all(files: list[str], from_descriptor: bool, devnull: int) -> float:
    start = cpu()
    with Checker() as checker:
        for path in files:
            actions = [(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1)]
            argv = ["bash", path]
            fd = None
            if from_descriptor:
                fd = checker.open_module(path)
                actions.append((os.POSIX_SPAWN_DUP2, fd, MODULE_FD))
                argv = command(path, [], MODULE_FD)
            pid = os.posix_spawnp("bash", argv, os.environ, file_actions=actions, setsid=True)
            if fd is not None:
                os.close(fd)
            os.waitpid(pid, 0)
    return cpu() - start


def check_all(files: list[str]) -> float:
    start = time.perf_counter()
    with Checker() as checker:
        for path in files:
            os.close(checker.open_module(path))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        files = []
        for i in range(args.modules):
            path = Path(root, f"m{i:04d}.sh")
            path.write_text("#!/usr/bin/env bash\ntrue\n")
            files.append(str(path))
        devnull = os.open(os.devnull, os.O_RDWR)
        old, new, check = [], [], []
        for _ in range(args.repeat):
            old.append(spawn_all(files, False, devnull))
            new.append(spawn_all(files, True, devnull))
            check.append(check_all(files))
    per = 1e6 / args.modules
    o, n, c = statistics.median(old), statistics.median(new), statistics.median(check)
    print(f"CPU per module, bash PATH:                         {o * per:7.0f} us")
    print(f"CPU per module, checked + bash -c '. /dev/fd/3':   {n * per:7.0f} us ({n / o:.3f} x)")
    print(f"wall per module, the check alone (open/fstat/ACL): {c * per:7.1f} us")


if __name__ == "__main__":
    main()
