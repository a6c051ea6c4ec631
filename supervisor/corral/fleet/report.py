"""The fleet section of `corral docs`: the last fleet run, hosts x modules.

A heat map (one row per host, one column per module, colour: duration relative to
that module's median across hosts; failed cells marked), the slowest and the failing
hosts, and each module's spread across hosts (median, p95, outliers by Tukey's
fences). Blocks of `corral.document`, as the report's; nothing when no fleet run is
recorded.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from corral.document import Block, Heading, Image, Paragraph, Table
from corral.fleet.hosts import HostResult
from corral.store import Store
from corral.units import decimal, plural

HEAT_MAP = "fleet.svg"
MAX_ROWS = 60  # hosts drawn in the heat map: failing first, then the slowest
MAX_TABLE_HOSTS = 30  # hosts x modules as a table up to this many hosts


@dataclass(frozen=True, slots=True)
class Cell:
    """One module on one host in a fleet run: its last attempt."""

    status: str
    duration: float | None  # None: it never finished
    attempt: int


@dataclass
class FleetFigures:
    """A fleet run read back for the report: how each host ended and each module's cell per
    host."""

    run: dict
    hosts: list[HostResult]  # how each host ended, in host order
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)  # (host, module)
    modules: list[str] = field(default_factory=list)
    makespan: dict[str, float] = field(default_factory=dict)  # host -> seconds


def load_fleet(store: Store, module_set: str) -> FleetFigures | None:
    """The newest fleet run of `module_set` with every host's outcome and last attempts;
    None if there is none."""
    last = store.last_fleet_run(module_set)
    if last is None:
        return None
    run, rows = last
    hosts = [HostResult(r["host"], r["status"], r["exit_code"], r["reason"]) for r in rows]
    f = FleetFigures(run, hosts)
    makespans, attempts = store.fleet_attempts(run["run_id"])
    for host, makespan in makespans:
        f.makespan[host] = makespan or 0.0
    modules: dict[str, None] = {}
    for host, module, attempt, status, duration in attempts:
        modules.setdefault(module, None)
        f.cells[(host, module)] = Cell(status, duration, attempt)
    f.modules = list(modules)
    return f


def spread(values: list[float]) -> tuple[float, float, float]:
    """(median, p95, outlier threshold) of durations: above Tukey's upper fence and half
    again the median (so equal durations with a little jitter have no outliers)."""
    ordered = sorted(values)
    median = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        fence = max(q3 + 1.5 * (q3 - q1), 1.5 * median)
    else:
        fence = float("inf")
    return median, p95, fence


def heat_map_svg(f: FleetFigures, hosts: list[str]) -> bytes:
    """Hosts x modules; colour: duration / the module's median across hosts."""
    import io

    from corral import charts

    medians = {}
    for m in f.modules:
        values = [
            c.duration for h in f.makespan if (c := f.cells.get((h, m))) and c.duration is not None
        ]
        medians[m] = statistics.median(values) if values else None
    grid, marks = [], {}
    for y, h in enumerate(hosts):
        row = []
        for x, m in enumerate(f.modules):
            c = f.cells.get((h, m))
            if c is None or c.duration is None or not medians[m]:
                row.append(float("nan"))
            else:
                row.append(min(c.duration / medians[m], 4.0))
            if c is None:
                marks[(y, x)] = "·"
            elif c.status not in ("ok", "running", "warning"):
                marks[(y, x)] = "✘"
        grid.append(row)
    out = io.BytesIO()
    charts.heat_map(
        hosts,
        f.modules,
        grid,
        marks,
        f"Fleet run {f.run['run_id']}: hosts x modules (✘ not ok, · no record)",
        "duration / module's median across hosts",
        out,
    )
    return out.getvalue()


def fleet_section(store: Store, module_set: str) -> tuple[list[Block], dict[str, bytes]]:
    """The blocks of the newest fleet run of `module_set`, and the charts they show by
    file name ([], {} without one)."""
    f = load_fleet(store, module_set)
    if f is None:
        return [], {}
    blocks: list[Block] = [Heading(f"Fleet run {f.run['run_id']}")]
    counts: dict[str, int] = {}
    for h in f.hosts:
        counts[h.status] = counts.get(h.status, 0) + 1
    blocks.append(
        Paragraph(
            f"`{f.run['nodes']}`: {plural(len(f.hosts), 'host')} ("
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + f"), {f.run['status']}, exit "
            + ("-" if f.run["exit_code"] is None else str(f.run["exit_code"]))
            + f", started {f.run['started']}."
        )
    )
    bad = [h for h in f.hosts if h.status != "ok"]
    slowest = sorted(f.makespan, key=lambda h: -f.makespan[h])
    charts: dict[str, bytes] = {}
    if f.cells:
        drawn = [h.host for h in bad if h.host in f.makespan]
        drawn += [h for h in slowest if h not in drawn]
        drawn = sorted(drawn[:MAX_ROWS])
        charts[HEAT_MAP] = heat_map_svg(f, drawn)
        blocks.append(Image(HEAT_MAP, "Hosts x modules: duration against the module's median"))
    if f.cells and len(f.makespan) <= MAX_TABLE_HOSTS:
        head = ["host", *f.modules]
        rows = []
        for host in sorted(f.makespan):
            row = [host]
            for m in f.modules:
                c = f.cells.get((host, m))
                row.append("-" if c is None else f"{c.status} {decimal(c.duration, 's')}")
            rows.append(row)
        blocks.append(Table(head, rows))
    blocks.append(Heading("Slowest hosts"))
    blocks.append(
        Table(
            ["host", "makespan", "slowest module"],
            [[h, decimal(f.makespan[h], "s"), _slowest_module(f, h)] for h in slowest[:5]],
        )
    )
    blocks.append(Heading("Failing hosts"))
    if bad:
        blocks.append(
            Table(
                ["host", "status", "exit", "reason"],
                [[h.host, h.status, str(h.exit_code), (h.reason or "")[:200]] for h in bad],
            )
        )
    else:
        blocks.append(Paragraph("None: every host ended ok."))
    blocks.append(Heading("Each module across hosts"))
    rows = []
    for m in f.modules:
        durations = {
            h: c.duration for (h, mod), c in f.cells.items() if mod == m and c.duration is not None
        }
        if not durations:
            continue
        median, p95, fence = spread(list(durations.values()))
        outliers = sorted(
            (h for h, d in durations.items() if d > fence), key=lambda h: -durations[h]
        )
        failed = sum(1 for (_, mod), c in f.cells.items() if mod == m and c.status != "ok")
        rows.append(
            [
                m,
                str(len(durations)),
                decimal(median, "s"),
                decimal(p95, "s"),
                decimal(max(durations.values()), "s"),
                str(failed),
                ", ".join(f"{h} ({decimal(durations[h], 's')})" for h in outliers[:5]) or "-",
            ]
        )
    blocks.append(Table(["module", "hosts", "median", "p95", "max", "not ok", "outliers"], rows))
    return blocks, charts


def _slowest_module(f: FleetFigures, host: str) -> str:
    best = max(
        ((m, c.duration) for (h, m), c in f.cells.items() if h == host and c.duration),
        key=lambda x: x[1],
        default=None,
    )
    return "-" if best is None else f"{best[0]} ({decimal(best[1], 's')})"
