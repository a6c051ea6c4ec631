"""The backends: where attempts run. One module per backend, named in BACKENDS.

A backend module defines an `executor.Executor` and an `open_executor(place)` that
builds one from a `Place` (what every backend may need to know about the run). The
config key `backend:` chooses one for real runs; `--dry-run` always uses `dryrun`.
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
}


@dataclass(frozen=True)
class Place:
    """What a backend is told about the run it serves."""

    config: Config
    run_id: str | None = None  # None: a dry run (nothing is marked)
    on_line: LineListener | None = None  # each line of output, for the display


def open_executor(name: str, place: Place) -> Executor:
    """The named backend's executor for this run; raises KeyError for an unknown name
    (config checks names against BACKENDS first)."""
    module = importlib.import_module(BACKENDS[name])
    return module.open_executor(place)
