"""Store rows -> the performance report of one module set: Markdown (or one HTML page),
SVG charts and report.json with every figure.

The report is built once as a list of blocks (`corral.document`: headings, paragraphs,
tables, images), then rendered as Markdown with the charts beside it, or as a
self-contained HTML page with the charts inline. Figures come from corral.analysis,
charts from corral.charts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from corral import analysis, safepath
from corral.analysis import BACKOFF, JOBS, LOCKS, RUNNING, THROTTLE, Run
from corral.document import (
    Block,
    Heading,
    Image,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from corral.status import COMPLETED, Status
from corral.store import Store
from corral.units import decimal, percent, plural, utc

REGRESSION = 0.15  # slower than the baseline by more than this share …
REGRESSION_FLOOR_S = 0.05  # … and by more than this, so millisecond noise is not news
HISTORY_RUNS = 20
CRITICAL_PATH_MEANS = (
    "The critical path is the chain of modules that set the makespan: from the module "
    "that ended last, back through the requirement that released it each time (the one "
    "that ended last), to a module that waited on nothing. Its members' running, "
    "waiting and backoff add up to the makespan. The Gantt chart outlines the same chain."
)


def last_run(runs: list[Run]) -> Run:
    """The newest full run (every module of the set selected) that ran something, else
    the newest run that ran something, else the newest run; LookupError for no runs."""
    for pick in (lambda r: r.full and r.makespan, lambda r: r.makespan, lambda r: True):
        for r in runs:
            if pick(r):
                return r
    raise LookupError("no runs")


def load_runs(store: Store, module_set: str | None, limit: int = HISTORY_RUNS) -> list[Run]:
    """The newest `limit` finished runs of `module_set` (every set when None), newest
    first; [] when none is recorded."""
    rows = [r for r in store.runs(limit + 5, module_set) if r["status"] != Status.RUNNING]
    return [analysis.load_run(store, r) for r in rows[:limit]]


def no_runs_message(store: Store, module_set: str) -> str:
    """Why there is no report of `module_set`, naming up to five other sets the
    database has runs of (or, when it has none, telling to run first)."""
    sets = [s for s in store.module_sets() if s[0] != module_set]
    text = f"no finished runs of the modules in {module_set} recorded yet"
    if not sets:
        return text + ": run `corral run` first"
    listing = "; ".join(f"{s[0] or '(unknown)'} ({plural(s[1], 'run')})" for s in sets[:5])
    return (
        f"{text}; this database has runs of other module sets: {listing}. Name one with "
        "--modules, or use --all for a report per set"
    )


def _mib(value: int | None, source: str | None = None) -> str:
    """Peak memory, marked ≈ when sampled (an estimate: a burst between samples is
    missed); no process has a peak of 0 bytes, so a 0 (older records) is unknown."""
    if not value:
        return "unknown"
    return f"{'≈' if source == 'sampled' else ''}{value / 2**20:.1f}"


@dataclass(frozen=True, slots=True)
class Regression:
    """A module whose last successful running time is `slower` (a share) than its
    `baseline`, the median of its earlier runs."""

    name: str
    baseline: float
    last: float
    slower: float


@dataclass(frozen=True, slots=True)
class Report:
    """One module set's report: its blocks, report.json's data, and what the charts
    draw (the last run, every run, the slowest modules' names)."""

    blocks: list[Block]
    data: dict
    last: Run
    runs: list[Run]
    slowest: list[str]


def build(runs: list[Run], module_set: str) -> Report:
    """The report of `runs` (newest first; at least one, else LookupError)."""
    last = last_run(runs)
    blocks: list[Block] = []
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    blocks.append(Heading("corral performance report", 1))
    partial = "" if last.full else " (no full run of this set is recorded: this one ran a part)"
    blocks.append(
        Paragraph(
            f"Generated {now} from the {plural(len(runs), 'newest recorded run')} of the "
            f"module set `{module_set}`; runs of other module sets in the database are not "
            "counted. "
            f"Last run: `{last.run_id}` (started {utc(last.row['started'])}, "
            f"{last.row['status']}, {plural(len(last.modules), 'module')}){partial}. "
            "All times are UTC; durations come from the monotonic clock.",
        )
    )
    acc = last.account
    blocks.append(Heading("Last run at a glance"))
    blocks.append(
        Table(
            ["figure", "value"],
            [
                ["makespan (first start to last end)", f"{last.makespan:.2f} s"],
                ["work (sum of every attempt's running time)", f"{last.work:.2f} s"],
                ["speedup over running them one by one", decimal(last.speedup) + "×"],
                ["parallel efficiency (work / (makespan × jobs))", percent(last.efficiency)],
                [
                    "critical path",
                    f"{plural(len(last.critical_path), 'module')}: "
                    + " → ".join(last.critical_path),
                ],
                ["… of which running", f"{acc[RUNNING]:.2f} s ({last.share(RUNNING):.0%})"],
                [
                    "… queued for a -j slot",
                    f"{acc[JOBS]:.2f} s ({last.share(JOBS):.0%})",
                ],
                [
                    "… held back by the throttle",
                    f"{acc[THROTTLE]:.2f} s ({last.share(THROTTLE):.0%})",
                ],
                ["… queued for locks", f"{acc[LOCKS]:.2f} s ({last.share(LOCKS):.0%})"],
                ["… in retry backoff", f"{acc[BACKOFF]:.2f} s ({last.share(BACKOFF):.0%})"],
                [
                    "time the gate held any module back (samples)",
                    f"{analysis.gate_held(last):.2f} s",
                ],
                ["header cache hit rate", percent(last.cache_hit_rate)],
                ["peak host load (runnable, 1 s average)", decimal(last.row.get("peak_load"))],
                [
                    "corral's own CPU, of which sampling the host",
                    f"{last.row.get('supervisor_cpu_s') or 0:.3f} s, "
                    f"{last.row.get('sampler_cpu_s') or 0:.3f} s",
                ],
            ],
        )
    )
    blocks.append(Paragraph(f"**Bottleneck:** {analysis.verdict(last)}."))
    blocks.append(Image("gantt.svg", "Gantt chart of the last run"))
    blocks.append(Image("load.svg", "Running modules and host load over the last run"))

    blocks.append(Heading("Critical path of the last run"))
    blocks.append(Paragraph(CRITICAL_PATH_MEANS))
    steps = []
    for i, name in enumerate(last.critical_path):
        m = last.modules[name]
        steps.append(
            [
                str(i + 1),
                name,
                decimal(m.waits[JOBS]),
                decimal(m.waits[THROTTLE]),
                decimal(m.waits[LOCKS]),
                decimal(m.waits[BACKOFF]),
                decimal(m.running),
                str(len(m.attempts)),
                m.status,
            ]
        )
    blocks.append(
        Table(
            [
                "step",
                "module",
                "queued for -j s",
                "throttled s",
                "locks s",
                "backoff s",
                "running s",
                "attempts",
                "status",
            ],
            steps,
        )
    )

    blocks.append(Heading("Where each run's makespan went"))
    table = []
    for r in runs:
        if not r.makespan:
            continue
        table.append(
            [
                r.run_id,
                f"{r.makespan:.2f}",
                percent(r.share(RUNNING)),
                percent(r.share(JOBS)),
                percent(r.share(THROTTLE)),
                percent(r.share(LOCKS)),
                percent(r.share(BACKOFF)),
                analysis.verdict(r).name,
            ]
        )
    blocks.append(
        Table(
            [
                "run",
                "makespan s",
                "running",
                "queued for -j",
                "throttle",
                "locks",
                "backoff",
                "bound by",
            ],
            table,
        )
    )
    blocks.append(
        Paragraph(
            "Each share is a part of the makespan spent along the critical path: modules "
            "running, queued for a free -j slot, held back by the throttle (load, memory, "
            "pressure), queued for a lock, or waiting out a retry backoff. They add up to "
            "100 %; the largest names the knob that would have helped.",
        )
    )

    rates = analysis.module_rates(runs)
    blocks.append(Heading("Modules that failed, warned, were skipped or needed a retry"))
    trouble = analysis.troubled(rates)
    if trouble:
        blocks.append(
            Table(
                [
                    "module",
                    "runs",
                    "failed",
                    "warned",
                    "skipped",
                    "first attempt failed",
                    "last status",
                ],
                [
                    [
                        m.name,
                        str(m.runs),
                        percent(m.failure_rate),
                        percent(m.warning_rate),
                        percent(m.skip_rate),
                        percent(m.retry_rate),
                        m.last_status,
                    ]
                    for m in trouble
                ],
            )
        )
        blocks.append(
            Paragraph(
                "Rates are shares of the runs that selected the module; the first-attempt "
                "rate counts only runs in which it ran (a module that needs its retries "
                "every time is flaky even when it ends ok).",
            )
        )
    else:
        blocks.append(Paragraph("None: every module ran and succeeded at its first attempt."))

    blocks.append(Heading("Runs"))
    blocks.append(
        Table(
            [
                "run",
                "started (UTC)",
                "status",
                "modules",
                "full",
                "makespan s",
                "work s",
                "efficiency",
                "speedup",
                "cache hits",
                "peak load",
            ],
            [
                [
                    r.run_id,
                    utc(r.row["started"]),
                    r.row["status"],
                    str(len(r.modules)),
                    "yes" if r.full else "no",
                    decimal(r.makespan),
                    decimal(r.work),
                    percent(r.efficiency),
                    decimal(r.speedup),
                    percent(r.cache_hit_rate),
                    decimal(r.row.get("peak_load")),
                ]
                for r in runs
            ],
        )
    )

    blocks.append(Heading("Modules"))
    blocks.append(
        Table(
            [
                "module",
                "runs",
                "median s",
                "last s",
                "peak RSS MiB",
                "median CPU s",
                "last attempts",
                "failed",
                "warned",
                "skipped",
                "first attempt failed",
            ],
            [
                [
                    m.name,
                    str(m.runs),
                    decimal(m.median_s),
                    decimal(m.last_s),
                    _mib(m.peak_rss_bytes, m.peak_rss_source),
                    decimal(m.median_cpu_s),
                    str(m.last_attempts),
                    percent(m.failure_rate),
                    percent(m.warning_rate),
                    percent(m.skip_rate),
                    percent(m.retry_rate),
                ]
                for m in rates
            ],
        )
    )
    blocks.append(
        Paragraph(
            "Peak RSS is the highest of the module's runs: the kernel's figure for its "
            "cgroup or its waited-for processes where there is one, ≈ where it was "
            "sampled (an estimate), unknown where nothing could measure it.",
        )
    )
    slowest = sorted(rates, key=lambda m: -(m.median_s or 0))[:10]
    blocks.append(Heading("Slowest modules"))
    blocks.append(
        Table(
            ["module", "median s", "in the last run s", "share of the last run's work"],
            [
                [
                    m.name,
                    decimal(m.median_s),
                    decimal(_running(last, m.name)),
                    percent(_running(last, m.name) / last.work)
                    if last.work and _running(last, m.name) is not None
                    else "-",
                ]
                for m in slowest
            ],
        )
    )

    regressions = find_regressions(runs)
    blocks.append(Heading("Regressions"))
    if regressions:
        blocks.append(
            Table(
                ["module", "baseline s (median of earlier runs)", "last s", "slower by"],
                [
                    [r.name, decimal(r.baseline), decimal(r.last), f"+{r.slower:.0%}"]
                    for r in regressions
                ],
            )
        )
    else:
        blocks.append(
            Paragraph(
                "No module is more than 15 % (and 50 ms) slower than the median "
                "of its earlier recorded runs.",
            )
        )
    blocks.append(Image("history.svg", "Running time and peak memory across runs"))
    data = {
        "generated": now,
        "module_set": module_set,
        "critical_path_means": CRITICAL_PATH_MEANS,
        "last_run": last.run_id,
        "runs": [run_json(r) for r in runs],
        "modules": [dataclasses.asdict(m) for m in rates],
        "timeline": timeline_json(last),
    }
    return Report(blocks, data, last, runs, [m.name for m in slowest[:8]])


def _running(run: Run, name: str) -> float | None:
    m = run.modules.get(name)
    return m.running if m is not None and m.ran else None


def run_json(r: Run) -> dict:
    """A run's derived figures, as report.json and `history --json` give them."""
    return {
        "run_id": r.run_id,
        "started": r.row.get("started"),
        "status": r.row.get("status"),
        "full": r.full,
        "clock": r.clock,
        "makespan_s": r.makespan,
        "work_s": r.work,
        "parallel_efficiency": r.efficiency,
        "speedup": r.speedup,
        "cache_hit_rate": r.cache_hit_rate,
        "critical_path": r.critical_path,
        "critical_path_account_s": r.account.as_json(),
        "gate_held_s": analysis.gate_held(r),
        "verdict": str(analysis.verdict(r)),
    }


def timeline_json(r: Run) -> list[dict]:
    """Every module of the run with its segments: [kind, start, end, attempt status]
    (none for a module that never ran); [] for a run without modules."""
    out = []
    for name in r.modules:
        m = analysis.timeline(r, name)
        out.append(
            {
                "name": m.name,
                "status": m.status,
                "reason": m.reason,
                "ready": m.ready,
                "waits_s": m.waits.as_json(analysis.WAITS),
                "segments": [[s.kind, s.start, s.end, s.status] for s in m.segments],
            }
        )
    return out


def find_regressions(runs: list[Run]) -> list[Regression]:
    """Modules whose last successful running time exceeds the median of their earlier
    runs by more than REGRESSION (and REGRESSION_FLOOR_S), by name; [] when none does."""
    out = []
    for name in sorted(runs[0].modules):
        oks = [
            r.modules[name].running
            for r in runs
            if name in r.modules and r.modules[name].status in COMPLETED and r.modules[name].ran
        ]
        if len(oks) < 2:
            continue
        last, baseline = oks[0], statistics.median(oks[1:6])
        if (
            baseline > 0
            and last > baseline * (1 + REGRESSION)
            and last - baseline > REGRESSION_FLOOR_S
        ):
            out.append(Regression(name, baseline, last, last / baseline - 1))
    return out


def set_slug(module_set: str) -> str:
    """A directory name for a module set: its last directory's name and a short digest."""
    base = os.path.basename(module_set.split(os.pathsep)[0]) or "modules"
    return f"{base}-{hashlib.blake2b(module_set.encode(), digest_size=3).hexdigest()}"


def write_report(
    store: Store, out: Path, fmt: str = "md", module_set: str | None = None
) -> list[Path]:
    """Write the report of `module_set` and its charts into `out`; with None, one report
    per module set in a subdirectory each and an index. Returns the files written.
    As root, `out` and each file are reached without following anyone else's link.
    Raises LookupError when there is nothing to report."""
    from corral.fleet.report import fleet_section

    if module_set is not None:
        runs = load_runs(store, module_set)
        fleet = fleet_section(store, module_set)  # its fleet runs' section, if any
        if not runs and not fleet[0]:
            raise LookupError(no_runs_message(store, module_set))
        return _write_one(runs, module_set, out, fmt, fleet)
    sets = store.module_sets()
    known = {key for key, _, _ in sets}
    sets += [(key, 0, newest) for key, newest in store.fleet_runs() if key not in known]
    if not sets:
        raise LookupError("no finished runs recorded yet: run `corral run` first")
    written, index = [], []
    page = "index.html" if fmt == "html" else "README.md"
    for key, count, newest in sets:
        runs = load_runs(store, key)
        fleet = fleet_section(store, key)
        if not runs and not fleet[0]:
            continue
        slug = set_slug(key or "")
        written += _write_one(runs, key or "", out / slug, fmt, fleet)
        index.append([f"[{key}]({slug}/{page})", str(count), utc(newest)])
    blocks = [
        Heading("corral performance reports", 1),
        Paragraph("One report per module set recorded in this database (times in UTC)."),
        Table(["module set", "runs", "newest run started"], index),
    ]
    text = render_html(blocks, {}) if fmt == "html" else render_markdown(blocks)
    _write_files(out, {page: text.encode()})
    return [out / page, *written]


def _write_one(
    runs: list[Run],
    module_set: str,
    out: Path,
    fmt: str,
    more: tuple[list[Block], dict[str, bytes]] = ([], {}),
) -> list[Path]:
    """One module set's report; `more`: another section's blocks and charts (the
    fleet's), appended; a set with only fleet runs gets only that section."""
    from corral import charts

    svgs: dict[str, bytes] = {}
    files: dict[str, bytes] = {}
    blocks: list[Block]
    if runs:
        report = build(runs, module_set)
        blocks = report.blocks
        if report.last.makespan:
            svgs["gantt.svg"] = _svg(charts.gantt_chart, report.last)
            svgs["load.svg"] = _svg(charts.load_chart, report.last)
        svgs["history.svg"] = _svg(charts.history_chart, report.runs, report.slowest)
        # perf: compact; an indent makes json use its pure-Python encoder
        # (docs/architecture.md)
        files["report.json"] = (json.dumps(report.data, separators=(",", ":")) + "\n").encode()
    else:
        blocks = [Heading("corral fleet report", 1), Paragraph(f"Module set `{module_set}`.")]
    blocks += more[0]
    svgs.update(more[1])
    blocks = [b for b in blocks if not isinstance(b, Image) or b.file in svgs]
    if fmt == "html":
        files["index.html"] = render_html(blocks, svgs).encode()  # the charts inside
    else:
        files["README.md"] = render_markdown(blocks).encode()
        files.update(svgs)
    _write_files(out, files)
    first = "index.html" if fmt == "html" else "README.md"
    return [out / first, *(out / name for name in files if name != first)]


def _svg(chart, *args) -> bytes:
    buffer = io.BytesIO()
    chart(*args, buffer)
    return buffer.getvalue()


def _write_files(out: Path, files: dict[str, bytes]) -> None:
    """Write `files` (name -> bytes) into directory `out`, made if missing; as root
    reached without following anyone else's link (corral.safepath)."""
    dir_fd = safepath.open_dir(out, 0o755)
    try:
        for name, data in files.items():
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            with os.fdopen(safepath.open_in(dir_fd, name, flags, 0o644, out / name), "wb") as f:
                f.write(data)
    finally:
        os.close(dir_fd)
