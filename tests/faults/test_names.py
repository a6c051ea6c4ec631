"""A name is shown, never obeyed: module files and modules directories whose names hold
ESC, CR, BEL, a newline or C1 bytes reach the terminal made visible (`^[`, `^M`, `^J`,
`M-^[`) in every diagnostic (errors, warnings, check, plan, list, run), never raw. The
bytes of stdout and stderr are checked; the control shows the check finds such a name
when it is printed raw."""

from __future__ import annotations

import os
import subprocess

import pytest

# What a terminal obeys: ESC (and so every sequence), CR, BEL, the 8-bit CSI as a raw
# byte or as the character U+009B, and a line break inside a name.
RAW = (b"\x1b", b"\r", b"\x07", b"\x9b")  # (b"\x9b" also finds U+009B in UTF-8)
# A file name of each kind: an OSC title sequence, a CR, a newline, a C1 byte.
TITLE = "\x1b]0;owned\x07"
CLEAR = "\x1b[2J\x1b[H"


def raw_controls(data: bytes) -> list[bytes]:
    return [c for c in RAW if c in data]


def run(corral, modules: str, *args: str) -> tuple[int, bytes, bytes]:
    argv = corral.argv(*args)
    argv[argv.index("--modules") + 1] = modules
    done = subprocess.run(
        argv, capture_output=True, env=corral.env, timeout=120, stdin=subprocess.DEVNULL
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def weird(tmp_path):
    """A modules directory named with ESC, CR, a newline and a C1 byte, holding a valid
    module, a module whose name is not allowed (an escape sequence), a backup-looking
    file with a CR, and a module whose header is wrong."""
    name = os.fsdecode(b"mods\x1b[31m\r\n\xc2\x9bx")  # (U+009B, the CSI, as UTF-8)
    modules = tmp_path / name
    modules.mkdir()
    (modules / "good.sh").write_text("#!/bin/bash\ntrue\n")
    return modules


def test_names_with_escapes_reach_every_diagnostic_made_visible(corral, weird):
    (weird / f"{TITLE}.sh").write_text("#!/bin/bash\ntrue\n")
    (weird / f"a.sh{CLEAR}\r~").write_text("#!/bin/bash\ntrue\n")
    (weird / "bad.sh").write_text("#!/bin/bash\n# requires: good\n# timeout: never\ntrue\n")
    for command in (["check"], ["plan"], ["list"], ["run"], ["graph"]):
        code, out, err = run(corral, str(weird), *command)
        assert code == 2, (command, err)
        assert not raw_controls(out + err), (command, out + err)
        assert b"Traceback" not in err
        text = err.decode()
        assert "mods^[[31m^M^JM-^[x" in text, (command, text)
        assert "^[]0;owned^G.sh:1: module name" in text, (command, text)
        assert "timeout: cannot read 'never'" in text
    code, out, err = run(corral, str(weird), "check")
    lines = err.decode().splitlines()
    assert any("a.sh^[[2J^[[H^M~:1: warning: not run: an editor" in line for line in lines)
    # one line per problem and the count: a newline in the directory's name is shown
    assert len(lines) == 4 and lines[-1] == "2 errors, 1 warning", lines


def test_a_missing_modules_directory_with_escapes_is_named_visibly(corral, tmp_path):
    missing = str(tmp_path / f"gone{CLEAR}\n")
    code, out, err = run(corral, missing, "run")
    assert code == 2 and not raw_controls(out + err), err
    assert "gone^[[2J^[[H^J" in err.decode(), err


def test_a_run_names_its_warnings_visibly(corral, weird):
    """A run of the good module: the warning about the file that is not a module (its
    name with an escape sequence and a CR) is shown made visible; the run succeeds."""
    (weird / f"a.sh{CLEAR}\r~").write_text("#!/bin/bash\ntrue\n")
    code, out, err = run(corral, str(weird), "run")
    assert code == 0, err
    assert not raw_controls(out + err), out + err
    assert "^[[2J^[[H^M~:1: warning: not run" in err.decode(), err


def test_control_the_check_finds_a_name_printed_raw(weird):
    """The control: the same name, printed as it is, carries what the checks above look
    for (so a clean result means the name was made visible)."""
    argv = ["ls", "-d", "--quoting-style=literal", "--show-control-chars", str(weird)]
    done = subprocess.run(argv, capture_output=True, check=True)
    assert raw_controls(done.stdout) == [b"\x1b", b"\r", b"\x9b"]


def test_names_that_are_not_utf8_are_named_not_a_crash(corral, tmp_path):
    """A raw C1 byte (0x9b, the 8-bit CSI) that is no UTF-8: a module file so named is an
    error naming it; a modules directory so named is a usage error (corral records its
    path as text); both shown as `cat -v` shows the byte, never a traceback."""
    (corral.modules / os.fsdecode(b"x\x9b.sh")).write_text("#!/bin/bash\ntrue\n")
    (corral.modules / "good.sh").write_text("#!/bin/bash\ntrue\n")
    code, out, err = run(corral, str(corral.modules), "run")
    assert code == 2 and not raw_controls(out + err), err
    assert b"/xM-^[.sh:1: module name" in err, err
    bad = tmp_path / os.fsdecode(b"dir\x9b")
    bad.mkdir()
    (bad / "good.sh").write_text("#!/bin/bash\ntrue\n")
    for command in ("run", "check", "plan"):
        code, out, err = run(corral, str(bad), command)
        assert code == 2 and not raw_controls(out + err), err
        assert b"dirM-^[: the modules directory's path is not valid UTF-8" in err, err
        assert b"internal error" not in err


def test_the_report_shows_names_never_obeys_them(corral, weird, tmp_path):
    """`cat README.md` at a terminal: the modules directory's name (ESC, CR, a newline,
    U+009B) in the report is made visible, in the Markdown and in the HTML page."""
    assert run(corral, str(weird), "run")[0] == 0
    for fmt, name in (("md", "README.md"), ("html", "index.html")):
        out = tmp_path / f"report-{fmt}"
        code, _, err = run(corral, str(weird), "docs", "--out", str(out), "--format", fmt)
        assert code == 0, err
        page = (out / name).read_bytes()
        assert not raw_controls(page), page[:300]
        # (a paragraph keeps a line break: harmless in Markdown and HTML)
        assert b"mods^[[31m^M" in page and b"M-^[x" in page, page[:300]
