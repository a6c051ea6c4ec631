"""Kernel containment and accounting of attempts: one cgroup per attempt.

Every hierarchy corral can write gets a directory per run under corral's own cgroup,
`corral-RUN`, and one per attempt in it, `NAME.ATTEMPT`. The attempt's bash writes its
own PID into every one of them as its first instruction (the stub, see `stub`, or a
readied bash, see `ready_command`), before the module runs a line, so everything the
module starts is born inside: a new session, process group or a scrubbed environment
changes nothing. Writing from the child itself costs no extra fork (Python 3.11 has no
`clone3`, so `CLONE_INTO_CGROUP` is out of reach without a compiled helper).

Hierarchies used, where mounted and writable:
- cgroup v2 (pure, or the `unified` mount of a hybrid host): membership, `cgroup.kill`,
  `cgroup.events` (populated), `cpu.stat` (basic CPU usage works without the cpu
  controller), and `memory.peak` / `io.stat` where those controllers are enabled.
- cgroup v1 `memory` (`memory.max_usage_in_bytes`) and `cpuacct` (`usage_user`,
  `usage_sys`) on hybrid hosts, for the figures v2 cannot give there.
- cgroup v1 `freezer`, for a race-free kill where there is no v2 `cgroup.kill`.

Nothing here raises for a host without cgroups: `RunCgroups.enabled` is False and the
executor falls back to tracking descendants as the subreaper.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from corral import kill, safepath

# The order figures are taken in: the first hierarchy that has one wins.
V2, MEMORY, CPUACCT, FREEZER = "v2", "memory", "cpuacct", "freezer"
V1_WANTED = (MEMORY, CPUACCT, FREEZER)
PREFIX = "corral-"
DETACHED = "trusted.corral.detach"  # on an attempt cgroup whose daemon may outlive corral


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and the cgroup corral runs in there."""

    kind: str  # V2, MEMORY, CPUACCT or FREEZER
    own: str  # absolute directory of the calling process's cgroup in it


def hierarchies(proc: str = "/proc/self") -> list[Hierarchy]:
    """The hierarchies this process can see, v2 first; [] on a host without cgroups."""
    mounts: dict[str, str] = {}  # kind -> mount point
    try:
        with open(f"{proc}/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fstype, _, options = (right.split() + ["", "", ""])[:3]
                point = left.split()[4]
                if fstype == "cgroup2":
                    mounts.setdefault(V2, point)
                elif fstype == "cgroup":
                    for kind in V1_WANTED:
                        if kind in options.split(","):
                            mounts.setdefault(kind, point)
        with open(f"{proc}/cgroup") as f:
            lines = f.read().splitlines()
    except (OSError, IndexError):
        return []
    out = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        kinds = [V2] if controllers == "" else controllers.split(",")
        for kind in kinds:
            if kind in mounts:
                out.append(Hierarchy(kind, os.path.join(mounts.pop(kind), path.lstrip("/"))))
    return sorted(out, key=lambda h: (h.kind != V2, h.kind))


@dataclass
class Figures:
    """An attempt's totals as its cgroups hold them; None where no hierarchy has one."""

    peak_rss_bytes: int | None = None
    cpu_user_s: float | None = None
    cpu_sys_s: float | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None


@dataclass
class AttemptCgroup:
    """The directories of one attempt, one per hierarchy (kind -> path)."""

    dirs: dict[str, str]
    killed: bool = field(default=False, repr=False)
    # control files found missing in an attempt cgroup of the run (shared by the run's
    # attempts: their controllers are the run's, so one that lacks a file, all do)
    absent: set[str] = field(default_factory=set, repr=False)

    def procs_files(self) -> list[str]:
        """The `cgroup.procs` files the attempt's first instruction writes its PID to."""
        return [os.path.join(d, "cgroup.procs") for d in self.dirs.values()]

    @property
    def path(self) -> str:
        """The directory that holds membership: v2's, else the first v1 one."""
        return next(iter(self.dirs.values()))

    def pids(self) -> list[int]:
        """Every process in the attempt now (from the membership directory)."""
        try:
            return [int(p) for p in _read(self.path + "/cgroup.procs").split()]
        except (OSError, ValueError):
            return []

    def populated(self) -> bool:
        """True while any process of the attempt is alive (zombies not yet reaped count
        until their parent reaps them)."""
        v2 = self.dirs.get(V2)
        if v2 is not None:
            try:
                return b"populated 1" in _read(v2 + "/cgroup.events")
            except OSError:
                pass
        return bool(self.pids())

    def signal(self, signum: int) -> None:
        """Send `signum` to every process of the attempt (TERM and CONT on a stop)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def kill(self) -> None:
        """SIGKILL everything in the attempt, forks in flight included: v2 `cgroup.kill`,
        else freeze (v1 freezer), kill, thaw; else kill what is listed until it is empty."""
        self.killed = True
        if V2 in self.dirs:
            try:
                with open(os.path.join(self.dirs[V2], "cgroup.kill"), "w") as f:
                    f.write("1")
                return
            except OSError:
                pass
        frozen = False
        if FREEZER in self.dirs:
            state = os.path.join(self.dirs[FREEZER], "freezer.state")
            with contextlib.suppress(OSError), open(state, "w") as f:
                f.write("FROZEN")
                frozen = True
        for _ in range(100):  # each round kills what forked before it; frozen: one round
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, kill.FORCE)
            if frozen:
                break
        if frozen:
            with contextlib.suppress(OSError), open(state, "w") as f:
                f.write("THAWED")

    def figures(self) -> Figures:
        """What the attempt's cgroups accounted since its first instruction."""
        out = Figures()
        v2 = self.dirs.get(V2)
        if v2 is not None:
            stat = _keyed(v2 + "/cpu.stat")
            if "user_usec" in stat and "system_usec" in stat:
                out.cpu_user_s = stat["user_usec"] / 1e6
                out.cpu_sys_s = stat["system_usec"] / 1e6
            out.peak_rss_bytes = _int(self._optional(v2, "memory.peak"))
            io = _io_stat(self._optional(v2, "io.stat"))
            if io is not None:
                out.read_bytes, out.write_bytes = io
        memory = self.dirs.get(MEMORY)
        if out.peak_rss_bytes is None and memory is not None:
            out.peak_rss_bytes = _number(memory + "/memory.max_usage_in_bytes")
        cpuacct = self.dirs.get(CPUACCT)
        if out.cpu_user_s is None and cpuacct is not None:
            user = _number(os.path.join(cpuacct, "cpuacct.usage_user"))
            system = _number(os.path.join(cpuacct, "cpuacct.usage_sys"))
            if user is not None and system is not None:
                out.cpu_user_s, out.cpu_sys_s = user / 1e9, system / 1e9
        return out

    def current_memory(self) -> int | None:
        """Memory charged to the attempt now (the gate's live figure); None when unknown."""
        if V2 in self.dirs:
            now = _int(self._optional(self.dirs[V2], "memory.current"))
            if now is not None:
                return now
        if MEMORY in self.dirs:
            return _number(os.path.join(self.dirs[MEMORY], "memory.usage_in_bytes"))
        return None

    def _optional(self, directory: str, name: str) -> bytes | None:
        """A control file that exists only with its controller (memory.peak, io.stat,
        memory.current in v2); None when it cannot be read. perf: once it is found
        missing, the run's other attempts do not look for it (docs/architecture.md)."""
        if name in self.absent:
            return None
        try:
            return _read(f"{directory}/{name}")
        except FileNotFoundError:
            self.absent.add(name)
        except OSError:
            pass
        return None

    def mark_detached(self) -> None:
        """Say on the cgroup itself that its attempt may outlive corral (`detach: yes`):
        the next start's recovery reads it and spares what is inside, as the watchdog
        does. A trusted.* attribute only root can set; a host without it loses nothing
        but that."""
        for path in self.dirs.values():
            with contextlib.suppress(OSError):
                os.setxattr(path, DETACHED, b"1")

    def detached(self) -> bool:
        """True when `mark_detached` was called on it (read from the membership one)."""
        try:
            return os.getxattr(self.path, DETACHED) == b"1"
        except OSError:
            return False

    def remove(self) -> bool:
        """Remove the directories; False when a process is still inside one."""
        ok = True
        for path in self.dirs.values():
            ok = _rmdir(path) and ok
        return ok


def _delegated(directory: str) -> bool:
    """As root: is this cgroup (or one above it) another user's or writable by them (a
    subtree delegated to a user)? Its owner could keep an attempt populated, or plant
    its directories first: corral's attempts do not go there."""
    if not safepath.strict():
        return False
    try:
        with safepath.Walker() as walker:
            walker.directory(directory)
    except (safepath.UnsafePath, OSError):
        return True
    return False


class RunCgroups:
    """The run's cgroups in every usable hierarchy; `enabled` is False without any.

    Containment needs a hierarchy that holds membership and can stop everything in it:
    v2 (`cgroup.kill`) or v1 with the freezer. Without one, nothing is made at all.
    """

    def __init__(
        self,
        run_id: str,
        found: list[Hierarchy] | None = None,
        making: Callable[[str], object] | None = None,
    ):
        self.run_id = run_id
        self.bases: dict[str, str] = {}  # kind -> corral-RUN directory
        self.absent: set[str] = set()  # control files its attempt cgroups lack
        self.attempts: list[AttemptCgroup] = []
        for h in hierarchies() if found is None else found:
            if h.kind != V2 and not self._needs(h.kind):
                continue
            if _delegated(h.own):
                continue
            base = os.path.join(h.own, f"{PREFIX}{run_id}")
            if making is not None:
                making(base)  # told before it exists: a crash right after leaves nothing
            try:
                os.mkdir(base, 0o755)
            except FileExistsError:
                pass
            except OSError:
                continue
            self.bases[h.kind] = base
            if h.kind == V2:
                _enable_controllers(base)
        if not self.can_kill:
            for base in self.bases.values():
                _rmdir(base)
            self.bases = {}

    def _needs(self, kind: str) -> bool:
        """A v1 hierarchy is worth a write per attempt only for what v2 cannot give here:
        memory without v2's memory controller, CPU and a freezer without v2 at all."""
        v2 = self.bases.get(V2)
        if v2 is None or not os.path.exists(os.path.join(v2, "cgroup.kill")):
            return True
        if kind == MEMORY:
            return "memory" not in _words(os.path.join(v2, "cgroup.subtree_control"))
        return False

    @property
    def can_kill(self) -> bool:
        """Whether an attempt can be killed whole: v2 `cgroup.kill`, or the v1 freezer."""
        if V2 in self.bases:
            return os.path.exists(os.path.join(self.bases[V2], "cgroup.kill"))
        return FREEZER in self.bases

    @property
    def enabled(self) -> bool:
        """Whether the run has cgroups at all (False: the subreaper fallback)."""
        return bool(self.bases)

    @property
    def counts_memory(self) -> bool:
        """True when attempt cgroups have a memory figure (v1 memory, or v2's memory
        controller enabled below the run)."""
        v2 = self.bases.get(V2)
        return MEMORY in self.bases or (
            v2 is not None and "memory" in _words(os.path.join(v2, "cgroup.subtree_control"))
        )

    def attempt(self, name: str, attempt: int | str) -> AttemptCgroup:
        """Make the attempt's directories (`NAME.ATTEMPT`, or with a `~N` suffix when
        that name is taken: a cgroup is never shared); raises OSError when the
        membership one fails (the attempt must not run uncontained)."""
        dirs: dict[str, str] = {}
        for suffix in range(100):
            leaf = f"{name}.{attempt}" + (f"~{suffix}" if suffix else "")
            try:
                for kind, base in self.bases.items():
                    path = os.path.join(base, leaf)
                    try:
                        os.mkdir(path, 0o755)
                    except FileExistsError:
                        raise
                    except OSError:
                        if not dirs:  # the membership directory: no containment, no attempt
                            raise
                        continue
                    dirs[kind] = path
                break
            except FileExistsError:
                for path in dirs.values():
                    _rmdir(path)
                dirs = {}
        else:
            raise FileExistsError(f"{name}.{attempt}")
        cg = AttemptCgroup(dirs, absent=self.absent)
        self.attempts.append(cg)
        return cg

    def close(self) -> list[str]:
        """Remove every empty cgroup of the run; returns those that could not be removed
        (a detached daemon keeps its own)."""
        left = [cg.path for cg in self.attempts if not cg.remove()]
        for base in self.bases.values():
            _rmdir(base)
        self.attempts = []
        return left


# The attempt's bash runs the module by its path, as `bash PATH` would: bash opens it by
# name, so $0 and BASH_SOURCE are the path. Before that bash sources BASH_ENV, which names
# STUB_FD: corral's stub (`stub`), which enters the attempt's cgroups with builtins, gives
# back what root's environment holds for bash's start (see `startup`), and arms a DEBUG
# trap (inherited by subshells, -T). Before the module's first command runs, in whatever
# shell, the trap proves that the file bash opened (/proc/$$/fd/255, the main shell's
# script descriptor) is the inode corral checked (descriptor 3): `[[ A -ef B ]]` compares
# device and inode while both are open, so no other file can pass. A file swapped in
# after the check is not run (exit 126, with a message). The trap then removes itself.
MODULE_FD, STUB_FD = 3, 4
# What BASH_ENV names: through /proc, which corral needs anyway (/dev/fd is missing in
# some containers, and bash would then run the module without the stub, in silence).
STUB = f"/proc/self/fd/{STUB_FD}"
# (Plain names, not `builtin …`: root's exported functions are defined by then, and one
# named `builtin` is what bash itself would have let them define.)
PROOF = (
    "set -T\n"
    "trap '[[ /proc/$$/fd/{fd} -ef /dev/fd/3 ]] || {{ echo \"corral: $0 is not the file "
    'corral checked (replaced since); not run" >&2; exit 126; }}; '
    "trap - DEBUG; set +T; exec 3<&-' DEBUG\n"
)


def script_fd() -> int:
    """The descriptor bash reads its script from: the highest free one below its limit
    on open files, at most 255 (ulimit -n 64: 63). The attempt's bash inherits corral's
    limit."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 255 if soft == resource.RLIM_INFINITY or soft > 256 else soft - 1


# Variables bash acts on as it starts: BASH_ENV is sourced, exported functions are
# defined (one named `builtin` or `.` would stand in for what enters the cgroups),
# and POSIXLY_CORRECT or `posix` in SHELLOPTS would make bash skip BASH_ENV, and so
# corral's stub: the module would run uncontained and unproven.
STARTUP = frozenset(("BASH_ENV", "POSIXLY_CORRECT", "SHELLOPTS"))


def startup(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(what the attempt's bash starts with, what it gets once inside its cgroups):
    the variables bash acts on as it starts (STARTUP, exported functions) are taken out
    and given back by the stub."""
    taken = [k for k in env if k in STARTUP or (k[:10] == "BASH_FUNC_" and k[-2:] == "%%")]
    if not taken:  # perf: the usual case, once per attempt: `env` as it is
        return env, {}
    later = {k: env[k] for k in taken}
    return {k: v for k, v in env.items() if k not in later}, later


def stub(procs_files: list[str], later: dict[str, str], parent: int | None = None) -> bytes:
    """What the attempt's bash sources as BASH_ENV (from STUB_FD), before it opens the
    module: enter the cgroups and check that its parent is still `parent` (corral, by
    default this process; exit 125 with a message otherwise: no module runs
    uncontained), give back `later` (`startup`) and root's shell options, arm the proof
    (PROOF)."""
    lines = [_enter(procs_files, os.getpid() if parent is None else parent)] if procs_files else []
    lines.append("builtin unset -v BASH_ENV")
    lines += _give_back(later)
    options = [o for o in later.get("SHELLOPTS", "").split(":") if _NAME.match(o)]
    if options:  # bash imports SHELLOPTS read-only: set them, and export it again
        lines.append(" ".join(f"set -o {o} 2>/dev/null;" for o in options) + " export SHELLOPTS")
    if "POSIXLY_CORRECT" in later:  # (setting it turns posix mode on, as at bash's start)
        lines.append(f"export POSIXLY_CORRECT={_word(later['POSIXLY_CORRECT'])}")
    lines.append(PROOF.format(fd=script_fd()))  # last: its trap fires on any command after
    return "\n".join(lines).encode()


def _give_back(later: dict[str, str]) -> list[str]:
    """Shell lines that define and export root's exported functions, then export and
    source root's BASH_ENV, as bash would have at its start (not in posix mode, where
    bash reads no BASH_ENV). From the definitions on, plain names: root's functions
    (even one named `builtin`) apply, as in bash."""
    names, definitions = [], []
    for key, value in later.items():
        if key.startswith("BASH_FUNC_") and value.startswith("() {"):  # as bash imports
            name = key[len("BASH_FUNC_") : -2]
            names.append(_word(name))
            definitions.append(f"{name} {value}")
    lines = []
    if names:
        code = "\n".join(definitions) + "\nexport -f -- " + " ".join(names)
        lines.append(f"builtin eval -- {_word(code)}")
    posix = "POSIXLY_CORRECT" in later or "posix" in later.get("SHELLOPTS", "").split(":")
    if later.get("BASH_ENV"):
        lines.append(f"export BASH_ENV={_word(later['BASH_ENV'])}")
        if not posix:
            lines.append('[[ ! -r $BASH_ENV ]] || . "$BASH_ENV"')
    return lines


def command(path: str) -> list[str]:
    """argv of an attempt's bash (environment: BASH_ENV=STUB, the stub on
    that descriptor, the checked module on MODULE_FD)."""
    return ["bash", path]


def _enter(procs_files: list[str], parent: int) -> str:
    """Shell code by which bash puts itself into every cgroup of `procs_files` with
    builtins; failing that, exit 125 with a message (no module runs uncontained).

    Then, inside, it checks that its parent is still `parent` (corral): killed before
    this bash was in its cgroups, corral's watchdog may have looked at them already and
    found them empty. Before the check passes the bash is inside (the watchdog finds it
    and stops it), or it sees itself orphaned and exits 125."""
    enter = " && ".join(f"builtin echo $$ >{shlex.quote(p)}" for p in procs_files)
    return (
        f"{{ {enter}; }} || {{ builtin echo 'corral: cannot enter the attempt cgroup' >&2; "
        "builtin exit 125; }\n"
        "{ builtin read -r __corral </proc/$$/stat && __corral=${__corral##*) } && "
        f"[[ ${{__corral#* }} == '{parent} '* ]]; }} || {{ builtin echo 'corral: corral "
        "is gone; not run' >&2; builtin exit 125; }; builtin unset -v __corral"
    )


def ready_command(procs_files: list[str]) -> list[str]:
    """argv of a bash that enters its cgroups now, then waits on descriptor 3 for the
    attempt to run: `ready_message`'s preamble (which changes to the module's directory,
    sets its environment and execs the attempt's bash), then the stub, which the new
    bash sources from the same pipe; EOF instead: it exits 0. Entering the cgroups (which
    may wait for an RCU grace period) is then done before the attempt starts, not on
    its way.

    perf: `read -N` with a count reads the preamble in one system call; `read -d ''`
    reads a pipe a byte at a time (docs/architecture.md)."""
    return [
        "bash",
        "-c",
        f"{_enter(procs_files, os.getpid())}\n"
        "IFS= builtin read -r -N 8 __corral_n <&3 || builtin exit 0\n"
        'IFS= builtin read -r -N "$((10#$__corral_n))" __corral_n <&3 || builtin exit 126\n'
        'builtin eval "$__corral_n"\n'
        "builtin exit 126",
        "corral-ready",
    ]


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]*\Z")


def ready_message(
    bash: str, path: str, checked: str, changed: dict[str, str], removed: list[str]
) -> bytes | None:
    """What a ready bash reads: an 8-digit length, then shell code that changes to the
    module's directory, exports `changed`, unsets `removed` and execs `bash` on `path`
    with the stub (the rest of the pipe) as BASH_ENV and the file `checked` names (corral's
    checked descriptor, /proc/PID/fd/N) as MODULE_FD; then the stub. ASCII only (any
    other byte is written as $'\\xHH'), so `read -N` counts the same in every locale.
    None when a name cannot be a shell variable."""
    changed, later = startup(changed)
    if not all(_NAME.match(k) for k in changed) or not all(_NAME.match(k) for k in removed):
        return None
    lines = [f"builtin cd -- {_word(path.rpartition('/')[0] or '/')} || builtin exit 126"]
    if changed:
        lines.append("builtin export " + " ".join(f"{k}={_word(v)}" for k, v in changed.items()))
    removed = [k for k in removed if k not in later]
    if removed:
        lines.append("builtin unset -v " + " ".join(removed))
    lines.append(f"builtin export BASH_ENV={STUB}")
    lines.append(
        f"builtin exec -- {_word(bash)} {_word(path)} {STUB_FD}<&3 {MODULE_FD}<{_word(checked)}"
    )
    code = "\n".join(lines).encode("ascii")
    return b"%08d" % len(code) + code + stub([], later)


def _word(text: str) -> str:
    """`text` as one shell word of printable ASCII."""
    if _PLAIN.match(text):
        return text if text else "''"
    raw = os.fsencode(text)
    if raw.isascii() and all(32 <= b < 127 for b in raw) and b"'" not in raw:
        return f"'{text}'"
    return (
        "$'"
        + "".join(chr(b) if 32 <= b < 127 and b not in (39, 92) else f"\\x{b:02x}" for b in raw)
        + "'"
    )


def run_directory(base: str) -> bool:
    """Is `base` a run's cgroup directory (`corral-…` in a cgroup hierarchy)? What
    recovery reads from the database is checked before anything in it is killed or
    removed."""
    return os.path.basename(base).startswith(PREFIX) and os.path.isfile(
        os.path.join(base, "cgroup.procs")
    )


def leftovers(bases: list[str]) -> list[AttemptCgroup]:
    """The attempt cgroups under the given run directories (for recovery); a directory
    that is not a run's cgroup is passed over."""
    found: dict[str, dict[str, str]] = {}
    for base in bases:
        if not run_directory(base):
            continue
        kind = V2 if os.path.exists(os.path.join(base, "cgroup.kill")) else _v1_kind(base)
        try:
            names = [e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for name in names:
            found.setdefault(name, {})[kind] = os.path.join(base, name)
    return [
        AttemptCgroup(dict(sorted(d.items(), key=lambda kv: kv[0] != V2))) for d in found.values()
    ]


def stop(attempts: list[AttemptCgroup], grace: float) -> int:
    """`kill.ASK` (TERM, CONT) every process of `attempts`, KILL what is left after
    `grace` (the cgroup's own kill); returns how many processes there were (0 for none)."""
    count = sum(len(cg.pids()) for cg in attempts)
    kill.stop([_Whole(cg) for cg in attempts], grace)
    end = time.monotonic() + 2.0
    while time.monotonic() < end and any(cg.populated() for cg in attempts):
        time.sleep(0.01)
    return count


@dataclass(frozen=True, slots=True)
class _Whole:
    """An attempt's cgroup as a `kill.Target`: every process in it, forks in flight too."""

    cg: AttemptCgroup

    def ask(self) -> bool:
        for signum in kill.ASK:
            self.cg.signal(signum)
        return True  # an empty cgroup is found gone by `alive`

    def alive(self) -> bool:
        return self.cg.populated()

    def force(self) -> None:
        if self.cg.populated():
            self.cg.kill()


def remove_run(bases: list[str]) -> bool:
    """Remove a run's attempt directories and its own; False when something was busy
    (or a directory is not a run's cgroup: left alone)."""
    ok = True
    for cg in leftovers(bases):
        ok = cg.remove() and ok
    for base in bases:
        if os.path.lexists(base):
            ok = run_directory(base) and _rmdir(base) and ok
    return ok


def _v1_kind(path: str) -> str:
    for kind in (MEMORY, CPUACCT, FREEZER):
        if os.path.exists(os.path.join(path, _PROBE[kind])):
            return kind
    return "?"


_PROBE = {
    MEMORY: "memory.max_usage_in_bytes",
    CPUACCT: "cpuacct.usage",
    FREEZER: "freezer.state",
}


def _enable_controllers(base: str) -> None:
    """Give attempt cgroups the memory, cpu and io controllers where the parent has them,
    so `memory.peak` and `io.stat` exist; a host that does not allow it keeps cpu.stat."""
    parent = os.path.dirname(base)
    for directory in (parent, base):
        try:
            with open(os.path.join(directory, "cgroup.controllers")) as f:
                available = f.read().split()
        except OSError:
            return
        for controller in ("memory", "cpu", "io"):
            if controller in available:
                with (
                    contextlib.suppress(OSError),
                    open(os.path.join(directory, "cgroup.subtree_control"), "w") as f,
                ):
                    f.write(f"+{controller}")


def _words(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []


def _rmdir(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _read(path: str) -> bytes:
    """A control file's whole content; raises OSError.

    perf: open/read/close, not a Python file object (which adds fstat, ioctl and lseek
    to each): an attempt reads several of these as it ends (docs/architecture.md)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, 65536)
        if len(data) < 65536:
            return data
        chunks = [data]
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _number(path: str) -> int | None:
    try:
        return int(_read(path))
    except (OSError, ValueError):
        return None


def _keyed(path: str) -> dict[str, int]:
    try:
        lines = _read(path).splitlines()
        return {k.decode(): int(v) for k, v in (ln.split() for ln in lines if ln.strip())}
    except (OSError, ValueError):
        return {}


def _int(data: bytes | None) -> int | None:
    try:
        return None if data is None else int(data)
    except ValueError:
        return None


def _io_stat(data: bytes | None) -> tuple[int, int] | None:
    """(read, written) bytes from io.stat's text; None without it."""
    if data is None:
        return None
    try:
        lines = data.decode().splitlines()
    except UnicodeDecodeError:
        return None
    read = write = 0
    for line in lines:
        fields = dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
        read += int(fields.get("rbytes", 0))
        write += int(fields.get("wbytes", 0))
    return read, write
