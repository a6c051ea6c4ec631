"""Parse a module's header: bytes in, a typed `Header` out. Pure; never raises on bad input.

Two header forms are read (docs/usage.md describes them for users):

* the native block: the comment lines at the top of the file (after the shebang),
  `# key: value`, keys case-insensitive, lists split on spaces and commas;
* an LSB block anywhere in the file (`### BEGIN INIT INFO` .. `### END INIT INFO`),
  read as leniently as insserv reads it: tabs, odd spacing, continuation lines.

Every problem found becomes a `Problem` (line, message) on the header instead of an
exception, so `corral check` can print all of them at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from corral.errors import Problem

PARSER_VERSION = 10  # bump when Header or parsing changes: the cache re-parses everything

LIST_KEYS = ("requires", "wants", "after", "before", "provides", "locks", "tags")
SCALAR_KEYS = (
    "description",
    "timeout",
    "retries",
    "workload",
    "memory",
    "detach",
    "warning_exit",
)
KEYS = LIST_KEYS + SCALAR_KEYS
WORKLOADS = ("cpu", "io", "network", "mixed")

# LSB key -> our key; every other LSB key (Default-Start, Required-Stop, X-Interactive ...)
# is accepted and ignored, as insserv ignores what it does not use for ordering.
LSB_KEYS = {
    "provides": "provides",
    "required-start": "requires",
    "should-start": "wants",
    "x-start-before": "before",
    "short-description": "description",
}
# The keys the LSB (and insserv) define; a near miss of one of LSB_ORDER in the block, or
# one of these outside a block, is not read and says so.
LSB_ALL = (
    *LSB_KEYS,
    "required-stop",
    "should-stop",
    "default-start",
    "default-stop",
    "description",
    "x-stop-after",
    "x-interactive",
)
LSB_ORDER = ("required-start", "should-start", "x-start-before")

NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
DEP_RE = re.compile(r"\$?[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")
KEY_LINE_RE = re.compile(rb"#\s*([A-Za-z][A-Za-z0-9_-]*)[ \t]*:[ \t]*(.*)")
# `# depends on: x`, `# warning exit: 3`: a key of two or three words (see _spaced_key)
SPACED_KEY_RE = re.compile(rb"#[ \t]*([A-Za-z]+(?:[ \t]+[A-Za-z]+){1,2})[ \t]*:")
# `# requires sleeper`: a word, then more, no colon after the word (see _unkeyed)
UNKEYED_RE = re.compile(rb"#[ \t]*([A-Za-z][A-Za-z0-9_-]*)[ \t]+(\S.*)")
# A native key, or an LSB ordering key, on a comment line below the header (which ends at
# the first line of code): not read there (see _below_header)
# (anchored on the newline, not `^` with re.M: a third of the time)
BELOW_RE = re.compile(rb"\n[ \t]*#+[ \t]*([A-Za-z][A-Za-z-]*)[ \t]*:")
BELOW_KEYS = frozenset((*(k.replace("_", "-") for k in KEYS), *LSB_ORDER)) - {"description"}
LSB_BEGIN_RE = re.compile(rb"^###\s*BEGIN INIT INFO\s*$", re.M)
LSB_END_RE = re.compile(rb"^###\s*END INIT INFO\s*$", re.M)
DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\Z", re.I)
DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
# A key that is not one of ours but close to one that orders or selects is an error: a
# misspelt `requires` would otherwise run the module too early, in silence.
ORDER_KEYS = ("requires", "wants", "after", "before", "provides", "locks", "tags")
EDGE_KEYS = ("requires", "wants", "after", "before")  # keys whose names graph.py resolves
SYNONYMS = {
    **dict.fromkeys(
        (
            "require",
            "required",
            "requirement",
            "requirements",
            "need",
            "needs",
            "depend",
            "depends",
            "depends-on",
            "depends_on",
            "dependency",
            "dependencies",
            "deps",
            "required-by",
        ),
        "requires",
    ),
    **dict.fromkeys(("want", "wanted", "should", "recommends", "suggests"), "wants"),
    **dict.fromkeys(("runs-after", "run-after", "order-after"), "after"),
    **dict.fromkeys(("runs-before", "run-before", "order-before"), "before"),
    **dict.fromkeys(("provide", "alias", "aliases"), "provides"),
    **dict.fromkeys(("lock", "mutex", "pool"), "locks"),
    **dict.fromkeys(("tag", "label", "labels"), "tags"),
}
MAX_TIMEOUT = 366 * 86400  # seconds; beyond it a timeout is a typo (and overflows timers)
MAX_SIZE = 1 << 50  # bytes (1P): beyond it a size is a typo (`memory:`, min_free_mem)
WHOLE_RE = re.compile(r"[0-9]{1,9}\Z")  # a whole number a header may give (never 10**5000)
TRUE_WORDS = {"yes", "true", "1", "on"}
FALSE_WORDS = {"no", "false", "0", "off"}


@dataclass(frozen=True)
class Header:
    """A module's parsed header. `lines` maps each key to the line it was read from."""

    description: str = ""
    requires: tuple[str, ...] = ()
    wants: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    locks: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    timeout: float | None = None
    retries: int = 0
    workload: str = "mixed"
    memory: int | None = None
    detach: bool = False
    warning_exit: tuple[int, ...] = ()  # exit codes that mean "warning", not "failed"
    # Header lines `# KEY names` that lack the colon, KEY one that orders (or a synonym
    # of one): (line, key, as typed, names). graph.py judges them against the module
    # names: a near miss when every name is a module, prose otherwise.
    unkeyed: tuple[tuple[int, str, str, tuple[str, ...]], ...] = ()
    lsb: bool = False
    lines: dict[str, int] = field(default_factory=dict, compare=False)
    problems: tuple[Problem, ...] = ()

    def line_of(self, key: str, item: str | None = None) -> int:
        """The line `key` was read from (the line naming `item`, for a list key given on
        several lines); 1 when the key was not written."""
        if item is not None and f"{key} {item}" in self.lines:
            return self.lines[f"{key} {item}"]
        return self.lines.get(key, 1)

    def to_record(self) -> tuple:
        """The fields as a tuple of plain values, for the cache; see `from_record`."""
        values = [getattr(self, name) for name in _FIELDS]
        values[-1] = tuple((p.line, p.message, p.severity) for p in self.problems)
        return tuple(values)

    @classmethod
    def from_record(cls, record: tuple) -> Header:
        """The inverse of `to_record`. Hot on a warm load: fills the instance dict directly."""
        header = object.__new__(cls)
        header.__dict__.update(zip(_FIELDS, record, strict=True))
        if record[-1]:
            header.__dict__["problems"] = tuple(Problem(None, *p) for p in record[-1])
        return header


_FIELDS = tuple(f.name for f in fields(Header))  # record order; its length is in the cache tag


def parse_duration(text: str) -> float:
    """Seconds in `30`, `30s`, `1.5m`, `1h30m`, `250ms`; raises ValueError otherwise."""
    text = text.strip().lower()
    pos, total = 0, 0.0
    while pos < len(text):
        match = DURATION_PART_RE.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(DURATION_EXPECTED)
        total += float(match.group(1)) * DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text or total <= 0:
        raise ValueError(DURATION_EXPECTED)
    return total


DURATION_EXPECTED = "expected a duration of more than 0, such as 30s, 5m, 1h30m or 250ms"
SIZE_EXPECTED = "expected a size such as 4096, 512M or 2G"


def parse_size(text: str) -> int:
    """Bytes in `512M`, `2G`, `1.5GiB`, `4096`; units are binary (K = 1024). Raises
    ValueError otherwise, and for a size past MAX_SIZE (a typo, or 10**400 bytes)."""
    match = SIZE_RE.match(text.strip())
    if not match or (match.group(3) and match.group(3).lower() == "i"):
        raise ValueError(SIZE_EXPECTED)
    value = float(match.group(1)) * SIZE_UNITS[match.group(2).lower()]
    if not value <= MAX_SIZE:  # also infinity
        raise ValueError("at most 1024T")
    return int(value)


CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # tab is fine


def split_list(value: str) -> list[str]:
    """`a b, c` -> ['a', 'b', 'c']: lists are separated by spaces and/or commas."""
    return [item for item in re.split(r"[\s,]+", value) if item]


class _Builder:
    """Collects values and problems while the header lines are read."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.lists: dict[str, list[str]] = {key: [] for key in LIST_KEYS}
        self.lines: dict[str, int] = {}
        self.problems: list[Problem] = []
        self.unkeyed: list[tuple[int, str, str, tuple[str, ...]]] = []

    def problem(self, line: int, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(None, line, message, severity))

    def add(self, key: str, value: str, line: int, lsb: bool = False) -> None:
        """Record `key: value` read at `line`; a bad value becomes a problem naming both."""
        if key in LIST_KEYS:
            self.lines.setdefault(key, line)
            for item in split_list(value):
                if DEP_RE.match(item):
                    self.lists[key].append(item)
                    self.lines.setdefault(f"{key} {item}", line)  # for problems naming it
                else:
                    self.problem(line, f"{key}: {item!r} is not a valid module name")
            return
        if key in self.lines:
            if not lsb:
                self.problem(line, f"{key}: given twice (first on line {self.lines[key]})")
            return
        self.lines[key] = line
        control = CONTROL_RE.search(value.strip())  # a CRLF line end is not one
        if control:  # shown by list, plan, docs, status: it must not drive a terminal
            self.problem(line, f"{key}: control character {control.group()!r} in {value.strip()!r}")
            return
        try:
            self.values[key] = _scalar(key, value)
        except ValueError as exc:
            self.problem(line, f"{key}: cannot read {value.strip()!r}: {exc.args[0]}")

    def header(self, lsb: bool) -> Header:
        lists = {key: tuple(dict.fromkeys(items)) for key, items in self.lists.items()}
        return Header(
            **lists,
            **self.values,
            unkeyed=tuple(self.unkeyed),
            lsb=lsb,
            lines=self.lines,
            problems=tuple(sorted(self.problems, key=lambda p: p.line)),
        )


def _scalar(key: str, value: str) -> object:
    value = value.strip()
    if key == "description":
        return value
    if key == "timeout":
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError("expected a duration such as 30, 30s, 5m or 1h") from None
        if seconds > MAX_TIMEOUT:
            raise ValueError("expected at most 366 days")
        return seconds
    if key == "memory":
        try:
            return parse_size(value)
        except ValueError as exc:
            if exc.args == ("at most 1024T",):
                raise ValueError("expected at most 1024T") from None
            raise ValueError("expected a size such as 512M or 2G") from None
    if key == "retries":
        if not WHOLE_RE.match(value) or int(value) > 100:
            raise ValueError("expected a whole number from 0 to 100")
        return int(value)
    if key == "workload":
        if value.lower() not in WORKLOADS:
            raise ValueError(f"expected one of {', '.join(WORKLOADS)}")
        return value.lower()
    if key == "warning_exit":
        codes = split_list(value)
        if not codes or not all(WHOLE_RE.match(c) and 1 <= int(c) <= 255 for c in codes):
            raise ValueError("expected exit codes from 1 to 255, such as 3 or 3, 4")
        return tuple(sorted({int(c) for c in codes}))
    if key == "detach":
        if value.lower() in TRUE_WORDS:
            return True
        if value.lower() in FALSE_WORDS:
            return False
        raise ValueError("expected yes or no")
    raise AssertionError(key)


def meant(key: str) -> str | None:
    """The key a misspelt `key` most likely means: a synonym or a near miss of one."""
    if key in SYNONYMS:
        return SYNONYMS[key]
    import difflib

    close = difflib.get_close_matches(key, [*KEYS, *SYNONYMS], n=1, cutoff=0.75)
    return SYNONYMS.get(close[0], close[0]) if close else None


def _unknown_key(key: str, number: int, builder: _Builder, meaning: str | None = None) -> None:
    guess = meaning or meant(key)
    if guess in ORDER_KEYS:
        builder.problem(
            number,
            f"unknown key {key!r}: did you mean {guess!r}? (it orders or selects modules, "
            "so a misspelling is an error)",
        )
    elif guess is not None:
        builder.problem(number, f"unknown key {key!r}: did you mean {guess!r}?", "warning")
    else:
        builder.problem(number, f"unknown key {key!r} (known: {', '.join(KEYS)})", "warning")


def _decode(raw: bytes, line: int, builder: _Builder) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        builder.problem(line, "header line is not valid UTF-8")
        return None


def parse_header(data: bytes) -> Header:
    """Parse a module file's bytes. A file with no header is a module with no dependencies."""
    builder = _Builder()
    while data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark hides nothing
        data = data[3:]  # (nor do two: a file with one pasted after another's)
    if b"\0" in data[:8192]:
        builder.problem(1, "binary file (contains NUL bytes), not a Bash module")
        return builder.header(lsb=False)
    if data.split(b"\n", 1)[0].endswith(b"\r"):  # the header reads the same; bash does not
        builder.problem(
            1,
            "Windows (CRLF) line endings: bash reads a carriage return at the end of each "
            "line ($'true\\r': command not found); convert the file (dos2unix)",
            "warning",
        )
    if not data.strip():
        builder.problem(1, "empty file: the module does nothing", "warning")
        return builder.header(lsb=False)
    lsb_span = _lsb_span(data, builder)
    end, offset = _read_native(data, builder, lsb_span)
    _below_header(data, builder, lsb_span, end, offset)
    if lsb_span:
        _read_lsb(data, lsb_span, builder)
    return builder.header(lsb=lsb_span is not None)


def _lsb_span(data: bytes, builder: _Builder) -> tuple[int, int] | None:
    """Line numbers (1-based, inclusive) of the LSB block's BEGIN and END lines."""
    begin = LSB_BEGIN_RE.search(data)
    if not begin:
        return None
    begin_line = data.count(b"\n", 0, begin.start()) + 1
    end = LSB_END_RE.search(data, begin.end())
    if not end:
        builder.problem(begin_line, "### BEGIN INIT INFO has no matching ### END INIT INFO")
        return None
    return begin_line, data.count(b"\n", 0, end.start()) + 1


def _read_native(
    data: bytes, builder: _Builder, lsb_span: tuple[int, int] | None
) -> tuple[int, int]:
    """Read the header block; returns the number of its first line of code and that
    line's offset in `data` (past the end when there is none)."""
    number, offset = 0, 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        at, offset = offset, offset + len(raw) + 1
        raw = raw.rstrip(b"\r")
        if number == 1 and raw.startswith(b"#!"):
            continue
        stripped = raw.strip()
        if not stripped:
            continue
        if not stripped.startswith(b"#"):
            return number, at  # the header ends at the first line of code
        if lsb_span and lsb_span[0] <= number <= lsb_span[1]:
            continue
        match = KEY_LINE_RE.match(stripped)
        if not match:
            if not _spaced_key(stripped, number, builder):
                _unkeyed(stripped, number, builder)
            continue
        word = match.group(1).decode("ascii")
        key = word.lower().replace("-", "_")
        value = _decode(match.group(2), number, builder)
        if value is None:
            continue
        if key in KEYS:
            builder.add(key, value, number)
        elif word.lower() in LSB_ALL:
            _lsb_outside(word, number, builder)
        else:
            _unknown_key(key, number, builder)
    return number + 1, len(data)


def _spaced_key(line: bytes, number: int, builder: _Builder) -> bool:
    """`# depends on: x` or `# warning exit: 3`: a key (or a synonym of one) written with
    spaces is a near miss, told as an unknown key is (an error for one that orders or
    selects). Only exact names, so prose such as `# Note that: ...` stays prose. True
    when the line was such a key."""
    match = SPACED_KEY_RE.match(line)
    if not match:
        return False
    words = match.group(1).decode("ascii").lower().split()
    for joined in ("-".join(words), "_".join(words)):
        if joined in KEYS or joined in SYNONYMS:
            _unknown_key(" ".join(words), number, builder, meaning=SYNONYMS.get(joined, joined))
            return True
    return False


def _unkeyed(line: bytes, number: int, builder: _Builder) -> None:
    """A header comment `# KEY rest` with no colon after a key that orders (or a synonym
    of one) is kept for graph.py, which calls it a near miss when every word of the rest
    names a module (`# requires sleeper`) and prose otherwise (`# after the reboot we
    check`). A scalar key followed by one word that is a valid value (`# timeout 30s`),
    or `# locks apt`, is an error; `# provides foo` and `# tags web` are warnings; more
    words than one are prose (`# provides a quick look`)."""
    match = UNKEYED_RE.match(line)
    if not match:
        return
    word = match.group(1).decode("ascii")
    rest = match.group(2).decode("utf-8", "replace").strip()
    key = word.lower().replace("-", "_")
    if key not in KEYS:
        key = SYNONYMS.get(word.lower()) or SYNONYMS.get(key) or ""
    items = split_list(rest)
    if key in EDGE_KEYS:
        if items and all(DEP_RE.match(item) for item in items):
            builder.unkeyed.append((number, key, word, tuple(items)))
        return
    if key not in KEYS or key == "description" or len(rest.split()) != 1:
        return
    if key in LIST_KEYS:
        if not all(DEP_RE.match(item) for item in items):
            return
        severity = "error" if key == "locks" else "warning"
    else:
        try:
            _scalar(key, rest)
        except ValueError:
            return
        severity = "error"
    builder.problem(number, unkeyed_message(word, key, rest), severity)


def unkeyed_message(word: str, key: str, rest: str) -> str:
    """What to say about `# WORD REST`, a header line that lacks its colon."""
    return (
        f"'# {word} {rest}' is not read: a header key ends with a colon "
        f"(did you mean '# {key.replace('_', '-')}: {rest}'?)"
    )


def _lsb_outside(word: str, number: int, builder: _Builder) -> None:
    """An LSB key in the native header, outside `### BEGIN INIT INFO` … `### END INIT
    INFO`: not read. An error for one that orders modules."""
    name = word.lower()
    if name in LSB_ORDER:
        ours = LSB_KEYS[name]
        builder.problem(
            number,
            f"{word}: is an LSB key, read only between '### BEGIN INIT INFO' and "
            f"'### END INIT INFO' (add those lines around the block, or write "
            f"'# {ours}: ...')",
        )
    else:
        builder.problem(
            number,
            f"{word}: is an LSB key, read only inside a '### BEGIN INIT INFO' block",
            "warning",
        )


def _below_header(
    data: bytes, builder: _Builder, span: tuple[int, int] | None, end: int, offset: int
) -> None:
    """A `# key:` line below the header (after its first line of code, line `end` at
    `offset`) is not read: a warning naming it, since a key moved under `set -euo
    pipefail` would otherwise be ignored in silence; an LSB ordering key there (a block
    whose BEGIN line is misspelt or missing) is an error. One scan, from the header's
    end."""
    for match in BELOW_RE.finditer(data, offset):
        word = match.group(1).decode("ascii")
        if word.lower() not in BELOW_KEYS:
            continue
        number = data.count(b"\n", 0, match.start()) + 2  # (the match begins at a \n)
        if span and span[0] <= number <= span[1]:
            continue
        if word.lower() in LSB_ORDER:
            _lsb_outside(word, number, builder)
            continue
        builder.problem(
            number,
            f"{word.lower()}: below the header, which ends at line {end} (the first line "
            f"of code), so it is not read: move it above line {end}",
            "warning",
        )


def _read_lsb(data: bytes, span: tuple[int, int], builder: _Builder) -> None:
    lines = data.split(b"\n")[span[0] : span[1] - 1]
    for number, raw in enumerate(lines, start=span[0] + 1):
        match = KEY_LINE_RE.match(raw.strip())
        if not match:
            continue  # continuation lines only extend Description, which we do not use
        word = match.group(1).decode("ascii")
        key = LSB_KEYS.get(word.lower())
        if key is None:
            _lsb_unknown(word, number, builder)
            continue
        value = _decode(match.group(2), number, builder)
        if value is None:
            continue
        builder.add(key, value, number, lsb=True)  # a native key read first wins


# What a native ordering key is called in an LSB block.
LSB_NAMES = {"requires": "Required-Start", "wants": "Should-Start", "before": "X-Start-Before"}


def _lsb_unknown(word: str, number: int, builder: _Builder) -> None:
    """A key in the LSB block that it does not define: ignored, as insserv ignores it,
    unless it is a near miss of one that orders (`Required-Starts`) or a native ordering
    key (`requires:`, read only in the header at the top): those are errors."""
    import difflib

    name = word.lower()
    if name in LSB_ALL:
        return
    native = SYNONYMS.get(name) or (name if name in EDGE_KEYS else None)
    if native in EDGE_KEYS:
        where = LSB_NAMES.get(native)
        instead = f"'{where}:'" if where else f"'# {native}:' in the header at the top"
        builder.problem(
            number, f"{word}: is not an LSB key, so it is not read here (did you mean {instead}?)"
        )
        return
    close = difflib.get_close_matches(name, [*LSB_ORDER, "provides"], n=1, cutoff=0.8)
    if close:
        builder.problem(
            number,
            f"unknown LSB key {word!r}: did you mean {close[0].title()!r}? (it orders "
            "modules, so a misspelling is an error)",
        )
