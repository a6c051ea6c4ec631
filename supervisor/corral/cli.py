"""The command line: click options -> an api call -> rendering. No logic of its own."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import sys

import click

from corral import api
from corral.config import load_config
from corral.errors import CorralError, HeaderError, ResourceError, exhausted
from corral.headers import parse_duration, parse_size
from corral.throttle import Jobs
from corral.units import mib, plural, seconds, size, utc
from corral.visible import text as visible_text

MAX_WHOLE = 2**31 - 1  # past this a count is a typo (and SQLite's integers end at 2**63)


def _check_values(ctx: click.Context, params: list[click.Parameter]) -> None:
    """Every option's and argument's value, checked after parsing: an empty value (an
    unset "$MODDIR") is a usage error naming it, never a default, "here" or "all"; a
    number is finite (NaN and infinity are no number of seconds) and a whole number at
    most MAX_WHOLE."""
    if ctx.resilient_parsing:  # shell completion: never an error
        return
    for param in params:
        value = ctx.params.get(param.name) if param.name else None
        for v in value if isinstance(value, tuple | list) else (value,):
            why = None
            if isinstance(v, str) and not v.strip():
                name = max(param.opts, key=len) if isinstance(param, click.Option) else None
                name = name or (param.name or "value").lower().removesuffix("s")
                raise click.UsageError(
                    f"{name} {v!r}: empty, which is never a default, 'here' or 'all' "
                    "(is a variable unset?)",
                    ctx,
                )
            elif isinstance(v, float) and not math.isfinite(v) and param.name != "wait_lock":
                why = f"{v!r} is not a finite number"
            elif isinstance(param.type, click.types.IntParamType) and abs(v or 0) > MAX_WHOLE:
                why = f"{v} is too large (at most {MAX_WHOLE})"
            if why:
                raise click.BadParameter(why, ctx, param)


class CorralCommand(click.Command):
    """A command whose options and arguments are checked as _check_values says, and
    whose flags may not contradict each other (`contradictions`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Click's parsing, after refusing flags that contradict each other (a UsageError
        naming both); then every value is checked."""
        if not ctx.resilient_parsing:
            clash = contradictions(self, args)
            if clash is not None:
                raise click.UsageError(clash, ctx)
        rest = super().parse_args(ctx, args)
        _check_values(ctx, self.get_params(ctx))
        return rest


def misplaced_option(group: click.Group, prog: str, args: list[str], name: str) -> str | None:
    """What to say when `name`, an option of one of `group`'s commands, was given before
    the command (`corral -j 2 run`): "-j is an option of `run`: corral run -j 2"; None
    when no command has such an option."""
    flag = name.split("=", 1)[0]
    owners = [(path, p) for path, p in _options(group) if flag in (*p.opts, *p.secondary_opts)]
    if not owners:
        return None
    words = [a for a in args if not a.startswith("-")]
    given = next((path for path, _ in owners if path[0] in words), None)
    if given is None and len(owners) > 1:
        names = ", ".join(f"`{' '.join(path)}`" for path, _ in owners)
        return f"{flag} is an option of {names}: give it after the command"
    path, param = next((o for o in owners if o[0] == given), owners[0])
    where = f"{flag} is an option of `{' '.join(path)}`"
    # the option as it was typed, with its value when that is the next word
    at = next((i for i, a in enumerate(args) if _spells(a, flag)), None)
    if at is None:  # (inside a cluster of short flags)
        return f"{where}: give it after the command"
    takes = not (param.is_flag or param.count) and args[at] == flag and at + 1 < len(args)
    moved = args[at : at + 1 + takes]
    rest = args[:at] + args[at + 1 + takes :]
    try:
        if given is None:
            example = [*rest, *path, *moved]
        else:  # after the command's name (or the group's, with the command added)
            cut = rest.index(given[0]) + 1
            if given[-1] in rest[cut:]:
                cut = rest.index(given[-1], cut) + 1
                example = [*rest[:cut], *moved, *rest[cut:]]
            else:
                example = [*rest[:cut], *given[1:], *moved, *rest[cut:]]
    except ValueError:  # the command's name was the option's value: no example
        return f"{where}: give it after the command"
    return f"{where}: {prog} {' '.join(example)}"


def _spells(token: str, flag: str) -> bool:
    """Is `token` the option `flag` as typed: `-j`, `-j2`, `--jobs`, `--jobs=2`?"""
    if token == flag or token.startswith(f"{flag}="):
        return True
    return not flag.startswith("--") and token.startswith(flag)


def _options(group: click.Group, path: tuple[str, ...] = ()):
    """(command path, option) of every option of every command under `group`."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _options(command, (*path, name))
        for param in command.params:
            if isinstance(param, click.Option):
                yield (*path, name), param


def contradictions(
    command: click.Command, args: list[str], stop_at: frozenset[str] = frozenset()
) -> str | None:
    """Two flags that say opposite things (`-k --fail-fast`, `--failed --resume`), which
    click would settle silently by taking the last: the message naming both; None when
    there are none. An option that takes a value may be given again, and the last one
    counts, as with make (`alias cr='corral run -j 4'`, then `cr -j 8`). A group's
    options end at its command's name (`stop_at`)."""
    by_token: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                by_token[opt] = param
    seen: dict[str, tuple[str, object]] = {}  # destination -> (flag as typed, meaning)
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--" or token in stop_at:
            break
        opt, eq, _ = token.partition("=")
        param = by_token.get(opt)
        if param is None and token[:1] == "-" and token[1:2] != "-" and len(token) > 2:
            opt, eq = token[:2], "="  # -j4: its value attached
            param = by_token.get(opt)
            if param is not None and (param.is_flag or param.count):
                param = None  # a cluster of short flags (-kn): not read here
        if param is None or param.count:
            continue
        if not param.is_flag:  # skip its value: the next word, unless attached
            i += 0 if eq else 1
            continue
        meaning = opt in param.opts if param.secondary_opts else param.flag_value
        typed = opt
        earlier = seen.get(param.name or "")
        if earlier is not None and earlier[1] != meaning:
            return f"{earlier[0]} and {typed} contradict each other: give one of them"
        seen[param.name or ""] = (typed, meaning)
    return None


class CheckedGroup(click.Group):
    """A group whose options, and whose commands', are checked as _check_values says."""

    command_class = CorralCommand
    group_class = type  # its subgroups are of its own class

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Click's parsing, after refusing flags that contradict each other (a UsageError
        naming both); then every value is checked."""
        if not ctx.resilient_parsing:
            clash = contradictions(self, args, frozenset(self.commands))
            if clash is not None:
                raise click.UsageError(clash, ctx)
        rest = super().parse_args(ctx, args)
        _check_values(ctx, self.get_params(ctx))
        return rest


class CorralGroup(CheckedGroup):
    """Turns corral's own errors into a clean message and their exit code (docs/usage.md)."""

    group_class = CheckedGroup

    def main(self, *args, **kwargs):
        """click's main, with safe output streams and no traceback for a user: an
        unexpected exception is one line and exit 70 (71 when corral ran out of
        descriptors or memory)."""
        from corral import streams
        from corral.signals import Stopped, stop_anywhere

        streams.install()  # before anything opens a file or prints (docs/reliability.md)
        stop_anywhere()  # Ctrl-C in any wait: one line and 130, never a traceback
        try:
            return super().main(*args, **kwargs)
        except Stopped as stop:
            say(f"corral: {stop}", err=True)
            sys.exit(stop.exit_code)
        except Exception as exc:  # the last line of defence: no traceback reaches a user
            sys.exit(_internal_error(exc))

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        """click's make_context; a command's option given before the command is a usage
        error that shows where it goes (`corral -j 2 run`); its errors' messages are made
        visible (see `invoke`)."""
        given = list(args)
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
            ctx.meta["corral.args"] = given  # for a subgroup's misplaced option (invoke)
            return ctx
        except click.NoSuchOption as exc:
            hint = misplaced_option(self, info_name or "corral", given, exc.option_name)
            if hint is not None:
                raise click.UsageError(visible_text(hint)) from None
            exc.message = visible_text(exc.message)
            raise
        except click.ClickException as exc:
            exc.message = visible_text(exc.message)
            raise

    def invoke(self, ctx: click.Context):
        """click's invoke; a global option given after the command is a usage error that
        shows where it goes. click's own errors quote what was typed (an unknown option,
        a bad value), which may hold escape sequences: their messages are made visible."""
        try:
            return self._invoke(ctx)
        except click.ClickException as exc:
            exc.message = visible_text(exc.message)
            raise

    def _invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:
            name = exc.option_name.split("=", 1)[0]
            group = exc.ctx.command if exc.ctx is not None else None
            if name not in GLOBAL_OPTIONS and isinstance(group, click.Group):
                # a subcommand's option before it (corral fleet -w x gather)
                given = ctx.meta.get("corral.args", [])
                at = given.index(exc.ctx.info_name) + 1 if exc.ctx.info_name in given else 0
                words = given[at:]
                hint = misplaced_option(group, exc.ctx.command_path, words, exc.option_name)
                if hint is not None:
                    raise click.UsageError(hint, exc.ctx) from None
            if name not in GLOBAL_OPTIONS or exc.ctx is None:
                raise
            command = exc.ctx.command_path.removeprefix(ctx.command_path).strip()
            raise click.UsageError(
                f"{name} is a global option: give it before the command, as in "
                f"`{ctx.command_path} {name} {GLOBAL_OPTIONS[name]} {command} ...`",
                exc.ctx,
            ) from None
        except HeaderError as exc:
            for problem in exc.problems:
                say(str(problem), err=True)
            errors = sum(p.severity == "error" for p in exc.problems)
            say(f"corral: {plural(errors, 'error')}; nothing was run", err=True)
            ctx.exit(exc.exit_code)
        except CorralError as exc:
            if not isinstance(exc, ResourceError) and exhausted(exc) is not None:
                ctx.exit(_internal_error(exc))  # raised on running out: say that (71)
            hint = ""
            if type(exc).__name__ == "NoModulesDir":  # a target that is a module's file
                from corral.discover import file_target_hint

                hint = visible_text(file_target_hint(ctx.meta.get("corral.args", [])))
            say(f"corral: {exc}{hint}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:  # Ctrl-C before a run takes its signals (or outside one)
            click.echo("corral: interrupted (SIGINT)", err=True)
            ctx.exit(130)
        except OSError as exc:  # a place corral must write is missing or not a directory
            if exhausted(exc) is not None:  # not the place's fault: corral's own limits
                ctx.exit(_internal_error(exc))
            where = f"{exc.filename}: " if exc.filename else ""
            say(f"corral: {where}{exc.strerror or exc}", err=True)
            ctx.exit(2)


def say(line: str = "", err: bool = False) -> None:
    """The one way a command writes a line for people (a message, a table row): made
    visible (`visible.text`), so a name in it (a file, a directory, a host's answer)
    never drives the terminal or forges a line. JSON, DOT and styled text bypass it."""
    click.echo(visible_text(line), err=err)


INTERNAL_ERROR = 70  # EX_SOFTWARE
RESOURCE_ERROR = 71  # EX_OSERR: corral itself ran out of descriptors, memory, processes


def _internal_error(exc: BaseException) -> int:
    """Says in one line that corral hit a bug, keeps the traceback in a new file of its
    own (or prints it with CORRAL_DEBUG=1), and returns the exit status for it. Running
    out of descriptors or memory is no bug: one line says what ran out (exit 71)."""
    from corral.errors import exhausted

    short = exhausted(exc)
    if short is not None:
        sys.stderr.write(f"corral: {short}; corral stopped\n")
        return RESOURCE_ERROR
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(exc))
    if os.environ.get("CORRAL_DEBUG"):
        sys.stderr.write(text)
        where = "above"
    else:
        try:
            fd, where = tempfile.mkstemp(prefix="corral-error-", suffix=".txt")  # O_EXCL
            with os.fdopen(fd, "w") as file:
                file.write(text)
        except OSError:
            where = "not kept (set CORRAL_DEBUG=1 to see it)"
    say(f"corral: internal error: {type(exc).__name__}: {exc}", err=True)
    say(f"corral: this is a bug in corral; the details are in {where}", err=True)
    return INTERNAL_ERROR


GLOBAL_OPTIONS = {"--modules": "DIR", "--db": "PATH", "--config": "FILE"}


class RunCommand(CorralCommand):
    """`run`, whose bare `--wait-lock` never takes the next word (a target) as its value:
    `--wait-lock` waits for ever, `--wait-lock=30` or `--wait-lock 30` thirty seconds."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """click's parse_args, after a bare `--wait-lock` (no number next) is given no
        value of its own."""
        out: list[str] = []
        for i, arg in enumerate(args):
            if arg == "--":
                out += args[i:]
                break
            if arg == "--wait-lock" and not _is_wait(args[i + 1] if i + 1 < len(args) else ""):
                arg = "--wait-lock=forever"
            out.append(arg)
        return super().parse_args(ctx, out)


def _wait_seconds(text: str) -> float:
    """`--wait-lock`'s value: seconds (`30`, `0`) or a duration (`90s`, `5m`); `forever`
    (or `inf`) is what a bare --wait-lock means. Raises ValueError otherwise (NaN, infinity)."""
    text = text.strip().lower()
    if text in ("forever", "inf"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        value = parse_duration(text)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(text)
    return value


def _is_wait(text: str) -> bool:
    try:
        _wait_seconds(text)
    except ValueError:
        return False
    return text.strip().lower() != "forever"


@click.group(cls=CorralGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--modules",
    "modules",
    multiple=True,
    metavar="DIR",
    help="Modules directory (repeatable). Default: $CORRAL_MODULES or ./modules.",
)
@click.option("--db", metavar="PATH", help="SQLite database. Default: $CORRAL_DB or state dir.")
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    help="YAML config. Default: corral.yaml beside the modules directory.",
)
@click.version_option(package_name="corral")
@click.pass_context
def main(ctx: click.Context, modules, db, config_file):
    """Run a directory of Bash modules in parallel, in dependency order.

    Example:

        corral --modules ./modules plan
    """
    # perf (docs/architecture.md): corral's commands build many small acyclic objects
    # and exit; the cyclic collector
    # would only rescan them (a third of a warm `plan` over 10,000 modules). A future
    # long-lived command must turn it back on.
    gc.disable()
    ctx.obj = load_config(modules, db, config_file)
    if not ctx.resilient_parsing:
        for warning in ctx.obj.warnings:
            say(f"corral: warning: {warning}", err=True)


class _Parsed(click.ParamType):
    """A value `parse` reads from the option's text; its ValueError is a usage error
    saying the value is not `expected`."""

    def __init__(self, name: str, parse, expected: str):
        self.name, self._parse, self._expected = name, parse, expected

    def convert(self, value, param, ctx):
        try:
            return self._parse(value)
        except ValueError:
            self.fail(f"{value!r} is not {self._expected}", param, ctx)


JOBS = _Parsed(
    "jobs",
    lambda v: v if isinstance(v, Jobs) else Jobs.parse(str(v)),
    "a whole number (0: no limit) nor 'auto'",
)
SIZE = _Parsed("size", lambda v: parse_size(str(v)), "a size such as 512M or 2G")
DURATION = _Parsed(
    "duration", lambda v: parse_duration(str(v)), "a duration such as 90s, 30m or 1h"
)


def _colour_wanted() -> bool:
    """At a terminal: colour and the redrawn status line, unless NO_COLOR is set or the
    terminal says it can do neither (TERM=dumb: an editor's shell, a log of a session)."""
    return not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _store(ctx: click.Context, purpose: str = "cache"):
    """The database for this command: "run" records, "cache" only caches headers, "read"
    reads records (a fault of the file is an error then)."""
    store = api.open_store(ctx.obj, purpose=purpose)
    ctx.call_on_close(store.close)
    return store


def _complete(what: str):
    """A shell-completion callback offering module names, tags, hosts or run ids (never
    an error: a completion that cannot read the modules offers nothing)."""

    def complete(ctx: click.Context, param, incomplete: str) -> list[str]:
        from corral.completion import candidates

        root = ctx.find_root().params
        try:
            config = load_config(root.get("modules") or (), root.get("db"), root.get("config_file"))
            words = candidates(config, what)
        except Exception:  # noqa: BLE001 - a completion must never print a traceback
            return []
        if what == "hosts":  # a node set: complete its last element
            from corral.completion import nodeset_words

            return nodeset_words(words, incomplete)
        return [w for w in words if w.startswith(incomplete)]

    return complete


def _selection_options(f):
    f = click.option(
        "--exclude",
        multiple=True,
        metavar="MODULE",
        shell_complete=_complete("modules"),
        help="Leave this module (and what requires it) out.",
    )(f)
    f = click.option(
        "--tag",
        "tags",
        multiple=True,
        metavar="TAG",
        shell_complete=_complete("tags"),
        help="Only modules with this tag (repeatable), plus what they need.",
    )(f)
    return click.argument("targets", nargs=-1, shell_complete=_complete("modules"))(f)


# Options more than one command takes: one definition each, the help (what the option
# means for that command) given where it is used.


def _module_argument(required: bool = True):
    """MODULE, completed with the module names."""
    return click.argument("module", required=required, shell_complete=_complete("modules"))


def _run_argument(name: str = "run"):
    """[RUN], optional: a run id or a unique prefix of one, completed with the runs."""
    return click.argument(name, required=False, metavar="[RUN]", shell_complete=_complete("runs"))


def _json_option(help: str):
    """--json (`as_json`): the command's answer as JSON."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def _all_option(help: str):
    """--all (`every`): every module set in the database, not only these directories'."""
    return click.option("--all", "every", is_flag=True, help=help)


def _dry_run_option(help: str):
    """-n/--dry-run: say what would be done; do nothing."""
    return click.option("-n", "--dry-run", is_flag=True, help=help)


def _format_option(choices: list[str], help: str | None = None):
    """--format (`fmt`): one of `choices`, the first by default."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help=help,
    )


def _nodes_option(help: str, required: bool = False):
    """-w/--nodes NODESET: the fleet's hosts (a ClusterShell node set), completed from
    the hosts corral knows of."""
    return click.option(
        "-w",
        "--nodes",
        required=required,
        metavar="NODESET",
        shell_complete=_complete("hosts"),
        help=help,
    )


def _fanout_option(help: str):
    """--fanout N: fleet hosts at once."""
    return click.option("--fanout", type=click.IntRange(1, 65536), metavar="N", help=help)


def _connect_timeout_option(help: str):
    """--connect-timeout S: seconds to reach a fleet host."""
    return click.option(
        "--connect-timeout", type=click.FloatRange(1, 86400), metavar="S", help=help
    )


@main.command()
@_selection_options
@_json_option("Print the modules, their waves and the order as JSON.")
@click.pass_context
def plan(ctx, targets, tags, exclude, as_json):
    """Show the waves and order `run` would follow; runs nothing.

    Example:

        corral plan --json summary
    """
    if as_json:
        text, warnings = api.plan_json_text(ctx.obj, _store(ctx), targets, tags, exclude)
        for warning in warnings:
            say(warning, err=True)
        if sys.stdout.isatty():
            import json

            text = json.dumps(json.loads(text), indent=2)
        click.echo(text)
        return
    graph, selection = api.plan_modules(ctx.obj, _store(ctx), targets, tags, exclude)
    _print_warnings(graph.warnings)
    waves: dict[int, list[str]] = {}
    for name in selection.names:
        waves.setdefault(selection.level[name], []).append(name)
    width = max((len(n) for n in selection.names), default=4)
    for level, names in waves.items():
        click.echo(click.style(f"wave {level}", bold=True) + f"  ({plural(len(names), 'module')})")
        for name in names:
            module = graph.modules[name]
            waits = ", ".join(sorted(selection.waits[name])) or "-"
            say(f"  {name:<{width}}  {module.header.description or '':<40.40}  after: {waits}")
    for name, reason in sorted(selection.excluded.items()):
        say(f"  not run: {name} ({reason})")
    say(f"{plural(len(selection.names), 'module')} in {plural(len(waves), 'wave')}")


@main.command(cls=RunCommand)
@_selection_options
@click.option(
    "-j",
    "--jobs",
    type=JOBS,
    metavar="N|auto",
    help="Modules running at once; 0: no limit; `auto`: adapt to the workload mix and "
    "memory. Default: $CORRAL_JOBS, else CPU count.",
)
@click.option(
    "-l",
    "--max-load",
    type=float,
    metavar="X",
    help="Start nothing new while runnable tasks would exceed X. Default: CPUs.",
)
@click.option(
    "--min-free-mem",
    type=SIZE,
    metavar="SIZE",
    help="Keep this much memory available (e.g. 512M, 2G).",
)
@click.option(
    "-k",
    "--keep-going/--fail-fast",
    "keep_going",
    default=None,
    help="After a failure, go on with independent modules (default) or start nothing new.",
)
@_dry_run_option("Print what would run, in order; run nothing.")
@_json_option("Print the run as one JSON object on stdout, and nothing else.")
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Print only what failed or warned, by final outcome (for cron mail).",
)
@click.option(
    "--wait-lock",
    type=_Parsed("duration", _wait_seconds, "a duration such as 30, 90s or 5m"),
    default=None,
    metavar="[DURATION]",
    help="If another run holds the lock, wait for it (for ever, or DURATION: 30, 90s, 5m).",
)
@click.option(
    "--failed",
    "redo",
    flag_value="failed",
    default=None,
    help="Run again what failed, timed out or was interrupted in the last run of these "
    "modules (what it needs and what completed then are not run again).",
)
@click.option(
    "--resume",
    "redo",
    flag_value="resume",
    help="Run what the last run of these modules did not complete: failed, skipped or "
    "never started.",
)
@_nodes_option(
    "Run on these hosts over ssh instead of here (ClusterShell node set: "
    "web[01-20],@db). Every other option goes to each host's run."
)
@_fanout_option("With -w: hosts running at once. Default: config fanout:, else 64.")
@click.option(
    "--canary",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="With -w: run on the first N hosts first; go on only if all of them are ok.",
)
@click.option(
    "--max-fail",
    type=click.FloatRange(0, 100),
    metavar="PCT",
    help="With -w: start no new host once more than PCT percent of the finished ones failed.",
)
@_connect_timeout_option(
    "With -w: seconds to reach a host. Default: config connect_timeout:, else 10."
)
@click.option(
    "--deadline",
    type=DURATION,
    metavar="DURATION",
    help="Bound the whole run (e.g. 30m): then what has not started is skipped and "
    "what runs is stopped as for a timeout.",
)
@click.pass_context
def run(
    ctx,
    targets,
    tags,
    exclude,
    jobs,
    max_load,
    min_free_mem,
    keep_going,
    dry_run,
    as_json,
    quiet,
    wait_lock,
    redo,
    nodes,
    fanout,
    canary,
    max_fail,
    connect_timeout,
    deadline,
):
    """Run the modules (or TARGETs and what they need) in parallel, in dependency order,
    here or (-w) on every host of a fleet.

    Exit status: 0 all ok; 1 a module failed, timed out or was skipped (on some host);
    2 header or usage error (nothing ran); 3 another run holds the lock; 4 a host was
    unreachable, lost, locked or skipped (wins over 1); 5 all completed, one or more
    with a warning (`warning-exit:`); 71 corral ran out of descriptors or memory;
    130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP.

    Example:

        corral run -j 4 --fail-fast summary

        corral run -w 'web[01-80]' --canary 2 --max-fail 10 -j 2 summary
    """
    if nodes:
        _run_fleet(ctx, nodes, targets, tags, exclude, fanout, canary, max_fail, connect_timeout)
    _fleet_only(ctx)
    from corral.printer import Printer

    gc.enable()  # a long-lived loop: let the collector do its job
    config = ctx.obj.with_flags(
        jobs=jobs,
        max_load=max_load,
        min_free_mem=min_free_mem,
        fail_fast=None if keep_going is None else not keep_going,
        deadline=deadline,
    )
    tty = sys.stdout.isatty()
    if as_json:
        printer = Printer(sys.stderr, sys.stderr, color=False, timestamps=False, quiet=True)
    else:
        printer = Printer(
            sys.stdout,
            sys.stderr,
            color=tty and _colour_wanted(),
            timestamps=not tty,
            quiet=quiet,
            progress_every=config.progress_interval,
        )
    done: frozenset[str] = frozenset()
    if redo:
        if targets:
            raise click.UsageError(f"--{redo} runs again what the last run left: no TARGETs")
        graph, _ = api.load_graph(config, _store(ctx))
        again = api.redo(config, _store(ctx), graph, resume=redo == "resume")
        if not again.targets:
            say(f"corral: run {again.run_id} left nothing to run again", err=True)
            ctx.exit(0)
        targets, done = again.targets, again.done
        if not as_json and not quiet:
            say(f"corral: --{redo}: not completed as of run {again.run_id}: {', '.join(targets)}")
    outcome = api.run_modules(
        config,
        _store(ctx, "cache" if dry_run else "run"),  # a dry run repairs nothing either
        targets,
        tags,
        exclude,
        [printer],
        dry_run=dry_run,
        wait_lock=wait_lock,
        want_output=not (as_json or quiet),
        done=done,
    )
    if as_json:
        _echo_json(api.run_json(outcome))
    # Every record is committed, and the write-ahead log folded into the file by the
    # record writer (a passive checkpoint). Leave now: closing the last connection would
    # also delete the log, and the interpreter's teardown frees what the kernel frees.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (| head)
            stream.flush()
    os._exit(outcome.exit_code)


FLEET_ONLY = {"nodes", "fanout", "canary", "max_fail", "connect_timeout", "as_json", "quiet"}


def _fleet_only(ctx: click.Context) -> None:
    """A fleet option (--fanout, --canary, --max-fail, --connect-timeout) without -w would
    be ignored in silence: a usage error naming it."""
    from click.core import ParameterSource

    for param in ctx.command.params:
        if param.name in FLEET_ONLY - {"nodes", "as_json", "quiet"} and ctx.get_parameter_source(
            param.name
        ) not in (None, ParameterSource.DEFAULT):
            name = max(param.opts, key=len)
            raise click.UsageError(
                f"{name} is for fleet runs: give -w NODESET with it (this run is local)", ctx
            )


def _host_args(ctx: click.Context) -> list[str]:
    """The run's own options and targets as they were given, for each host's run."""
    from click.core import ParameterSource

    out: list[str] = []
    targets: list[str] = []
    for param in ctx.command.params:
        if param.name in FLEET_ONLY or ctx.get_parameter_source(param.name) in (
            None,
            ParameterSource.DEFAULT,
        ):
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            targets = [str(v) for v in value]
        elif param.is_flag and param.secondary_opts:
            out.append(param.opts[-1] if value else param.secondary_opts[-1])
        elif param.is_flag and getattr(param, "is_bool_flag", False):
            if value is True:  # (clicks differ in what flag_value a boolean flag has)
                out.append(param.opts[-1])
        elif param.is_flag:  # one of several flags sharing a name (--failed, --resume)
            if value is not None and value is not False and value == param.flag_value:
                out.append(param.opts[-1])
        elif param.multiple:  # --opt=value: never mistaken for a flag and a target
            out += [f"{max(param.opts, key=len)}={item}" for item in value]
        else:
            out.append(f"{max(param.opts, key=len)}={value}")
    return [*out, "--", *targets] if targets else out


def _run_fleet(ctx, nodes, targets, tags, exclude, fanout, canary, max_fail, connect_timeout):
    from corral.fleet.view import FleetView

    config, params = ctx.obj, ctx.params
    tty = sys.stdout.isatty()
    out = sys.stderr if params["as_json"] else sys.stdout
    view = FleetView(
        out,
        tty=tty and not params["as_json"],
        quiet=params["quiet"] or params["as_json"],
        color=tty and _colour_wanted(),
    )
    outcome = api.run_fleet(
        config,
        _store(ctx),
        nodes,
        _host_args(ctx),
        targets,
        tags,
        exclude,
        [view],
        fanout=fanout or config.fanout,
        canary=canary,
        max_fail=max_fail,
        connect_timeout=connect_timeout or config.connect_timeout,
    )
    for notice in outcome.notices:
        say(f"corral: warning: {notice.message}", err=True)
    if params["as_json"]:
        _echo_json(outcome.as_json())
    else:
        view.summary(outcome)
    ctx.exit(outcome.exit_code)


@main.command()
@_module_argument(required=False)
@click.option(
    "-n",
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    default=20,
    show_default=True,
    help="How many runs (or attempts of MODULE) to show.",
)
@_json_option("Rows as JSON.")
@_all_option("Runs of every module set in the database, not only of these modules directories.")
@click.option("--host", metavar="HOST", help="The runs a fleet run gathered from HOST.")
@click.pass_context
def history(ctx, module, limit, as_json, every, host):
    """Past runs of these modules directories, or every recorded attempt of MODULE (here,
    or with --host as a fleet run gathered them from HOST). Times are UTC.

    Example:

        corral history disk_usage

        corral history --host web04
    """
    store = _store(ctx, "read")
    # A fleet host's runs are of its own copy of the modules (another module set).
    module_set = None if every or host else api.module_set(ctx.obj)
    if host:
        api.known_host(store, host)
    if module:
        api.known_module(ctx.obj, store, module, module_set, host)
        rows = store.attempts(module=module, limit=limit, module_set=module_set, host=host)
        if as_json:
            _echo_json(rows)
            return
        if not rows:
            raise click.ClickException(f"no records of module {module!r}")
        say(
            f"{'run':<22}  {'try':>3}  {'status':<11}  {'start (UTC)':<24}  "
            f"{'time':>8}  {'exit':>4}  {'peak RSS':>9}  detail"
        )
        for r in rows:
            say(
                f"{r['run_id']:<22}  {r['attempt']:>3}  {r['status']:<11}  "
                f"{utc(r['start'], 23):<24}  {seconds(r['duration_s']):>8}  "
                f"{_dash(r['exit_code']):>4}  {mib(r['peak_rss_bytes'], 'MiB'):>9}  "
                f"{r['reason'] or ''}"
            )
        return
    from corral.recovery import as_seen

    runs = as_seen(store.runs(limit, module_set, host=host))  # never a dead run as running
    # the fleet runs started from here (not with --host: those are a host's own runs)
    fleets = [] if host else store.fleet_runs_of(module_set, limit)
    if as_json:
        rows = [api.run_figures(store, r) for r in runs] + [_fleet_row(*f) for f in fleets]
        _echo_json(sorted(rows, key=lambda r: r.get("started") or "", reverse=True))
        return
    if fleets:
        _fleet_history(fleets, every)
        if not runs:
            return
        say("")
    if not runs:
        if host:
            say(f"no runs of host {host} recorded yet")
        elif every:
            say("no runs recorded yet")
        else:
            say(f"no runs of {module_set} recorded yet (--all shows every module set)")
        return
    say(
        f"{'run':<22}  {'started (UTC)':<20}  {'status':<11}  {'exit':>4}  "
        f"{'modules':>7}  {'makespan':>8}  {'work':>8}  {'-j':>4}"
        + ("  module set" if every else "")
    )
    for r in runs:
        say(
            f"{r['run_id']:<22}  {utc(r['started']):<20}  {r['status']:<11}  "
            f"{_dash(r['exit_code']):>4}  {_dash(r['module_count']):>7}  "
            f"{seconds(r['makespan_s']):>8}  {seconds(r['work_s']):>8}  {_dash(r['jobs']):>4}"
            + (f"  {r['module_set']}" if every else "")
        )


def _fleet_row(run: dict, hosts: list[dict]) -> dict:
    """A fleet run as `history --json` gives it: its row and its hosts' (`kind`: fleet)."""
    keep = ("run_id", "started", "ended", "status", "exit_code", "nodes", "module_set")
    return {
        "kind": "fleet",
        **{k: run.get(k) for k in keep},
        "controller": {k: run.get(k) for k in ("host", "pid")},
        "hosts": [
            {k: h.get(k) for k in ("host", "status", "exit_code", "reason", "run_id")}
            for h in hosts
        ],
    }


def _fleet_history(fleets: list, every: bool) -> None:
    from collections import Counter

    say(
        f"{'fleet run':<22}  {'started (UTC)':<20}  {'status':<11}  {'exit':>4}  hosts"
        + ("  module set" if every else "")
    )
    for run, hosts in fleets:
        counts = Counter(h["status"] for h in hosts)
        said = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        say(
            f"{run['run_id']:<22}  {utc(run['started']):<20}  {run['status']:<11}  "
            f"{_dash(run['exit_code']):>4}  {plural(len(hosts), 'host')} ({said or 'none'})"
            + (f"  {run['module_set']}" if every else "")
        )


def _dash(value) -> str:
    return "-" if value is None else str(value)


@main.command()
@click.option(
    "--out",
    "out",
    default=None,
    metavar="DIR",
    help="Directory to write the report into. Default: report/ beside the database.",
)
@_format_option(["md", "html"], "Markdown with SVG charts, or one self-contained page.")
@_all_option("One report per module set in the database (in subdirectories), with an index.")
@click.pass_context
def docs(ctx, out, fmt, every):
    """Write the performance report of these modules directories' runs: where the time
    went, what ran in parallel, what failed or got slower (tables, charts, report.json).

    Example:

        corral docs --out /var/www/corral --format html
    """
    from pathlib import Path

    if out:
        from corral.config import require_cwd_for

        require_cwd_for(out, "--out")  # relative to a directory that is gone: say so
    where = Path(out) if out else ctx.obj.db.parent / "report"
    for path in api.write_report(ctx.obj, _store(ctx, "read"), where, fmt, every):
        say(f"wrote {path}")


@main.command(name="list")
@_json_option("Every header as JSON.")
@click.pass_context
def list_(ctx, as_json):
    """List modules with their headers.

    Example:

        corral list --json
    """
    graph, _ = api.load_graph(ctx.obj, _store(ctx))
    modules = [graph.modules[n] for n in sorted(graph.modules)]
    if as_json:
        _echo_json([api.module_json(m) for m in modules])
        return
    import shutil

    width = max((len(m.name) for m in modules), default=4)
    desc_w = max((len(m.header.description) for m in modules), default=0)
    if sys.stdout.isatty():  # cut descriptions only when the terminal is too narrow
        columns = shutil.get_terminal_size((100, 20)).columns
        desc_w = max(20, min(desc_w, columns - width - 40))
    for m in modules:
        h = m.header
        extra = [
            f"{key}: {' '.join(getattr(h, key))}"
            for key in ("requires", "wants", "after", "before", "provides", "locks", "tags")
            if getattr(h, key)
        ]
        if h.timeout is not None:
            extra.append(f"timeout: {h.timeout:g}s")
        if h.retries:
            extra.append(f"retries: {h.retries}")
        if h.workload != "mixed":
            extra.append(f"workload: {h.workload}")
        if h.memory:
            extra.append(f"memory: {h.memory / 2**20:g}M")
        if h.warning_exit:
            extra.append(f"warning-exit: {', '.join(map(str, h.warning_exit))}")
        description = h.description
        if len(description) > desc_w:
            description = description[: desc_w - 1] + "…"
        say(f"{m.name:<{width}}  {description:<{desc_w}}  {'; '.join(extra)}".rstrip())


@main.command()
@_format_option(["dot", "json"])
@click.pass_context
def graph(ctx, fmt):
    """Print the dependency graph (DOT for `dot -Tsvg`, or JSON).

    Example:

        corral graph | dot -Tsvg > graph.svg
    """
    g, _ = api.load_graph(ctx.obj, _store(ctx))
    if fmt == "json":
        _echo_json(api.graph_json(g))
    else:
        click.echo(api.graph_dot(g), nl=False)


@main.command()
@click.option("--strict", is_flag=True, help="Treat warnings (unknown keys ...) as errors.")
@click.pass_context
def check(ctx, strict):
    """Validate every header; exit 2 on any error, printing all of them.

    Example:

        corral check --strict
    """
    problems = api.check_modules(ctx.obj, _store(ctx), strict)
    for problem in problems:
        say(str(problem), err=True)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    say(f"{plural(errors, 'error')}, {plural(warnings, 'warning')}", err=True)
    ctx.exit(2 if errors else 0)


@main.command()
@_run_argument()
@_json_option('The published states as JSON: {"running": [...], "last": ...}; with RUN, its state.')
@click.pass_context
def status(ctx, run, as_json):
    """Show the runs in progress (from another terminal): for each, what runs and for how
    long, what waits and on what (a requirement, a lock, a free slot, the load or
    memory), and the ETA. Without a run in progress, how the last one ended. With RUN (a
    run id or a unique prefix of one), only that run, in progress or ended; with
    --modules (or $CORRAL_MODULES), the runs of those modules directories.

    Example:

        watch -n1 corral status
    """
    from corral.explain import run_status

    only = None
    if ctx.obj.sources.get("modules", "default") != "default":  # named: its runs only
        shown = ", ".join(str(d.absolute()) for d in ctx.obj.modules)
        only = (api.module_set(ctx.obj), shown)
    published, lines = run_status(ctx.obj.log_dir, run, only)
    fleets = _fleet_status(ctx) if run is None else []
    if as_json:
        if run is not None:
            _echo_json(published.last)
        else:
            _echo_json({**published.as_json(), "fleet": [_fleet_row(*f) for f in fleets]})
        return
    if published.last is not None or not fleets:  # else "no run yet" is news of nothing
        for line in lines:
            say(line)
    for fleet_run, hosts in fleets:
        _say_fleet(fleet_run, hosts)


def _say_fleet(fr: dict, hosts: list[dict]) -> None:
    """`corral status`'s line of a fleet run still marked running."""
    from collections import Counter

    counts = Counter(h["status"] for h in hosts)
    said = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if fr["status"] == "running":
        say(
            f"fleet run {fr['run_id']} in progress (controller PID {fr['pid']}), "
            f"started {utc(fr['started'])}: {plural(len(hosts), 'host')} ({said})"
        )
    else:  # its controller is gone (see recovery.fleet_as_seen)
        say(
            f"fleet run {fr['run_id']} (PID {fr['pid']}) is no longer running: its "
            f"controller was killed before it finished ({said}); corral fleet gather "
            f"-w '{fr['nodes']}' brings what its hosts ran"
        )


def _fleet_status(ctx: click.Context) -> list:
    """The fleet runs of these modules directories still marked running: those in
    progress and those whose controller is gone (shown crashed); [] without a database."""
    if ctx.obj.db is None or not ctx.obj.db.exists():
        return []
    try:  # the published states are what status is about: a database fault does not hide them
        fleets = _store(ctx, "read").fleet_runs_of(api.module_set(ctx.obj), 5)
    except CorralError as exc:
        say(f"corral: warning: {exc}", err=True)
        return []
    return [
        (run, hosts)
        for run, hosts in fleets
        if run["status"] == "running" or (run["status"] == "crashed" and run["ended"] is None)
    ]


@main.command()
@_module_argument()
@_run_argument("run_id")
@click.pass_context
def why(ctx, module, run_id):
    """Explain MODULE's last run (or RUN): when it became ready and which chain of modules
    released it, how long it then waited for the throttle, a lock or a slot, how it ended.

    Example:

        corral why summary
    """
    from corral.explain import why as explain

    store = _store(ctx)
    api.known_module(ctx.obj, store, module)
    for line in explain(store, module, run_id):
        say(line)


@main.command()
@_module_argument()
@_run_argument()
@click.pass_context
def log(ctx, module, run):
    """Print MODULE's log from its newest run (or RUN: a run id or a unique prefix of one),
    every attempt, each under a header when there were several. At a terminal control
    characters are shown as run output is (^[ …) and the lines the module wrote on
    stderr are marked "! "; to a pipe the bytes go as logged.

    Example:

        corral log disk_usage | less
    """
    from corral.explain import log_paths
    from corral.logmarks import marked_lines, read_ranges
    from corral.visible import visible

    store = _store(ctx)
    api.known_module(ctx.obj, store, module)
    run_id, rows = log_paths(store, module, run)
    out = click.get_binary_stream("stdout")
    for row in rows:
        where = row["log_path"] or "no output"
        if len(rows) > 1:
            say(f"==> {module}, attempt {row['attempt']}: {where} <==")
            sys.stdout.flush()
        if not row["log_path"]:
            attempt = f", attempt {row['attempt']}" if len(rows) > 1 else ""
            say(f"({module} wrote no output in run {run_id}{attempt})", err=True)
            continue
        try:
            f = open(row["log_path"], "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise click.ClickException(f"{row['log_path']}: {exc.strerror}") from None
        try:
            with f:
                if out.isatty():  # a terminal shows the bytes, never obeys them
                    mark = b"! " if os.environ.get("NO_COLOR") else b"\x1b[31m!\x1b[0m "
                    for line, err in marked_lines(f, read_ranges(row["log_path"])):
                        if err:
                            out.write(mark)
                        out.write(visible(line.removesuffix(b"\r")).encode())
                        out.write(b"\n")
                else:  # a pipe gets the bytes as logged
                    while chunk := f.read(1 << 16):
                        out.write(chunk)
                out.flush()
        except BrokenPipeError:  # the reader took what it wanted (| head): not an error
            _drop_stdout()
            return
        except OSError as exc:
            raise click.ClickException(f"cannot print {row['log_path']}: {exc.strerror}") from None


def _drop_stdout() -> None:
    """stdout's reader is gone: point the descriptor at /dev/null, so that what is still
    buffered (flushed at exit) goes nowhere instead of failing."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)


@main.command()
@click.option(
    "--keep-runs",
    type=click.IntRange(min=0),
    metavar="N",
    help="Keep the newest N runs of each module set (0: no limit). Default: keep_runs.",
)
@click.option(
    "--keep-days",
    type=click.FloatRange(min=0, max=36525),
    metavar="DAYS",
    help="Keep runs started in the last DAYS days (0: no limit). Default: keep_days.",
)
@_dry_run_option("Say what would be removed; remove nothing.")
@click.pass_context
def prune(ctx, keep_runs, keep_days, dry_run):
    """Forget old runs of every module set in the database: their records and their log
    directories. A run applies keep_runs/keep_days to its own module set when it ends;
    this does it now, for all of them, with the limits given.

    Example:

        corral prune --keep-days 30 --dry-run
    """
    from corral.retention import prune as forget

    config = ctx.obj
    runs = config.keep_runs if keep_runs is None else keep_runs
    days = config.keep_days if keep_days is None else keep_days
    pruned = forget(_store(ctx), config.log_dir, runs, days, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    say(
        f"corral: {verb} {plural(len(pruned.runs), 'run')} and {size(pruned.log_bytes)} "
        f"of logs (keeping the newest {runs or 'all'} per module set, fleet runs' too, "
        "and per host of what fleet runs gathered"
        f"{f', and none older than {days:g} days' if days else ''})"
    )


@main.command(name="config")
@_json_option("Settings and sources as JSON.")
@click.pass_context
def config_(ctx, as_json):
    """Print the effective settings and where each came from (flag, environment variable,
    config file or default). Precedence: flags > CORRAL_* environment > config file >
    defaults.

    Example:

        CORRAL_JOBS=2 corral config
    """
    rows = api.settings(ctx.obj)
    if as_json:
        _echo_json({name: {"value": value, "source": source} for name, value, source in rows})
        return
    width = max(len(name) for name, _, _ in rows)
    shown = [(name, _setting_text(name, value), source) for name, value, source in rows]
    value_w = min(48, max(len(text) for _, text, _ in shown))
    for name, text, source in shown:
        say(f"{name:<{width}}  {text:<{value_w}}  ({source})")


SECONDS_SETTINGS = {"grace", "retry_backoff", "sample_interval", "progress_interval"}


def _setting_text(name: str, value) -> str:
    """A setting as `corral config` shows it to a person: durations in seconds with
    their unit, sizes as 64M ( --json keeps the numbers)."""
    if value is None:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if name in SECONDS_SETTINGS | {"connect_timeout", "deadline"}:
            return f"{value:g}s"
        if name == "keep_days":
            return f"{value:g} days" if value else "0 (no limit)"
        if name == "keep_runs" and not value:
            return "0 (no limit)"
        if name in ("log_limit", "min_free_mem"):
            return size(value)
    if isinstance(value, list):
        return " ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "-"
    return str(value)


@main.group()
def fleet():
    """Fleet runs (`corral run -w NODESET`): records from the hosts.

    Example:

        corral fleet gather -w 'web[01-80]'
    """


@fleet.command()
@_nodes_option("Hosts to gather from.", required=True)
@_fanout_option("Hosts at once.")
@_connect_timeout_option("Seconds to reach a host.")
@_json_option("One object per host as JSON.")
@click.pass_context
def gather(ctx, nodes, fanout, connect_timeout, as_json):
    """Bring the records of fleet runs that each host made since this database last
    heard of it: what a lost host finished later. Gathering twice adds nothing.

    Exit status: 0 every host answered; 4 a host could not be reached.

    Example:

        corral fleet gather -w web04
    """
    config = ctx.obj
    result = api.gather_fleet(
        config,
        _store(ctx),
        nodes,
        fanout=fanout or config.fanout,
        connect_timeout=connect_timeout or config.connect_timeout,
    )
    if as_json:
        _echo_json([g.as_json() for g in result])
    else:
        for g in result:
            why = f": {g.reason}" if g.reason else ""
            say(f"{g.host}: {g.status}, {plural(g.runs, 'run')}, {plural(g.rows, 'new row')}{why}")
    ctx.exit(0 if all(g.status == "ok" for g in result) else 4)


@main.group()
def cache():
    """Header cache figures and maintenance.

    Example:

        corral cache stats
    """


@cache.command()
@click.pass_context
def stats(ctx):
    """Entries, and hits/misses/hit rate of the last load."""
    s = _store(ctx, "read").cache_stats()
    say(f"entries:  {s.entries}")
    say(f"hits:     {s.hits}")
    say(f"misses:   {s.misses}")
    say(f"hit rate: {s.hit_rate:.1%}")


@cache.command()
@click.pass_context
def clear(ctx):
    """Empty the header cache."""
    say(f"cleared {plural(_store(ctx, 'read').clear_cache(), 'entry')}")


def _echo_json(value) -> None:
    """Indented for a person at a terminal; compact (and several times faster) for a pipe."""
    import json

    click.echo(json.dumps(value, indent=2 if sys.stdout.isatty() else None))


def _print_warnings(problems) -> None:
    for problem in problems:
        say(str(problem), err=True)


if __name__ == "__main__":
    sys.exit(main())
