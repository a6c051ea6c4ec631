"""Answers to "what is it doing?" and "why did that take so long?": `corral status` (a
run in progress, from its published state file), `corral why MODULE` (its last run, from
the records) and `corral log MODULE [RUN]` (which log files to print).

Plain values in, lines of text out; the CLI prints them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from corral import analysis
from corral.errors import UsageError
from corral.kill import signal_process
from corral.progress import STATE_FILE, epoch, read_state
from corral.store import Store
from corral.units import clock, plural


def _alive(state: dict) -> bool:
    """Is the corral that published `state` alive: its PID runs, and (when the state
    says when it started) is the same process, not a later one given its PID."""
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:  # 0 or -1 would ask a whole group
        return False
    if state.get("pid_start") is not None:
        from corral.procfs import live_start_time

        return live_start_time(pid) == state["pid_start"]
    return signal_process(pid, 0)


@dataclass(frozen=True, slots=True)
class Published:
    """The states runs published under a log directory (each as its run wrote it: a
    status.json document, see progress.RunState.snapshot)."""

    running: list[dict]  # of the runs in progress, newest first
    last: dict | None  # the newest run's, whatever its end; None: no run published one

    def as_json(self) -> dict:
        """What `corral status --json` prints."""
        return {"running": self.running, "last": self.last}


def _of_set(state: dict, only: str | None) -> bool:
    """Is `state` a run of the module set `only` (None: of any)."""
    if only is None or not state.get("modules"):  # (an older corral's: cannot tell)
        return True
    from corral.schema import module_set_key

    return module_set_key(str(state["modules"]).split(os.pathsep)) == only


def run_states(log_dir: Path, only: str | None = None) -> Published:
    """The published states under `log_dir` (of the module set `only`, or of all).

    Every run's directory is looked at, not only `latest`: runs of other module sets
    share the log directory (and the newest of them need not be the one still running).
    A state that says running while its corral is gone is not in progress."""
    try:
        names = sorted(
            (e.name for e in os.scandir(log_dir) if e.is_dir(follow_symlinks=False)),
            reverse=True,  # run ids begin with their UTC start: newest first
        )
    except OSError:
        names = []
    running, newest = [], None
    for name in names:
        if name.startswith("."):
            continue
        state = read_state(str(log_dir / name / STATE_FILE))
        if not isinstance(state, dict) or "run_id" not in state or not _of_set(state, only):
            continue
        newest = newest or state
        if state.get("status") == "running" and _alive(state):
            running.append(state)
    return Published(running, newest)


def run_state(log_dir: Path, run: str) -> dict:
    """The state RUN (a run id or a unique prefix of one) published under `log_dir`.
    Raises UsageError naming what matched when not exactly one run did."""
    try:
        names = sorted(
            e.name
            for e in os.scandir(log_dir)
            if e.name.startswith(run) and not e.name.startswith(".") and e.name != "latest"
        )
    except OSError:
        names = []
    states = [(n, read_state(str(log_dir / n / STATE_FILE))) for n in names]
    found = [s for _, s in states if isinstance(s, dict) and "run_id" in s]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError(
            f"no run matching {run!r} published its state under {log_dir} "
            "(`corral status` lists the runs in progress, `corral history` past ones)"
        )
    ids = ", ".join(s["run_id"] for s in found[:5]) + (", …" if len(found) > 5 else "")
    raise UsageError(
        f"{plural(len(found), 'run')} match {run!r} under {log_dir}: {ids}; give more of the run id"
    )


def run_status(
    log_dir: Path, run: str | None = None, only: tuple[str, str] | None = None
) -> tuple[Published, list[str]]:
    """(the published states, lines describing them): every run in progress (of the
    module set `only`, (key, directories as shown), when given), or the one RUN names
    (a run id or a unique prefix), in progress or not."""
    if run is not None:
        state = run_state(log_dir, run)
        alive = state.get("status") == "running" and _alive(state)
        picked = Published([state] if alive else [], state)
        return picked, _in_progress(state, many=False) if alive else _ended(state, picked=True)
    out = run_states(log_dir, only[0] if only else None)
    running = out.running
    if out.last is None:
        of = f" of {only[1]}" if only else ""
        return out, [f"no run{of} has published its state under {log_dir} (no run yet?)"]
    if not running:
        return out, _ended(out.last)
    lines: list[str] = []
    if len(running) > 1:
        lines.append(
            f"{plural(len(running), 'run')} in progress under {log_dir} "
            "(`corral status RUN` shows one):"
        )
    for state in running:
        if lines:
            lines.append("")
        lines += _in_progress(state, many=len(running) > 1)
    if len(running) > 1:  # one host: said once, as the newest run read it
        lines += ["", *_host(running[0])]
    return out, lines


def _ended(state: dict, picked: bool = False) -> list[str]:
    run = state["run_id"]
    if state.get("status") == "running":  # its corral is gone (see run_states)
        return [
            f"run {run} (PID {state['pid']}) is no longer running: corral was killed "
            "before it finished; `corral history` shows what it recorded"
        ]
    counts = ", ".join(f"{n} {s}" for s, n in state.get("counts", {}).items())
    written = epoch(state.get("written"))
    ended = "?" if written is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(written))
    what = f"run {run} ended" if picked else f"no run in progress; the last, {run}, ended"
    return [
        f"{what} {ended}: {state['status']} "
        f"({plural(state['total'], 'module')}: {counts or 'none'})"
    ]


def _in_progress(state: dict, many: bool) -> list[str]:
    now = time.time()
    counts = ", ".join(f"{n} {s}" for s, n in state.get("counts", {}).items())
    elapsed = now - (epoch(state.get("started")) or now)
    eta = state.get("eta_s")
    if eta is not None:
        eta = max(0.0, eta - (now - (epoch(state.get("written")) or now)))
    unknown = f" (+{state['unknown']} without history)" if state.get("unknown") else ""
    if eta is None:  # as the live line says it
        unknown = " (no history yet)"
    progress = (
        f"running for {clock(elapsed)}: [{state['done']}/{state['total']}] done"
        f"{', ' + counts if counts else ''}; ETA {'unknown' if eta is None else clock(eta)}"
        f"{unknown}"
    )
    if many:  # the modules directories tell the runs apart: a line of their own
        where = f" of {state['modules']}" if state.get("modules") else ""
        lines = [f"run {state['run_id']}{where} (PID {state['pid']})", progress]
    else:
        lines = [f"run {state['run_id']} (PID {state['pid']}), {progress}"]
    width = max([len(m["name"]) for m in state["running"] + state["waiting"]] + [4])
    if state["running"]:
        lines.append("running:")
        for m in state["running"]:
            note = f"  (attempt {m['attempt']})" if m["attempt"] > 1 else ""
            since = epoch(m.get("start"))
            took = m.get("elapsed_s") if since is None else now - since
            lines.append(f"  {m['name']:<{width}}  {clock(took)}{note}")
    if state["waiting"]:
        lines.append("waiting:")
        for m in state["waiting"]:
            lines.append(f"  {m['name']:<{width}}  {m['on']}")
    if not many:
        lines += _host(state)
    return lines


def _host(state: dict) -> list[str]:
    """The host's load and memory as the run last read them (one line, or none)."""
    host = state.get("host") or {}
    if host.get("load1") is None:
        return []
    mem = host.get("mem_available")
    free = f", {mem / 2**30:.1f} GiB memory available" if mem else ""
    return [f"host: load {host['load1']:.2f}, {host.get('runnable')} runnable{free}"]


def why(store: Store, module: str, run_id: str | None = None) -> list[str]:
    """How MODULE's last run (or RUN) went: when it became ready and what released it
    (the release chain, as the report's critical path follows it), how long it then
    waited and for what, how it ended. Raises UsageError without one."""
    rows = store.attempts(run_id=run_id, module=module, limit=200)
    if not rows:
        if run_id:
            raise UsageError(f"no records of module {module!r} in run {run_id}")
        raise UsageError(
            f"no records of module {module!r}: it has not run yet (a run in progress "
            "records it when it starts or is skipped; `corral status` shows what waits)"
        )
    run_id = rows[0]["run_id"]
    attempts = sorted((r for r in rows if r["run_id"] == run_id), key=lambda r: r["attempt"])
    first, last = attempts[0], attempts[-1]
    if first["attempt"] == 0:  # a skip row: it never started
        return [
            f"{module} in run {run_id}: {last['status']}",
            f"  never started: {first['reason'] or 'skipped'}",
        ]
    row = store.run(run_id) or {"run_id": run_id}
    begin = epoch(row.get("started"))

    def rel(t: float | None) -> str:
        return "?" if t is None or begin is None else f"+{t - begin:.2f}s"

    tries = plural(len(attempts), "attempt")
    lines = [f"{module} in run {run_id}: {last['status']}, {tries}"]
    start = epoch(first["start"])
    lines.append(f"  started {rel(start)} after the run began")
    run = analysis.load_run(store, row)
    m = analysis.timeline(run, module)
    waits_on = sorted(run.edges.get(module, ()))
    chain = analysis.release_chain(run, module) if m.ran else [module]
    if not waits_on:
        lines.append("  waits on no other module: ready when the run began")
    elif not m.ran:
        lines.append(
            f"  waits for {', '.join(waits_on)}; what released it is known once an attempt "
            "of it has ended"
        )
    elif len(chain) > 1:
        released = run.modules[chain[-2]]
        # the analysis counts from the run's first start: place it by this one's start
        ready = None if start is None else start - (m.start - m.ready)
        lines.append(
            f"  waited for {', '.join(waits_on)} until {rel(ready)}: released by "
            f"{released.name} ({released.status} at {rel(ready)})"
        )
        lines.append(f"  chain that released it: {' -> '.join(chain)}")
    else:
        lines.append(
            f"  waited for {', '.join(waits_on)}, none of which had ended: ready when the run began"
        )
    if m.ran:
        waits = m.waits
        gate = f" ({first['throttle_reason']})" if first.get("throttle_reason") else ""
        held = f" ({first['lock_reason']})" if first.get("lock_reason") else ""
        slot = ""  # the gate's -j refusals count as waiting for a slot, as in the report
        if first.get("throttle_kind") in analysis.SLOT_KINDS:
            gate, slot = slot, gate
        lines.append(
            f"  once ready, waited {waits.jobs + waits.throttle + waits.locks:.2f}s: "
            f"throttle {waits.throttle:.2f}s{gate}, locks {waits.locks:.2f}s{held}, "
            f"a free slot or the loop {waits.jobs:.2f}s{slot}"
        )
        for a in attempts[1:]:  # a retry waits for its locks again
            if a.get("lock_reason"):
                lines.append(
                    f"  attempt {a['attempt']} waited {a.get('lock_wait_s') or 0.0:.2f}s for "
                    f"{a['lock_reason']}"
                )
    ran = sum(a["duration_s"] or 0.0 for a in attempts)
    if last["status"] == "running":  # its run goes on: no end, no duration yet
        since = epoch(last["start"])
        now = f"{time.time() - since:.2f}s" if since is not None else "a while"
        lines.append(
            f"  attempt {last['attempt']} has been running for {now} "
            "(`corral status` shows the run live)"
        )
        return lines
    code = f", exit {last['exit_code']}" if last["exit_code"] is not None else ""
    lines.append(f"  ran {ran:.2f}s in all{code}; ended {rel(epoch(last['end']))}")
    if last["reason"]:
        lines.append(f"  {last['reason']}")
    return lines


def log_paths(store: Store, module: str, run: str | None) -> tuple[str, list[dict]]:
    """(run id, attempt rows with a log) of MODULE's newest run, or RUN (an id or a
    unique prefix). Raises UsageError naming what is missing."""
    run_id = None
    if run:
        matches = store.run_ids(run)
        if len(matches) != 1:
            what = "no run" if not matches else plural(len(matches), "run")
            raise UsageError(f"{what} matching {run!r} (see `corral history`)")
        run_id = matches[0]
    rows = store.attempts(run_id=run_id, module=module, limit=200)
    rows = [r for r in rows if r["attempt"] >= 1]
    if not rows:
        where = f" in run {run_id}" if run_id else ""
        raise UsageError(f"no attempt of module {module!r}{where} is recorded")
    run_id = rows[0]["run_id"]
    mine = sorted((r for r in rows if r["run_id"] == run_id), key=lambda r: r["attempt"])
    return run_id, mine
