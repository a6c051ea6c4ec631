"""stdout and stderr of a module told apart: live at a terminal and under cron (`name !
line`), in the failure tails (`! line`), in `corral log` at a terminal; the log file
keeps the raw bytes of both, in order, with the stderr stretches noted beside it."""

from __future__ import annotations

import re
import subprocess
import sys

import pexpect

from .test_scheduling import as_cron

# Each switch of stream waits until corral has logged what came before (the log grows),
# so the order in the log is the order the module wrote, however loaded the host is.
SYNC = """
size() {{ stat -c %s "$CORRAL_LOG_DIR/$CORRAL_MODULE.log" 2>/dev/null || echo 0; }}
wrote() {{ until (( $(size) >= $1 )); do sleep 0.01; done; }}
printf 'out one\\n'; wrote 8
printf 'err one \\033[2J\\000x\\n' >&2; wrote 23
printf 'half of out '; wrote 35
printf 'err two\\n' >&2; wrote 43
printf 'rest of out\\n'; wrote 55
exit {code}
"""
RAW = b"out one\nerr one \x1b[2J\x00x\nhalf of out err two\nrest of out\n"


def spawn(corral, *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        corral.argv(*args)[1:],
        env=corral.env,
        encoding="utf-8",
        timeout=60,
        dimensions=(40, 160),
    )


def test_the_log_keeps_both_streams_raw_in_order_and_notes_the_stderr_stretches(corral):
    corral.module("mixed", body=SYNC.format(code=0))
    assert corral("run").code == 0
    log = next((corral.db.parent / "logs").glob("*/mixed.log"))
    assert log.read_bytes() == RAW
    ranges = (log.parent / "mixed.log.stderr-ranges").read_text().splitlines()
    assert ranges[0].startswith("#") and ranges[1:] == ["8 15", "35 8"]
    # a pipe gets the bytes as logged, escape sequences and NUL included
    piped = subprocess.run(corral.argv("log", "mixed"), env=corral.env, capture_output=True)
    assert piped.stdout == RAW


def test_a_module_writing_only_stdout_gets_no_ranges_file(corral):
    """The control: nothing on stderr, nothing beside the log."""
    corral.module("quiet", body="echo only stdout")
    assert corral("run").code == 0
    logs = list((corral.db.parent / "logs").glob("*/quiet.log*"))
    assert {p.name for p in logs} == {"quiet.log"}


def test_terminal_marks_stderr_lines_live_in_the_tail_and_in_corral_log(corral):
    corral.module("mixed", body=SYNC.format(code=1))
    child = spawn(corral, "run")
    child.expect(r"mixed\s*\x1b\[0m │ out one")
    child.expect(r"mixed\s*\x1b\[0m \x1b\[31m!\x1b\[0m err one \^\[\[2J\^@x")
    child.expect(r"mixed\s*\x1b\[0m \x1b\[31m!\x1b\[0m err two")
    child.expect(r"mixed\s*\x1b\[0m │ half of out rest of out")
    child.expect("last lines of mixed")
    child.expect(r"\r\n  out one\r\n")
    child.expect(r"\x1b\[31m!\x1b\[0m err one \^\[\[2J\^@x\r\n")
    child.expect(r"\x1b\[31m!\x1b\[0m err two\r\n  half of out rest of out\r\n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    child = spawn(corral, "log", "mixed")
    child.expect(pexpect.EOF)
    lines = child.before.splitlines()
    assert lines == [
        "out one",
        "\x1b[31m!\x1b[0m err one ^[[2J^@x",
        "\x1b[31m!\x1b[0m err two",
        "half of out rest of out",
    ]


def test_cron_output_marks_stderr_lines(corral, tmp_path):
    corral.module("mixed", body=SYNC.format(code=1))
    plain = as_cron(
        [sys.executable, "-m", "corral", "--modules", str(corral.modules), "run"],
        corral.modules,
        corral.db,
        tmp_path,
    )
    assert plain.returncode == 1, plain.stderr
    out = plain.stdout
    assert re.search(r"Z? ?mixed \| out one$", out, re.M), out
    assert re.search(r"mixed ! err one \^\[\[2J\^@x$", out, re.M), out
    assert re.search(r"mixed ! err two$", out, re.M), out
    assert re.search(r"mixed \| half of out rest of out$", out, re.M), out
    assert "\x1b" not in out
    quiet = as_cron(
        [sys.executable, "-m", "corral", "--modules", str(corral.modules), "run", "--quiet"],
        corral.modules,
        corral.db,
        tmp_path,
    )
    assert quiet.returncode == 1
    tail = quiet.stdout.split("last lines of mixed", 1)[1].splitlines()[1:5]
    assert tail == ["  out one", "! err one ^[[2J^@x", "! err two", "  half of out rest of out"]


def test_the_log_cap_covers_both_streams(corral):
    corral.module(
        "flood",
        body="head -c 3000 /dev/zero | tr '\\0' o; head -c 3000 /dev/zero | tr '\\0' e >&2",
    )
    r = corral("run", "--json", extra_env={"CORRAL_LOG_LIMIT": "4000"})
    attempt = r.json()["modules"][0]
    log = next((corral.db.parent / "logs").glob("*/flood.log"))
    data = log.read_bytes()
    assert len(data) == 4000 and set(data) <= {ord("o"), ord("e")}
    assert data.count(b"o") == 3000 or data.count(b"e") == 3000
    assert attempt["status"] == "ok"
