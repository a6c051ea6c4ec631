"""Run listeners that write for people: live prefixed lines, then a summary.

Three audiences: a person at a terminal (colour per module, symbols, a table), cron or
a pipe (plain lines with timestamps, no escape codes), and `--quiet` (only what went
wrong: what cron should mail). Module output is shown through `visible`: decoded with
replacement, control characters and escape sequences made visible, so no module can
move the cursor or repaint the screen; the log files keep the bytes. A line the module
wrote on stderr is marked: `name ! line` (the `!` red at a terminal) where stdout has
`name | line`, and `! ` before it in the failure tails.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import TextIO

from corral.events import (
    AttemptResult,
    Event,
    Idle,
    Leftovers,
    LockWaiting,
    ModuleFinished,
    ModuleOutput,
    ModuleSkipped,
    ModuleStarted,
    ModuleSummary,
    Notice,
    RunFinished,
    RunStarted,
    Waiting,
)
from corral.logmarks import marked_lines, read_ranges
from corral.progress import Held, RunState
from corral.status import Status
from corral.streams import safe
from corral.throttle import Block
from corral.units import clock, local_stamp, plural, seconds
from corral.visible import text as visible_text
from corral.visible import visible

PALETTE = (36, 35, 33, 34, 32, 96, 95, 93, 94, 92)  # ANSI colours for module names
STATUS_COLOUR = {
    Status.OK: 32,
    Status.WARNING: 33,
    Status.FAILED: 31,
    Status.TIMEOUT: 31,
    Status.INTERRUPTED: 33,
    Status.SKIPPED: 33,
}
SYMBOL = {
    Status.OK: "✔",
    Status.WARNING: "⚠",
    Status.FAILED: "✘",
    Status.TIMEOUT: "⏱",
    Status.INTERRUPTED: "■",
    Status.SKIPPED: "–",
}
TAIL_LINES = 10


def tail(path: str | None, lines: int = TAIL_LINES) -> list[tuple[str, bool]]:
    """The last `lines` lines of a log as the live view split them, as `visible` shows
    them, each with whether it came from stderr; [] when unreadable."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            start = max(0, f.tell() - 64 * 1024)
            f.seek(start)
            found = list(marked_lines(f, read_ranges(path), start))
    except OSError:
        return []
    if start and len(found) > lines:  # the first one may have begun before `start`
        found = found[1:]
    return [(visible(line.removesuffix(b"\r")), err) for line, err in found[-lines:]]


def no_tail(last: AttemptResult) -> str:
    """What a failure's tail says when it has no line to show: the module printed
    nothing, or what it printed was not kept (the log could not be written), or the log
    is gone or unreadable now. Never "(no output)" for output that was lost."""
    if last.log_incomplete and last.log_dropped_bytes:
        lost = plural(last.log_dropped_bytes, "byte")
        return f"(its output was not kept: {lost} lost, the log could not be written)"
    if last.log_path and not os.access(last.log_path, os.R_OK):
        return "(its log cannot be read now)"
    return "(no output)"


def outcome(summary: ModuleSummary) -> str:
    """'exit 3', 'signal 15', 'requires x, which failed' …: why a module ended as it did
    (made visible: a reason may name a file)."""
    last = summary.last
    if summary.status == Status.OK:
        return ""
    if summary.status == Status.SKIPPED or last is None:
        return visible_text(summary.reason or "")
    if last.reason:
        return visible_text(last.reason)
    if last.exit_code is not None:
        return f"exit {last.exit_code}"
    return f"signal {last.signal}" if last.signal else ""


class Printer:
    """The terminal/cron listener. `color` and `timestamps` choose the audience."""

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        color: bool,
        timestamps: bool,
        quiet: bool = False,
        show_output: bool = True,
        progress_every: float = 30.0,
    ):
        self.out, self.err = safe(out), safe(err)  # a fault there never reaches the run
        self.state = RunState()  # what runs and waits, for the status and progress lines
        # False once the run feeds `state` as a listener of its own (see `RunState.shared`)
        self.feeds_state = True
        self.progress_every = progress_every  # plain mode: a progress line at most this often
        self.progress_at = time.monotonic()
        self.drawn_at = 0.0
        self.started: RunStarted | None = None
        self.levels: dict[str, int] = {}
        self.expected_s: float | None = None
        self.unknown = 0
        self.color, self.timestamps, self.quiet = color, timestamps, quiet
        self.show_output = show_output and not quiet
        self.width = 8
        self.colours: dict[str, int] = {}
        self.dry_run = False
        self.step = 0
        self.held: Block | None = None  # the kind of refusal the gate last held modules for
        self.held_at = 0.0
        self.status_shown = False

    def __call__(self, event: Event) -> None:
        """Print what the event says, as this printer shows a run; feeds the run's state first
        when this printer keeps it."""
        if self.feeds_state and not isinstance(event, ModuleOutput):
            self.state(event)
        if isinstance(event, ModuleOutput):
            if self.show_output:
                self._line(event.name, visible(event.line.removesuffix(b"\r")), event.err)
        elif isinstance(event, ModuleStarted):
            if self.dry_run:
                self.step += 1
                self._write(self.out, self._planned(event.name), False)
            elif not self.quiet:
                note = f" (attempt {event.attempt})" if event.attempt > 1 else ""
                self._line(event.name, self._dim(f"started{note}"))
        elif isinstance(event, ModuleFinished):
            if not self.dry_run:
                self._finished(event)
            elif event.result.status != Status.OK:  # it could not even be planned to start
                r = event.result
                line = (
                    f"{SYMBOL[r.status]:>5} {r.name:<{self.width}}  {visible_text(r.reason or '')}"
                )
                self._write(self.out, line, False)
        elif isinstance(event, ModuleSkipped):
            if not self.quiet:
                self._line(
                    event.name,
                    self._status(Status.SKIPPED, f"skipped: {visible_text(event.reason or '')}"),
                )
        elif isinstance(event, Notice):
            prefix = "warning: " if event.warning else ""
            self._write(self.err, visible_text(f"corral: {prefix}{event.message}"))
        elif isinstance(event, RunStarted):
            self.dry_run = event.dry_run
            self.started = event
            self.levels = {}
            for name in event.names:  # in plan order: what it waits on comes first
                deps = self.state.deps.get(name, ())
                self.levels[name] = 1 + max((self.levels[d] for d in deps), default=-1)
            self.expected_s, self.unknown = self.state.eta()
            self.width = max([len(n) for n in event.names] + [4])
            self.colours = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(event.names)}
            if not self.quiet:
                what = "would run, in this order," if event.dry_run else "running"
                where = f"; logs in {visible_text(str(event.log_dir))}" if event.log_dir else ""
                # a dry run is recorded nowhere: an id no command knows would mislead
                run = "" if event.dry_run else f" (run {event.run_id})"
                self._write(
                    self.out,
                    f"corral: {what} {plural(len(event.names), 'module')} with "
                    f"-j {event.jobs}{run}{where}",
                )
        elif isinstance(event, RunFinished):
            self._summary(event)
            self.out.flush()
        elif isinstance(event, Waiting):
            self._waiting(event)
        elif isinstance(event, Leftovers):
            for (name, _), count in sorted(event.counts.items()):
                what = (
                    "left running (detach: yes)"
                    if name in event.detached
                    else "left behind, stopped"
                )
                self._write(self.err, f"corral: {name}: {plural(count, 'process')} {what}")
        elif isinstance(event, LockWaiting):
            if not self.quiet and not self.color:
                self._write(
                    self.out,
                    self._status(Status.SKIPPED, f"corral: waiting: {event.reason} ({event.name})"),
                )
            self._draw_status()
        elif isinstance(event, Idle):
            self._tick()
            self.out.flush()

    def _planned(self, name: str) -> str:
        """A dry run's line: step, wave, expected time, locks."""
        expected = self.started.expected.get(name) if self.started else None
        time_text = f"~{clock(expected)}" if expected is not None else "no history"
        locks = self.started.locks.get(name, ()) if self.started else ()
        lock_text = f"  locks: {', '.join(locks)}" if locks else ""
        return (
            f"{self.step:>4}. {name:<{self.width}}  wave {self.levels.get(name, 0)}  "
            f"{time_text:>10}{lock_text}"
        )

    def _dry_summary(self, run: RunFinished) -> None:
        """How many waves, who shares a lock (and so runs one at a time), how long."""
        holders: dict[str, list[str]] = {}
        for name, locks in (self.started.locks if self.started else {}).items():
            for lock in locks:
                holders.setdefault(lock, []).append(name)
        for lock, names in sorted(holders.items()):
            if len(names) > 1:
                self._write(
                    self.out,
                    f"corral: lock {lock}: {', '.join(names)} wait for each other "
                    "(one at a time unless pools: allows more)",
                )
        waves = 1 + max(self.levels.values(), default=-1)
        if self.expected_s is None:
            expected = "no history to estimate the duration"
        else:
            unknown = f", {self.unknown} without history" if self.unknown else ""
            expected = f"expected about {clock(self.expected_s)} at -j {run.jobs}{unknown}"
        self._write(
            self.out,
            f"corral: dry run: {plural(len(run.modules), 'module')} in "
            f"{plural(waves, 'wave')}, {expected}; nothing was run",
        )

    def _tick(self) -> None:
        """Between events: redraw the status line (its times move), and in plain mode
        print a progress line at most every `progress_every` seconds of a long run."""
        if self.quiet or self.dry_run or not self.state.names or self.state.finished:
            return
        now = time.monotonic()
        if self.color:
            if now - self.drawn_at >= 0.5:
                self._draw_status()
        elif now - self.progress_at >= self.progress_every:
            self.progress_at = now
            self._write(self.out, self._dim(f"corral: {self._progress(plain=True)}"))

    def _waiting(self, event: Waiting) -> None:
        """At a terminal: the status line says why modules wait. Elsewhere: a line when the
        gate starts or stops holding modules back, at most every 5 s for the same kind of
        reason, so a long wait does not flood cron's mail."""
        if self.quiet:
            return
        if self.color:
            self._draw_status()  # the status line shows the gate's reason
            return
        now = time.monotonic()
        if event.reason is None:
            if self.held:
                self._write(self.out, self._dim("corral: throttle released"))
            self.held = None
            return
        kind = event.reason.kind
        if kind == self.held and now - self.held_at < 5.0:
            return
        self.held, self.held_at = kind, now
        names = ", ".join(event.modules[:4]) + (" …" if len(event.modules) > 4 else "")
        self._write(
            self.out, self._status(Status.SKIPPED, f"corral: waiting: {event.reason} ({names})")
        )

    def _finished(self, event: ModuleFinished) -> None:
        r = event.result
        if self.quiet and (r.status == Status.OK or r.retry_in is not None):
            return  # --quiet reports final outcomes: not a failure that a retry may fix
        words = f"{r.status} in {seconds(r.duration_s)}"
        if r.status != Status.OK:
            why = visible_text(r.reason or "") or (
                f"exit {r.exit_code}" if r.exit_code is not None else f"signal {r.signal}"
            )
            words = f"{r.status} ({why}) after {seconds(r.duration_s)}"
        if r.retry_in is not None:
            words += f"; retrying in {seconds(r.retry_in)}"
        if r.log_incomplete:
            words += f"; log incomplete, {plural(r.log_dropped_bytes, 'byte')} not kept"
        elif r.log_dropped_bytes:
            words += f"; log capped, {plural(r.log_dropped_bytes, 'byte')} dropped"
        self._line(r.name, self._status(r.status, f"{SYMBOL.get(r.status, '')} {words}"))

    def _summary(self, run: RunFinished) -> None:
        bad = [m for m in run.modules if m.status != Status.OK]
        if self.quiet and not bad:
            return
        out = self.out
        if run.dry_run:
            self._dry_summary(run)
            return
        shown = bad if self.quiet else run.modules
        self._write(out, "", False)
        name_w = max([len(m.name) for m in shown] + [6])
        head = f"{'module':<{name_w}}  {'status':<11}  {'time':>8}  {'tries':>5}  detail"
        self._write(out, self._bold(head), False)
        for m in shown:
            last = m.last
            status = self._status(m.status, f"{m.status:<11}")
            self._write(
                out,
                f"{m.name:<{name_w}}  {status}  "
                f"{seconds(last.duration_s if last else None):>8}  "
                f"{len(m.attempts):>5}  {outcome(m)}",
                False,
            )
        for m in bad:
            if m.last is None or m.status == Status.SKIPPED or not m.last.pid:
                continue  # no tail to show: it never ran (skipped, or could not start)
            lines = tail(m.last.log_path)
            self._write(out, "", False)
            where = f" ({visible_text(m.last.log_path)})" if m.last.log_path else ""
            self._write(out, self._bold(f"── last lines of {m.name}{where} ──"), False)
            if not lines:
                lines = [(no_tail(m.last), False)]
            for line, err in lines:
                mark = self._status(Status.FAILED, "!") if err else " "
                self._write(out, f"{mark} {line}", False)
        counts: dict[str, int] = {}
        for m in run.modules:
            counts[m.status] = counts.get(m.status, 0) + 1
        parts = ", ".join(f"{n} {s}" for s, n in counts.items())
        work = sum(a.duration_s for m in run.modules for a in m.attempts)
        # The wall time from start to end, waits included (an interrupted run's real
        # length, not only the span of its attempts).
        self._write(out, "", False)
        self._write(
            out,
            self._status(
                run.status,
                f"corral: {run.status}: {plural(len(run.modules), 'module')} "
                f"({parts}) in "
                f"{seconds(max(run.ended - run.started, run.makespan_s))}, work "
                f"{seconds(work)}, -j {run.jobs}; "
                f"run {run.run_id}",
            ),
        )

    # formatting ------------------------------------------------------------------------

    def _line(self, name: str, text: str, err: bool = False) -> None:
        """`name | text`; `name ! text` for a line the module wrote on stderr."""
        label = f"{name:<{self.width}}"
        if self.color:
            label = f"\x1b[{self.colours.get(name, 36)}m{label}\x1b[0m"
            sep = "\x1b[31m!\x1b[0m" if err else "│"
        else:
            sep = "!" if err else "|"
        self._write(self.out, f"{label} {sep} {text}")

    def _write(self, stream: TextIO, text: str, stamp: bool = True) -> None:
        if self.timestamps and stamp and text:
            text = f"{local_stamp()} {text}"
        if self.status_shown:
            self.out.write("\r\x1b[K")
            self.status_shown = False
        stream.write(text + "\n")
        self._draw_status()

    def _draw_status(self) -> None:
        """At a terminal, one last line that is redrawn: what runs and why others wait."""
        if not self.color or self.quiet:
            return
        if self.status_shown:
            self.out.write("\r\x1b[K")
            self.status_shown = False
        if self.state.names and not self.dry_run and not self.state.finished:
            self.drawn_at = time.monotonic()
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.out.write(self._dim(self._progress()[:width]))
            self.status_shown = True

    def _progress(self, plain: bool = False) -> str:
        """ninja's [done/total], the running modules with their elapsed time, what the
        first waiting modules wait on, and the ETA."""
        st = self.state
        now = st.clock()
        parts = [f"[{len(st.done)}/{len(st.names)}]"]
        eta, unknown = st.eta()  # early in the line: it survives a narrow terminal
        if eta is not None:
            parts.append(
                f"ETA {clock(eta)}" + (f" (+{unknown} without history)" if unknown else "")
            )
        elif unknown:
            parts.append("ETA unknown (no history yet)")
        if st.running:
            running = sorted(st.running.items(), key=lambda kv: kv[1][0])
            shown = ", ".join(f"{n} {clock(now - since)}" for n, (since, _) in running[:4])
            more = f" +{len(running) - 4}" if len(running) > 4 else ""
            parts.append(f"running {len(running)}: {shown}{more}")
        waiting = st.waiting()
        blocked = {n: why for n, why in waiting.items() if why.held != Held.REQUIREMENTS}
        if blocked and not plain:
            name, why = next(iter(blocked.items()))
            more = f" +{len(blocked) - 1}" if len(blocked) > 1 else ""
            parts.append(f"waiting: {why} ({name}{more})")
        elif waiting:
            parts.append(f"{len(waiting)} waiting")
        return " · ".join(parts)

    def _status(self, status: str, text: str) -> str:
        if not self.color or status not in STATUS_COLOUR:
            return text
        return f"\x1b[{STATUS_COLOUR[status]}m{text}\x1b[0m"

    def _dim(self, text: str) -> str:
        return f"\x1b[2m{text}\x1b[0m" if self.color else text

    def _bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.color else text
