"""corral: run a directory of Bash modules in parallel, in dependency order."""

__version__ = "0.1.0"
