"""Module bytes as text a terminal shows but does not obey.

A module's output may hold escape sequences (clear the screen, move the cursor, set the
title, rewrite the line with a carriage return) that would let a failing module paint
a forged "all ok" over corral's summary. Shown text therefore carries every control
character made visible the way `cat -v` does (ESC as `^[`, CR as `^M`, DEL as `^?`,
the C1 controls as `M-^[` …), as do the Unicode controls that reorder text (bidi
overrides, shown as `<U+202E>`); a long run of NUL or other unprintable bytes is
summarised. Tabs stay. The log files keep the raw bytes.

corral's own messages name files, directories and hosts, whose names may hold the same
characters (a module file named with an ESC, a CR or a newline; a directory named with
C1 bytes): `text` makes a whole message visible, newlines and tabs included, so a name
can neither drive the terminal nor forge a line of its own. Every diagnostic goes
through it (`errors.Problem` and `errors.CorralError` as strings, the CLI's `say`, the
run's printer for notices and reasons).
"""

from __future__ import annotations

import os
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


# A name shows its tab and line breaks too; its undecodable bytes (Python's surrogate
# escapes of a file name) as `cat -v` shows bytes: M-^[ (0x9b), M-i (0xe9).
_TEXT = {**_TABLE, 0x09: "^I"}
_TEXT.update({0xDC00 + b: f"M-^{chr(b - 0x80 + 64)}" for b in range(0x80, 0xA0)})
_TEXT.update({0xDC00 + b: f"M-{chr(b - 0x80)}" for b in range(0xA0, 0xFF)})
_TEXT[0xDCFF] = "M-^?"


def text(message: str) -> str:
    """`message` (a diagnostic, a file name, a host's answer) as one line a terminal
    shows but does not obey: every control and line break made visible as `visible`
    makes them (`^[`, `^M`, `^J`, `M-^[`, `<U+202E>`), any other unprintable character
    as `<U+XXXX>`. A clean message is returned as it is (one `isprintable`)."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else _shown(c) for c in message)


def _shown(char: str) -> str:
    return _TEXT.get(ord(char)) or f"<U+{ord(char):04X}>"


def is_text(name: str | os.PathLike) -> bool:
    """Is the file name or path valid UTF-8 (no byte carried as a surrogate escape)?"""
    try:
        os.fspath(name).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
