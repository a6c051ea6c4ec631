"""Module bytes as text a terminal shows but does not obey.

A module's output may hold escape sequences (clear the screen, move the cursor, set the
title, rewrite the line with a carriage return) that would let a failing module paint
a forged "all ok" over corral's summary. Shown text therefore carries every control
character made visible the way `cat -v` does (ESC as `^[`, CR as `^M`, DEL as `^?`,
the C1 controls as `M-^[` …), as do the Unicode controls that reorder text (bidi
overrides, shown as `<U+202E>`); a long run of NUL or other unprintable bytes is
summarised. Tabs stay. The log files keep the raw bytes.
"""

from __future__ import annotations

import re

RUN = 8  # unprintable characters in a row shown as a count instead

_C0 = "".join(chr(c) for c in range(0x20) if c != 0x09)
_C1 = "".join(chr(c) for c in range(0x80, 0xA0))
_RUNS = re.compile(f"\x00{{{RUN},}}|[{re.escape(_C0)}\x7f{_C1}\ufffd]{{{RUN},}}")

_TABLE = {c: f"^{chr(c + 64)}" for c in range(0x20) if c != 0x09}
_TABLE[0x7F] = "^?"
_TABLE.update({c: f"M-^{chr(c - 0x80 + 64)}" for c in range(0x80, 0xA0)})
_TABLE.update(
    {
        c: f"<U+{c:04X}>"
        for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
    }
)


def visible(line: bytes) -> str:
    """`line` decoded (invalid UTF-8 as U+FFFD) with every control made visible. The
    common clean line costs the decode and one `isprintable` (both in C)."""
    text = line.decode("utf-8", "replace")
    if text.isprintable():
        return text
    return _RUNS.sub(_summary, text).translate(_TABLE)


def _summary(match: re.Match) -> str:
    run = match.group()
    if run[0] == "\x00" and run.count("\x00") == len(run):
        return f"[{len(run)} NUL bytes]"
    return f"[{len(run)} unprintable bytes]"
