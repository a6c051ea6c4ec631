"""Store rows -> the performance report: Markdown (or one HTML page) and SVG charts.

The report is built once as a list of blocks (headings, paragraphs, tables, images),
then rendered as Markdown with the charts beside it, or as a self-contained HTML page
with the charts inline. Charts are drawn with matplotlib (Agg backend, SVG).
"""

from __future__ import annotations

import datetime as dt
import html
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from corral import safepath
from corral.status import RETRYABLE, Status
from corral.store import Store

STATUS_COLOUR = {
    Status.OK: "#4c9a5a",
    Status.WARNING: "#d4b106",
    Status.FAILED: "#c8423b",
    Status.TIMEOUT: "#e0892b",
    Status.INTERRUPTED: "#9b6fb5",
    Status.SKIPPED: "#9e9e9e",
    Status.RUNNING: "#5b8fd6",
}
REGRESSION = 0.15  # slower than the baseline by more than this share …
REGRESSION_FLOOR_S = 0.05  # … and by more than this, so millisecond noise is not news
HISTORY_RUNS = 20


@dataclass
class Span:
    """One module in one run: first attempt start to last attempt end (epoch seconds)."""

    name: str
    status: str
    start: float | None
    end: float | None
    duration: float
    attempts: int
    cpu: float
    peak_rss: int
    throttle: float
    locks: float
    reason: str | None

    @property
    def ran(self) -> bool:
        return self.start is not None and self.end is not None


@dataclass
class RunFigures:
    run: dict
    spans: dict[str, Span]
    edges: dict[str, list[str]]
    samples: list[dict]
    makespan: float = 0.0
    work: float = 0.0
    critical_path: list[str] = field(default_factory=list)
    critical_s: float = 0.0
    chain: list[str] = field(default_factory=list)  # what actually released what

    @property
    def jobs(self) -> int | None:
        return self.run.get("jobs")

    @property
    def efficiency(self) -> float | None:
        if not self.makespan or not self.jobs:
            return None
        return self.work / (self.makespan * self.jobs)

    @property
    def speedup(self) -> float | None:
        return self.work / self.makespan if self.makespan else None

    @property
    def cache_hit_rate(self) -> float | None:
        hits, misses = self.run.get("cache_hits") or 0, self.run.get("cache_misses") or 0
        return hits / (hits + misses) if hits + misses else None


def _ts(text: str | None) -> float | None:
    return dt.datetime.fromisoformat(text).timestamp() if text else None


def load_run(store: Store, run: dict) -> RunFigures:
    """A run's modules (attempts folded into spans), edges, samples and derived figures."""
    by_module: dict[str, list[dict]] = {}
    for row in sorted(
        store.attempts(run_id=run["run_id"], limit=1_000_000), key=lambda r: r["attempt"]
    ):
        by_module.setdefault(row["module"], []).append(row)
    spans = {}
    for name, rows in by_module.items():
        ran = [r for r in rows if r["attempt"] > 0]
        last = rows[-1]
        starts = [_ts(r["start"]) for r in ran if r["start"]]
        ends = [_ts(r["end"]) for r in ran if r["end"]]
        spans[name] = Span(
            name,
            last["status"],
            min(starts) if starts else None,
            max(ends) if ends else None,
            sum(r["duration_s"] or 0 for r in ran),
            len(ran),
            sum((r["cpu_user_s"] or 0) + (r["cpu_sys_s"] or 0) for r in ran),
            max([r["peak_rss_bytes"] or 0 for r in ran] or [0]),
            sum(r["throttle_wait_s"] or 0 for r in ran),
            sum(r["lock_wait_s"] or 0 for r in ran),
            last["reason"],
        )
    edges: dict[str, list[str]] = {}
    for module, dep in store.edges(run["run_id"]):
        edges.setdefault(module, []).append(dep)
    figures = RunFigures(run, spans, edges, store.samples(run["run_id"]))
    ran = [s for s in spans.values() if s.ran]
    if ran:
        figures.makespan = max(s.end for s in ran) - min(s.start for s in ran)
        figures.work = sum(s.duration for s in ran)
        figures.critical_path, figures.critical_s = critical_path(spans, edges)
        figures.chain = releasing_chain(spans, edges)
    return figures


def critical_path(spans: dict[str, Span], edges: dict[str, list[str]]) -> tuple[list, float]:
    """The longest chain of dependencies by measured duration (what no -j can shorten)."""
    best: dict[str, tuple[float, list[str]]] = {}

    def longest(name: str) -> tuple[float, list[str]]:
        if name not in best:
            here = spans[name].duration if name in spans and spans[name].ran else 0.0
            below = [longest(d) for d in edges.get(name, ()) if d in spans]
            length, path = max(below, default=(0.0, []))
            best[name] = (length + here, [*path, name])
        return best[name]

    total, path = max((longest(n) for n in spans), default=(0.0, []))
    return [n for n in path if spans[n].ran], total


def releasing_chain(spans: dict[str, Span], edges: dict[str, list[str]]) -> list[str]:
    """Backwards from the module that ended last: each step the requirement that ended
    last before it started. The chain the Gantt chart outlines."""
    ran = {n: s for n, s in spans.items() if s.ran}
    if not ran:
        return []
    node = max(ran.values(), key=lambda s: s.end).name
    chain = [node]
    while True:
        deps = [ran[d] for d in edges.get(node, ()) if d in ran and ran[d].end <= ran[node].start]
        if not deps:
            return chain[::-1]
        node = max(deps, key=lambda s: s.end).name
        chain.append(node)


def bottlenecks(f: RunFigures) -> dict:
    """Where the makespan went, and which knob would have helped."""
    out = {"makespan": f.makespan, "critical": f.critical_s, "work": f.work}
    interval = _sample_interval(f.samples)
    out["throttle"] = sum(s.throttle for s in f.spans.values())
    out["gate_held"] = sum(1 for s in f.samples if s.get("gate")) * interval
    out["locks"] = sum(s.locks for s in f.spans.values())
    jobs = f.jobs
    full = 0.0
    if jobs and f.samples:
        full = sum(1 for s in f.samples if (s.get("running") or 0) >= jobs) * interval
    out["jobs_full"] = full
    if not f.makespan:
        out["verdict"] = "nothing ran"
        return out
    share = {
        "critical path": f.critical_s / f.makespan,
        "--jobs": max(full / f.makespan, (f.efficiency or 0)),
        "throttle": out["gate_held"] / f.makespan,
        "locks": out["locks"] / f.makespan,
    }
    out["share"] = share
    knob, value = max(share.items(), key=lambda kv: kv[1])
    advice = {
        "critical path": "more jobs would not help; shorten the modules on the critical path",
        "--jobs": "slots were full: a higher -j would help if the host has room",
        "throttle": "the host was busy: the gate held modules back (see the load chart); "
        "run at a quieter time or raise --max-load",
        "locks": "modules queued for shared locks: a larger pool (config pools:) would help",
    }[knob]
    out["verdict"] = f"{knob} ({value:.0%} of the makespan): {advice}"
    return out


def _sample_interval(samples: list[dict]) -> float:
    if len(samples) < 2:
        return 0.0
    gaps = [b["t"] - a["t"] for a, b in zip(samples, samples[1:], strict=False)]
    return statistics.median(gaps)


# charts ------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 9,
            "svg.fonttype": "none",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def gantt_chart(f: RunFigures, path: Path | BinaryIO) -> None:
    """One bar per module; grey: ready but waiting; outlined: the releasing chain."""
    plt = _pyplot()
    ran = sorted((s for s in f.spans.values() if s.ran), key=lambda s: (s.start, s.name))
    skipped = [s for s in f.spans.values() if not s.ran]
    t0 = min(s.start for s in ran)
    height = max(2.5, 0.28 * (len(ran) + len(skipped)) + 1.2)
    fig, ax = plt.subplots(figsize=(10, height))
    chain = set(f.chain)
    labels = []
    visible = max(f.makespan, 0.01) * 0.004  # a 5 ms module still shows as a sliver
    for y, s in enumerate(ran):
        deps = [f.spans[d] for d in f.edges.get(s.name, ()) if d in f.spans and f.spans[d].ran]
        ready = max([d.end for d in deps] + [t0])
        if s.start - ready > 0.001:
            ax.barh(y, s.start - ready, left=ready - t0, color="#dddddd", height=0.6)
        ax.barh(
            y,
            max(s.end - s.start, visible),
            left=s.start - t0,
            height=0.6,
            color=STATUS_COLOUR.get(s.status, "#5b8fd6"),
            edgecolor="black" if s.name in chain else "none",
            linewidth=1.6 if s.name in chain else 0,
        )
        labels.append(s.name)
    for y, s in enumerate(skipped, start=len(ran)):
        ax.text(0, y, f"  skipped: {s.reason or ''}", va="center", color="#777777", fontsize=8)
        labels.append(s.name)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first module started")
    jobs = f.jobs if f.jobs is not None else "auto"
    ax.set_title(
        f"run {f.run['run_id']}: makespan {f.makespan:.2f} s, work {f.work:.2f} s, "
        f"-j {jobs}\noutlined: the chain of modules that set the makespan",
        loc="left",
    )
    from matplotlib.patches import Patch

    used = sorted({s.status for s in ran})
    handles = [Patch(color=STATUS_COLOUR.get(st, "#5b8fd6"), label=st) for st in used]
    handles.append(Patch(color="#dddddd", label="ready, waiting (slot, lock, throttle)"))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.12 * 4 / height),
        ncol=len(handles),
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)


def load_chart(f: RunFigures, path: Path | BinaryIO) -> None:
    """Running modules and host load over time, memory available on a second axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ran = [s for s in f.spans.values() if s.ran]
    t0 = min(s.start for s in ran)
    points = sorted([(s.start - t0, 1) for s in ran] + [(s.end - t0, -1) for s in ran])
    xs, ys, now = [0.0], [0], 0
    for t, step in points:
        xs.append(t)
        ys.append(now)
        now += step
        xs.append(t)
        ys.append(now)
    ax.plot(xs, ys, color="#5b8fd6", label="modules running")
    if f.samples:
        ts = [s["t"] - t0 for s in f.samples]
        ax.plot(
            ts,
            [s.get("runnable_avg") or s["runnable"] for s in f.samples],
            color="#c8423b",
            label="runnable tasks (1 s average)",
        )
        ax.plot(
            ts,
            [s["load1"] for s in f.samples],
            color="#e0892b",
            linestyle=":",
            label="load average (1 min)",
        )
        held = [t for t, s in zip(ts, f.samples, strict=True) if s.get("gate")]
        if held:
            ax.scatter(
                held,
                [0] * len(held),
                marker="|",
                color="#9b6fb5",
                label="gate holding modules back",
            )
        mem = ax.twinx()
        mem.plot(
            ts,
            [s["mem_available"] / 2**30 for s in f.samples],
            color="#4c9a5a",
            alpha=0.6,
            label="memory available (GiB)",
        )
        mem.set_ylabel("memory available, GiB")
        total = max((s.get("mem_available") or 0) for s in f.samples) / 2**30
        mem.set_ylim(0, total * 1.05 or 1)
        mem.spines["top"].set_visible(False)
        mem.legend(loc="lower right", fontsize=8, frameon=False)
    ax.set_xlabel("seconds since the first module started")
    ax.set_ylabel("modules / tasks")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title("Parallelism and host load during the run")
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)


def history_chart(history: list[RunFigures], modules: list[str], path: Path | BinaryIO) -> None:
    """Duration and peak memory of the slowest modules across runs (oldest left)."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    runs = list(reversed(history))
    xs = range(len(runs))
    for name in modules:
        durations = [
            r.spans[name].duration if name in r.spans and r.spans[name].ran else None for r in runs
        ]
        peaks = [
            r.spans[name].peak_rss / 2**20 if name in r.spans and r.spans[name].ran else None
            for r in runs
        ]
        top.plot(xs, durations, marker="o", markersize=3, label=name)
        bottom.plot(xs, peaks, marker="o", markersize=3, label=name)
    top.set_ylabel("duration, s")
    bottom.set_ylabel("peak RSS, MiB")
    bottom.set_xticks(
        list(xs), [r.run["run_id"][4:15] for r in runs], rotation=45, ha="right", fontsize=7
    )
    top.legend(fontsize=7, frameon=False, ncol=4)
    top.set_title("Slowest modules across runs (oldest left)")
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)


# the document --------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _mib(value: int | float | None) -> str:
    return "-" if not value else f"{value / 2**20:.1f}"


def build(store: Store, runs: int = HISTORY_RUNS) -> tuple[list[tuple], dict]:
    """The report's blocks and what the charts need; raises LookupError with no runs."""
    rows = [r for r in store.runs(runs) if r["status"] != Status.RUNNING]
    if not rows:
        raise LookupError("no finished runs recorded yet: run `corral run` first")
    history = [load_run(store, r) for r in rows]
    last = next((f for f in history if f.makespan), history[0])
    blocks: list[tuple] = []
    started = (last.run["started"] or "")[:19].replace("T", " ")
    blocks.append(("h1", "corral performance report"))
    blocks.append(
        (
            "p",
            f"Generated {dt.datetime.now().isoformat(timespec='seconds')} from "
            f"{len(history)} recorded runs. Last run: `{last.run['run_id']}` "
            f"({started} UTC, {last.run['status']}, "
            f"{len(last.spans)} modules).",
        )
    )
    b = bottlenecks(last)
    blocks.append(("h2", "Last run at a glance"))
    blocks.append(
        (
            "table",
            ["figure", "value"],
            [
                ["makespan (first start to last end)", f"{last.makespan:.2f} s"],
                ["work (sum of module time)", f"{last.work:.2f} s"],
                ["speedup over running them one by one", _s(last.speedup) + "×"],
                ["parallel efficiency (work / (makespan × jobs))", _pct(last.efficiency)],
                ["critical path", f"{last.critical_s:.2f} s: " + " → ".join(last.critical_path)],
                [
                    "time the throttle held modules back",
                    f"{b['gate_held']:.2f} s (module waits {b['throttle']:.2f} s)",
                ],
                ["time modules queued for locks", f"{b['locks']:.2f} s"],
                ["header cache hit rate", _pct(last.cache_hit_rate)],
                ["peak host load (runnable, 1 s average)", _s(last.run.get("peak_load"))],
                [
                    "corral's own CPU, of which sampling the host",
                    f"{last.run.get('supervisor_cpu_s') or 0:.3f} s, "
                    f"{last.run.get('sampler_cpu_s') or 0:.3f} s",
                ],
            ],
        )
    )
    blocks.append(("p", f"**Bottleneck:** {b['verdict']}."))
    blocks.append(("img", "gantt.svg", "Gantt chart of the last run"))
    blocks.append(("img", "load.svg", "Running modules and host load over the last run"))

    blocks.append(("h2", "Bottlenecks per run"))
    table = []
    for f in history:
        if not f.makespan:
            continue
        bb = bottlenecks(f)
        share = bb["share"]
        table.append(
            [
                f.run["run_id"],
                f"{f.makespan:.2f}",
                _pct(share["critical path"]),
                _pct(share["--jobs"]),
                _pct(share["throttle"]),
                _pct(share["locks"]),
                bb["verdict"].split(":")[0],
            ]
        )
    blocks.append(
        (
            "table",
            ["run", "makespan s", "critical path", "jobs full", "throttle", "locks", "bound by"],
            table,
        )
    )
    blocks.append(
        (
            "p",
            "Each share is a fraction of the makespan: the critical path "
            "(longest dependency chain by measured durations), time with every "
            "slot busy (or work / (makespan × jobs) if higher), time the throttle "
            "held a ready module back, and module time spent queued for locks. "
            "The largest names the knob that would have helped.",
        )
    )

    blocks.append(("h2", "Runs"))
    blocks.append(
        (
            "table",
            [
                "run",
                "started (UTC)",
                "status",
                "modules",
                "makespan s",
                "work s",
                "efficiency",
                "speedup",
                "cache hits",
                "throttle s",
                "peak load",
            ],
            [
                [
                    f.run["run_id"],
                    (f.run["started"] or "")[:19].replace("T", " "),
                    f.run["status"],
                    str(len(f.spans)),
                    _s(f.makespan),
                    _s(f.work),
                    _pct(f.efficiency),
                    _s(f.speedup),
                    _pct(f.cache_hit_rate),
                    _s(f.run.get("throttle_s")),
                    _s(f.run.get("peak_load")),
                ]
                for f in history
            ],
        )
    )

    per_module = module_table(history)
    blocks.append(("h2", "Modules"))
    blocks.append(
        (
            "table",
            [
                "module",
                "runs",
                "median s",
                "last s",
                "peak RSS MiB",
                "median CPU s",
                "last attempts",
                "failure rate",
            ],
            [
                [
                    m["name"],
                    str(m["runs"]),
                    _s(m["median"]),
                    _s(m["last"]),
                    _mib(m["peak"]),
                    _s(m["cpu"]),
                    str(m["attempts"]),
                    _pct(m["failures"]),
                ]
                for m in per_module
            ],
        )
    )
    slowest = sorted(per_module, key=lambda m: -(m["median"] or 0))[:10]
    blocks.append(("h2", "Slowest modules"))
    blocks.append(
        (
            "table",
            ["module", "median s", "share of last run's work"],
            [
                [
                    m["name"],
                    _s(m["median"]),
                    _pct((m["last"] or 0) / last.work if last.work else None),
                ]
                for m in slowest
            ],
        )
    )
    blocks.append(("h2", "Critical path of the last run"))
    blocks.append(
        (
            "table",
            ["step", "module", "duration s", "status"],
            [
                [str(i + 1), n, _s(last.spans[n].duration), last.spans[n].status]
                for i, n in enumerate(last.critical_path)
            ],
        )
    )

    regressions = find_regressions(history)
    blocks.append(("h2", "Regressions"))
    if regressions:
        blocks.append(
            (
                "table",
                ["module", "baseline s (median of earlier runs)", "last s", "slower by"],
                [
                    [r["name"], _s(r["baseline"]), _s(r["last"]), f"+{r['slower']:.0%}"]
                    for r in regressions
                ],
            )
        )
    else:
        blocks.append(
            (
                "p",
                "No module is more than 15 % (and 50 ms) slower than the median "
                "of its earlier recorded runs.",
            )
        )
    blocks.append(("img", "history.svg", "Duration and peak memory across runs"))
    charts = {"last": last, "history": history, "slowest": [m["name"] for m in slowest[:8]]}
    return blocks, charts


def module_table(history: list[RunFigures]) -> list[dict]:
    names = sorted({n for f in history for n in f.spans})
    out = []
    for name in names:
        spans = [f.spans[name] for f in history if name in f.spans]
        ran = [s for s in spans if s.ran]
        durations = [s.duration for s in ran]
        failed = sum(s.status in RETRYABLE for s in spans)
        out.append(
            {
                "name": name,
                "runs": len(spans),
                "median": statistics.median(durations) if durations else None,
                "last": ran[0].duration if ran else None,
                "peak": max((s.peak_rss for s in ran), default=0),
                "cpu": statistics.median([s.cpu for s in ran]) if ran else None,
                "attempts": spans[0].attempts,
                "failures": failed / len(spans),
            }
        )
    return out


def find_regressions(history: list[RunFigures]) -> list[dict]:
    """Modules whose last successful duration exceeds the median of their earlier runs
    by more than REGRESSION (and REGRESSION_FLOOR_S)."""
    out = []
    names = {n for f in history[:1] for n in f.spans}
    for name in sorted(names):
        oks = [
            f.spans[name].duration
            for f in history
            if name in f.spans and f.spans[name].status == Status.OK
        ]
        if len(oks) < 2:
            continue
        last, baseline = oks[0], statistics.median(oks[1:6])
        if (
            baseline > 0
            and last > baseline * (1 + REGRESSION)
            and last - baseline > REGRESSION_FLOOR_S
        ):
            out.append(
                {"name": name, "baseline": baseline, "last": last, "slower": last / baseline - 1}
            )
    return out


def write_report(store: Store, out: Path, fmt: str = "md") -> list[Path]:
    """Write the report and its charts into `out`; returns the files written. As root,
    `out` and each file are reached without following anyone else's link."""
    blocks, charts = build(store)
    dir_fd = safepath.open_dir(out, 0o755)
    try:
        return _write_into(dir_fd, out, blocks, charts, fmt)
    finally:
        os.close(dir_fd)


def _write_into(dir_fd: int, out: Path, blocks: list, charts: dict, fmt: str) -> list[Path]:
    def create(name: str):
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        return os.fdopen(safepath.open_in(dir_fd, name, flags, 0o644, out / name), "wb")

    written = []
    last = charts["last"]
    if last.makespan:
        with create("gantt.svg") as f:
            gantt_chart(last, f)
        with create("load.svg") as f:
            load_chart(last, f)
        written += [out / "gantt.svg", out / "load.svg"]
    with create("history.svg") as f:
        history_chart(charts["history"], charts["slowest"], f)
    written.append(out / "history.svg")
    present = {p.name for p in written}
    blocks = [b for b in blocks if b[0] != "img" or b[1] in present]
    if fmt == "html":
        with create("index.html") as f:
            f.write(render_html(blocks, out).encode())
        for name in os.listdir(dir_fd):  # the charts are inside the page
            if name.endswith(".svg"):
                os.unlink(name, dir_fd=dir_fd)
        return [out / "index.html"]
    with create("README.md") as f:
        f.write(render_markdown(blocks).encode())
    return [out / "README.md", *written]


def render_markdown(blocks: list[tuple]) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1]})", ""]
        elif kind == "table":
            head, rows = block[1], block[2]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "|".join("---" for _ in head) + "|")
            for row in rows:
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
            lines.append("")
    return "\n".join(lines)


def render_html(blocks: list[tuple], out: Path) -> str:
    body: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            text = html.escape(block[1])
            text = text.replace("**", "")
            body.append(f"<p>{_code(text)}</p>")
        elif kind == "img":
            svg = (out / block[1]).read_text()
            svg = svg[svg.index("<svg") :]
            body.append(f"<figure>{svg}<figcaption>{html.escape(block[2])}</figcaption></figure>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in block[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:left;font-size:13px}th{background:#f3f3f3}"
        "figure{margin:1em 0}svg{max-width:100%;height:auto}code{background:#f3f3f3}"
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        "<title>corral performance report</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _code(text: str) -> str:
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
