"""`python -m corral` is the `corral` command (and names itself so, in help and completion)."""

import sys

try:
    from corral.entry import main
except MemoryError:  # too little address space to load corral at all (`ulimit -v`)
    sys.stderr.write("corral: out of memory while starting (see ulimit -v); corral stopped\n")
    sys.exit(71)

main(prog_name="corral")
