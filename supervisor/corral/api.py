"""The library API: what the CLI, the tests and other front ends call.

Every function takes a `Config` and returns plain values; nothing here prints
except through the `on_warning` callback.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from corral import safepath
from corral.config import Config
from corral.dbfile import CACHE, file_size_limit, warn
from corral.discover import Loaded, Scan, load_modules, module_files, scan_modules
from corral.errors import HeaderError, LockHeld, Problem, StoreError, UsageError
from corral.graph import Graph, Module, Selection, build_graph, select
from corral.schema import module_set_key
from corral.status import COMPLETED, EXIT_WARNING, Status
from corral.store import History, Store

if TYPE_CHECKING:  # perf: the run's types, imported only when running (docs/architecture.md)
    from corral.events import Event, Listener, RunFinished

# An installed corral carries lib/ inside the package (corral/lib); a checkout has it at
# the top of the repository.
_HERE = Path(__file__).resolve().parent
PACKAGED_LIB = _HERE / "lib" if (_HERE / "lib").is_dir() else _HERE.parent.parent / "lib"


def open_store(
    config: Config, on_warning: Callable[[str], None] = warn, purpose: str = CACHE
) -> Store:
    """The configured database, opened for `purpose` (see Store.open)."""
    return Store.open(config.db, on_warning, purpose)


def load_graph(config: Config, store: Store, scan: Scan | None = None) -> tuple[Graph, Loaded]:
    """The resolved graph of every module; raises HeaderError listing every problem.
    Files that look like scripts but are not modules are among its warnings."""
    scan = scan_modules(config) if scan is None else scan
    ignored = [p for _, _, found in scan for p in found]
    loaded = load_modules(config, store, [(d, f) for d, f, _ in scan])
    try:
        graph = build_graph(loaded.modules, config.facilities)
    except HeaderError as exc:
        exc.problems.extend(ignored)
        raise
    graph.warnings.extend(ignored)
    return graph, loaded


def select_modules(
    config: Config,
    graph: Graph,
    targets: Iterable[str] = (),
    tags: Iterable[str] = (),
    exclude: Iterable[str] = (),
    durations: dict[str, float] | None = None,
    done: frozenset[str] = frozenset(),
) -> Selection:
    """The selection; raises UsageError saying why when it is empty (no modules, an
    unknown tag, everything excluded): a run of nothing is no success."""
    if not graph.modules:
        dirs = ", ".join(str(d.absolute()) for d in config.modules)
        found = [os.path.basename(p.path) for p in graph.warnings if "not run:" in p.message]
        also = f" (not modules: {', '.join(found)})" if found else ""
        raise UsageError(f"{dirs}: no modules to run: no *.sh files{also}")
    return select(graph, targets, tags, exclude, durations, done)


def module_set(config: Config) -> str:
    """The key that groups runs of these modules directories (see store.module_set_key)."""
    return module_set_key(config.modules)


def known_host(store: Store, host: str) -> None:
    """Raises UsageError (exit 2, with the closest names) when this database has no
    records of `host` (neither a fleet run's host nor this machine): `history --host`
    with a typo is never an empty answer."""
    from corral.graph import did_you_mean
    from corral.store import known_hosts

    hosts = {*known_hosts(store.path), os.uname().nodename}
    if host not in hosts:
        hint = (
            did_you_mean(host, hosts) or f" (hosts with records: {', '.join(sorted(hosts)[:10])})"
        )
        raise UsageError(f"no records of host {host!r} in {store.path}{hint}")


def known_module(
    config: Config,
    store: Store,
    module: str,
    module_set: str | None = None,
    host: str | None = None,
) -> None:
    """Raises UsageError (exit 2, with the closest names) when `module` has no records (of
    `module_set`, of `host`; None: any) and is no module of these directories either:
    `history`, `why` and `log` ask first, so a typo is never an empty answer."""
    from corral.graph import did_you_mean

    recorded = store.recorded_modules(module_set, host)
    if module in recorded:
        return
    try:
        files = {name[:-3] for _, names in module_files(config) for name, _ in names}
    except UsageError:  # no modules directory here: the records decide
        files = set()
    if module in files:
        return
    scope = f" in the runs of {module_set} (--all: of every module set)" if module_set else ""
    scope += f" from host {host}" if host else ""
    dirs = ", ".join(str(d.absolute()) for d in config.modules)
    raise UsageError(
        f"no records of module {module!r}{scope}, and no {module}.sh in {dirs}"
        + did_you_mean(module, recorded | files)
    )


def history(store: Store, config: Config) -> History:
    """Recent figures of runs of this module set; none for an in-memory store (nothing
    to learn from)."""
    return store.history(module_set=module_set(config)) if store.path else History()


def plan_modules(
    config: Config,
    store: Store,
    targets: Iterable[str] = (),
    tags: Iterable[str] = (),
    exclude: Iterable[str] = (),
):
    """(graph, selection) for the given targets, priorities weighted by history."""
    graph, _ = load_graph(config, store)
    durations = history(store, config).durations
    return graph, select_modules(config, graph, targets, tags, exclude, durations)


def plan_json_text(
    config: Config,
    store: Store,
    targets: Iterable[str] = (),
    tags: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> tuple[str, list[str]]:
    """`plan --json` as compact JSON text, and the warnings to print beside it.

    perf: the text is memoised under a digest of everything it depends on
    (`memo.plan_key`), so a memo is never stale; `json` is imported only on a miss
    (docs/architecture.md).
    """
    from corral import memo

    targets, tags, exclude = list(targets), sorted(tags), sorted(exclude)
    lookup = memo.look_up(config, store, targets, tags, exclude)
    if lookup.found is not None:
        store.count_warm_load(sum(len(entries) for _, entries, _ in lookup.scan))
        return lookup.found[0], lookup.found[1].splitlines()
    import json

    graph, _ = load_graph(config, store, lookup.scan)
    selection = select_modules(config, graph, targets, tags, exclude, lookup.durations(store))
    text = json.dumps(plan_json(graph, selection))
    warnings = [str(p) for p in graph.warnings]
    if store.path:
        store.save_plan(lookup.key, text, "\n".join(warnings))
    return text, warnings


def check_modules(config: Config, store: Store, strict: bool = False) -> list[Problem]:
    """Every problem in every module (warnings too); under `strict` warnings count as errors."""
    scan = scan_modules(config)
    paths = [os.path.join(directory, name) for directory, entries, _ in scan for name, _ in entries]
    problems = untrusted_files(config, paths) + place_problems(config)
    try:
        graph, _ = load_graph(config, store, scan)
        problems += graph.warnings
        unmeetable = unmeetable_min_free(config)
        if unmeetable:
            problems.append(Problem(None, 0, f"{unmeetable}: a run refuses it"))
        for name, why in () if unmeetable else never_fit(config, graph, graph.modules).items():
            module = graph.modules[name]
            problems.append(
                module.problem("memory", f"{why}: it could never start, a run fails it")
            )
    except HeaderError as exc:
        problems += exc.problems
    if strict:
        problems = [Problem(p.path, p.line, p.message, "error") for p in problems]
    return problems


def place_problems(config: Config) -> list[Problem]:
    """What a run would refuse (errors) or warn about (warnings) in the places it writes
    beside the database (which `open_store` checks): the run lock's directory and file,
    and the log directory. Found without making or changing anything, so that `check`
    and `run --dry-run` say what `run` would."""
    from corral.errors import CorralError
    from corral.runlock import probe

    problems = []
    try:
        probe(config.modules)
    except CorralError as exc:
        problems.append(Problem(None, 0, str(exc)))
    except OSError as exc:  # the run stops on it (exit 2), naming the place
        where = f"{exc.filename}: " if exc.filename else ""
        problems.append(Problem(None, 0, f"{where}{exc.strerror or exc} (the run lock)"))
    try:
        safepath.probe_dirs(config.log_dir / new_run_id())
    except CorralError as exc:
        problems.append(Problem(None, 0, str(exc)))
    except OSError as exc:  # the run goes on without logs, and says so
        problems.append(Problem(None, 0, log_dir_warning(config.log_dir, exc), "warning"))
    return problems


def log_dir_warning(log_dir: Path, exc: OSError) -> str:
    """What a run says when its log directory cannot be made."""
    return (
        f"{log_dir}: cannot create the log directory ({exc.strerror}); the modules run, "
        "what they print is not kept"
    )


def untrusted_files(config: Config, modules: list[str]) -> list[Problem]:
    """As root: the modules, the libraries they source, the config file, and what the
    environment makes bash run (bash itself, BASH_ENV, PATH's directories) that another
    user could change (what `run`, `run --dry-run` and `check` refuse alike)."""
    if os.geteuid() != 0:
        return []
    from corral.trust import environment, library_tree, untrusted
    from corral.watchdog import bash

    files = [*modules, *library_tree(lib_dir(config))]
    files += [str(config.config_file)] if config.config_file else []
    return untrusted(files) + environment(dict(os.environ), bash())


def plan_json(graph: Graph, selection: Selection) -> dict:
    """The `plan --json` object (docs/usage.md)."""
    chosen = set(selection.names)
    every = len(chosen) == len(graph.modules)  # then no edge needs filtering

    def among(names: set[str]) -> list[str]:
        if not names:  # most sets are empty: skip the sort and the intersection
            return []
        return sorted(names if every else names & chosen)

    before: dict[str, list[str]] = {}  # waits[x]["before"] holds y when y is before x
    for name in selection.names:
        for other in among(graph.waits[name]["before"]):
            before.setdefault(other, []).append(name)
    modules = []
    for name in selection.names:
        module, waits = graph.modules[name], graph.waits[name]
        modules.append(
            {
                "name": name,
                "path": str(module.path),
                "description": module.header.description,
                "requires": among(waits["requires"]),
                "wants": among(waits["wants"]),
                "after": among(waits["after"]),
                "before": sorted(before.get(name, ())),
                "provides": list(module.header.provides),
                "locks": list(module.header.locks),
                "level": selection.level[name],
                "priority": selection.priority[name],
            }
        )
    return {
        "modules": modules,
        "order": list(selection.names),
        "excluded": [{"name": n, "reason": r} for n, r in sorted(selection.excluded.items())],
    }


def module_json(module: Module) -> dict:
    """A module's header as `list --json` shows it."""
    h = module.header
    return {
        "name": module.name,
        "path": str(module.path),
        "description": h.description,
        "requires": list(h.requires),
        "wants": list(h.wants),
        "after": list(h.after),
        "before": list(h.before),
        "provides": list(h.provides),
        "locks": list(h.locks),
        "tags": list(h.tags),
        "timeout": h.timeout,
        "retries": h.retries,
        "workload": h.workload,
        "memory": h.memory,
        "detach": h.detach,
        "lsb": h.lsb,
    }


EDGE_STYLE = {"requires": "solid", "wants": "dashed", "after": "dotted", "before": "dotted"}


def graph_edges(graph: Graph) -> list[tuple[str, str, str]]:
    """(module, what it waits on, kind) for every resolved edge, sorted."""
    return sorted(
        (name, dep, kind)
        for name, kinds in graph.waits.items()
        for kind, deps in kinds.items()
        for dep in deps
    )


def graph_dot(graph: Graph) -> str:
    """Graphviz DOT: an arrow from each module to what it waits on."""
    lines = ["digraph corral {", "  rankdir=LR;", '  node [shape=box, fontname="sans-serif"];']
    for name in sorted(graph.modules):
        label = graph.modules[name].header.description or name
        lines.append(f'  "{name}" [tooltip="{_dot_escape(label)}"];')
    for name, dep, kind in graph_edges(graph):
        # The arrow points at what `name` waits on; a `before:` edge was declared by
        # `dep` ("dep before name"), so the label says so rather than "name before dep".
        label = f"after ({dep}: before)" if kind == "before" else kind
        lines.append(f'  "{name}" -> "{dep}" [style={EDGE_STYLE[kind]}, label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def graph_json(graph: Graph) -> dict:
    """The graph as `graph --json` prints it: nodes by name, edges with their kind
    (empty lists for no modules)."""
    return {
        "nodes": [module_json(graph.modules[n]) for n in sorted(graph.modules)],
        "edges": [{"from": a, "to": b, "kind": k} for a, b, k in graph_edges(graph)],
    }


# running -----------------------------------------------------------------------------


def new_run_id() -> str:
    """Sortable, short enough to type, and in UTC (the Z says so): 20261122-215007Z-3fa2.
    It also names the run's log directory."""
    return time.strftime("%Y%m%d-%H%M%SZ-", time.gmtime()) + os.urandom(2).hex()


# The lib/ of these holds the system's libraries, never modules' Bash: modules in /checks
# or /usr/local/checks do not get /lib (and, as root, a trust walk of all of it).
SYSTEM_PREFIXES = frozenset({"/", "/usr", "/usr/local"})


def _system_lib(sibling: Path) -> bool:
    """Is `sibling` (a modules directory's sibling lib/) the system's library directory."""
    try:
        real = sibling.resolve()
    except OSError:
        real = sibling
    return any(str(p.parent) in SYSTEM_PREFIXES for p in (sibling, real))


def lib_dir(config: Config) -> Path:
    """What modules see as $CORRAL_LIB: config `lib:`, the modules' sibling lib/ (unless
    that is the system's, /lib or /usr/lib), or ours."""
    if config.lib is not None:
        return config.lib.absolute()
    sibling = config.modules[0].absolute().parent / "lib"
    return sibling if sibling.is_dir() and not _system_lib(sibling) else PACKAGED_LIB


def settings(config: Config) -> list[tuple[str, object, str]]:
    """(name, value, source) of every setting as a run would use it, for `corral config`."""
    from dataclasses import asdict

    from corral.config import DEFAULT_FACILITIES

    values = asdict(config)
    lib = lib_dir(config)
    rows: list[tuple[str, object, str]] = [
        (
            "modules",
            [os.path.abspath(d) for d in config.modules],
            config.sources.get("modules", "default: ./modules")
            + "".join(f"; {d} not found" for d in config.modules if not d.is_dir()),
        ),
        ("config_file", str(config.config_file) if config.config_file else None, ""),
        ("db", str(config.db), config.sources.get("db", "default")),
        ("log_dir", str(config.log_dir), config.sources.get("log_dir", "default")),
        ("lib", str(lib), config.sources.get("lib", _lib_source(config, lib))),
    ]
    rows[1] = ("config_file", rows[1][1], config.sources.get("config_file", "none found"))
    for name in (
        "jobs",
        "fail_fast",
        "max_load",
        "min_free_mem",
        "grace",
        "retry_backoff",
        "sample_interval",
        "progress_interval",
        "log_limit",
        "keep_runs",
        "keep_days",
        "deadline",
        "pools",
        "facilities",
        "backend",
        "fanout",
        "connect_timeout",
        "ssh_options",
    ):
        value = values[name]
        if name == "max_load" and value is None:  # what the gate uses then
            value = f"{os.cpu_count() or 1} (the CPU count)"
        if name == "jobs":
            fixed = config.jobs.fixed
            value = {None: "auto", 0: "0 (no limit)"}.get(fixed, fixed)
        if name == "facilities":
            value = {k: list(v) for k, v in value.items() if DEFAULT_FACILITIES.get(k) != v}
        rows.append((name, value, config.sources.get(name, "default")))
    return rows


def _lib_source(config: Config, lib: Path) -> str:
    if lib == PACKAGED_LIB:
        sibling = config.modules[0].absolute().parent / "lib"
        if sibling.is_dir() and _system_lib(sibling):
            return f"default: corral's own; {sibling} beside the modules is the system's"
        return "default: corral's own"
    return "default: lib/ beside the modules directory"


@dataclass(frozen=True)
class Redo:
    """What `run --failed` / `--resume` runs again, from which earlier run."""

    run_id: str
    targets: tuple[str, ...]  # to run again
    done: frozenset[str]  # completed then: left out, their dependents run


def redo(config: Config, store: Store, graph: Graph, resume: bool) -> Redo:
    """What has not completed since, going by the runs of these modules directories.

    Each module's latest status (of the last 50 runs) decides: --failed (resume False)
    takes those that last failed, timed out or were interrupted; --resume also those last
    skipped, and those the last run never started when it died. Modules whose latest
    status is ok or warning are done: left out, their dependents run. Raises UsageError
    when there is no earlier run."""
    key = module_set(config)
    last = next(iter(store.runs(1, module_set=key)), None)
    if last is None:
        dirs = ", ".join(str(d.absolute()) for d in config.modules)
        raise UsageError(
            f"no earlier run of {dirs} is recorded in {config.db}: nothing to run again"
        )
    latest = {n: s for n, s in store.latest_statuses(key).items() if n in graph.modules}
    done = frozenset(n for n, s in latest.items() if s in COMPLETED)
    again = [n for n, s in latest.items() if s not in COMPLETED and (resume or s != Status.SKIPPED)]
    if resume and last["status"] in ("running", "crashed"):
        # A run that died has no row for what it never started: select its targets again.
        seen = store.final_statuses(last["run_id"])
        then = select(graph, (last["targets"] or "").split()).names
        again += [n for n in then if n not in seen and n not in again]
        done = done - set(then) | {n for n, s in seen.items() if s in COMPLETED}
    return Redo(last["run_id"], tuple(sorted(again)), frozenset(done))


# Listeners every run in this process gets besides its caller's: the fleet agent runs
# `corral run` in a process of its own making and relays the run's events from here.
ATTACHED: list[Listener] = []


def run_modules(
    config: Config,
    store: Store,
    targets: Iterable[str] = (),
    tags: Iterable[str] = (),
    exclude: Iterable[str] = (),
    listeners: Iterable[Listener] = (),
    dry_run: bool = False,
    wait_lock: float | None = None,
    want_output: bool = True,
    done: frozenset[str] = frozenset(),
) -> RunFinished:
    """Run the selection; returns the run's outcome. Raises before anything starts on a
    header/usage error (HeaderError, UsageError) or a held lock (LockHeld). `done` names
    modules that completed earlier and are not run again (`redo`)."""
    from corral.backends import Place, open_executor
    from corral.events import Leftovers, Notice
    from corral.records import Recorder
    from corral.runlock import RunLock
    from corral.scheduler import RunSettings, Scheduler, fail_fast

    begun = time.monotonic()  # the deadline counts from here: a wait for the lock too
    listeners = [_display(listener) for listener in (*listeners, *ATTACHED)]

    def emit(event: Event) -> None:
        for listener in listeners:
            listener(event)

    graph, loaded = load_graph(config, store)
    past = history(store, config)
    selection = select_modules(config, graph, targets, tags, exclude, past.durations, done)
    if config.jobs.fixed == 0:  # -j 0: no limit of its own (the load gate still applies)
        from corral.throttle import Jobs

        config = replace(config, jobs=Jobs(max(1, len(selection.names))))
    # perf: the graph lives as long as the run: keep the collector off it
    # (docs/architecture.md)
    gc.freeze()
    lib = lib_dir(config)
    problems = untrusted_files(config, [graph.modules[n].path for n in selection.names])
    if problems:
        raise HeaderError(problems)
    for problem in graph.warnings:
        emit(Notice(str(problem)))  # "FILE:LINE: warning: …"
    unmeetable = unmeetable_min_free(config)
    if unmeetable:  # every module would wait on it for ever: nothing can run
        raise UsageError(f"{unmeetable}; nothing was run")
    # A module that could never start fails at once (its requirers are skipped), the
    # rest runs: waiting for it would be waiting for ever.
    never = never_fit(config, graph, selection.names)
    run_id = new_run_id()
    if dry_run:  # what a run would refuse it refuses, what a run would say it says
        places = place_problems(config)
        if any(p.severity == "error" for p in places):
            raise HeaderError(places)
        for problem in places:
            emit(Notice(problem.message, warning=True))
        settings = RunSettings(
            run_id,
            config.jobs,
            fail_fast if config.fail_fast else None,
            config.pools,
            dry_run=True,
            durations=past.durations,
            deadline=config.deadline,
            never=never,
        )
        with open_executor("dryrun", Place(config)) as executor:
            outcome = Scheduler(graph, selection, settings, executor, emit).run()
        emit(outcome)
        return outcome

    def waiting(message: str) -> None:
        emit(Notice(message))

    def recorder_for() -> Recorder:
        return Recorder(
            store,
            os.pathsep.join(str(d.absolute()) for d in config.modules),
            " ".join(targets),
            emit,
            loaded.hits,
            loaded.misses,
            module_set=module_set(config),
            full=len(selection.names) == len(graph.modules),
            end_by=None if config.deadline is None else begun + config.deadline,
            settle=want_output,  # ends are shown one by one: each on disk first
        )

    lock, wait, bounded = RunLock(config.modules), wait_lock, False
    if wait is not None and config.deadline is not None:
        left = max(0.0, begun + config.deadline - time.monotonic())
        wait, bounded = min(wait, left), left < wait
    try:
        lock.acquire(wait, waiting)
    except LockHeld as exc:
        if not bounded:
            raise
        # The deadline bounds the wait for the lock as it bounds the run: the run ends
        # as a run whose deadline passed before anything started (recorded, exit 1).
        emit(
            Notice(f"the run's deadline passed while waiting for the run lock: {exc}", warning=True)
        )
        listeners.insert(0, recorder_for())
        settings = RunSettings(
            run_id, config.jobs, None, config.pools, deadline=config.deadline, begun=begun
        )
        with open_executor("dryrun", Place(config)) as executor:
            outcome = Scheduler(graph, selection, settings, executor, emit).run()
        emit(outcome)
        return outcome
    with lock:
        if store.path is not None:
            from corral.recovery import end_dead_fleet_runs, recover

            for message in recover(store, config.grace):
                emit(Notice(message, warning=True))
            for message in end_dead_fleet_runs(store, module_set(config)):
                emit(Notice(message, warning=True))
        log_dir = (config.log_dir / run_id).absolute()
        # Log files are opened by name (O_NOFOLLOW) in this directory: safe, because
        # as root it is made only through directories no one else can change.
        made = False
        try:
            safepath.make_dirs(log_dir, 0o750)
            made = True
        except OSError as exc:
            emit(Notice(log_dir_warning(log_dir, exc), warning=True))
        env = dict(os.environ)
        env.update(CORRAL_RUN_ID=run_id, CORRAL_LIB=str(lib), CORRAL_LOG_DIR=str(log_dir))
        recorder = recorder_for()
        listeners.insert(0, recorder)
        from corral.progress import RunState, StateFile

        # perf: one RunState for the status file and the printer (docs/architecture.md)
        state = RunState.shared(listeners)
        state.modules = os.pathsep.join(str(d.absolute()) for d in config.modules)
        listeners[1:1] = [state, StateFile(state, str(log_dir))]
        settings = RunSettings(
            run_id,
            config.jobs,
            fail_fast if config.fail_fast else None,
            config.pools,
            config.retry_backoff,
            log_dir,
            env,
            max_load=config.max_load,
            min_free_mem=config.min_free_mem or 0,
            sample_interval=config.sample_interval,
            peak_rss=past.peak_rss,
            cpu_rate=past.cpu_rate,
            durations=past.durations,
            deadline=config.deadline,
            begun=begun,
            never=never,
            **_test_settings(),
        )
        on_line = None
        if want_output:
            from corral.events import ModuleOutput

            def on_line(name: str, line: bytes, err: bool) -> None:
                emit(ModuleOutput(name, line, err))

        from corral.retention import point_latest, repair_latest

        try:
            executor = open_executor(config.backend, Place(config, run_id, on_line))
            with executor:
                if made:  # only a run that started is the latest (see below)
                    point_latest(log_dir)
                # how the backend holds its attempts, recorded with the run (for recovery)
                recorder.containment = getattr(executor, "describe", dict)()
                outcome = Scheduler(graph, selection, settings, executor, emit).run()
        except BaseException as exc:
            from corral.errors import exhausted

            short = exhausted(exc)
            recorder.abort(f"corral stopped: {short}" if short else "corral stopped by an error")
            # A start that failed (no descriptors left, no executor) leaves no empty run
            # directory behind, and logs/latest naming the last run that did start.
            with contextlib.suppress(OSError):
                log_dir.rmdir()  # only when empty: a run's logs are kept
            repair_latest(config.log_dir)
            raise
        # what the run left (a detached daemon's cgroup), for the next start's recovery
        recorder.containment = getattr(executor, "describe", dict)()
        if executor.leftovers:
            emit(
                Leftovers(
                    executor.leftovers,
                    {n for n in selection.names if graph.modules[n].header.detach},
                )
            )
        incomplete = [m.name for m in outcome.modules if any(a.log_incomplete for a in m.attempts)]
        if incomplete and made:  # (no directory at all was said once, when it failed)
            emit(
                Notice(
                    f"the logs of {', '.join(incomplete)} are incomplete (disk full or "
                    f"unwritable: {log_dir}{file_size_limit()}); the modules ran, their "
                    "output is partly lost",
                    warning=True,
                )
            )
        if incomplete and outcome.exit_code in (0, EXIT_WARNING):
            outcome.exit_code, outcome.status = 1, Status.FAILED
        emit(outcome)
        # Records that could not be written are known once the writer is done (it is,
        # when the recorder has seen RunFinished): the run said which; its code says so.
        if recorder.lost and outcome.exit_code in (0, EXIT_WARNING):
            outcome.exit_code = 1
        _apply_retention(config, store, emit)
    return outcome


def _display(listener: Listener) -> Listener:
    """A listener that shows the run (the printer, the fleet's events): one that fails
    (a bug, a locale or time zone it cannot render) is dropped, said once on stderr, and
    the run goes on: what shows a run never stops it. Running out of memory or
    descriptors is the run's want and stops it as anywhere else."""
    failed: list[str] = []

    def shown(event: Event) -> None:
        if failed:
            return
        try:
            listener(event)
        except Exception as exc:
            from corral.errors import exhausted

            if exhausted(exc):
                raise
            failed.append(f"{type(exc).__name__}: {exc}")
            warn(f"the run's display failed ({failed[0]}); the run goes on without it")

    return shown


def _test_settings() -> dict:
    """Only for tests: CORRAL_TEST_LONG_WAIT_S lowers when a held module is said to wait
    long (60 s), so a test sees the notice without waiting a minute."""
    value = os.environ.get("CORRAL_TEST_LONG_WAIT_S")
    try:
        return {"long_wait": float(value)} if value else {}
    except ValueError:
        return {}


def _apply_retention(config: Config, store: Store, emit) -> None:
    """keep_runs/keep_days for this module set, once the run is recorded; a store that
    cannot be written only means nothing is pruned this time."""
    import sqlite3

    from corral.events import Notice
    from corral.retention import prune

    if store.path is None:
        return  # nothing of this run is in the file: leave the file's runs alone
    try:
        prune(store, config.log_dir, config.keep_runs, config.keep_days, module_set(config))
    except (sqlite3.Error, OSError, StoreError) as exc:
        emit(Notice(f"old runs were not pruned this time: {exc}", warning=True))


def host_memory() -> int:
    """This host's memory in all, in bytes (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 0


def unmeetable_min_free(config: Config) -> str | None:
    """Why the --min-free-mem setting can never be met on this host, naming where it was
    set; None when it can. No module could ever start under it (the gate would only let
    one through when nothing runs), so a run refuses it as a usage error."""
    total, keep = host_memory(), config.min_free_mem or 0
    if not total or keep < total:
        return None
    source = config.sources.get("min_free_mem", "")
    if source.startswith("config "):
        what = f"{source.removeprefix('config ')}: min_free_mem: {_size(keep)}"
    elif source.startswith("env "):
        what = f"{source.removeprefix('env ')}={_size(keep)}"
    else:
        what = f"--min-free-mem {_size(keep)}"
    return f"{what} can never be met: this host has {_size(total)} of memory in all"


def never_fit(config: Config, graph: Graph, names: Iterable[str]) -> dict[str, str]:
    """Modules whose declared `memory:` (plus --min-free-mem) is this host's whole memory
    or more (the kernel's own share is never available, so waiting for it would be
    waiting for ever), with why; {} when none."""
    total = host_memory()
    keep = config.min_free_mem or 0
    if not total:
        return {}
    out = {}
    for name in names:
        need = graph.modules[name].header.memory
        if need and need + keep >= total:
            also = f" + --min-free-mem {_size(keep)}" if keep else ""
            out[name] = f"memory: {_size(need)}{also} is " + (
                f"more than the {_size(total)} this host has in all"
                if need + keep > total
                else f"all the {_size(total)} this host has (the kernel keeps a share)"
            )
    return out


def _size(n: int) -> str:
    for unit, size in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + unit
    return f"{n}B"


def run_json(outcome: RunFinished) -> dict:
    """The `run --json` object (docs/usage.md), with run-level figures."""
    from corral.printer import outcome as why
    from corral.records import iso

    modules = []
    for m in outcome.modules:
        last = m.last
        modules.append(
            {
                "name": m.name,
                "status": m.status,
                "exit_code": last.exit_code if last else None,
                "signal": last.signal if last else None,
                "start": iso(last.start) if last else None,
                "end": iso(last.end) if last else None,
                "duration_s": round(last.duration_s, 6) if last else None,
                "peak_rss_bytes": last.peak_rss_bytes if last else None,
                "cpu_user_s": last.cpu_user_s if last else None,
                "cpu_sys_s": last.cpu_sys_s if last else None,
                "attempts": len(m.attempts),
                "reason": why(m) if m.status != Status.OK else "",
                "log_path": last.log_path if last else None,
                "log_dropped_bytes": last.log_dropped_bytes if last else 0,
                "throttle_wait_s": sum(a.throttle_wait_s for a in m.attempts),
                "throttle_reason": str(last.throttle_reason)
                if last and last.throttle_reason
                else None,
            }
        )
    return {
        "run_id": outcome.run_id,
        "status": outcome.status,
        "exit_code": outcome.exit_code,
        "started": iso(outcome.started),
        "ended": iso(outcome.ended),
        "makespan_s": round(outcome.makespan_s, 6),
        "jobs": str(outcome.jobs) if outcome.jobs.auto else outcome.jobs.fixed,
        "log_dir": outcome.log_dir,
        "dry_run": outcome.dry_run,
        "peak_load": round(outcome.peak_load, 3),
        "throttle_s": round(outcome.throttle_s, 6),
        "supervisor_cpu_s": round(outcome.supervisor_cpu_s, 6),
        "sampler_cpu_s": round(outcome.sampler_cpu_s, 6),
        "modules": modules,
    }


def run_fleet(config: Config, store: Store, nodes: str, args: list[str], *rest, **options):
    """Run the selection on every host of the node set `nodes` (see corral.fleet.run);
    returns a FleetOutcome. Raises before any host is touched on a header or usage
    error, or when this machine's run lock is held."""
    from corral.fleet.run import run_fleet as run

    outcome = run(config, store, nodes, args, *rest, **options)
    # keep_runs/keep_days: this module set's fleet runs, and per host what they gathered
    _apply_retention(config, store, outcome.notices.append)
    return outcome


def gather_fleet(config: Config, store: Store, nodes: str, **options):
    """Bring the records each host of `nodes` made since this database last heard of
    it (a lost host's run that finished later); returns one Gathered per host."""
    from corral.fleet.run import gather

    gathered = gather(config, store, nodes, **options)
    _apply_retention(config, store, lambda notice: None)  # a gather says nothing of it
    return gathered


def write_report(
    config: Config, store: Store, out: Path, fmt: str = "md", every: bool = False
) -> list[Path]:
    """Write the performance report of this module set (Markdown + SVG charts +
    report.json, or one HTML page) into `out`; `every`: one per recorded module set.

    Raises UsageError when nothing has been recorded yet, or when the charts' plotting
    library (the `report` extra) is not installed."""
    import importlib.util

    from corral import report

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "corral docs draws its charts with matplotlib (the report extra, "
            "corral[report]), which is not installed; install it into corral's "
            f"environment: {Path(sys.executable).parent / 'pip'} install "
            f"'{_report_requirement()}' (or, from corral's source directory, "
            "pip install '.[report]'; with pipx: pipx inject corral matplotlib)"
        )

    try:
        return report.write_report(store, out, fmt, None if every else module_set(config))
    except LookupError as exc:
        raise UsageError(str(exc)) from None


def _report_requirement() -> str:
    """The report extra's requirement as the installed package declares it
    ('matplotlib>=3.7'): corral is installed from its source, not from an index, so
    `pip install 'corral[report]'` would find nothing (or another project's corral)."""
    from importlib import metadata

    try:
        for req in metadata.requires("corral") or ():
            name, _, marker = req.partition(";")
            if "extra" in marker and "report" in marker:
                return name.strip()
    except metadata.PackageNotFoundError:
        pass
    return "matplotlib"


def run_figures(store: Store, run: dict) -> dict:
    """A runs row with its attempts and the report's derived figures (efficiency,
    speedup, critical path and where the makespan went), as `history --json` gives them."""
    from corral import analysis, report

    return {
        **run,
        "figures": report.run_json(analysis.load_run(store, run)),
        "modules": store.attempts(run_id=run["run_id"]),
    }
