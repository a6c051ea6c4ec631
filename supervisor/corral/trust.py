"""Run nothing that someone else could have changed (when corral runs as root).

As root, every module file, every library file in $CORRAL_LIB, the config file, and
every directory above them must be owned by root and writable by no one else (a
world-writable directory is accepted only with the sticky bit, as /tmp has, and only
above a root-owned directory). The rule is sshd's StrictModes: a file is only as
trustworthy as the least protected directory on its path.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from corral.errors import Problem


def untrusted(paths: Iterable[str | Path], euid: int | None = None) -> list[Problem]:
    """Problems for every file (or a directory above it) another user could change;
    [] when corral is not root (a user may run their own files)."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return []
    problems: list[Problem] = []
    verdicts: dict[str, str | None] = {}  # directory -> why its path is not safe, or None
    absolute: dict[str, str] = {}  # directory as given -> absolute

    def directory_verdict(directory: str) -> str | None:
        if directory not in verdicts:
            parent = os.path.dirname(directory)
            verdicts[directory] = _check(directory, is_dir=True) or (
                None if parent == directory else directory_verdict(parent)
            )
        return verdicts[directory]

    for path in paths:
        given, name = os.path.split(os.fspath(path))
        directory = absolute.get(given)
        if directory is None:
            directory = absolute[given] = os.path.abspath(given)
        path = os.path.join(directory, name)
        why = _check(path, is_dir=False)
        if why is None and (above := directory_verdict(directory)) is not None:
            why = f"its directory {above}"
        if why is not None:
            problems.append(
                Problem(
                    path, 1, f"refusing to run as root: {why}; another user could change what runs"
                )
            )
    return problems


def _check(path: str, is_dir: bool) -> str | None:
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"{path} cannot be checked ({exc.strerror})"
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        return f"{path} is owned by uid {st.st_uid}, not root"
    if mode & stat.S_IWOTH and not (is_dir and mode & stat.S_ISVTX):
        return f"{path} is world-writable (mode {mode:04o})"
    if mode & stat.S_IWGRP and st.st_gid != 0:
        return f"{path} is writable by group {st.st_gid} (mode {mode:04o})"
    return None
