"""The host's agent relays a run's events over a pipe that never holds the run up."""

from __future__ import annotations

import fcntl
import json
import os
import time

from corral.events import ModuleSkipped, ModuleStarted
from corral.fleet.agent import ABANDONED_S, PREFIX, UNUSED_S, EventPipe, prune, relay


def started(name: str) -> ModuleStarted:
    return ModuleStarted(name, 1, 4242, 0.0, None)


def test_each_module_event_is_one_relay_line():
    r, w = os.pipe()
    os.set_blocking(w, False)
    pipe = EventPipe(w)
    pipe(started("a"))
    pipe(ModuleSkipped("b", "requires a"))
    pipe("not a module event")
    os.close(w)
    lines = os.read(r, 65536).decode().splitlines()
    os.close(r)
    assert [json.loads(x.removeprefix(PREFIX + "event ")) for x in lines] == [
        {"m": "a", "a": 1, "s": "running", "d": None},
        {"m": "b", "a": 0, "s": "skipped", "d": None},
    ]


def test_a_full_pipe_drops_lines_rather_than_wait():
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(w, False)
    pipe = EventPipe(w)
    for i in range(1000):  # far more than 4 KiB: a blocking write would hang here
        pipe(started(f"m{i}"))
    assert pipe.fd == w  # the reader is still there: later lines still go
    os.close(r)
    os.close(w)


def test_once_the_reader_is_gone_nothing_more_is_written():
    r, w = os.pipe()
    os.set_blocking(w, False)
    pipe = EventPipe(w)
    os.close(r)
    pipe(started("a"))  # EPIPE (SIGPIPE is ignored in Python): closed, not raised
    assert pipe.fd is None
    pipe(started("b"))


def test_the_relay_passes_the_events_on_and_says_how_the_run_ended(tmp_path, capfd):
    (tmp_path / "result.json").write_text('{"run_id": null}')
    (tmp_path / "stderr.log").write_text("corral: something went wrong\n")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the run: where its records are (nowhere), one event, exit 3
        os.close(r)
        os.write(w, b"null\n")
        EventPipe(w)(started("a"))
        os._exit(3)
    os.close(w)
    assert relay(r, pid, tmp_path) == 3
    out = capfd.readouterr().out.splitlines()
    assert out[0] == PREFIX + 'event {"m":"a","a":1,"s":"running","d":null}'
    assert json.loads(out[1].removeprefix(PREFIX + "result ")) == {
        "rc": 3,
        "run": {"run_id": None},
        "stderr": ["corral: something went wrong"],
    }
    assert len(out) == 2  # the database line is the agent's, not relayed


def test_a_run_killed_by_a_signal_ends_as_a_shell_says_it(tmp_path, capfd):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.kill(os.getpid(), 9)
    os.close(w)
    assert relay(r, pid, tmp_path) == 137
    out = capfd.readouterr().out
    assert '"rc":137,"run":null' in out
    assert "corral was killed there by SIGKILL (exit 137)" in out  # the host's reason


def test_a_run_that_wrote_nothing_says_so(tmp_path, capfd):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os._exit(1)
    os.close(w)
    (tmp_path / "stderr.log").write_text("")
    assert relay(r, pid, tmp_path) == 1
    assert f"corral exited 1 and wrote nothing in {tmp_path}" in capfd.readouterr().out
    # The control: what the run said on stderr is its reason.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os._exit(1)
    os.close(w)
    (tmp_path / "stderr.log").write_text("corral: a header error\n")
    assert relay(r, pid, tmp_path) == 1
    out = capfd.readouterr().out
    assert "corral: a header error" in out and "wrote nothing" not in out


def test_bundles_and_run_directories_unused_for_a_week_are_removed(tmp_path):
    week_ago = time.time() - UNUSED_S - 60
    dirs = {}
    for name in ("mine", "old", "recent", "runs/old-run", "runs/new-run"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir(parents=True)
        if not name.startswith("runs/"):
            (dirs[name] / ".complete").touch()
    for name in ("mine", "old"):  # mine too: using it now makes it new again
        os.utime(dirs[name] / ".complete", (week_ago, week_ago))
    os.utime(dirs["runs/old-run"], (week_ago, week_ago))
    (tmp_path / ".unpack.x").mkdir()  # an unpacking in progress is never touched
    (tmp_path / ".unpack.cut" / "modules").mkdir(parents=True)  # a copy cut off a day ago
    day_ago = time.time() - ABANDONED_S - 60
    os.utime(tmp_path / ".unpack.cut", (day_ago, day_ago))
    prune(dirs["mine"])
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("*")) + sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.glob("runs/*")
    )
    assert left == [".unpack.x", "mine", "recent", "runs", "runs/new-run"]
