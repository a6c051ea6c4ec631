"""The library API: what the CLI, the tests and other front ends call.

Every function takes a `Config` and returns plain values; nothing here prints
except through the `on_warning` callback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from corral.config import Config
from corral.errors import HeaderError, Problem, UsageError
from corral.graph import Graph, Module, Selection, build_graph, select
from corral.headers import Header, parse_header
from corral.store import FileKey, Store, file_key, warn


@dataclass(frozen=True)
class Loaded:
    """Modules read from disk, and how the header cache did."""

    modules: list[Module]
    hits: int
    misses: int


def open_store(config: Config, on_warning: Callable[[str], None] = warn) -> Store:
    return Store.open(config.db, on_warning)


def load_modules(config: Config, store: Store) -> Loaded:
    """Every `*.sh` module of the modules directories, headers from the cache where valid."""
    modules: list[Module] = []
    parsed: dict[str, tuple[FileKey, Header]] = {}
    stale: set[str] = set()
    hits = 0
    for directory in config.modules:
        if not directory.is_dir():
            raise UsageError(f"{directory}: modules directory not found")
        absolute = directory.absolute()
        cached = store.cached_headers(absolute)
        present: set[str] = set()
        with os.scandir(directory) as entries:
            files = sorted((e for e in entries if e.name.endswith(".sh")), key=lambda e: e.name)
        for entry in files:
            if not entry.is_file():
                continue
            key_path = f"{absolute}{os.sep}{entry.name}"
            present.add(key_path)
            key = file_key(entry.stat())
            hit = cached.get(key_path)
            if hit is not None and hit[0] == key:
                header = store.header_from_record(hit[1])
                hits += 1
            else:
                header = _parse_file(Path(entry.path))
                parsed[key_path] = (key, header)
            modules.append(Module(entry.name[:-3], entry.path, header))
        stale |= set(cached) - present
    store.update_header_cache(parsed, stale, hits)
    return Loaded(modules, hits, len(parsed))


def _parse_file(path: Path) -> Header:
    try:
        data = path.read_bytes()
    except OSError as exc:
        problem = Problem(None, 1, f"cannot read module: {exc.strerror}")
        return Header(problems=(problem,))
    return parse_header(data)


def load_graph(config: Config, store: Store) -> tuple[Graph, Loaded]:
    """The resolved graph of every module; raises HeaderError listing every problem."""
    loaded = load_modules(config, store)
    return build_graph(loaded.modules, config.facilities), loaded


def plan_modules(config: Config, store: Store, targets: Iterable[str] = (),
                 tags: Iterable[str] = (), exclude: Iterable[str] = ()):
    """(graph, selection) for the given targets, priorities weighted by history."""
    graph, _ = load_graph(config, store)
    durations = store.median_durations() if store.path else {}
    return graph, select(graph, targets, tags, exclude, durations)


def check_modules(config: Config, store: Store, strict: bool = False) -> list[Problem]:
    """Every problem in every module (warnings too); under `strict` warnings count as errors."""
    try:
        graph, _ = load_graph(config, store)
        problems = list(graph.warnings)
    except HeaderError as exc:
        problems = exc.problems
    if strict:
        problems = [Problem(p.path, p.line, p.message, "error") for p in problems]
    return problems


def plan_json(graph: Graph, selection: Selection) -> dict:
    """design.md's `plan --json` object."""
    chosen = set(selection.names)
    before: dict[str, list[str]] = {}  # waits[x]["before"] holds y when y is before x
    for name in selection.names:
        for other in graph.waits[name]["before"] & chosen:
            before.setdefault(other, []).append(name)
    modules = []
    for name in selection.names:
        module, waits = graph.modules[name], graph.waits[name]
        modules.append({
            "name": name,
            "path": str(module.path),
            "description": module.header.description,
            "requires": sorted(waits["requires"] & chosen),
            "wants": sorted(waits["wants"] & chosen),
            "after": sorted(waits["after"] & chosen),
            "before": sorted(before.get(name, ())),
            "provides": list(module.header.provides),
            "locks": list(module.header.locks),
            "level": selection.level[name],
            "priority": selection.priority[name],
        })
    return {"modules": modules, "order": list(selection.names),
            "excluded": [{"name": n, "reason": r} for n, r in sorted(selection.excluded.items())]}


def module_json(module: Module) -> dict:
    """A module's header as `list --json` shows it."""
    h = module.header
    return {"name": module.name, "path": str(module.path), "description": h.description,
            "requires": list(h.requires), "wants": list(h.wants), "after": list(h.after),
            "before": list(h.before), "provides": list(h.provides), "locks": list(h.locks),
            "tags": list(h.tags), "timeout": h.timeout, "retries": h.retries,
            "workload": h.workload, "memory": h.memory, "detach": h.detach, "lsb": h.lsb}


EDGE_STYLE = {"requires": "solid", "wants": "dashed", "after": "dotted", "before": "dotted"}


def graph_edges(graph: Graph) -> list[tuple[str, str, str]]:
    """(module, what it waits on, kind) for every resolved edge, sorted."""
    return sorted((name, dep, kind) for name, kinds in graph.waits.items()
                  for kind, deps in kinds.items() for dep in deps)


def graph_dot(graph: Graph) -> str:
    """Graphviz DOT: an arrow from each module to what it waits on."""
    lines = ["digraph corral {", "  rankdir=LR;", '  node [shape=box, fontname="sans-serif"];']
    for name in sorted(graph.modules):
        label = graph.modules[name].header.description or name
        lines.append(f'  "{name}" [tooltip="{_dot_escape(label)}"];')
    for name, dep, kind in graph_edges(graph):
        lines.append(f'  "{name}" -> "{dep}" [style={EDGE_STYLE[kind]}, label="{kind}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def graph_json(graph: Graph) -> dict:
    return {"nodes": [module_json(graph.modules[n]) for n in sorted(graph.modules)],
            "edges": [{"from": a, "to": b, "kind": k} for a, b, k in graph_edges(graph)]}
