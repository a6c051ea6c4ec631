"""Answers to "what is it doing?" and "why did that take so long?": `corral status` (a
run in progress, from its published state file), `corral why MODULE` (its last run, from
the records) and `corral log MODULE [RUN]` (which log files to print).

Plain values in, lines of text out; the CLI prints them.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from corral.errors import UsageError
from corral.progress import STATE_FILE, clock_text, read_state
from corral.store import Store


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(log_dir: Path) -> tuple[dict | None, list[str]]:
    """(the published state of the newest run, lines describing it)."""
    state = read_state(str(log_dir / "latest" / STATE_FILE))
    if state is None:
        return None, [f"no run has published its state under {log_dir} (no run yet?)"]
    run = state["run_id"]
    counts = ", ".join(f"{n} {s}" for s, n in state.get("counts", {}).items())
    if state["status"] != "running":
        ended = dt.datetime.fromtimestamp(state["written"], dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return state, [
            f"no run in progress; the last, {run}, ended {ended}: {state['status']} "
            f"({state['total']} modules: {counts or 'none'})"
        ]
    if not _alive(state["pid"]):
        return state, [
            f"run {run} (PID {state['pid']}) is no longer running: corral was killed "
            "before it finished; `corral history` shows what it recorded"
        ]
    now = time.time()
    elapsed = now - state["started"]
    eta = state.get("eta_s")
    if eta is not None:
        eta = max(0.0, eta - (now - state["written"]))
    unknown = f" (+{state['unknown']} without history)" if state.get("unknown") else ""
    lines = [
        f"run {run} (PID {state['pid']}), running for {clock_text(elapsed)}: "
        f"[{state['done']}/{state['total']}] done{', ' + counts if counts else ''}; "
        f"ETA {clock_text(eta)}{unknown}"
    ]
    width = max([len(m["name"]) for m in state["running"] + state["waiting"]] + [4])
    if state["running"]:
        lines.append("running:")
        for m in state["running"]:
            note = f"  (attempt {m['attempt']})" if m["attempt"] > 1 else ""
            lines.append(f"  {m['name']:<{width}}  {clock_text(now - m['start'])}{note}")
    if state["waiting"]:
        lines.append("waiting:")
        for m in state["waiting"]:
            lines.append(f"  {m['name']:<{width}}  {m['on']}")
    host = state.get("host") or {}
    if host.get("load1") is not None:
        mem = host.get("mem_available")
        free = f", {mem / 2**30:.1f} GiB memory available" if mem else ""
        lines.append(f"host: load {host['load1']:.2f}, {host.get('runnable')} runnable{free}")
    return state, lines


def _t(iso: str | None) -> float | None:
    return None if not iso else dt.datetime.fromisoformat(iso).timestamp()


def why(store: Store, module: str, run_id: str | None = None) -> list[str]:
    """How MODULE's last run (or RUN) went: when it became ready and what released it,
    how long it then waited and for what, how it ended. Raises UsageError without one."""
    rows = store.attempts(run_id=run_id, module=module, limit=200)
    if not rows:
        where = f" in run {run_id}" if run_id else ""
        raise UsageError(f"no records of module {module!r}{where}")
    run_id = rows[0]["run_id"]
    attempts = sorted((r for r in rows if r["run_id"] == run_id), key=lambda r: r["attempt"])
    run = next((r for r in store.runs(10_000) if r["run_id"] == run_id), None)
    begin = _t(run["started"]) if run else None
    ends: dict[str, tuple[float | None, str]] = {}
    for r in store.attempts(run_id=run_id, limit=1_000_000):
        if r["module"] not in ends or r["attempt"] >= 1:
            ends[r["module"]] = (_t(r["end"]), r["status"])
    deps: dict[str, list[str]] = {}
    for name, dep in store.edges(run_id):
        deps.setdefault(name, []).append(dep)

    def rel(t: float | None) -> str:
        return "?" if t is None or begin is None else f"+{t - begin:.2f}s"

    first, last = attempts[0], attempts[-1]
    if first["attempt"] == 0:  # a skip row: it never started
        return [
            f"{module} in run {run_id}: {last['status']}",
            f"  never started: {first['reason'] or 'skipped'}",
        ]
    tries = f"{len(attempts)} attempt{'s' if len(attempts) > 1 else ''}"
    lines = [f"{module} in run {run_id}: {last['status']}, {tries}"]
    start = _t(first["start"])
    lines.append(f"  started {rel(start)} after the run began")
    mine = deps.get(module, [])
    ready = begin
    if mine:
        released = max(mine, key=lambda d: ends.get(d, (0.0, ""))[0] or 0.0)
        ready = ends.get(released, (None, ""))[0]
        lines.append(
            f"  waited for {', '.join(sorted(mine))} until {rel(ready)}: released by "
            f"{released} ({ends.get(released, (None, '?'))[1]} at {rel(ready)})"
        )
        chain = [module, released]
        while deps.get(chain[-1]) and len(chain) < 50:
            nxt = max(deps[chain[-1]], key=lambda d: ends.get(d, (0.0, ""))[0] or 0.0)
            chain.append(nxt)
        lines.append(f"  chain that released it: {' -> '.join(reversed(chain))}")
    else:
        lines.append("  waits on no other module: ready when the run began")
    gate = sum(a["throttle_wait_s"] or 0.0 for a in attempts)
    lock = sum(a.get("lock_wait_s") or 0.0 for a in attempts)
    if ready is not None and start is not None:
        after = max(0.0, start - ready)
        slot = max(0.0, after - (first["throttle_wait_s"] or 0.0) - (first.get("lock_wait_s") or 0))
        reason = f" ({first['throttle_reason']})" if first.get("throttle_reason") else ""
        lines.append(
            f"  once ready, waited {after:.2f}s: throttle {gate:.2f}s{reason}, "
            f"locks {lock:.2f}s, a free slot or the loop {slot:.2f}s"
        )
    ran = sum(a["duration_s"] or 0.0 for a in attempts)
    code = f", exit {last['exit_code']}" if last["exit_code"] is not None else ""
    lines.append(f"  ran {ran:.2f}s in all{code}; ended {rel(_t(last['end']))}")
    if last["reason"]:
        lines.append(f"  {last['reason']}")
    return lines


def log_paths(store: Store, module: str, run: str | None) -> tuple[str, list[dict]]:
    """(run id, attempt rows with a log) of MODULE's newest run, or RUN (an id or a
    unique prefix). Raises UsageError naming what is missing."""
    run_id = None
    if run:
        matches = [r["run_id"] for r in store.runs(10_000) if r["run_id"].startswith(run)]
        if len(matches) != 1:
            what = "no run" if not matches else f"{len(matches)} runs"
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
