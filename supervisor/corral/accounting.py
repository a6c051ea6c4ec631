"""An attempt's figures, each from the best source this host has, or unknown.

Sources, best first:
- `cgroup`: the attempt's own cgroup, which it entered at its first instruction. Its
  totals hold every process it started until they are all gone, children nobody waited
  for included; its memory peak is the kernel's high-water mark of what was charged to
  it (pages it touched; shared pages are counted once, by whoever touched them first),
  bursts between samples included.
- `rusage`: the kernel's figures for the waited-for tree (wait4). Exact for what it
  covers, blind to children that were not waited for.
- `sampled`: corral's own readings of the tree (/proc, PSS for memory so shared pages
  count once). A lower bound: what lived between two samples is missed.

A figure no source could give is None (stored NULL), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.cgroups import Figures
from corral.sampler import TreeUsage

CGROUP, RUSAGE, SAMPLED = "cgroup", "rusage", "sampled"


@dataclass
class Measured:
    """The figures recorded for one attempt, and where each came from."""

    peak_rss_bytes: int | None = None
    cpu_user_s: float | None = None
    cpu_sys_s: float | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None
    mem_source: str | None = None
    cpu_source: str | None = None
    io_source: str | None = None


def measure(
    kernel: Figures | None, rusage, sampled: TreeUsage | None, own_peak: int = 0
) -> Measured:
    """Combine the cgroup's totals (`kernel`, None without a cgroup), the wait4 rusage
    (None when the attempt never ran) and the sampled tree into one record.

    `own_peak` is corral's own VmHWM: a child spawned from corral starts with it as its
    ru_maxrss (the kernel carries the old mm's peak across exec), so a maxrss not
    clearly above it says nothing."""
    out = Measured()
    kernel = kernel or Figures()
    # CPU: the cgroup's total, or the waited-for tree's when that is larger (the cgroup
    # starts counting a few instructions after the process did). Totals are compared,
    # not user and system apart: the two split the same time differently (rusage
    # precisely, the cgroup by ticks), and the larger of each would count time twice.
    if kernel.cpu_user_s is not None and kernel.cpu_sys_s is not None:
        out.cpu_user_s, out.cpu_sys_s = kernel.cpu_user_s, kernel.cpu_sys_s
        if rusage is not None and rusage.ru_utime + rusage.ru_stime > (
            kernel.cpu_user_s + kernel.cpu_sys_s
        ):
            out.cpu_user_s, out.cpu_sys_s = rusage.ru_utime, rusage.ru_stime
        out.cpu_source = CGROUP
    elif rusage is not None:
        out.cpu_user_s, out.cpu_sys_s = rusage.ru_utime, rusage.ru_stime
        out.cpu_source = RUSAGE
        if sampled is not None:  # orphans corral reaped as the subreaper: their rusage
            out.cpu_user_s += sampled.orphan_user_s
            out.cpu_sys_s += sampled.orphan_sys_s
    # Memory: the cgroup's high-water mark; else the sampled tree, which only knows
    # something once it was read at least once (a peak of 0 is no reading: no process
    # has one).
    if kernel.peak_rss_bytes is not None:
        out.peak_rss_bytes, out.mem_source = kernel.peak_rss_bytes, CGROUP
    elif sampled is not None and sampled.samples and sampled.peak_rss > 0:
        out.peak_rss_bytes, out.mem_source = sampled.peak_rss, SAMPLED
    elif rusage is not None and rusage.ru_maxrss * 1024 > own_peak + (1 << 20):
        out.peak_rss_bytes, out.mem_source = rusage.ru_maxrss * 1024, RUSAGE
    # I/O: the cgroup's io.stat; else the waited-for tree's block I/O, or the sampled
    # tree's when that saw more (a child that was not waited for).
    if kernel.read_bytes is not None and kernel.write_bytes is not None:
        out.read_bytes, out.write_bytes, out.io_source = (
            kernel.read_bytes,
            kernel.write_bytes,
            CGROUP,
        )
    elif rusage is not None:
        read, write = rusage.ru_inblock * 512, rusage.ru_oublock * 512
        out.io_source = RUSAGE
        if sampled is not None and (sampled.read_bytes > read or sampled.write_bytes > write):
            read, write = max(read, sampled.read_bytes), max(write, sampled.write_bytes)
            out.io_source = SAMPLED
        out.read_bytes, out.write_bytes = read, write
    return out
