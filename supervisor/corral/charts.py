"""The report's charts (matplotlib, Agg backend, SVG): drawn from analysis figures only.

Past MAX_BARS modules the Gantt chart shows the critical path and the longest modules
(the title says how many of how many) and the load chart is binned: a chart of 20,000
bars is neither readable nor cheap, and the tables and report.json keep every module.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from corral.analysis import Run
from corral.status import Status
from corral.units import plural

STATUS_COLOUR = {
    Status.OK: "#4c9a5a",
    Status.WARNING: "#d4b106",
    Status.FAILED: "#c8423b",
    Status.TIMEOUT: "#e0892b",
    Status.INTERRUPTED: "#9b6fb5",
    Status.SKIPPED: "#9e9e9e",
    Status.RUNNING: "#5b8fd6",
}
WAITING_COLOUR = "#d9d9d9"
BACKOFF_COLOUR = "#f3d7a6"
MAX_BARS = 100  # Gantt rows past which it shows a selection
MAX_POINTS = 2000  # load-chart points past which it is binned (the maximum per bin)


def _format(path: Path | BinaryIO) -> str:
    """SVG, unless a file name says otherwise (a .png to look at while developing)."""
    return path.suffix[1:] if isinstance(path, Path) and path.suffix else "svg"


# What loading numpy and matplotlib takes beyond what corral has mapped by then: numpy's
# OpenBLAS maps its buffers as it loads and, when it cannot, ends the process itself
# (exit 1, "OpenBLAS error: Memory allocation still failed"), which nothing can catch.
CHARTS_ADDRESS_SPACE = 168 << 20


def _need_address_space() -> None:
    """Raise ResourceError when the address-space limit (`ulimit -v`) leaves too little
    room to load the plotting libraries, instead of letting OpenBLAS end the process."""
    import resource
    import sys

    from corral.errors import ResourceError, exhausted
    from corral.procfs import status_kb

    if "matplotlib.pyplot" in sys.modules:  # loaded by an earlier chart
        return
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return
    used = status_kb("self", b"VmSize") or 0
    if limit - used < CHARTS_ADDRESS_SPACE:
        raise ResourceError(f"{exhausted(MemoryError())}: too little is left to draw the charts")


def _private_matplotlib_dirs() -> None:
    """As root, matplotlib's config and cache directories ($MPLCONFIGDIR, else under
    $XDG_CONFIG_HOME, $XDG_CACHE_HOME or HOME) must be places only root can change: it
    reads its matplotlibrc there and writes its font cache there by name, following
    links. Under a HOME sudo kept (another user's), `corral docs` wrote its font cache
    through their link over a root-only file. Where they are not safe, matplotlib gets
    a directory of its own for this command (made with mkdtemp, removed at exit)."""
    import atexit
    import os
    import shutil
    import tempfile

    from corral import safepath

    if not safepath.strict():
        return
    env, home = os.environ, os.path.expanduser("~")
    places = (
        [env["MPLCONFIGDIR"]]
        if env.get("MPLCONFIGDIR")
        else [
            os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "matplotlib"),
            os.path.join(env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "matplotlib"),
        ]
    )
    try:
        for place in places:
            safepath.probe_dirs(place)
        return
    except (OSError, safepath.UnsafePath):
        pass
    private = tempfile.mkdtemp(prefix="corral-matplotlib-")
    atexit.register(shutil.rmtree, private, True)
    env["MPLCONFIGDIR"] = private


def _pyplot():
    import os

    # One BLAS thread: the charts do no linear algebra, and each OpenBLAS thread takes
    # its own buffers (under a low `ulimit -v` OpenBLAS exits the process when it cannot).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _need_address_space()
    _private_matplotlib_dirs()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 9,
            "svg.fonttype": "none",
            "svg.hashsalt": "corral",  # the same run draws the same file
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def gantt_rows(run: Run, limit: int = MAX_BARS) -> list[str]:
    """The modules the Gantt chart draws, in start order: all of them up to `limit`,
    else the critical path and the modules with the longest first start to last end."""
    ran = [m for m in run.modules.values() if m.attempts]
    if len(ran) > limit:
        keep = set(run.critical_path)
        for m in sorted(ran, key=lambda m: m.start - m.end):
            if len(keep) >= limit:
                break
            keep.add(m.name)
        ran = [m for m in ran if m.name in keep]
    return [m.name for m in sorted(ran, key=lambda m: (m.start, m.name))]


def gantt_chart(run: Run, path: Path | BinaryIO, limit: int = MAX_BARS) -> None:
    """One row per module: waiting grey, retry backoff (also waiting) sand, each attempt
    in its status colour; the critical path outlined. SVG ids name what each bar is
    (critical:NAME, backoff:NAME) so a test can read the chart as a person does."""
    from corral.analysis import timeline

    plt = _pyplot()
    from matplotlib.patches import Patch

    rows = gantt_rows(run, limit)
    ran_count = sum(bool(m.attempts) for m in run.modules.values())
    skipped = [m for m in run.modules.values() if not m.attempts]
    shown_skipped = skipped if len(rows) + len(skipped) <= limit else []
    height = max(2.8, 0.26 * (len(rows) + len(shown_skipped)) + 1.6)
    fig, ax = plt.subplots(figsize=(10, height))
    critical = set(run.critical_path)
    # perf: bars of one look are drawn in one call (a few hundred calls cost seconds;
    # docs/architecture.md).
    groups: dict[tuple[str, bool], list[tuple[int, float, float, str | None]]] = {}
    visible = run.makespan * 0.003  # a 1 ms attempt still shows
    for y, name in enumerate(rows):
        on_path = name in critical
        for seg in timeline(run, name).segments:
            look = seg.status if seg.kind == "running" else seg.kind
            gid = None
            if seg.kind == "backoff":
                gid = f"backoff:{name}"
            elif seg.kind == "running" and on_path:
                gid = f"critical:{name}"
            width = max(seg.end - seg.start, visible)
            groups.setdefault((look, on_path and seg.kind == "running"), []).append(
                (y, seg.start, width, gid)
            )
    for (look, outlined), bars in groups.items():
        colour = {"waiting": WAITING_COLOUR, "backoff": BACKOFF_COLOUR}.get(
            look, STATUS_COLOUR.get(look, STATUS_COLOUR[Status.RUNNING])
        )
        drawn = ax.barh(
            [b[0] for b in bars],
            [b[2] for b in bars],
            left=[b[1] for b in bars],
            height=0.6,
            color=colour,
            edgecolor="black" if outlined else "none",
            linewidth=1.4 if outlined else 0,
        )
        for patch, bar in zip(drawn.patches, bars, strict=True):
            if bar[3]:
                patch.set_gid(bar[3])
    for y, m in enumerate(shown_skipped, start=len(rows)):
        ax.text(0, y, f"  skipped: {m.reason or ''}", va="center", color="#666666", fontsize=8)
    labels = rows + [m.name for m in shown_skipped]
    ax.set_yticks(range(len(labels)), labels, fontsize=8 if len(labels) < 60 else 6)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(0, max(run.makespan, 0.01) * 1.01)
    ax.set_xlabel(f"seconds since the first module started ({run.clock} clock)")
    jobs = run.jobs if run.jobs is not None else "auto"
    title = (
        f"run {run.run_id}: makespan {run.makespan:.2f} s, work {run.work:.2f} s, -j {jobs}\n"
        "outlined: the critical path (the chain of modules that set the makespan)"
    )
    hidden = ran_count - len(rows) + len(skipped) - len(shown_skipped)
    if hidden:
        title += (
            f"\nshowing {len(rows)} of {plural(ran_count + len(skipped), 'module')}: the "
            "critical path and the longest; every module is in the tables and report.json"
        )
    ax.set_title(title, loc="left")
    statuses = sorted({look for look, _ in groups if look not in ("waiting", "backoff")})
    handles = [Patch(color=STATUS_COLOUR.get(s, "#5b8fd6"), label=s) for s in statuses]
    handles.append(Patch(color=WAITING_COLOUR, label="ready, waiting (slot, lock, throttle)"))
    if any(look == "backoff" for look, _ in groups):
        handles.append(Patch(color=BACKOFF_COLOUR, label="waiting: retry backoff"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    # perf: margins from the text's size rather than tight_layout, which lays out every
    # tick label once more (a second of a 20,000-module report; docs/architecture.md).
    longest = max((len(label) for label in labels), default=4)
    fig.subplots_adjust(
        left=min(0.45, (0.25 + 0.062 * longest) / 10),
        right=0.98,
        top=1 - (0.25 + 0.17 * title.count("\n")) / height,
        bottom=0.85 / height,
    )
    fig.savefig(path, format=_format(path))
    plt.close(fig)


def _binned(xs: list[float], ys: list[int], end: float) -> tuple[list[float], list[int]]:
    """At most MAX_POINTS steps: the highest value within each bin (peaks stay true)."""
    if len(xs) <= MAX_POINTS:
        return xs, ys
    bins = MAX_POINTS // 2
    width = max(end, 1e-9) / bins
    top = [0] * (bins + 1)
    for x, y in zip(xs, ys, strict=True):
        i = min(int(x / width), bins)
        top[i] = max(top[i], y)
    out_x, out_y = [], []
    for i, y in enumerate(top):
        out_x += [i * width, (i + 1) * width]
        out_y += [y, y]
    return out_x, out_y


def load_chart(run: Run, path: Path | BinaryIO) -> None:
    """Attempts running (not waiting, not in backoff) and host load over time, memory
    available on a second axis."""
    from corral.analysis import running_over_time

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.4))
    xs, ys = _binned(*running_over_time(run), run.makespan)
    ax.plot(xs, ys, color="#5b8fd6", label="modules running")
    if run.jobs:
        ax.axhline(run.jobs, color="#5b8fd6", linestyle="--", linewidth=0.8, label=f"-j {run.jobs}")
    samples = run.samples
    if samples:
        ts = [s.at for s in samples]
        ax.plot(
            ts,
            [s.runnable for s in samples],
            color="#c8423b",
            label="runnable tasks (1 s average)",
        )
        ax.plot(
            ts,
            [s.load1 for s in samples],
            color="#e0892b",
            linestyle=":",
            label="load average (1 min)",
        )
        held = [s.at for s in samples if s.gate]
        if held:
            ax.scatter(
                held, [0] * len(held), marker="|", color="#9b6fb5", label="gate holding back"
            )
        mem = ax.twinx()
        mem.plot(
            ts,
            [s.mem_available / 2**30 for s in samples],
            color="#4c9a5a",
            alpha=0.6,
            label="memory available (GiB)",
        )
        mem.set_ylabel("memory available, GiB")
        total = max(s.mem_available for s in samples) / 2**30
        mem.set_ylim(0, total * 1.05 or 1)
        mem.spines["top"].set_visible(False)
    ax.set_xlabel(f"seconds since the first module started ({run.clock} clock)")
    ax.set_ylabel("modules / tasks")
    ax.set_ylim(bottom=0)
    ax.set_xlim(0, max(run.makespan, 0.01) * 1.01)
    handles = [h for a in fig.axes for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    ax.set_title(f"Parallelism and host load during run {run.run_id}", loc="left")
    fig.tight_layout(rect=(0, 0.55 / 4.4, 1, 1))
    fig.savefig(path, format=_format(path))
    plt.close(fig)


def history_chart(runs: list[Run], modules: list[str], path: Path | BinaryIO) -> None:
    """Running time and peak memory of the slowest modules across runs (oldest left);
    a gap where a module did not run or its memory is unknown. A logarithmic axis when
    the figures span more than a factor of 50, so the fast modules are not a flat line
    under the slowest."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.2), sharex=True)
    runs = list(reversed(runs))
    xs = range(len(runs))
    every: dict = {top: [], bottom: []}
    for name in modules:
        spans = [r.modules.get(name) for r in runs]
        durations = [m.running if m is not None and m.attempts else None for m in spans]
        peaks = [
            m.peak_rss / 2**20 if m is not None and m.attempts and m.peak_rss else None
            for m in spans
        ]
        top.plot(xs, durations, marker="o", markersize=3, label=name)
        bottom.plot(xs, peaks, marker="o", markersize=3, label=name)
        every[top] += [d for d in durations if d]
        every[bottom] += [p for p in peaks if p]
    for ax, label in ((top, "running time, s"), (bottom, "peak RSS, MiB")):
        values = every[ax]
        if values and max(values) > 50 * min(values):
            ax.set_yscale("log")
            label += " (log scale)"
        else:
            ax.set_ylim(bottom=0)
        ax.set_ylabel(label)
    bottom.set_xticks(list(xs), [r.run_id for r in runs], rotation=30, ha="right", fontsize=7)
    bottom.set_xlabel("run (ids are UTC start times); a gap: did not run, or memory unknown")
    top.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    top.set_title("Slowest modules across runs of this module set (oldest left)", loc="left")
    fig.tight_layout()
    fig.savefig(path, format=_format(path))
    plt.close(fig)


def heat_map(
    rows: list[str],
    columns: list[str],
    values: list[list[float]],
    marks: dict[tuple[int, int], str],
    title: str,
    label: str,
    path: Path | BinaryIO,
) -> None:
    """A rows x columns grid coloured by `values` (0 green, 1 yellow, 2+ red; NaN blank),
    with a mark drawn in the cells `marks` names by (row, column)."""
    plt = _pyplot()
    height = max(2.0, 0.25 * len(rows) + 1.2)
    width = max(4.0, 0.45 * len(columns) + 2.5)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(values, aspect="auto", cmap="RdYlGn_r", vmin=0.0, vmax=2.0)
    for (y, x), mark in marks.items():
        ax.text(x, y, mark, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, format=_format(path))
    plt.close(fig)
