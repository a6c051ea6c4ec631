"""The shell commands the controller sends to a host (POSIX sh: any login shell runs them).

`start_command` unpacks the bundle when the host does not have its digest yet (the
tarball then arrives on stdin) and starts the agent; without a tarball it only says
`need` when the digest is missing, so a host that has it gets one connection, nothing
copied and one python3 started (the agent also removes bundles unused for a week).
`export_command` hands a later gather the records of the host's fleet runs.
"""

from __future__ import annotations

import shlex

# Where a host keeps bundles and run directories: beside its corral database.
BASE = (
    'if [ -n "${XDG_STATE_HOME:-}" ]; then base="$XDG_STATE_HOME/corral/fleet"; '
    'elif [ "$(id -u)" = 0 ]; then base=/var/lib/corral/fleet; '
    'else base="$HOME/.local/state/corral/fleet"; fi\n'
)
NEED_PYTHON = (
    "command -v python3 >/dev/null 2>&1 || "
    "{ echo 'corral-fleet:error \"python3 is not installed on this host\"'; exit 98; }\n"
)


def start_command(digest: str, key: str, args: list[str], ship: bool) -> str:
    """Unpack (when `ship` and missing) and start the agent for fleet run `key`."""
    unpack = (
        '  (umask 022; mkdir -p "$base") || exit 98\n'
        '  t=$(mktemp -d "$base/.unpack.XXXXXX") || exit 98\n'
        '  if ! tar -xzf - -C "$t" --no-same-owner; then\n'
        '    rm -rf "$t"; echo \'corral-fleet:error "cannot unpack the bundle"\'; exit 98\n'
        "  fi\n"
        '  chmod 755 "$t" && touch "$t/.complete"\n'
        '  mv -T "$t" "$d" 2>/dev/null || rm -rf "$t"\n'
        if ship
        else "  echo 'corral-fleet:need {}'; exit 0\n"
    )
    return (
        "set -u\n"
        + BASE
        + f'd="$base/{digest}"\n'
        + 'if [ ! -f "$d/.complete" ]; then\n'
        + unpack
        + "fi\n"
        + NEED_PYTHON
        + f'exec python3 -I -S "$d/corral.pyz" fleet-agent {shlex.quote(key)} -- '
        + " ".join(shlex.quote(a) for a in args)
        + "\n"
    )


def export_command(since: str) -> str:
    """Print the records of the host's fleet runs started at or after `since`."""
    return (
        "set -u\n"
        + BASE
        + "p=\n"
        + 'for f in "$base"/*/.complete; do [ -f "$f" ] && p="${f%/.complete}/corral.pyz"; done\n'
        + 'if [ -z "$p" ]; then echo \'corral-fleet:result {"rc":0}\'; exit 0; fi\n'
        + NEED_PYTHON
        + f'exec python3 -I -S "$p" fleet-export {shlex.quote(since)}\n'
    )
