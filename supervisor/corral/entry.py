"""The `corral` command: `cli.py`, except that `plan --json` in its plainest spelling is
answered from the plan memo without importing click.

perf (docs/architecture.md): importing click and building the command tree is a third
of a warm `plan --json` over 10,000 modules. The memo's answer needs only the config,
the scan and the store, so when the command line is `[--modules DIR]... [--db PATH]
[--config FILE] plan --json [TARGET | --tag TAG | --exclude MODULE]...`, with values
that are neither empty nor look like options, this answers it as `cli.py` would.
Anything else (another command or spelling, help, completion, a terminal, a config
warning, a database fault, a memo miss, an error) is left to `cli.py`, before anything
was printed; a miss hands its scan over (`memo.look_up`), so the modules are listed
once.
"""

from __future__ import annotations

import os
import sys

GLOBAL_OPTIONS = ("--modules", "--db", "--config")
SELECTION_OPTIONS = ("--tag", "--exclude")


def main(prog_name: str | None = None) -> None:
    """Run the `corral` command with sys.argv; exits with its status."""
    if _answered(sys.argv[1:]):
        # Printed, flushed, the store closed: leave now, as `run` does (cli.py); the
        # interpreter's teardown frees what the kernel frees (docs/architecture.md).
        os._exit(0)
    try:
        from corral.cli import main as cli_main
    except MemoryError:  # too little address space to load corral at all (`ulimit -v`)
        sys.stderr.write("corral: out of memory while starting (see ulimit -v); corral stopped\n")
        sys.exit(71)
    cli_main(prog_name=prog_name)


class PlanJson:
    """`plan --json`'s arguments as click would pass them."""

    __slots__ = ("modules", "db", "config", "targets", "tags", "exclude")

    def __init__(self) -> None:
        self.modules: list[str] = []
        self.db: str | None = None
        self.config: str | None = None
        self.targets: list[str] = []
        self.tags: list[str] = []
        self.exclude: list[str] = []


def plan_json_args(args: list[str]) -> PlanJson | None:
    """The arguments when `args` is `plan --json` as `entry` answers it (see above); None
    for anything else, which click reads."""
    out = PlanJson()
    i = 0
    while i < len(args) and args[i] != "plan":
        name, value, i = _option(args, i, GLOBAL_OPTIONS)
        if name == "--modules":
            out.modules.append(value)
        elif name is None or getattr(out, name[2:]) is not None:  # given twice: click's
            return None
        else:
            setattr(out, name[2:], value)
    rest = args[i + 1 :]
    if i == len(args) or "--json" not in rest:
        return None
    j = 0
    while j < len(rest):
        if rest[j] == "--json":
            j += 1
        elif rest[j].startswith("-"):
            name, value, j = _option(rest, j, SELECTION_OPTIONS)
            if name is None:
                return None
            (out.tags if name == "--tag" else out.exclude).append(value)
        elif _plain(rest[j]):
            out.targets.append(rest[j])
            j += 1
        else:
            return None
    return out


def _option(args: list[str], i: int, names: tuple[str, ...]) -> tuple[str | None, str, int]:
    """The option at args[i] when it is one of `names` with a plain value (`--db PATH`,
    `--db=PATH`): (name, value, index after it); (None, "", i) otherwise."""
    name, eq, value = args[i].partition("=")
    if name not in names:
        return None, "", i
    if not eq:
        if i + 1 == len(args):
            return None, "", i
        i, value = i + 1, args[i + 1]
    if not _plain(value):
        return None, "", i
    return name, value, i + 1


def _plain(value: str) -> bool:
    """A value click takes as it is: not empty or blank (a usage error), not like an
    option, UTF-8."""
    if not value.strip() or value.startswith("-"):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _answered(args: list[str]) -> bool:
    """Answer `plan --json` from the plan memo as `cli.py` would; False when nothing
    was printed and click is to run the command."""
    given = plan_json_args(args)
    if given is None or any(k[:1] == "_" and k.endswith("_COMPLETE") for k in os.environ):
        return False
    import gc

    gc.disable()  # as cli.py does, before the imports too (docs/architecture.md)
    from corral import streams
    from corral.signals import Stopped, stop_anywhere

    streams.install()  # as cli.py does first (docs/reliability.md)
    stop_anywhere()
    if sys.stdout.isatty() or not (_text_as_is(sys.stdout) and _text_as_is(sys.stderr)):
        return False  # JSON indented for a terminal; click's own stream for ASCII
    try:
        try:
            found = _look_up(given)
        except Exception:  # noqa: BLE001 - click runs the command again and says what it is
            return False
        if found is None:
            return False
        text, warnings = found
        from corral.visible import text as visible_text

        for warning in warnings.splitlines():
            sys.stderr.write(visible_text(warning) + "\n")  # as cli.say: click.echo(err=True)
            sys.stderr.flush()
        sys.stdout.write(text)  # as click.echo, without copying 2 MB to add the newline
        sys.stdout.write("\n")
        sys.stdout.flush()
        return True
    except Stopped as stop:  # as cli.CorralGroup.main: one line and 128 + the signal
        from corral.cli import say

        say(f"corral: {stop}", err=True)
        sys.exit(stop.exit_code)


def _look_up(given: PlanJson) -> tuple[str, str] | None:
    """(plan JSON, warnings) the memo holds for `given`, counted as a warm load; None
    when click is to answer: a config warning, a database fault, a miss (its scan
    handed over)."""
    from corral import memo
    from corral.config import load_config
    from corral.store import Store

    config = load_config(tuple(given.modules), given.db, given.config)
    if config.warnings:
        return None
    said: list[str] = []
    store = Store.open(config.db, said.append, "cache")
    try:
        if said or not store.path:
            return None
        lookup = memo.look_up(
            config, store, given.targets, given.tags, given.exclude, hand_over=True
        )
        if lookup.found is not None:
            store.count_warm_load(sum(len(entries) for _, entries, _ in lookup.scan))
        return lookup.found
    finally:
        store.close()


def _text_as_is(stream) -> bool:
    """Does click write to `stream` as it is? Not when its encoding is ASCII (or none):
    click then writes UTF-8 to the bytes beneath."""
    import codecs

    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "ascii").name != "ascii"
    except LookupError:
        return True
