"""A real unprivileged local user (`nobody`) and a place on disk both of us can reach.

Each attack test lets `nobody` do what a local user can, against a real root corral,
then checks that no code of theirs ran as root and no root-only file changed; each also
has a control showing that the attack works against root without corral's protection.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ..test_lint import need

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = pwd.getpwnam("nobody").pw_gid

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the attacks are against root")


def as_nobody(script: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a Bash script as `nobody` (no groups, no privileges)."""
    need("setpriv")
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", "-c"]
    done = subprocess.run([*cmd, script], capture_output=True, text=True, **kw)
    if check:
        assert done.returncode == 0, done.stderr
    return done


class Arena:
    """A root-owned directory under /tmp (mode 0755, so `nobody` can reach in), with:
    `mine`: a directory `nobody` owns; `precious` and `empty`: root-only files in a
    root-only directory (the targets of planted links); `marker`: where attacker code that
    ran as root would leave a trace."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="corral-arena-", dir="/tmp"))
        self.root.chmod(0o755)
        self.mine = self.root / "nobody"
        self.mine.mkdir()
        os.chown(self.mine, NOBODY, NOGROUP)
        secret = self.root / "secret"
        secret.mkdir(mode=0o700)
        self.precious = secret / "precious"
        self.precious.write_text("root only\n")
        self.precious.chmod(0o600)
        self.empty = secret / "empty"  # a root-only empty file (SQLite would adopt it)
        self.empty.touch(mode=0o600)
        self.marker = self.root / "pwned"
        self.marker.touch()
        os.chown(self.marker, NOBODY, NOGROUP)  # the attacker's code appends to it
        self.marker.write_text("")

    def attacker_code(self) -> str:
        """Bash that leaves the effective uid it ran with in the marker."""
        return f'echo "ran as uid $(id -u)" >> {self.marker}'

    def ran_as_root(self) -> bool:
        return "ran as uid 0" in self.marker.read_text()

    def precious_intact(self) -> bool:
        st = self.precious.stat()
        return (
            self.precious.read_text() == "root only\n"
            and st.st_mode & 0o777 == 0o600
            and self.empty.stat().st_size == 0
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def arena():
    made = Arena()
    yield made
    made.cleanup()


def corral_in(arena: Arena, corral):
    """The `corral` fixture with its modules under the arena (root's, but reachable by
    `nobody`, as /etc/corral/modules is), so an ACL or a sticky bit is all it takes."""
    modules = arena.root / "modules"
    modules.mkdir(mode=0o755, exist_ok=True)
    return type(corral)(modules, corral.db, corral.env)
