#!/usr/bin/env python3
"""The least a Python supervisor can do per module, for bench_spawn.py to compare with.

    python3 scripts/spawn_floor.py JOBS FILE...

Runs `bash FILE` for every FILE, JOBS at a time, each the way corral starts a module
(posix_spawn, own session, stdin /dev/null, stdout and stderr into a pipe that is
drained through epoll, exits seen through a SIGCHLD wakeup fd and wait4), and nothing
else: no header cache, no plan, no gate, no records, no logs. Its wall time minus
xargs' is what the interpreter and this loop cost; corral's minus this is what its
bookkeeping costs.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys


def main() -> None:
    jobs, files = int(sys.argv[1]), iter(sys.argv[2:])
    bash = shutil.which("bash") or "/bin/bash"
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    poll = select.epoll()
    poll.register(wake_r, select.EPOLLIN)
    running: set[int] = set()
    pipes: set[int] = set()

    def start() -> None:
        path = next(files, None)
        if path is None:
            return
        r, w = os.pipe2(os.O_CLOEXEC)
        pid = os.posix_spawn(
            bash,
            ["bash", path],
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0),
                (os.POSIX_SPAWN_DUP2, w, 1),
                (os.POSIX_SPAWN_DUP2, w, 2),
            ],
            setsid=True,
        )
        os.close(w)
        os.set_blocking(r, False)
        poll.register(r, select.EPOLLIN)
        pipes.add(r)
        running.add(pid)

    for _ in range(jobs):
        start()
    while running or pipes:
        for fd, _ in poll.poll():
            if fd != wake_r:
                if not os.read(fd, 65536):
                    poll.unregister(fd)
                    os.close(fd)
                    pipes.discard(fd)
                continue
            os.read(wake_r, 512)
            while running:
                pid, _, _ = os.wait4(-1, os.WNOHANG)
                if pid == 0:
                    break
                running.discard(pid)
                start()


if __name__ == "__main__":
    main()
