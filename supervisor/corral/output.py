"""An attempt's output, wherever it runs: its log file and its lines on the display.

Every backend hands the bytes an attempt writes on stdout and on stderr, each chunk
with its stream, to one `Output`, so logs and the display behave the same wherever a
module runs:
- the log file is created with the first byte (most checks print nothing, and
  creating a thousand empty files costs more than spawning the modules), capped at
  `cap` bytes for both streams together; what is over the cap, or cannot be written
  (disk full), is counted in `dropped` and the log is marked `incomplete`; the module
  is never blocked;
- the log keeps the raw bytes of both streams in the order they were read; the
  stretches that came from stderr are noted in memory and written beside the log
  (`corral.logmarks`) in batches and when it closes: no syscall per chunk;
- the display gets complete lines, each stream its own (a stdout line is never cut by
  a stderr one), at most LINES_PER_SECOND per module, each cut at MAX_LINE bytes: a
  flood (`yes`) is counted, not printed, and the log keeps every byte.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

from corral import logmarks

LINES_PER_SECOND = 200  # per module, on the terminal; the log keeps everything
MAX_LINE = 8192  # bytes of one line shown; longer lines are cut on screen only …
CUT = b" [...]"  # … and end with this
MARKS_BATCH = 1 << 16  # bytes of stderr ranges kept in memory before they are written


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
        "partial_err",
        "err_from",
        "err_to",
        "marks",
        "marks_fd",
        "marks_left",
        "window",
        "shown",
        "hidden",
    )

    def __init__(
        self,
        name: str,
        log_path: str | None,
        cap: int,
        on_line: Callable[[str, bytes, bool], None] | None,
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
        self.partial = b""  # the start of a stdout line not yet complete …
        self.partial_err = b""  # … and of a stderr line
        self.err_from = self.err_to = -1  # the stderr range of the log still growing
        self.marks = bytearray()  # stderr ranges not yet written
        self.marks_fd: int | None = None
        self.marks_left = max(cap // 8, 4096)  # bytes of ranges kept at most
        self.window = 0.0  # display rate limit: start of the current second …
        self.shown = 0  # … lines shown in it …
        self.hidden = 0  # … and lines not shown

    def feed(self, data: bytes, err: bool = False) -> None:
        """Log `data` (from stderr when `err`) and show its complete lines."""
        if err:
            start = self.log_bytes
            self._log(data)
            if self.log_bytes > start:
                self._mark(start)
        else:
            self._log(data)
        if self.on_line is not None:
            self._show(data, err)

    def end_display(self) -> None:
        """The streams ended: show their last lines without a newline, and what was hidden."""
        if self.on_line is not None:
            for line, err in ((self.partial, False), (self.partial_err, True)):
                if line:
                    self.on_line(
                        self.name, line if len(line) <= MAX_LINE else line[:MAX_LINE] + CUT, err
                    )
            if self.hidden:
                self._say_hidden()
        self.partial, self.partial_err, self.hidden = b"", b"", 0

    def close_log(self) -> None:
        """Close the log file (if one was opened) and write what is left of its stderr
        ranges; later bytes are counted as dropped."""
        if self.log_fd is not None:
            os.close(self.log_fd)
            self.log_fd = None
        if self.err_to >= 0 or self.marks:
            self._write_marks(final=True)
        if self.marks_fd is not None:
            os.close(self.marks_fd)
            self.marks_fd = None

    def _mark(self, start: int) -> None:
        """Bytes `start` to `log_bytes` of the log came from stderr."""
        if start == self.err_to:  # the same stretch goes on
            self.err_to = self.log_bytes
            return
        if self.err_to >= 0:
            self.marks += b"%d %d\n" % (self.err_from, self.err_to - self.err_from)
            if len(self.marks) >= MARKS_BATCH:
                self._write_marks()
        self.err_from, self.err_to = start, self.log_bytes

    def _write_marks(self, final: bool = False) -> None:
        """Write the ranges noted so far beside the log (created now, as the log is with
        its first byte). Past `marks_left` bytes the rest are not kept, and the file says
        from where; a failure to write loses the marks, never a byte of the log."""
        if final and self.err_to >= 0:
            self.marks += b"%d %d\n" % (self.err_from, self.err_to - self.err_from)
            self.err_from = self.err_to = -1
        data, self.marks = bytes(self.marks), bytearray()
        if self.log_path is None or self.marks_left <= 0 or not data:
            return
        if len(data) > self.marks_left:
            cut = data.rfind(b"\n", 0, self.marks_left) + 1
            at = data[cut:].split(b" ", 1)[0].decode()
            data = data[:cut] + f"# from byte {at} on, stderr is not marked\n".encode()
        self.marks_left -= len(data)
        try:
            if self.marks_fd is None:
                self.marks_fd = os.open(
                    logmarks.path_of(self.log_path),
                    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                    0o640,
                )
                data = logmarks.HEADER + data
            os.write(self.marks_fd, data)
        except OSError:
            self.marks_left = 0

    @property
    def written_path(self) -> str | None:
        """The log file's path when one was created, else None (also when creating it
        failed: no record may name a log that is not there)."""
        return (
            self.log_path if self.opened and not (self.incomplete and not self.log_bytes) else None
        )

    def _say_hidden(self) -> None:
        self.on_line(
            self.name, f"… {self.hidden} lines not shown; they are in the log".encode(), False
        )

    def _show(self, data: bytes, err: bool) -> None:
        now = time.monotonic()
        if now - self.window >= 1.0:
            if self.hidden:
                self._say_hidden()
            self.window, self.shown, self.hidden = now, 0, 0
        if self.shown >= LINES_PER_SECOND:
            self.hidden += data.count(b"\n")
            if err:
                self.partial_err = b""
            else:
                self.partial = b""
            return
        lines = ((self.partial_err if err else self.partial) + data).split(b"\n")
        partial = lines.pop()
        if len(partial) > MAX_LINE:  # no newline in sight (head -c 3G /dev/zero)
            lines.append(partial)
            partial = b""
        if err:
            self.partial_err = partial
        else:
            self.partial = partial
        room = LINES_PER_SECOND - self.shown
        for line in lines[:room]:
            self.on_line(self.name, line if len(line) <= MAX_LINE else line[:MAX_LINE] + CUT, err)
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
