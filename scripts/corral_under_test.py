"""Which corral a benchmark measures: the one a user installed, in a virtual environment.

Looked for in this order: `--corral PATH` (a virtual environment or its python),
`$CORRAL_PYTHON`, the repository's `.venv`, then the interpreter running the benchmark.
PYTHONPATH is dropped from the benchmark's children so that the installed package,
not a checkout on the path, is what runs; `describe()` says which one that was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def python(given: str | None = None) -> str:
    """The interpreter whose `-m corral` is measured."""
    for candidate in (given, os.environ.get("CORRAL_PYTHON"), str(REPO / ".venv")):
        if not candidate:
            continue
        path = Path(candidate)
        if path.is_dir():
            path = path / "bin" / "python"
        if path.exists():
            return str(path)
        if candidate == given:
            sys.exit(f"--corral {given}: no such virtual environment or interpreter")
    return sys.executable


def command(given: str | None = None) -> list[str]:
    """`[python, "-m", "corral"]` for that interpreter; children run without PYTHONPATH."""
    os.environ.pop("PYTHONPATH", None)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's install has its bytecode
    return [python(given), "-m", "corral"]


def describe(cmd: list[str]) -> str:
    """One line naming the corral that `cmd` runs: its package file and interpreter."""
    probe = "import corral, sys; print(corral.__file__, sys.version.split()[0])"
    out = subprocess.run(
        [cmd[0], "-c", probe], check=True, capture_output=True, text=True
    ).stdout.split()
    return f"corral from {out[0].removesuffix('/__init__.py')} (python {out[1]}, {cmd[0]})"


def add_argument(parser) -> None:
    parser.add_argument(
        "--corral",
        metavar="VENV",
        help="virtual environment (or its python) with corral installed; default: "
        "$CORRAL_PYTHON, else the repository's .venv, else this interpreter",
    )
