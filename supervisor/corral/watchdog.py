"""The watchdog: what stops a run's processes when corral itself is killed.

A small bash started with the run, in its own session, that only reads a pipe from
corral. Corral writes `done` on it after cleaning up. If the pipe closes without it
(SIGKILL, the OOM killer, a crash), the watchdog stops every attempt of the run with
corral's one sequence (`corral.kill`, whose signals and grace period it is given as
arguments, `sequence_args`): `kill.ASK` (TERM and CONT) to everything in each attempt's
cgroup, then `cgroup.kill` (or freeze and `kill.FORCE`) once the grace period has
passed (to the microsecond, as `kill.stop` waits it; tests/test_kill.py holds the two
to the same outcomes). Without cgroups it stops what it can find instead:
processes corral told it about (`pid PID START` lines, checked against the start time
so a reused PID is never hit) and processes whose environment carries the run's mark.

It cannot be turned off by what it would inherit: it is started by absolute path with
an empty environment (no BASH_ENV, no exported functions, no PATH to shadow anything)
and `--norc --noprofile`, and it uses only bash builtins and /proc (and, last, /bin/rmdir
by its absolute path to remove the run's empty cgroups).
"""

from __future__ import annotations

import contextlib
import os
import signal

from corral import kill

# bash by absolute path only: a PATH entry must not decide what runs as the watchdog.
BASH_PATHS = ("/bin/bash", "/usr/bin/bash", "/usr/local/bin/bash")
# Seconds between the watchdog's looks at what is left (during the grace period, and
# between its KILL rounds). Longer than `kill.stop`'s tick: without cgroups a look
# scans every process's environment in bash, about 30 ms with 150 processes.
LOOK = 0.1
FORCE_ROUNDS = 5  # KILL rounds after the grace period, for what forked meanwhile

SCRIPT = r"""
exec 2>/dev/null
trap '' INT HUP TERM QUIT
# grace_us, ask, force: corral.kill's sequence; look: seconds between looks
grace_us=$1 run=$2 member=$3 freezer=$4 ask=$5 force=$6 look=$7 rounds=$8
shift 8; bases=("$@")  # every directory of the run, to remove once empty
declare -A spare=() known=()
last=
while IFS= read -r line; do
  case $line in
    spare\ *) spare[${line#spare }]=1 ;;
    pid\ *) set -- $line; known[$2]=$3 ;;
    base\ *) bases+=("${line#base }") ;;
    member\ *) member=${line#member } ;;
    freezer\ *) freezer=${line#freezer } ;;
    *) last=$line ;;
  esac
done
[[ $last == "done" ]] && exit 0
finish() {  # the run's empty cgroups go too (a detached daemon keeps its own)
  local base d
  local -a dirs=()
  for base in "${bases[@]}"; do
    for d in "$base"/*/; do [[ -d $d && -z ${spare[$(basename_of "$d")]} ]] && dirs+=("$d"); done
    dirs+=("$base")
  done
  (( ${#dirs[@]} )) && [[ -x /bin/rmdir ]] && exec /bin/rmdir -- "${dirs[@]}"
  exit 0
}
basename_of() { local d=${1%/}; printf '%s' "${d##*/}"; }
nap() { read -r -t "$1" -u 3; }
attempts() {
  local d
  [[ -n $member ]] || return 0
  for d in "$member"/*/; do
    d=${d%/}
    [[ -d $d && -z ${spare[${d##*/}]} ]] && printf '%s\n' "$d"
  done
}
marked() {
  local f pid var rest
  local -a field
  for pid in "${!known[@]}"; do
    read -r rest < "/proc/$pid/stat" || continue
    rest=${rest##*) }
    read -r -a field <<< "$rest"
    [[ ${field[19]} == "${known[$pid]}" && ${field[0]} != Z ]] && echo "$pid"
  done
  for f in /proc/[0-9]*/environ; do
    pid=${f#/proc/}; pid=${pid%/environ}
    [[ $pid == "$$" ]] && continue
    while IFS= read -r -d '' var; do
      if [[ $var == "CORRAL_RUN_ID=$run" ]]; then echo "$pid"; break; fi
    done < "$f"
  done
}
members() {
  local d pid
  while IFS= read -r d; do
    while read -r pid; do echo "$pid"; done < "$d/cgroup.procs"
  done < <(attempts)
}
everyone() { if [[ -n $member ]]; then members; else marked; fi; }
pids=$(everyone)
[[ -z $pids ]] && finish
for sig in $ask; do kill -"$sig" $pids; done
t=$EPOCHREALTIME; end=$(( ${t/./} + grace_us ))  # microseconds (the C locale's '.')
while t=$EPOCHREALTIME; (( ${t/./} < end )); do
  pids=$(everyone); [[ -z $pids ]] && finish
  nap "$look"
done
if [[ -n $member ]]; then
  while IFS= read -r d; do
    if [[ -e $d/cgroup.kill ]]; then
      echo 1 > "$d/cgroup.kill"
    elif [[ -n $freezer ]]; then
      echo FROZEN > "$freezer/${d##*/}/freezer.state"
      mapfile -t victims < "$d/cgroup.procs"
      (( ${#victims[@]} )) && kill -"$force" "${victims[@]}"
      echo THAWED > "$freezer/${d##*/}/freezer.state"
    fi
  done < <(attempts)
fi
for (( i = 0; i < rounds; i++ )); do  # what forked meanwhile gets it too
  pids=$(everyone); [[ -z $pids ]] && finish
  kill -"$force" $pids
  nap "$look"
done
finish
"""


def sequence_args(run_id: str, grace: float, member: str = "", freezer: str = "") -> list[str]:
    """SCRIPT's arguments before the run's directories: `kill`'s sequence (its `ASK`
    and `FORCE` by name, the grace period in whole microseconds, never negative) and
    where to find the run's processes (`member`, `freezer`: "" without cgroups)."""
    return [
        str(max(0, round(grace * 1e6))),
        run_id,
        member,
        freezer,
        kill.names(kill.ASK),
        kill.names((kill.FORCE,)),
        str(LOOK),
        str(FORCE_ROUNDS),
    ]


def bash() -> str:
    """The first bash of BASH_PATHS that exists."""
    for path in BASH_PATHS:
        if os.access(path, os.X_OK):
            return path
    raise FileNotFoundError("bash")


class Watchdog:
    """Started with a run; `close()` after everything is cleaned up lets it exit quietly.
    If it dies before (another process killed it), `restart` starts another that knows
    what it knew."""

    def __init__(
        self,
        run_id: str,
        grace: float,
        member: str = "",
        freezer: str = "",
        bases: tuple[str, ...] = (),
    ):
        self.pid: int | None = None
        self._w: int | None = None
        self._args = sequence_args(run_id, grace, member, freezer) + list(bases)
        self._told: list[str] = []  # every line but `done`, for a restarted watchdog
        self._spawn()

    def _spawn(self) -> None:
        """Start a watchdog process; raises OSError when none can be started (out of
        descriptors or processes), leaving nothing open."""
        opened: list[int] = []
        try:
            r, w = os.pipe2(os.O_CLOEXEC)
            opened += (r, w)
            nap_r, nap_w = os.pipe2(os.O_CLOEXEC)  # never written: `read -t` on it sleeps
            opened += (nap_r, nap_w)
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            opened.append(null)
            self.pid = os.posix_spawn(
                bash(),
                ["corral-watchdog", "--norc", "--noprofile", "-c", SCRIPT, "corral-watchdog"]
                + self._args,
                {},
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, r, 0),
                    (os.POSIX_SPAWN_DUP2, null, 1),
                    (os.POSIX_SPAWN_DUP2, nap_r, 3),
                    (os.POSIX_SPAWN_DUP2, nap_w, 4),
                ],
                setsid=True,
                setsigdef=(signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD),
            )
            os.set_blocking(w, False)  # a full pipe drops a line, it never stalls corral
            self._w = w
            opened.remove(w)
        except OSError:
            self.pid = None
            raise
        finally:
            for fd in opened:
                os.close(fd)

    def restart(self) -> None:
        """The watchdog died (`pid`, already reaped): start another and tell it what the
        dead one was told. Raises OSError when none can be started."""
        if self._w is not None:
            os.close(self._w)  # (nothing reads it any more)
            self._w = None
        self.pid = None
        self._spawn()
        for line in self._told:
            self._write(line)

    def tell(self, line: str) -> None:
        """One line to the watchdog (`spare NAME.ATTEMPT`, `pid PID START`, and the run's
        places as they are made: `base DIR` before DIR exists, `member DIR`, `freezer
        DIR`)."""
        self._told.append(line)
        self._write(line)

    def _write(self, line: str) -> None:
        if self._w is not None:
            with contextlib.suppress(OSError):
                os.write(self._w, f"{line}\n".encode())

    def close(self) -> None:
        """Everything is cleaned up: tell the watchdog so, and reap it."""
        if self._w is None:
            return
        self._write("done")
        os.close(self._w)
        self._w = None
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
