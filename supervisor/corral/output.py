"""An attempt's output, wherever it runs: its log file and its lines on the display.

Every backend hands the bytes an attempt writes (stdout and stderr together) to one
`Output`, so logs and the display behave the same wherever a module runs:
- the log file is created with the first byte (most checks print nothing, and
  creating a thousand empty files costs more than spawning the modules), capped at
  `cap` bytes; what is over the cap, or cannot be written (disk full), is counted in
  `dropped` and the log is marked `incomplete`; the module is never blocked;
- the display gets complete lines, at most LINES_PER_SECOND per module, each cut at
  MAX_LINE bytes: a flood (`yes`) is counted, not printed, and the log keeps every byte.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

LINES_PER_SECOND = 200  # per module, on the terminal; the log keeps everything
MAX_LINE = 8192  # bytes of one line shown; longer lines are cut on screen only …
CUT = b" [...]"  # … and end with this


class Output:
    """One attempt's output stream. `feed` bytes as they come; `end_display` when the
    stream ends, `close_log` when nothing more will be written."""

    # perf: slots and plain attributes, one object per attempt (docs/architecture.md)
    __slots__ = (
        "name",
        "log_path",
        "cap",
        "on_line",
        "log_fd",
        "log_bytes",
        "dropped",
        "incomplete",
        "opened",
        "partial",
        "window",
        "shown",
        "hidden",
    )

    def __init__(
        self,
        name: str,
        log_path: str | None,
        cap: int,
        on_line: Callable[[str, bytes], None] | None,
    ):
        self.name = name
        self.log_path = log_path
        self.cap = cap
        self.on_line = on_line
        self.log_fd: int | None = None
        self.log_bytes = 0  # written to the log
        self.dropped = 0  # not written: over the cap, or the log failed
        self.incomplete = False  # the log could not be written (disk full, removed)
        self.opened = False  # the log file was created
        self.partial = b""  # the start of a line not yet complete
        self.window = 0.0  # display rate limit: start of the current second …
        self.shown = 0  # … lines shown in it …
        self.hidden = 0  # … and lines not shown

    def feed(self, data: bytes) -> None:
        """Log `data` and show its complete lines."""
        self._log(data)
        if self.on_line is not None:
            self._show(data)

    def end_display(self) -> None:
        """The stream ended: show the last line without a newline, and what was hidden."""
        if self.on_line is not None:
            if self.partial:
                line = self.partial
                self.on_line(self.name, line if len(line) <= MAX_LINE else line[:MAX_LINE] + CUT)
            if self.hidden:
                self._say_hidden()
        self.partial, self.hidden = b"", 0

    def close_log(self) -> None:
        """Close the log file (if one was opened); later bytes are counted as dropped."""
        if self.log_fd is not None:
            os.close(self.log_fd)
            self.log_fd = None

    @property
    def written_path(self) -> str | None:
        """The log file's path when one was created, else None (also when creating it
        failed: no record may name a log that is not there)."""
        return (
            self.log_path if self.opened and not (self.incomplete and not self.log_bytes) else None
        )

    def _say_hidden(self) -> None:
        self.on_line(self.name, f"… {self.hidden} lines not shown; they are in the log".encode())

    def _show(self, data: bytes) -> None:
        now = time.monotonic()
        if now - self.window >= 1.0:
            if self.hidden:
                self._say_hidden()
            self.window, self.shown, self.hidden = now, 0, 0
        if self.shown >= LINES_PER_SECOND:
            self.hidden += data.count(b"\n")
            self.partial = b""
            return
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > MAX_LINE:  # no newline in sight (head -c 3G /dev/zero)
            lines.append(self.partial)
            self.partial = b""
        room = LINES_PER_SECOND - self.shown
        for line in lines[:room]:
            self.on_line(self.name, line if len(line) <= MAX_LINE else line[:MAX_LINE] + CUT)
        self.shown += min(len(lines), room)
        self.hidden += max(0, len(lines) - room)

    def _log(self, data: bytes) -> None:
        if self.log_fd is None:
            # perf: the log is created with the first byte (docs/architecture.md)
            if self.log_path is None or self.opened:
                if self.opened:
                    self.dropped += len(data)
                return
            self.opened = True
            try:
                self.log_fd = os.open(
                    self.log_path,
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                    0o640,
                )
            except OSError:
                self.incomplete = True
                self.dropped += len(data)
                return
        room = self.cap - self.log_bytes
        if room < len(data):
            self.dropped += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.log_fd, view)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                # Disk full or gone: keep draining the pipe so the module is not blocked
                # or killed by SIGPIPE, and say the log is incomplete.
                self.incomplete = True
                self.dropped += len(view)
                self.close_log()
                return
            self.log_bytes += written
            view = view[written:]
