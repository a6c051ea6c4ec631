"""Which bytes of an attempt's log came from its stderr.

The log file keeps the module's bytes as they came, stdout and stderr in the order
corral read them, so `less` and `grep` see exactly what the module wrote. Which stream
each byte came from is kept beside it, in `NAME.log.stderr-ranges`: a comment line,
then one `OFFSET LENGTH` line per stretch of the log that the module wrote to stderr
(only created when it wrote to stderr at all). `marked_lines` reads a log back into
the lines the live view showed, each with its stream, for the failure tails and
`corral log` at a terminal.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import BinaryIO

SUFFIX = ".stderr-ranges"
HEADER = b"# corral: byte ranges (offset length) of the log that the module wrote to stderr\n"
CHUNK = 1 << 16


def path_of(log_path: str) -> str:
    """The stderr ranges file that belongs to `log_path`."""
    return log_path + SUFFIX


def read_ranges(log_path: str) -> list[tuple[int, int]]:
    """The (start, end) byte ranges of `log_path` that came from stderr, sorted; [] when
    none were recorded (the module wrote none, or an older corral wrote the log)."""
    try:
        with open(path_of(log_path), "rb") as f:
            data = f.read()
    except OSError:
        return []
    ranges = []
    for line in data.split(b"\n"):
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            start = int(fields[0])
            ranges.append((start, start + int(fields[1])))
    ranges.sort()
    return ranges


def marked_lines(
    f: BinaryIO, ranges: list[tuple[int, int]], start: int = 0
) -> Iterator[tuple[bytes, bool]]:
    """The lines of the log `f` from byte `start` on, as the live view split them: each
    stream has its own partial line, so a stdout line cut by a stderr line is one line
    (line, from_stderr), yielded when it ends; the unfinished ones come last. `f` is
    positioned at `start`."""
    starts = [s for s, _ in ranges]
    partial = [b"", b""]
    pos = start
    while chunk := f.read(CHUNK):
        end = pos + len(chunk)
        at = pos
        while at < end:
            i = bisect.bisect_right(starts, at) - 1
            if i >= 0 and at < ranges[i][1]:
                err, stop = 1, ranges[i][1]
            else:
                err, stop = 0, starts[i + 1] if i + 1 < len(starts) else end
            stop = min(stop, end)
            lines = (partial[err] + chunk[at - pos : stop - pos]).split(b"\n")
            partial[err] = lines.pop()
            for line in lines:
                yield line, bool(err)
            at = stop
        pos = end
    for err in (0, 1):
        if partial[err]:
            yield partial[err], bool(err)
