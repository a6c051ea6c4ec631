"""Store rows -> what a run was: each module's timeline, the critical path, where the
makespan went, and per-module failure, skip and retry rates across runs.

Pure arithmetic over rows the store returns; no charts, no text. Every time is an
offset in seconds from the run's first start, taken from the monotonic clock the
attempts were timed on (older rows without it fall back to their wall timestamps).
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from corral.status import COMPLETED, RETRYABLE, Status
from corral.store import Store
from corral.throttle import Block


class Term(StrEnum):
    """A term of the account of a makespan (`Account`), in the order they are shown;
    the value is how report.json names it."""

    RUNNING = "running"
    JOBS = "jobs"  # ready, gate open, no lock: the -j slots were full
    THROTTLE = "throttle"  # the gate held it for the host's state
    LOCKS = "locks"
    BACKOFF = "retry backoff"


RUNNING, JOBS, THROTTLE, LOCKS, BACKOFF = Term
TERMS = tuple(Term)
WAITS = (JOBS, THROTTLE, LOCKS, BACKOFF)  # the terms of a module's wait


@dataclass(slots=True)
class Account:
    """Seconds by `Term`: a module's waits (`running` 0), or where a run's makespan went
    along its critical path (the terms add up to the makespan)."""

    running: float = 0.0
    jobs: float = 0.0
    throttle: float = 0.0
    locks: float = 0.0
    backoff: float = 0.0

    def __getitem__(self, term: Term) -> float:
        """The seconds of `term` (KeyError for what is not a term)."""
        try:
            return getattr(self, Term(term).name.lower())
        except ValueError:
            raise KeyError(term) from None

    def add(self, term: Term, seconds: float) -> None:
        """Count `seconds` more of `term`."""
        name = Term(term).name.lower()
        setattr(self, name, getattr(self, name) + seconds)

    def items(self, terms: tuple[Term, ...] = TERMS) -> Iterator[tuple[Term, float]]:
        """(term, seconds) of `terms`, in their order."""
        return ((t, self[t]) for t in terms)

    @property
    def total(self) -> float:
        """The seconds of every term together (0.0 for an empty account)."""
        return self.running + self.jobs + self.throttle + self.locks + self.backoff

    def as_json(self, terms: tuple[Term, ...] = TERMS) -> dict[str, float]:
        """{term's name: seconds} of `terms` in their order, as report.json gives it."""
        return {str(t): s for t, s in self.items(terms)}


# Gate refusals that are about the number of slots (a -j knob), not the host's state.
SLOT_KINDS = frozenset({Block.JOBS, Block.JOBS_AUTO})
NOTABLE = 0.10  # a share of the makespan worth naming beside the largest


@dataclass(slots=True)
class Attempt:
    """One attempt of a module as the report reads it (times in seconds since the run's
    first start)."""

    number: int
    status: str
    start: float  # seconds since the run's first start
    duration: float
    cpu: float | None  # None: unknown
    peak_rss: int | None  # None: unknown
    throttle_wait: float
    throttle_kind: str | None
    lock_wait: float
    retry_in: float | None
    mem_source: str | None = None  # how peak_rss was measured: cgroup, rusage, sampled

    @property
    def end(self) -> float:
        """Its end, in seconds since the run's first start."""
        return self.start + self.duration


@dataclass(slots=True)
class Segment:
    """A stretch of one module's time in a run: `kind` is waiting (ready, not started:
    for a slot, a lock or the throttle), backoff (between a failed attempt and the next)
    or running (an attempt, with its status)."""

    kind: str
    start: float
    end: float
    status: str | None = None


@dataclass(slots=True)
class ModuleRun:
    """One module in one run: its attempts (none when it never ran), final status.
    start, end and running are set once its attempts are loaded (see `settle`); ready,
    segments and waits by `timeline` when something asks for them."""

    name: str
    status: str
    reason: str | None
    attempts: list[Attempt] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    running: float = 0.0
    cpu: float | None = None  # None: no attempt's CPU is known
    peak_rss: int | None = None  # the highest known peak of its attempts (0 is unknown)
    mem_source: str | None = None  # how that peak was measured
    ready: float | None = None  # when its last requirement ended (0: at once)
    segments: list[Segment] | None = None
    waits: Account | None = None  # its JOBS, THROTTLE, LOCKS and BACKOFF seconds

    def settle(self) -> None:
        """Set start, end, running, CPU and peak from the attempts (left as they are for
        a module that never ran)."""
        attempts = self.attempts
        if attempts:
            self.start, self.end = attempts[0].start, attempts[-1].end
            self.running = sum(a.duration for a in attempts)
            known = [a.cpu for a in attempts if a.cpu is not None]
            self.cpu = sum(known) if known else None
            top = max((a for a in attempts if a.peak_rss), key=lambda a: a.peak_rss, default=None)
            if top is not None:
                self.peak_rss, self.mem_source = top.peak_rss, top.mem_source

    @property
    def ran(self) -> bool:
        """Whether it started at least once (False: skipped, or never finished)."""
        return bool(self.attempts)

    @property
    def first_failed(self) -> bool:
        """Whether its first attempt did not complete (False when it never ran)."""
        return bool(self.attempts) and self.attempts[0].status not in COMPLETED


@dataclass(frozen=True, slots=True)
class Reading:
    """One host sample of a run, as the report reads it (0 where it was not measured)."""

    at: float  # seconds since the run's first start
    runnable: float  # runnable tasks: the 1 s average where it was recorded
    load1: float
    mem_available: int  # bytes
    gate: bool  # the gate held a ready module back


@dataclass
class Run:
    """One recorded run read back: its runs row, modules, edges, samples, and (after
    `analyse`) its makespan, work, critical path and the account of the makespan."""

    row: dict
    modules: dict[str, ModuleRun]
    edges: dict[str, list[str]]
    samples: list[Reading]
    clock: str = "monotonic"  # or "wall" for runs recorded before the monotonic offsets
    makespan: float = 0.0
    work: float = 0.0
    critical_path: list[str] = field(default_factory=list)
    account: Account = field(default_factory=Account)

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.row["run_id"]

    @property
    def jobs(self) -> int | None:
        """The run's -j; None when not recorded."""
        return self.row.get("jobs")

    @property
    def full(self) -> bool:
        """Whether every module of the set was selected (older rows: no targets given)."""
        full = self.row.get("full")
        return bool(full) if full is not None else not self.row.get("targets")

    @property
    def efficiency(self) -> float | None:
        """Work over makespan x jobs; None when nothing ran or -j is unknown or 0."""
        if not self.makespan or not self.jobs:
            return None
        return self.work / (self.makespan * self.jobs)

    @property
    def speedup(self) -> float | None:
        """Work over makespan; None when nothing ran."""
        return self.work / self.makespan if self.makespan else None

    @property
    def cache_hit_rate(self) -> float | None:
        """Header cache hits over headers read; None when none was read."""
        hits, misses = self.row.get("cache_hits") or 0, self.row.get("cache_misses") or 0
        return hits / (hits + misses) if hits + misses else None

    def share(self, term: Term) -> float:
        """`term`'s part of the makespan (0.0 when nothing ran)."""
        return self.account[term] / self.makespan if self.makespan else 0.0


def _ts(text: str | None) -> float | None:
    return dt.datetime.fromisoformat(text).timestamp() if text else None


def load_run(store: Store, row: dict) -> Run:
    """The run of runs row `row`: its modules (timelines worked out on demand), edges,
    samples and derived figures; a run without attempts has a makespan of 0."""
    run_id = row["run_id"]
    rows = store.timings(run_id)
    # Offsets from the monotonic clock when every attempt has it; else from wall time.
    timed = [r for r in rows if r[1] > 0 and r[6] is not None]
    mono = all(r[5] is not None for r in timed)
    starts = [r[5] if mono else _ts(r[4]) for r in timed]
    t0 = min((s for s in starts if s is not None), default=0.0)
    modules: dict[str, ModuleRun] = {}
    for name, number, status, reason, start, start_mono, duration, cpu, peak, *rest in rows:
        module = modules.get(name)
        if module is None:
            module = modules[name] = ModuleRun(name, status, reason)
        module.status, module.reason = status, reason
        if number == 0 or duration is None:
            continue  # skipped, or never finished (a crash)
        at = start_mono if mono else _ts(start)
        if at is None:
            continue
        throttle, kind, lock, retry_in, mem_source = rest
        module.attempts.append(
            Attempt(
                number,
                status,
                at - t0,
                duration,
                cpu,
                peak,
                throttle or 0.0,
                kind,
                lock or 0.0,
                retry_in,
                mem_source,
            )
        )
    for module in modules.values():
        module.settle()
    edges: dict[str, list[str]] = {}
    for module, dep in store.edges(run_id):
        edges.setdefault(module, []).append(dep)
    samples = []
    for s in store.samples(run_id):
        base = s.get("mono") if mono else s.get("t")
        if mono and base is None:  # samples recorded before they carried the monotonic clock
            samples = []
            break
        runnable = s.get("runnable_avg") or s.get("runnable") or 0
        load1, memory = s.get("load1") or 0, s.get("mem_available") or 0
        samples.append(Reading(base - t0, runnable, load1, memory, bool(s.get("gate"))))
    run = Run(row, modules, edges, samples, "monotonic" if mono else "wall")
    analyse(run)
    return run


def analyse(run: Run) -> None:
    """Fill in makespan, work, the critical path and its account; leaves them 0 and empty
    when no module ran."""
    ran = [m for m in run.modules.values() if m.attempts]
    if not ran:
        return
    run.makespan = max(m.end for m in ran)
    run.work = sum(m.running for m in ran)
    run.critical_path = critical_path(run)
    account = Account()
    for name in run.critical_path:
        m = timeline(run, name)
        account.running += m.running
        for term, seconds in m.waits.items(WAITS):
            account.add(term, seconds)
    run.account = account


def timeline(run: Run, name: str) -> ModuleRun:
    """The module, with its time from ready to its last end split into waiting, backoff
    and running segments, and the waiting into its causes (throttle, locks, a -j slot).
    perf: computed once, on first use: most of a 20,000-module run's modules never need
    it (docs/architecture.md)."""
    m = run.modules[name]
    if m.segments is not None:
        return m
    if not m.attempts:
        m.segments, m.waits = [], Account()
        return m
    released = releaser(run, m)
    m.ready = released.end if released is not None else 0.0
    segments, waits = [], Account()
    due = m.ready
    previous: Attempt | None = None
    for a in m.attempts:
        if previous is not None:
            gap = max(0.0, a.start - previous.end)
            backoff = gap if previous.retry_in is None else min(previous.retry_in, gap)
            if backoff > 0:
                segments.append(Segment("backoff", previous.end, previous.end + backoff))
                waits.backoff += backoff
            due = previous.end + backoff
        wait = max(0.0, a.start - due)
        if wait > 0:
            segments.append(Segment("waiting", due, a.start))
            gate = min(a.throttle_wait, wait)
            lock = min(a.lock_wait, wait - gate)
            waits.add(JOBS if a.throttle_kind in SLOT_KINDS else THROTTLE, gate)
            waits.locks += lock
            waits.jobs += wait - gate - lock  # ready, gate open, no lock: slots were full
        segments.append(Segment("running", a.start, a.end, a.status))
        previous = a
    m.segments, m.waits = segments, waits
    return m


def critical_path(run: Run) -> list[str]:
    """The chain of modules that set the makespan: the release chain (`release_chain`)
    of the module that ended last. Its members' waiting, backoff and running add up to
    the makespan, which is what the account divides. At least one module must have run
    (`analyse` asks only then)."""
    ran = (m for m in run.modules.values() if m.attempts)
    return release_chain(run, max(ran, key=lambda m: (m.end, m.name)).name)


def release_chain(run: Run, name: str) -> list[str]:
    """The modules that released `name` (which ran), first to last: from a module that
    waited on nothing, through the one that released each (`releaser`), to `name`;
    [name] when nothing it waited on ran."""
    chain, seen = [name], {name}
    node = releaser(run, run.modules[name])
    while node is not None and node.name not in seen:
        chain.append(node.name)
        seen.add(node.name)
        node = releaser(run, node)
    return chain[::-1]


def releaser(run: Run, m: ModuleRun) -> ModuleRun | None:
    """Of the modules `m` waited on, the one that released it: the last to end before it
    started (by name among equals); None when none of them ran by then."""
    done = [
        d
        for d in (run.modules.get(n) for n in run.edges.get(m.name, ()))
        if d is not None and d.attempts and d.end <= m.start + 1e-6
    ]
    return max(done, key=lambda d: (d.end, d.name), default=None)


KNOB = {
    RUNNING: "more jobs would not help: shorten the modules on the critical path",
    JOBS: "modules on the critical path queued for a free slot: a higher -j would help "
    "if the host has room",
    THROTTLE: "the gate held modules on the critical path back because the host was busy "
    "(see the load chart): run at a quieter time, or raise --max-load / lower "
    "--min-free-mem if the host can take it",
    LOCKS: "modules on the critical path queued for a lock: a larger pool (config pools:) "
    "or fewer modules sharing it would help",
    BACKOFF: "failed attempts on the critical path waited out their retry backoff: make "
    "them reliable, or shorten retry_backoff",
}


@dataclass(frozen=True, slots=True)
class Share:
    """One term's part of a makespan; `str()` as the verdict lists it ("locks 12%")."""

    term: Term
    share: float

    def __str__(self) -> str:
        return f"{self.term} {self.share:.0%}"


@dataclass(frozen=True, slots=True)
class Bottleneck:
    """What bound a run's makespan: the largest `term` of its account (None: nothing
    ran) with its `share`, what the gate held the critical path for when that term is
    the throttle, and the other terms of at least NOTABLE share (largest first).
    `str()` is the verdict as the report and report.json give it."""

    term: Term | None
    share: float = 0.0
    held_for: str = ""  # gate refusal kinds, most time first ("" when not THROTTLE)
    also: tuple[Share, ...] = ()

    @property
    def name(self) -> str:
        """How the report names the bound: "critical path", a term, or "nothing ran"."""
        if self.term is None:
            return "nothing ran"
        return "critical path" if self.term == RUNNING else self.term

    def __str__(self) -> str:
        """The verdict: the bound, its share and knob, what held it, the other terms."""
        if self.term is None:
            return self.name
        text = f"{self.name} ({self.share:.0%} of the makespan): {KNOB[self.term]}"
        if self.held_for:
            text += f" (held for: {self.held_for})"
        if self.also:
            text += "; also " + ", ".join(map(str, self.also))
        return text


def verdict(run: Run) -> Bottleneck:
    """The largest term of the makespan's account with the knob that would have helped,
    and any other term of at least NOTABLE share; `Bottleneck(None)` when nothing ran."""
    if not run.makespan:
        return Bottleneck(None)
    shares = sorted(((run.share(t), t) for t in TERMS), reverse=True)
    share, term = shares[0]
    held_for = _throttle_reasons(run) if term == THROTTLE else ""
    also = tuple(Share(t, s) for s, t in shares[1:] if s >= NOTABLE)
    return Bottleneck(term, share, held_for, also)


def _throttle_reasons(run: Run) -> str:
    kinds: dict[str, float] = {}
    for name in run.critical_path:
        for a in run.modules[name].attempts:
            if a.throttle_wait and a.throttle_kind not in SLOT_KINDS:
                key = a.throttle_kind or "load or memory"
                kinds[key] = kinds.get(key, 0.0) + a.throttle_wait
    return ", ".join(k for k, _ in sorted(kinds.items(), key=lambda kv: -kv[1]))


def running_over_time(run: Run) -> tuple[list[float], list[int]]:
    """Step points of how many attempts ran at each moment (backoff and waiting are not
    running), from the attempts' own start and end offsets; ([0.0], [0]) when nothing
    ran."""
    points = sorted(
        [(a.start, 1) for m in run.modules.values() for a in m.attempts]
        + [(a.end, -1) for m in run.modules.values() for a in m.attempts],
        key=lambda p: (p[0], p[1]),  # an end before a start at the same instant
    )
    xs, ys, now = [0.0], [0], 0
    for t, step in points:
        xs.append(t)
        ys.append(now)
        now += step
        xs.append(t)
        ys.append(now)
    return xs, ys


def gate_held(run: Run) -> float:
    """Seconds of samples during which the gate held a ready module back (the samples
    that say so times their median interval); 0.0 with fewer than two samples."""
    samples = run.samples
    if len(samples) < 2:
        return 0.0
    gaps = [b.at - a.at for a, b in zip(samples, samples[1:], strict=False)]
    interval = statistics.median(gaps)
    return sum(1 for s in samples if s.gate) * interval


# across runs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModuleRates:
    """One module over a set of runs; report.json gives its fields in this order."""

    name: str
    runs: int  # runs that selected it
    ran: int  # … and in which it ran (not skipped)
    median_s: float | None  # median running time of the runs it ran in; None: never ran
    last_s: float | None  # its running time in the newest run it ran in
    peak_rss_bytes: int | None  # the highest known peak; None: never measured
    peak_rss_source: str | None  # how that peak was measured: cgroup, rusage, sampled
    median_cpu_s: float | None
    last_attempts: int  # attempts in the newest run (0: skipped)
    failure_rate: float  # shares of `runs`
    warning_rate: float
    skip_rate: float
    retry_rate: float | None  # share of the runs it ran in; None: never ran
    last_status: str

    @property
    def worst(self) -> float:
        """The highest of its failure, warning, skip and retry rates (0 when all went well)."""
        return max(self.failure_rate, self.warning_rate, self.skip_rate, self.retry_rate or 0)


def module_rates(runs: list[Run]) -> list[ModuleRates]:
    """Per module over `runs` (newest first), by name: how often it was selected, failed
    for good, was skipped, or failed its first attempt; its median running time and last
    figures. [] for no runs."""
    seen_by: dict[str, list[ModuleRun]] = {}
    for r in runs:
        for name, m in r.modules.items():
            seen_by.setdefault(name, []).append(m)
    out = []
    for name in sorted(seen_by):
        seen = seen_by[name]
        ran = [m for m in seen if m.attempts]
        top = max((m for m in ran if m.peak_rss), key=lambda m: m.peak_rss, default=None)
        out.append(
            ModuleRates(
                name=name,
                runs=len(seen),
                ran=len(ran),
                median_s=_median([m.running for m in ran]),
                last_s=ran[0].running if ran else None,
                peak_rss_bytes=top.peak_rss if top else None,
                peak_rss_source=top.mem_source if top else None,
                median_cpu_s=_median([m.cpu for m in ran if m.cpu is not None]),
                last_attempts=len(seen[0].attempts),
                failure_rate=sum(m.status in RETRYABLE for m in seen) / len(seen),
                warning_rate=sum(m.status == Status.WARNING for m in seen) / len(seen),
                skip_rate=(len(seen) - len(ran)) / len(seen),
                retry_rate=(sum(m.first_failed for m in ran) / len(ran)) if ran else None,
                last_status=seen[0].status,
            )
        )
    return out


def _median(values: list[float]) -> float | None:
    """The median (the mean of the middle two for an even count); None for no values."""
    if not values:
        return None
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def troubled(rates: list[ModuleRates]) -> list[ModuleRates]:
    """Modules that failed, warned, were skipped or failed a first attempt in any run,
    worst first; [] when every module went well."""
    return sorted((m for m in rates if m.worst > 0), key=lambda m: (-m.worst, m.name))
