"""The header parser: every header form corral reads, and never a crash on garbage."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.headers import Header, parse_duration, parse_header, parse_size

DATA = Path(__file__).parent / "data" / "initd"


def parse(text: str) -> Header:
    return parse_header(text.encode())


def errors(header: Header) -> list[str]:
    return [f"{p.line}: {p.message}" for p in header.problems if p.severity == "error"]


def test_native_header_reads_every_key_into_typed_fields():
    h = parse("""#!/bin/bash
# description: Check disks
# Requires: a, b c
# wants: d
# after: e
# before: f
# provides: disks
# locks: apt
# timeout: 5m
# retries: 2
# workload: IO
# memory: 512M
# tags: storage,capacity
# detach: yes
set -e
# requires: not-a-header-any-more
""")
    assert errors(h) == []
    assert h.description == "Check disks"
    assert h.requires == ("a", "b", "c")
    assert (h.wants, h.after, h.before, h.provides, h.locks) == (
        ("d",),
        ("e",),
        ("f",),
        ("disks",),
        ("apt",),
    )
    assert h.timeout == 300 and h.retries == 2 and h.workload == "io"
    assert h.memory == 512 * 1024**2 and h.tags == ("storage", "capacity") and h.detach
    assert h.line_of("timeout") == 9


def test_list_keys_accumulate_over_repeated_lines():
    h = parse("# requires: a\n# requires: b a\n")
    assert h.requires == ("a", "b")


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("30", 30),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        (" 2M ", 120),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "5x", "m", "-1s", "1h-2m", "s30"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "text,size",
    [
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", 3 << 29),
        ("4096", 4096),
        ("64k", 64 << 10),
        ("1MB", 1 << 20),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


def test_errors_name_line_key_and_value():
    h = parse(
        "#!/bin/bash\n# description: x\n# timeout: soon\n# memory: lots\n"
        "# retries: -1\n# workload: gpu\n# timeout: 5s\n"
    )
    assert errors(h) == [
        "3: timeout: cannot read 'soon': expected a duration such as 30, 30s, 5m or 1h",
        "4: memory: cannot read 'lots': expected a size such as 512M or 2G",
        "5: retries: cannot read '-1': expected a whole number from 0 to 100",
        "6: workload: cannot read 'gpu': expected one of cpu, io, network, mixed",
        "7: timeout: given twice (first on line 3)",
    ]


def test_an_unknown_key_far_from_any_is_a_warning_with_its_line():
    h = parse("#!/bin/bash\n# colour: blue\n")
    assert errors(h) == []
    assert [(p.line, p.severity) for p in h.problems] == [(2, "warning")]
    assert "unknown key 'colour'" in h.problems[0].message


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("requirez", "requires"),
        ("require", "requires"),
        ("needs", "requires"),
        ("depends", "requires"),
        ("Depends-On", "requires"),
        ("wanted", "wants"),
        ("afer", "after"),
        ("befor", "before"),
        ("tag", "tags"),
        ("lock", "locks"),
        ("provide", "provides"),
    ],
)
def test_a_near_miss_of_an_ordering_or_selection_key_is_an_error(key, meant):
    h = parse(f"#!/bin/bash\n# {key}: a\n")
    as_read = key.lower().replace("-", "_")
    assert errors(h) == [
        f"2: unknown key {as_read!r}: did you mean {meant!r}? (it orders or selects "
        "modules, so a misspelling is an error)"
    ]


def test_a_near_miss_of_another_key_is_a_warning_with_a_guess():
    h = parse("#!/bin/bash\n# descripton: x\n# timout: 5\n")
    assert errors(h) == []
    assert [p.message for p in h.problems] == [
        "unknown key 'descripton': did you mean 'description'?",
        "unknown key 'timout': did you mean 'timeout'?",
    ]


def test_a_byte_order_mark_does_not_hide_the_header():
    h = parse_header(b"\xef\xbb\xbf#!/bin/bash\n# requires: a\n# description: d\n")
    assert h.requires == ("a",) and h.description == "d" and h.problems == ()
    # The control: the same header after anything else that is not a comment is no header.
    assert parse_header(b"x\n# requires: a\n").requires == ()


def test_prose_comments_are_not_keys():
    h = parse("#!/bin/bash\n# This module checks disk: it warns at 90%\n# requires: a\n")
    assert h.problems == () and h.requires == ("a",)


def test_invalid_dependency_names_are_errors():
    h = parse("# requires: ok ;rm -rf\n")
    assert errors(h) == [
        "1: requires: ';rm' is not a valid module name",
        "1: requires: '-rf' is not a valid module name",
    ]


def test_no_header_means_no_dependencies():
    h = parse("#!/bin/bash\necho hi\n# requires: late\n")
    assert h.requires == () and h.lines == {}
    # the key below the first line of code is not read, and says so
    assert [(p.line, p.severity) for p in h.problems] == [(3, "warning")]
    assert "below the header, which ends at line 2" in h.problems[0].message
    assert parse("#!/bin/bash\necho hi\n# later: the end\n") == Header()  # prose


def test_empty_file_is_a_warning_not_an_error():
    h = parse_header(b"")
    assert errors(h) == [] and h.problems[0].severity == "warning"


def test_binary_file_is_an_error():
    h = parse_header(b"\x7fELF\x02\x01\x01\x00\x00\x00")
    assert errors(h) == ["1: binary file (contains NUL bytes), not a Bash module"]


def test_non_utf8_header_line_is_an_error_naming_the_line_but_body_may_be_latin1():
    h = parse_header(b"#!/bin/bash\n# description: caf\xe9\n")
    assert errors(h) == ["2: header line is not valid UTF-8"]
    h = parse_header(b"#!/bin/bash\n# description: ok\necho caf\xe9\n")
    assert errors(h) == [] and h.description == "ok"


def test_crlf_line_endings():
    h = parse("#!/bin/bash\r\n# requires: a\r\n# timeout: 5s\r\n")
    assert h.requires == ("a",) and h.timeout == 5


def test_lsb_block_maps_to_native_keys():
    h = parse_header((DATA / "procps").read_bytes())
    assert errors(h) == []
    assert h.lsb and h.provides == ("procps",)
    assert h.requires == ("mountkernfs", "$local_fs")
    assert h.wants == ("udev", "module-init-tools")
    assert h.before == ("$network",)
    assert h.description == "Configure kernel parameters at boottime"


def test_lsb_block_with_tabs_and_continuation_lines():
    ssh = parse_header((DATA / "ssh").read_bytes())
    assert ssh.provides == ("sshd",) and ssh.requires == ("$remote_fs", "$syslog")
    assert ssh.description == "OpenBSD Secure Shell server"
    pg = parse_header((DATA / "postgresql").read_bytes())
    assert pg.requires == ("$local_fs", "$remote_fs", "$network", "$time")
    assert pg.wants == ("$syslog",)
    cron = parse_header((DATA / "cron").read_bytes())
    assert errors(cron) == [] and "slapd" in cron.wants


def test_lsb_block_without_end_is_an_error_at_begin():
    h = parse("#!/bin/sh\n### BEGIN INIT INFO\n# Provides: x\n")
    assert errors(h) == ["2: ### BEGIN INIT INFO has no matching ### END INIT INFO"]


def test_cache_round_trip_preserves_every_field():
    h = parse("# requires: a\n# timeout: 1m\n# memory: 1G\n# frob: x\n")
    assert Header.from_record(h.to_record()) == h


@given(st.binary(max_size=400))
def test_garbage_bytes_never_crash(data):
    h = parse_header(data)
    assert all(p.line >= 1 and p.message for p in h.problems)


KEYS = [
    "requires",
    "wants",
    "timeout",
    "memory",
    "retries",
    "workload",
    "locks",
    "detach",
    "Provides",
    "Required-Start",
    "x",
]


@given(st.lists(st.tuples(st.sampled_from(KEYS), st.text(max_size=20)), max_size=12), st.booleans())
def test_garbage_values_give_errors_not_exceptions(pairs, lsb):
    lines = [f"# {k}: {v}".replace("\n", " ").replace("\r", " ") for k, v in pairs]
    if lsb:
        lines = ["### BEGIN INIT INFO", *lines, "### END INIT INFO"]
    h = parse("\n".join(["#!/bin/bash", *lines, "true"]))
    for p in h.problems:
        assert 1 <= p.line <= len(lines) + 2
    assert Header.from_record(h.to_record()) == h


@pytest.mark.parametrize("bad", ["\x1b[2J", "\x1b]0;TITLE\x07", "\r", "\x9b31m", "\x08"])
def test_control_characters_in_a_header_value_are_an_error_naming_the_line(bad):
    text = f"#!/bin/bash\n# tags: x\n# description: all good {bad}ok\n"
    header = parse_header(text.encode())
    assert [(p.line, p.severity) for p in header.problems] == [(3, "error")]
    assert "control character" in header.problems[0].message
    assert header.description == ""
    clean = parse_header("#!/bin/bash\n# description: all\tgood — ok\n".encode())  # control
    assert clean.problems == () and clean.description == "all\tgood — ok"
