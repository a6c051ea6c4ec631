"""The command line: click options -> an api call -> rendering. No logic of its own."""

from __future__ import annotations

import gc
import json
import sys

import click

from corral import api
from corral.config import load_config
from corral.errors import CorralError, HeaderError


class CorralGroup(click.Group):
    """Turns corral's own errors into a clean message and design.md's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HeaderError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            errors = sum(p.severity == "error" for p in exc.problems)
            click.echo(f"corral: {errors} error(s); nothing was run", err=True)
            ctx.exit(exc.exit_code)
        except CorralError as exc:
            click.echo(f"corral: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=CorralGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--modules", "modules", multiple=True, metavar="DIR",
              help="Modules directory (repeatable). Default: $CORRAL_MODULES or ./modules.")
@click.option("--db", metavar="PATH", help="SQLite database. Default: $CORRAL_DB or state dir.")
@click.option("--config", "config_file", metavar="FILE",
              help="YAML config. Default: corral.yaml beside the modules directory.")
@click.version_option(package_name="corral")
@click.pass_context
def main(ctx: click.Context, modules, db, config_file):
    """Run a directory of Bash modules in parallel, in dependency order.

    Example:

        corral --modules ./modules plan
    """
    # corral's commands build many small acyclic objects and exit; the cyclic collector
    # would only rescan them (a third of a warm `plan` over 10,000 modules). A future
    # long-lived command must turn it back on.
    gc.disable()
    ctx.obj = load_config(modules, db, config_file)


def _store(ctx: click.Context):
    store = api.open_store(ctx.obj)
    ctx.call_on_close(store.close)
    return store


def _selection_options(f):
    f = click.option("--exclude", multiple=True, metavar="MODULE",
                     help="Leave this module (and what requires it) out.")(f)
    f = click.option("--tag", "tags", multiple=True, metavar="TAG",
                     help="Only modules with this tag (repeatable), plus what they need.")(f)
    return click.argument("targets", nargs=-1)(f)


@main.command()
@_selection_options
@click.option("--json", "as_json", is_flag=True, help="Print design.md's plan object.")
@click.pass_context
def plan(ctx, targets, tags, exclude, as_json):
    """Show the waves and order `run` would follow; runs nothing.

    Example:

        corral plan --json summary
    """
    graph, selection = api.plan_modules(ctx.obj, _store(ctx), targets, tags, exclude)
    _print_warnings(graph.warnings)
    if as_json:
        _echo_json(api.plan_json(graph, selection))
        return
    waves: dict[int, list[str]] = {}
    for name in selection.names:
        waves.setdefault(selection.level[name], []).append(name)
    width = max((len(n) for n in selection.names), default=4)
    for level, names in waves.items():
        click.echo(click.style(f"wave {level}", bold=True) + f"  ({len(names)} modules)")
        for name in names:
            module = graph.modules[name]
            waits = ", ".join(sorted(selection.waits[name])) or "-"
            click.echo(f"  {name:<{width}}  {module.header.description or '':<40.40}  "
                       f"after: {waits}")
    for name, reason in sorted(selection.excluded.items()):
        click.echo(f"  not run: {name} ({reason})")
    click.echo(f"{len(selection.names)} modules in {len(waves)} waves")


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Every header as JSON.")
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
    width = max((len(m.name) for m in modules), default=4)
    for m in modules:
        h = m.header
        extra = []
        for key in ("requires", "wants", "locks", "tags"):
            if getattr(h, key):
                extra.append(f"{key}: {' '.join(getattr(h, key))}")
        click.echo(f"{m.name:<{width}}  {h.description:<44.44}  {'; '.join(extra)}")


@main.command()
@click.option("--format", "fmt", type=click.Choice(["dot", "json"]), default="dot",
              show_default=True)
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
        click.echo(str(problem), err=True)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    click.echo(f"{errors} error(s), {warnings} warning(s)", err=True)
    ctx.exit(2 if errors else 0)


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
    s = _store(ctx).cache_stats()
    click.echo(f"entries:  {s.entries}\nhits:     {s.hits}\nmisses:   {s.misses}\n"
               f"hit rate: {s.hit_rate:.1%}")


@cache.command()
@click.pass_context
def clear(ctx):
    """Empty the header cache."""
    click.echo(f"cleared {_store(ctx).clear_cache()} entries")


def _echo_json(value) -> None:
    """Indented for a person at a terminal; compact (and several times faster) for a pipe."""
    click.echo(json.dumps(value, indent=2 if sys.stdout.isatty() else None))


def _print_warnings(problems) -> None:
    for problem in problems:
        click.echo(str(problem), err=True)


if __name__ == "__main__":
    sys.exit(main())
