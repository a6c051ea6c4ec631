"""Counts are written as people write them: '1 module', '2 modules', never '1 modules'
or 'module(s)'. One helper says them (`units.plural`), and a check over the source
finds any count written without it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from corral.units import plural

SOURCE = Path(__file__).resolve().parent.parent / "supervisor" / "corral"
NOUNS = re.compile(
    r" (modules|hosts|runs|attempts|errors|warnings|entries|rows|files|bytes|processes"
    r"|waves|samples|locks|host samples)\b"
)


def counts_without_plural(source: str) -> list[str]:
    """The f-strings of `source` that put a number before a plural noun themselves
    (`f"{n} modules"`) or write `(s)`/`(es)`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.JoinedStr):
            continue
        parts = node.values
        for i, (before, after) in enumerate(zip(parts, parts[1:], strict=False)):
            option = i > 0 and str(getattr(parts[i - 1], "value", "")).endswith("-")  # --{x}
            if (
                not option
                and isinstance(before, ast.FormattedValue)
                and isinstance(after, ast.Constant)
                and NOUNS.match(str(after.value))
            ):
                found.append(ast.unparse(node))
        if any(isinstance(p, ast.Constant) and re.search(r"\((e?s)\)", p.value) for p in parts):
            found.append(ast.unparse(node))
    return found


def test_plural_says_one_and_many():
    assert plural(1, "module") == "1 module"
    assert plural(0, "module") == "0 modules"
    assert plural(2, "host") == "2 hosts"
    assert plural(1, "process") == "1 process"
    assert plural(3, "process") == "3 processes"
    assert plural(2, "entry") == "2 entries"
    assert plural(0, "leftover process") == "0 leftover processes"
    assert plural(2, "host sample") == "2 host samples"


def test_no_count_in_the_source_bypasses_plural():
    # The control: the check finds each way a count can go wrong.
    assert len(counts_without_plural('f"{n} modules"\nf"{n} run(s)"\nf"{n} process(es)"')) == 3
    offenders = {
        f"{path.relative_to(SOURCE)}: {text}"
        for path in sorted(SOURCE.rglob("*.py"))
        for text in counts_without_plural(path.read_text())
    }
    assert not offenders, "\n".join(sorted(offenders))


def test_one_module_one_run_one_error_in_real_output(corral):
    corral.module("only", body="true")
    run = corral("run")
    assert run.code == 0 and "running 1 module with" in run.out, run.out
    assert "1 modules" not in run.out + run.err
    check = corral("check")
    assert check.err.startswith("0 errors, 0 warnings"), check.err
    pruned = corral("prune", "--keep-runs", "1", "--dry-run")
    assert "would remove 0 runs and" in pruned.out, pruned.out
    corral.module("typo", "requires: nothing_here")
    bad = corral("check")
    assert "1 error, 0 warnings" in bad.err, bad.err
