"""The streams corral writes to for people (stdout, stderr): faults there never reach a run.

A reader that went away (`corral run | head -1`), a full device (`>/dev/full`), a
descriptor closed before corral started, an encoding that cannot carry a character
(`PYTHONIOENCODING=ascii`, the C locale): corral stops writing to that stream, or writes
what the encoding can carry, and everything else goes on. Imports nothing of corral's.
"""

from __future__ import annotations

import contextlib
import os
import sys

TYPE_CHECKING = False  # perf: typing is not imported for `plan` (docs/architecture.md)
if TYPE_CHECKING:
    from typing import TextIO


class SafeStream:
    """A text stream that never raises. The first write or flush that fails breaks it:
    from then on it drops what it is given, and its descriptor is pointed at /dev/null,
    so no later flush (the interpreter's own, at exit) can fail either."""

    def __init__(self, stream: TextIO | None):
        self._stream = stream
        self.broken = stream is None
        if stream is not None:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                stream.reconfigure(errors="replace")  # write what the encoding carries

    def write(self, text: str) -> int:
        """Write `text` (what the encoding cannot carry replaced); returns its length
        even when the stream is broken and nothing was written."""
        if not self.broken:
            try:
                self._stream.write(text)
            except UnicodeEncodeError:  # a stream that could not be reconfigured
                encoding = getattr(self._stream, "encoding", None) or "ascii"
                self.write(text.encode(encoding, "replace").decode(encoding, "replace"))
            except (OSError, ValueError):
                self._break()
        return len(text)

    def flush(self) -> None:
        """Flush; a stream that fails is broken from now on, never an exception."""
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._break()

    def isatty(self) -> bool:
        """Whether the stream is a terminal; False once it is broken or cannot say."""
        if self.broken:
            return False
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def _break(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def safe(stream: TextIO | SafeStream | None) -> SafeStream:
    """`stream` as a SafeStream (itself when it is one already)."""
    return stream if isinstance(stream, SafeStream) else SafeStream(stream)


def hold_standard_fds() -> None:
    """Give a closed stdin, stdout or stderr /dev/null, before anything else is opened:
    otherwise the next file opened (the database, a log) would get descriptor 1 or 2,
    and what is printed would be written into it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:  # a lower one was closed too: it got that one first
                os.dup2(null, fd)
                os.close(null)


def install() -> None:
    """Make sys.stdout and sys.stderr SafeStreams (for everything that prints)."""
    hold_standard_fds()
    sys.stdout = safe(sys.stdout)  # type: ignore[assignment]
    sys.stderr = safe(sys.stderr)  # type: ignore[assignment]
