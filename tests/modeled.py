"""Graphs without files, for the fast layer: modules are written as header keywords.

graph, selection = modeled(a={}, b={"requires": ("a",)}, c={"wants": ("a",)})
"""

from __future__ import annotations

from corral.graph import Graph, Module, Selection, build_graph, select
from corral.headers import Header


def modeled(durations: dict[str, float] | None = None, **headers: dict) -> tuple[Graph, Selection]:
    """A graph of modules named by the keywords, each with those header fields, and the
    selection of all of them (priorities from `durations`)."""
    modules = [
        Module(name, f"/modules/{name}.sh", Header(**fields)) for name, fields in headers.items()
    ]
    graph = build_graph(modules, {})
    return graph, select(graph, durations=durations or {})
