"""Containment by the kernel: an attempt's cgroup holds whatever its processes do to
their session, process group or environment, and stopping it reaches them all.

These drive the mechanism (corral.cgroups, corral.watchdog) with real bash and real
cgroups; tests/faults/test_escapes.py attacks it through a real `corral run`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from corral import cgroups, procfs
from corral.watchdog import Watchdog

from ..runtrace import alive, read_pid, wait_dead

# A module whose worker leaves every way it can: a new session, a scrubbed environment,
# a double fork; it writes its PID where the test can find it.
ESCAPE = """
setsid env -i bash -c 'echo $$ > "$1"; exec -c sleep 300' escapee {pidfile} &
sleep 300
"""


def usable() -> cgroups.RunCgroups:
    run = cgroups.RunCgroups(f"test-{os.getpid()}-{time.monotonic_ns()}")
    if not run.enabled:
        pytest.skip("needs a writable cgroup hierarchy that can kill (v2 or v1 freezer)")
    return run


def spawn(module, procs_files=(), fd=None, env=None, parent=None, **kw) -> subprocess.Popen:
    """bash runs `module` as an attempt's bash does: `bash PATH` with corral's stub as
    BASH_ENV (entering `procs_files`, then giving back what `env` holds for bash's
    start) and the checked descriptor `fd` (the module, opened now, by default) as
    descriptor 3."""
    own = fd is None
    fd = os.open(module, os.O_RDONLY) if own else fd
    env, later = cgroups.startup(dict(os.environ) if env is None else env)
    stub = os.memfd_create("stub")
    os.write(stub, cgroups.stub(list(procs_files), later, parent))

    def descriptors() -> None:
        os.dup2(fd, cgroups.MODULE_FD)
        os.dup2(stub, cgroups.STUB_FD)

    try:
        return subprocess.Popen(
            cgroups.command(str(module)),
            executable="/bin/bash",
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            env={**env, "BASH_ENV": cgroups.STUB},
            preexec_fn=descriptors,
            pass_fds=(cgroups.MODULE_FD, cgroups.STUB_FD),
            **kw,
        )
    finally:
        os.close(stub)
        if own:
            os.close(fd)


def test_an_escapee_is_in_the_attempt_cgroup_and_dies_with_it(tmp_path):
    run = usable()
    try:
        module = tmp_path / "m.sh"
        module.write_text(ESCAPE.format(pidfile=tmp_path / "pid"))
        cg = run.attempt("m", 1)
        main = spawn(module, cg.procs_files())
        escapee = read_pid(tmp_path / "pid", 10.0)
        assert os.getsid(escapee) != os.getsid(main.pid)  # it left the session …
        assert escapee in cg.pids()  # … but not the cgroup
        cg.kill()
        main.wait(5)
        assert wait_dead(escapee, 5)
        end = time.monotonic() + 5
        # a killed orphan is a zombie until init reaps it, and counts until then
        while cg.populated() and time.monotonic() < end:
            time.sleep(0.01)
        assert not cg.populated()
    finally:
        run.close()


def test_control_a_process_group_kill_misses_the_escapee(tmp_path):
    """What corral did before: signal the attempt's process group. The escapee lives."""
    module = tmp_path / "m.sh"
    module.write_text(ESCAPE.format(pidfile=tmp_path / "pid"))
    main = subprocess.Popen(["bash", str(module)], start_new_session=True)
    escapee = read_pid(tmp_path / "pid", 10.0)
    try:
        os.killpg(main.pid, signal.SIGKILL)
        main.wait(5)
        time.sleep(0.1)
        assert alive(escapee)
    finally:
        os.kill(escapee, signal.SIGKILL)


def test_the_module_sees_its_own_path_and_no_extra_arguments(tmp_path):
    run = usable()
    try:
        module = tmp_path / "m.sh"
        module.write_text(
            'echo "$0|${BASH_SOURCE[0]}|$#|$(cut -d: -f3 /proc/self/cgroup | sort -u)"\n'
        )
        cg = run.attempt("m", 1)
        main = spawn(module, cg.procs_files(), stdout=subprocess.PIPE, text=True)
        out = main.communicate()[0]
        assert main.returncode == 0
        zero, source, count, groups = out.strip().split("|", 3)
        assert (zero, source, count) == (str(module), str(module), "0")
        assert all(line.endswith("/m.1") for line in groups.splitlines() if "corral-" in line)
        assert any("corral-" in line for line in groups.splitlines())
    finally:
        run.close()


def test_a_file_swapped_in_after_the_check_is_not_run(tmp_path):
    """The trust check's handoff: bash opens the module by name (so $0 and BASH_SOURCE
    are its path), and before its first command proves that what it opened is what was
    checked (the descriptor); a file renamed over the path meanwhile is not run."""
    module = tmp_path / "m.sh"
    module.write_text('echo "checked:$0:${BASH_SOURCE[0]}"\n')
    fd = os.open(module, os.O_RDONLY)
    try:
        ran = spawn(module, fd=fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert ran.communicate() == (f"checked:{module}:{module}\n", "")
        other = tmp_path / "other.sh"
        other.write_text('echo "swapped:$0"\n')
        other.rename(module)  # the path now names another file …
        swapped = spawn(module, fd=fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = swapped.communicate()
    finally:
        os.close(fd)
    assert (out, swapped.returncode) == ("", 126)  # … which is not run
    assert f"corral: {module} is not the file corral checked (replaced since)" in err
    control = subprocess.run(["bash", str(module)], capture_output=True, text=True)
    assert control.stdout == f"swapped:{module}\n"  # by name alone, bash runs it


def test_a_cgroup_that_cannot_be_entered_stops_the_attempt_before_the_module(tmp_path):
    module = tmp_path / "m.sh"
    module.write_text(f"touch {tmp_path / 'ran'}\n")
    main = spawn(module, [str(tmp_path / "missing/cgroup.procs")], stderr=subprocess.PIPE)
    err = main.communicate()[1].decode()
    assert main.returncode == 125
    assert "cannot enter the attempt cgroup" in err
    assert not (tmp_path / "ran").exists()


def test_an_attempt_orphaned_before_it_was_inside_its_cgroup_is_not_run(tmp_path):
    """corral killed while the attempt's bash was on its way into its cgroup: the
    watchdog may have found the cgroup empty, so the bash, once inside, sees its parent
    is not corral's PID any more and exits before the module. The control: with the
    parent it has, the module runs."""
    run = usable()
    try:
        module = tmp_path / "m.sh"
        module.write_text(f"touch {tmp_path / 'ran'}\n")
        cg = run.attempt("m", 1)
        gone = max(procfs.pids()) + 100_000  # no process has it: corral is gone
        main = spawn(module, cg.procs_files(), parent=gone, stderr=subprocess.PIPE)
        err = main.communicate()[1].decode()
        assert (main.returncode, err) == (125, "corral: corral is gone; not run\n")
        assert not (tmp_path / "ran").exists()
        control = spawn(module, run.attempt("m", 2).procs_files())
        assert control.wait(10) == 0 and (tmp_path / "ran").exists()
    finally:
        run.close()


def test_roots_bash_env_and_exported_functions_act_only_inside_the_cgroup(tmp_path):
    """Root's own BASH_ENV (bash sources it before anything else) forks a worker, and an
    exported function named `builtin` would stand in for the entry: both are given back
    only once the attempt's bash is inside its cgroup, and still reach the module."""
    run = usable()
    startup = tmp_path / "env.sh"
    startup.write_text(f"(setsid sleep 300 >/dev/null 2>&1 & echo $! > {tmp_path / 'pid'})\n")
    env = {**os.environ, "BASH_ENV": str(startup), "BASH_FUNC_builtin%%": "() { :; }"}
    try:
        module = tmp_path / "m.sh"
        module.write_text('declare -F builtin >/dev/null && echo "$BASH_ENV"\n')
        cg = run.attempt("m", 1)
        main = spawn(module, cg.procs_files(), env=env, stdout=subprocess.PIPE, text=True)
        assert main.communicate()[0] == f"{startup}\n" and main.returncode == 0
        worker = read_pid(tmp_path / "pid", 10.0)
        assert worker in cg.pids()
        cg.kill()
        assert wait_dead(worker, 5)
        # the control: the entry as the first thing `bash -c` runs, BASH_ENV inherited
        (tmp_path / "pid").unlink()
        control = run.attempt("m", 2)
        entry = cgroups._enter(control.procs_files(), os.getpid())
        subprocess.run(["bash", "-c", f"{entry}; true"], env=env, check=True)
        worker = read_pid(tmp_path / "pid", 10.0)
        try:
            assert worker not in control.pids() and not control.populated()
        finally:
            os.kill(worker, signal.SIGKILL)
    finally:
        run.close()


@pytest.mark.parametrize(
    "posix", [{"POSIXLY_CORRECT": "1"}, {"SHELLOPTS": "braceexpand:hashall:posix"}]
)
def test_posix_mode_in_roots_environment_neither_skips_the_entry_nor_the_proof(tmp_path, posix):
    """bash in posix mode reads no BASH_ENV, so no stub: corral starts bash without the
    variables that ask for it and gives them back inside (the module runs in posix
    mode, contained, and a file swapped in is not run)."""
    run = usable()
    env = {**os.environ, **posix}
    try:
        module = tmp_path / "m.sh"
        module.write_text('shopt -qo posix && grep "^0::" /proc/self/cgroup\n')
        cg = run.attempt("m", 1)
        main = spawn(module, cg.procs_files(), env=env, stdout=subprocess.PIPE, text=True)
        out = main.communicate()[0]
        assert main.returncode == 0 and out.strip().endswith("/m.1"), out
        fd = os.open(module, os.O_RDONLY)
        (tmp_path / "other.sh").write_text("echo swapped\n")
        (tmp_path / "other.sh").rename(module)
        swapped = spawn(module, fd=fd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert swapped.communicate()[0] == b"" and swapped.returncode == 126
        # the control: the stub given as BASH_ENV to a bash in posix mode never runs
        stub = tmp_path / "stub.sh"
        stub.write_bytes(cgroups.stub([], {}))
        control = subprocess.run(
            ["bash", str(module)],
            env={**env, "BASH_ENV": str(stub)},
            pass_fds=(fd,),
            capture_output=True,
            text=True,
        )
        os.close(fd)
        assert control.stdout == "swapped\n"
    finally:
        run.close()


def test_the_watchdog_kills_by_cgroup_whatever_its_environment(tmp_path, monkeypatch):
    """corral is gone (its end of the pipe closed without `done`): the watchdog stops the
    attempt, escapee included, although corral's environment tried to disable it."""
    run = usable()
    evil = tmp_path / "evil.sh"
    evil.write_text("exit 0\n")
    try:
        module = tmp_path / "m.sh"
        module.write_text("trap '' TERM\n" + ESCAPE.format(pidfile=tmp_path / "pid"))
        cg = run.attempt("m", 1)
        main = spawn(module, cg.procs_files())
        escapee = read_pid(tmp_path / "pid", 10.0)
        member = run.bases.get(cgroups.V2) or next(iter(run.bases.values()))
        monkeypatch.setenv("BASH_ENV", str(evil))
        monkeypatch.setenv("BASH_FUNC_kill%%", "() { :; }")
        monkeypatch.setenv("PATH", str(tmp_path))
        dog = Watchdog(run.run_id, 0.2, member)
        monkeypatch.undo()
        os.close(dog._w)  # corral "crashed"
        dog._w = None
        dog_exit = os.waitpid(dog.pid, 0)[1]
        main.wait(5)
        assert os.waitstatus_to_exitcode(dog_exit) == 0
        assert not alive(escapee)
        assert not cg.populated()
    finally:
        run.close()


def test_control_a_watchdog_that_inherits_the_environment_is_disabled(tmp_path):
    """The attack the clean environment defends against: BASH_ENV runs first in any
    non-interactive bash that inherits it, and here it makes the watchdog exit."""
    evil = tmp_path / "evil.sh"
    evil.write_text("exit 0\n")
    marker = tmp_path / "reached"
    result = subprocess.run(
        ["bash", "-c", f"touch {marker}"], env={**os.environ, "BASH_ENV": str(evil)}
    )
    assert result.returncode == 0 and not marker.exists()


def test_a_detached_attempt_is_spared_by_the_watchdog(tmp_path):
    run = usable()
    try:
        module = tmp_path / "m.sh"
        module.write_text(ESCAPE.format(pidfile=tmp_path / "pid"))
        cg = run.attempt("d", 1)
        main = spawn(module, cg.procs_files())
        escapee = read_pid(tmp_path / "pid", 10.0)
        member = run.bases.get(cgroups.V2) or next(iter(run.bases.values()))
        dog = Watchdog(run.run_id, 0.2, member)
        dog.tell("spare d.1")
        os.close(dog._w)
        dog._w = None
        os.waitpid(dog.pid, 0)
        assert alive(escapee) and main.poll() is None
        cg.kill()
        main.wait(5)
    finally:
        run.close()


def test_recovery_finds_a_crashed_runs_cgroups_and_removes_them_once_empty(tmp_path):
    run = usable()
    module = tmp_path / "m.sh"
    module.write_text("sleep 300\n")
    cg = run.attempt("m", 1)
    main = spawn(module, cg.procs_files())
    time.sleep(0.05)
    bases = list(run.bases.values())
    found = cgroups.leftovers(bases)
    (busy,) = [c for c in found if c.pids()]
    assert main.pid in busy.pids()  # bash, and its sleep
    assert cgroups.stop(found, grace=1.0) == 2
    main.wait(5)
    assert cgroups.remove_run(bases)
    assert not any(os.path.exists(b) for b in bases)


def test_every_attempt_runs_in_a_bash_that_entered_its_cgroup_before_it_started(corral):
    """Entering a cgroup after a quiet spell waits for the kernel (an RCU grace period),
    and a bash that enters on its way has its own start counted elsewhere: so every
    attempt, the run's first too, runs in a bash that entered a cgroup of the run
    (`ready.N`) before the attempt started, whatever the spell before it."""
    usable().close()
    out = corral.modules.parent
    corral.module("a", body=f"cat /proc/self/cgroup > {out}/a")
    corral.module("b", "requires: a", f"cat /proc/self/cgroup > {out}/b; sleep 0.2")
    corral.module("c", "requires: b", f"cat /proc/self/cgroup > {out}/c")
    result = corral("run", "-j", "1", "--json")
    assert result.code == 0, result.err
    leaf = {n: (out / n).read_text().splitlines()[-1].rpartition("/")[2] for n in "abc"}
    assert all(cgroup.startswith("ready.") for cgroup in leaf.values()), leaf
    run = result.json()["run_id"]
    for n in "abc":
        assert f"/corral-{run}/" in (out / n).read_text(), (out / n).read_text()
