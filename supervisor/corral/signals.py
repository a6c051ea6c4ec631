"""The program's signal handling, shared by every backend.

SIGINT, SIGTERM and SIGHUP (and SIGCHLD for a backend that starts local processes)
arrive as bytes on a non-blocking pipe (`signal.set_wakeup_fd`); the Python handler
does nothing. A backend waits on `fd` together with its own descriptors, so a signal
is one more readable descriptor and nothing polls or runs inside a handler.

Outside a run's own handling (waiting for the run lock, for a busy database, parsing a
large tree, writing a report) a stopping signal raises `Stopped` wherever corral is
(`stop_anywhere`, installed by the CLI before anything else): the command ends with one
line and 128 + the signal's number (130, 143, 129), never a traceback, and what was
open is closed on the way out.
"""

from __future__ import annotations

import os
import select
import signal

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# What a child must not inherit from Python: ignored SIGPIPE/SIGXFSZ and our handlers.
CHILD_DEFAULTS = (
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGCHLD,
    signal.SIGQUIT,
)


class Stopped(BaseException):
    """A stopping signal arrived outside a run's own handling. A BaseException, as
    KeyboardInterrupt is: no `except Exception` swallows it. `during` says what corral
    was doing, when the place it arrived knows (`while waiting for the run lock ...`)."""

    def __init__(self, signum: int, during: str = ""):
        super().__init__(signum)
        self.signum = signum
        self.during = during

    @property
    def exit_code(self) -> int:
        """128 + the signal, as a shell reports a command a signal ended."""
        return 128 + self.signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        during = f" {self.during}" if self.during else ""
        return f"stopped by {name}{during}"


def stop_anywhere() -> None:
    """From now on SIGINT, SIGTERM and SIGHUP raise Stopped where the program is (a run's
    `Signals` takes them over while it is entered, and gives them back). A signal the
    program was started with ignored (`nohup`, a background job of a script) stays
    ignored, as the interpreter leaves an ignored SIGINT."""
    for signum in STOPPING:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _stop)


def _stop(signum, frame) -> None:
    raise Stopped(signum)


class Signals:
    """A context manager: while entered, the handled signals are bytes on `fd`."""

    def __init__(self, children: bool = False):
        self.handled = (*STOPPING, signal.SIGCHLD) if children else STOPPING
        self.fd = -1
        self._w = -1
        self._old_handlers: dict[int, object] = {}
        self._old_wakeup = -1

    def __enter__(self) -> Signals:
        self.fd, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for signum in self.handled:
            self._old_handlers[signum] = signal.signal(signum, _noted)
        self._old_wakeup = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd < 0:
            return
        signal.set_wakeup_fd(self._old_wakeup)
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        os.close(self.fd)
        os.close(self._w)
        self.fd = self._w = -1

    def read(self) -> list[int]:
        """The signals received since the last read, in order: SIGCHLD once (something
        ended), each stopping signal as often as it came (a second Ctrl-C means "kill at
        once", however soon after the first); [] when none."""
        out: list[int] = []
        while True:
            try:
                data = os.read(self.fd, 512)
            except BlockingIOError:
                return out
            if not data:
                return out
            out.extend(b for b in data if b != signal.SIGCHLD or b not in out)

    def wait(self, timeout: float | None) -> list[int]:
        """Block until a signal arrives or `timeout` passes (for a backend with nothing
        else to wait on); [] on timeout."""
        readable, _, _ = select.select([self.fd], [], [], timeout)
        return self.read() if readable else []


def _noted(signum, frame) -> None:
    """Python-level handler: the wakeup fd already carries the signal number."""
