"""`python -m corral` is the `corral` command (and names itself so, in help and completion)."""

from corral.cli import main

main(prog_name="corral")
