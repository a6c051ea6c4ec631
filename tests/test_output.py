"""The pieces every backend shares: an attempt's output (log and display) and signals.

Driven by hand, no module and no process: bytes in, a log file and lines out.
"""

from __future__ import annotations

import os
import signal

from corral.logmarks import marked_lines, read_ranges
from corral.output import LINES_PER_SECOND, MAX_LINE, Output
from corral.signals import Signals


def collect(log_path=None, cap=1 << 20):
    lines: list[bytes] = []
    out = Output(
        "m", None if log_path is None else str(log_path), cap, lambda _, b, _err: lines.append(b)
    )
    return out, lines


def test_the_log_is_created_only_when_a_byte_arrives(tmp_path):
    log = tmp_path / "m.log"
    out, _ = collect(log)
    out.end_display()
    out.close_log()
    assert not log.exists() and out.written_path is None
    out, _ = collect(log)
    out.feed(b"x")
    out.close_log()
    assert log.read_bytes() == b"x" and out.written_path == str(log)


def test_lines_are_split_across_chunks_and_the_last_one_shown_at_the_end():
    out, lines = collect()
    out.feed(b"one\ntw")
    out.feed(b"o\nthree")
    assert lines == [b"one", b"two"]
    out.end_display()
    assert lines == [b"one", b"two", b"three"]


def test_the_log_is_capped_and_the_rest_counted(tmp_path):
    log = tmp_path / "m.log"
    out, _ = collect(log, cap=10)
    out.feed(b"0123456789abcdef")
    out.feed(b"more")
    out.close_log()
    assert log.read_bytes() == b"0123456789"
    assert out.log_bytes == 10 and out.dropped == 10 and not out.incomplete


def test_without_a_cap_nothing_is_dropped(tmp_path):
    """The control for the cap above."""
    log = tmp_path / "m.log"
    out, _ = collect(log)
    out.feed(b"0123456789abcdef")
    out.close_log()
    assert out.dropped == 0 and log.read_bytes() == b"0123456789abcdef"


def test_a_flood_is_counted_not_shown_and_the_log_keeps_it(tmp_path):
    log = tmp_path / "m.log"
    out, lines = collect(log)
    flood = b"y\n" * (3 * LINES_PER_SECOND)
    out.feed(flood)
    out.end_display()
    out.close_log()
    assert lines[:LINES_PER_SECOND] == [b"y"] * LINES_PER_SECOND
    assert lines[-1] == f"… {2 * LINES_PER_SECOND} lines not shown; they are in the log".encode()
    assert log.read_bytes() == flood


def test_a_line_without_an_end_is_cut_on_screen_only(tmp_path):
    log = tmp_path / "m.log"
    out, lines = collect(log)
    out.feed(b"z" * (MAX_LINE + 10))
    out.close_log()
    assert lines == [b"z" * MAX_LINE + b" [...]"]
    assert log.stat().st_size == MAX_LINE + 10


def test_an_unwritable_log_marks_it_incomplete_and_keeps_draining(tmp_path):
    out, lines = collect(tmp_path / "missing-dir" / "m.log")
    out.feed(b"a\n")
    out.feed(b"b\n")
    assert out.incomplete and out.dropped == 4 and lines == [b"a", b"b"]


def test_signals_arrive_as_numbers_and_handlers_are_restored():
    """Each stopping signal as often as it came (two Ctrl-C read together are still
    two), SIGCHLD once however many children ended."""
    before = signal.getsignal(signal.SIGHUP)
    with Signals(children=True) as signals:
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGCHLD)
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGCHLD)
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.wait(5.0) == [signal.SIGHUP, signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM]
        assert signals.wait(0.0) == []
    assert signal.getsignal(signal.SIGHUP) is before


def test_each_stream_has_its_own_partial_line_and_stderr_is_marked(tmp_path):
    log = tmp_path / "m.log"
    shown: list[tuple[bytes, bool]] = []
    out = Output("m", str(log), 1 << 20, lambda _, b, err: shown.append((b, err)))
    out.feed(b"half of ")
    out.feed(b"warn\n", err=True)
    out.feed(b"out\n")
    out.feed(b"no end", err=True)
    out.end_display()
    out.close_log()
    assert shown == [(b"warn", True), (b"half of out", False), (b"no end", True)]
    assert log.read_bytes() == b"half of warn\nout\nno end"
    assert read_ranges(str(log)) == [(8, 13), (17, 23)]
    with log.open("rb") as f:
        assert list(marked_lines(f, read_ranges(str(log)))) == [
            (b"warn", True),
            (b"half of out", False),
            (b"no end", True),
        ]


def test_stderr_ranges_are_bounded_and_say_where_they_stop(tmp_path):
    log = tmp_path / "m.log"
    out, _ = collect(log, cap=1 << 20)
    for _ in range(40_000):  # a stream switch every byte: a range per byte
        out.feed(b"o")
        out.feed(b"e", err=True)
    out.close_log()
    ranges = read_ranges(str(log))
    kept = log.with_name("m.log.stderr-ranges").read_text()
    assert len(kept) <= (1 << 20) // 8 + 200  # the bound, the header and the last word
    assert kept.rstrip().splitlines()[-1].startswith("# from byte ")
    assert ranges[:3] == [(1, 2), (3, 4), (5, 6)] and 1000 < len(ranges) < 40_000
    assert log.stat().st_size == 80_000
