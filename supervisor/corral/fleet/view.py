"""The fleet for people: a listener of fleet events, in three voices.

At a terminal: one status line for the whole fleet, redrawn in place (hosts done,
running, failed, unreachable; the slowest host and what it runs), with a
host-prefixed line above it for each failure. Under cron or in a pipe: plain,
timestamped, host-prefixed lines. With --quiet: only what went wrong, per host.
"""

from __future__ import annotations

import time
from typing import TextIO

from corral.fleet.hosts import (
    FAILED,
    LOCKED,
    LOST,
    OK,
    PENDING,
    RUNNING,
    SKIPPED,
    UNREACHABLE,
    FleetEvent,
    FleetTick,
    HostFinished,
    HostProgress,
    HostResult,
    HostStarted,
)
from corral.units import local_stamp, plural
from corral.visible import text as visible_text

COLOUR = {OK: 32, FAILED: 31, LOST: 31, UNREACHABLE: 31, LOCKED: 33, SKIPPED: 33}
BAD_MODULE = ("failed", "timeout", "interrupted")


def status_line(hosts: dict[str, HostResult], now: float) -> str:
    """`fleet 3/8 done · 2 running · 1 failed · 1 unreachable · slowest web04 41s: apt`."""
    counts: dict[str, int] = {}
    for r in hosts.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    finished = sum(n for s, n in counts.items() if s not in (PENDING, RUNNING))
    parts = [f"fleet {finished}/{len(hosts)} done", f"{counts.get(RUNNING, 0)} running"]
    bad = counts.get(FAILED, 0) + counts.get(LOST, 0) + counts.get(LOCKED, 0)
    if bad:
        parts.append(f"{bad} failed")
    if counts.get(UNREACHABLE):
        parts.append(f"{counts[UNREACHABLE]} unreachable")
    if counts.get(SKIPPED):
        parts.append(f"{counts[SKIPPED]} skipped")
    running = [r for r in hosts.values() if r.status == RUNNING]
    if running:
        slowest = min(running, key=lambda r: r.since)
        doing = min(slowest.running, key=slowest.running.get) if slowest.running else "starting"
        parts.append(f"slowest {slowest.host} {now - slowest.since:.0f}s: {doing}")
    return " · ".join(parts)


class FleetView:
    """Prints a fleet run for a person (tty), for cron (plain), or only failures (quiet)."""

    def __init__(self, out: TextIO, tty: bool, quiet: bool = False, color: bool = False):
        self.out = out
        self.tty = tty and not quiet
        self.quiet = quiet
        self.color = color
        self.hosts: dict[str, HostResult] = {}
        self.shown = False  # a status line is on screen

    def __call__(self, event: FleetEvent) -> None:
        """Show what the event changes: a line per host (plain), the status line (tty), or only
        what went wrong (quiet)."""
        if isinstance(event, HostStarted):
            self.hosts[event.host.host] = event.host
            if not self.tty and not self.quiet:
                self._line(event.host.host, "started")
        elif isinstance(event, HostProgress):
            bad = event.status in BAD_MODULE
            if self.quiet and not bad:
                return
            if self.tty and not bad:
                return
            if event.status != RUNNING:
                took = f" ({event.duration_s:.2f}s)" if event.duration_s is not None else ""
                self._line(event.host.host, visible_text(f"{event.module} {event.status}{took}"))
        elif isinstance(event, HostFinished):
            r = event.host
            self.hosts[r.host] = r
            if r.status == OK and (self.quiet or self.tty):
                self._redraw()
                return
            why = f": {visible_text(r.reason)}" if r.reason else ""  # what the host said
            self._line(r.host, f"{self._paint(r.status)}{why}")
        elif isinstance(event, FleetTick):
            self.hosts = event.hosts
            self._redraw()

    def _paint(self, status: str) -> str:
        if not self.color or status not in COLOUR:
            return status
        return f"\033[{COLOUR[status]}m{status}\033[0m"

    def _line(self, host: str, text: str) -> None:
        host = visible_text(host)
        if self.tty:
            self._clear()
            self.out.write(f"{host}: {text}\n")
            self._redraw()
            return
        stamp = local_stamp()
        self.out.write(f"{stamp} {host}: {text}\n")
        self.out.flush()

    def _clear(self) -> None:
        if self.shown:
            self.out.write("\r\033[K")
            self.shown = False

    def _redraw(self) -> None:
        if not self.tty or not self.hosts:
            return
        self._clear()
        self.out.write(status_line(self.hosts, time.monotonic()))
        self.out.flush()
        self.shown = True

    def summary(self, outcome) -> None:
        """After the run: every host that did not end ok, and the totals."""
        self._clear()
        if self.quiet and outcome.exit_code == 0:
            return
        counts: dict[str, int] = {}
        for r in outcome.hosts:
            counts[r.status] = counts.get(r.status, 0) + 1
        if not self.quiet:
            width = max(len(r.host) for r in outcome.hosts)
            for r in outcome.hosts:
                run = r.run or {}
                took = f"{run['makespan_s']:.2f}s" if run.get("makespan_s") is not None else "-"
                pad = " " * (11 - len(r.status))
                self.out.write(
                    f"  {visible_text(r.host):<{width}}  {self._paint(r.status)}{pad}"
                    f"  {took:>8}  {visible_text(r.reason or '')}\n"
                )
        totals = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        self.out.write(
            f"fleet run {outcome.run_id}: {plural(len(outcome.hosts), 'host')}: {totals}; "
            f"exit {outcome.exit_code}\n"
        )
        self.out.flush()
