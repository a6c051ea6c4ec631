"""The backends: where attempts run. One module per backend, named in BACKENDS.

A backend module defines an `executor.Executor` and an `open_executor(place)` that
builds one from a `Place` (what every backend may need to know about the run). The
config key `backend:` chooses one for real runs; a flag chooses the others (`--dry-run`
the dry run, `-w NODESET` the fleet, whose attempts are whole runs on hosts).
`docs/architecture.md` lists what a new backend must implement.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral.executor import LineListener

if TYPE_CHECKING:
    from corral.config import Config
    from corral.executor import Executor

# name -> module (imported only when chosen: a backend may need what others do not)
BACKENDS = {
    "local": "corral.backends.local",
    "dryrun": "corral.backends.dryrun",
    "fleet": "corral.backends.fleet",
}
# backends a flag chooses, never the config key `backend:`
BY_FLAG = {"dryrun": "--dry-run", "fleet": "-w NODESET"}


@dataclass(frozen=True)
class Place:
    """What a backend is told about the run it serves."""

    config: Config
    run_id: str | None = None  # None: a dry run (nothing is marked)
    on_line: LineListener | None = None  # each line of output, for the display
    target: object = None  # what the chosen backend runs on, when not this host (fleet)


def open_executor(name: str, place: Place) -> Executor:
    """The named backend's executor for this run; raises KeyError for an unknown name
    (config checks names against BACKENDS first)."""
    module = importlib.import_module(BACKENDS[name])
    return module.open_executor(place)
