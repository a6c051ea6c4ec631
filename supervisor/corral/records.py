"""The store as a run listener: every event becomes a row as it happens.

Rows are written when they happen (not at the end), so a crash or a kill keeps what
finished. A database that fails mid-run (disk full, removed) never stops the run:
the recorder says so once and the run goes on.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import sqlite3
import threading
import time

from corral.batch import Batch, attempt_figures
from corral.dbfile import BRIEF_BUSY_MS, BUSY_TIMEOUT_MS, _busy, _why
from corral.events import (
    Event,
    Idle,
    Leftovers,
    ModuleFinished,
    ModuleSkipped,
    ModuleStarted,
    Notice,
    RunFinished,
    RunStarted,
    Sampled,
)
from corral.procfs import boot_id, start_time
from corral.status import Status
from corral.store import Store
from corral.units import plural

FLUSH_DELAY = 0.03  # seconds a record may wait to share a transaction (docs: within 50 ms)
RETRY_EVERY = 1.0  # seconds between tries while the database cannot be written
# One write's wait for another writer (ms): the writer tries again after it, and says the
# database is held once it has been for BUSY_TIMEOUT_MS.
TRY_BUSY_MS = 1_000
SETTLE_MAX = 1.0  # seconds a shown end waits for its commit (docs/reliability.md)
SAY_WAIT_AFTER = 0.5  # seconds the end of a run waits for its records before saying so


def iso(t: float | None) -> str | None:
    """Stored timestamps: UTC ISO 8601 with microseconds, so they sort as text."""
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="microseconds")


def _text(value: object) -> str | None:
    """A refusal as stored: 'kind: detail'; None stays NULL."""
    return None if value is None else str(value)


class Recorder:
    """Writes runs and module_runs rows; `lost` says what could not be written.

    perf (docs/architecture.md): every record goes through a queue to a writer thread
    that commits whatever has arrived, at most FLUSH_DELAY after it arrived: under -q
    a thousand one-millisecond modules cost a handful of transactions instead of a
    thousand, and the scheduler never waits for the disk, not even for the run's own
    row (another process may hold the database). Where each end is shown (`settle`),
    the end is committed before it is shown: the scheduler waits for that commit, at
    most SETTLE_MAX, and not while the file does not take records. Records that cannot
    be written (database locked, read-only, full, unusable) stay in the writer's
    backlog and are tried again every RETRY_EVERY and with every new batch; what is
    still unwritten when the run ends is reported as lost (`lost`), never dropped in
    silence.
    """

    def __init__(
        self,
        store: Store,
        modules_dirs: str,
        targets: str,
        emit_notice,
        cache_hits: int = 0,
        cache_misses: int = 0,
        module_set: str | None = None,
        full: bool = True,
        end_by: float | None = None,
        settle: bool = True,
    ):
        self.store = store
        self.modules_dirs = modules_dirs
        self.module_set = module_set
        self.full = full
        # the run's outcome, to write the whole run from when the file changed under it
        # (perf: its batch is made only then, _whole_if_moved)
        self.whole: RunFinished | None = None
        self.settle = settle  # each end is shown: commit it before (_settle)
        self.end_by = end_by  # monotonic: the run's deadline, which bounds its last write
        self.end_at: float | None = None  # until when the last write may wait (_end_at)
        self.targets = targets
        self.notice = emit_notice
        self.cache = (cache_hits, cache_misses)
        self.run_id = ""
        self.batch = Batch()
        self.lost: str | None = None  # what could not be written, once the run ended
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.writer: threading.Thread | None = None
        self.closing = threading.Event()
        # A module's end is shown only once it is committed (`_settle`): the writer then
        # commits at once (`hurry`) and counts the batches it has written (`written`, of
        # `handed`); `stalled` while the file does not take them (nothing waits then).
        self.hurry = threading.Event()
        self.settled = threading.Condition()
        self.handed = self.written = 0
        self.stalled = False
        # how the run holds its attempts: {"containment": kind, "cgroups": directories}
        self.containment: dict = {}
        self.notes: queue.SimpleQueue = queue.SimpleQueue()  # from the writer thread
        self.writing_since: float | None = None  # monotonic start of the write under way
        self.generation = 0  # the store's generation when the run started
        self.run_row: dict = {}
        self.edges: list[tuple[str, str, str]] = []
        self.started: dict[tuple[str, int], str] = {}  # (name, attempt) -> its start, running

    def __call__(self, event: Event) -> None:
        """Record the event (buffered; the writer thread commits it), then say on this thread
        what the writer had to say."""
        self._record(event)
        while not self.notes.empty():  # said on the main thread, between other output
            self.notice(self.notes.get())

    def flush(self) -> None:
        """Hand what is buffered to the writer thread."""
        if self.batch:
            self.handed += 1
            self.queue.put(self.batch)
            self.batch = Batch()

    def _settle(self) -> None:
        """Wait until what was handed is committed, so what is shown next is on disk; at
        most SETTLE_MAX (a slow disk), and not at all while the file does not take the
        records (they are kept, and written later or reported as lost)."""
        if self.writer is None or not self.settle:
            return
        handed = self.handed
        with self.settled:
            if self.stalled or self.written >= handed:
                return
            self.hurry.set()
            self.settled.wait_for(lambda: self.stalled or self.written >= handed, SETTLE_MAX)

    def _wrote(self, taken: int | None) -> None:
        """The writer committed the first `taken` batches (None: it failed to)."""
        with self.settled:
            if taken is None:
                self.stalled = True
            else:
                self.written, self.stalled = taken, False
            self.settled.notify_all()

    def _write_guarded(self) -> None:
        """The writer thread: an error in it (memory) is said, never a traceback."""
        try:
            self._write_loop()
        except Exception as exc:  # noqa: BLE001 - the thread's last line of defence
            from corral.errors import exhausted

            why = exhausted(exc) or f"{type(exc).__name__}: {exc}"
            self.lost = f"{self.store.wanted}: records not written ({why})"
            self.notes.put(Notice(self.lost, warning=True))
            self._wrote(None)  # nothing waits for a writer that is gone

    def _write_loop(self) -> None:
        backlog = Batch()
        behind: str | None = None  # why the backlog could not be written (said)
        failed: str | None = None  # why the last write failed
        busy_since: float | None = None  # another writer has held the file since
        stop = False
        taken = 0  # batches taken from the queue (see _settle)
        while True:
            if not stop:
                try:
                    item = self.queue.get(timeout=RETRY_EVERY if backlog else None)
                except queue.Empty:
                    item = Batch()  # time to try the backlog again
                if item is None:
                    stop = True
                else:
                    taken += bool(item)
                    if not self.closing.is_set():  # let a burst gather into one transaction,
                        self.hurry.wait(FLUSH_DELAY)  # unless an end waits to be shown
                        self.hurry.clear()
                    backlog.extend(item)
                    while not self.queue.empty():
                        more = self.queue.get()
                        if more is None:
                            stop = True
                            break
                        taken += 1
                        backlog.extend(more)
            if not backlog:
                if stop:
                    break
                continue
            # One try waits at most TRY_BUSY_MS for another writer, so the end of the run
            # is bounded by end_at (its deadline), whatever the writer was doing then.
            end_at = self.end_at or self._end_at()  # set when the writer was told to stop
            wait = TRY_BUSY_MS if not stop else (end_at - time.monotonic()) * 1000
            self.store.patient(int(max(0.0, min(TRY_BUSY_MS, wait))))
            self.writing_since = time.monotonic()
            generation = self.store.generation
            try:
                if stop and self.whole is not None:
                    backlog = self._last_write(backlog)
                self.store.write_batch(backlog)
            except (sqlite3.Error, OSError) as exc:
                self._wrote(None)
                now, self.writing_since = time.monotonic(), None
                failed = _why(exc, self.store.wanted)
                busy = _busy(exc)
                busy_since = (busy_since or now) if busy else None
                moved = self.store.generation != generation  # (a damaged file set aside)
                if stop and not ((busy or moved) and now < end_at):
                    break  # the run has ended: what is left is reported as lost
                held_long = busy_since is not None and now - busy_since >= BUSY_TIMEOUT_MS / 1000
                if behind is None and (not busy or held_long):  # a fault, not a queue
                    if self.store.problem is None:  # (the store says its own)
                        self.notes.put(
                            Notice(
                                f"{self.store.wanted}: cannot record now ({failed}); the run "
                                f"goes on, its records are kept and tried again every "
                                f"{RETRY_EVERY:g}s",
                                warning=True,
                            )
                        )
                    behind = failed
                continue
            self.writing_since = busy_since = None
            self._wrote(taken)
            if behind is not None:
                self.notes.put(
                    Notice(f"{self.store.wanted}: recording again; the delayed records are written")
                )
            backlog, behind = Batch(), None
            if stop:
                overwritten = self.store.fold_log()
                if overwritten:
                    self.lost = overwritten
                    self.notes.put(Notice(overwritten, warning=True))
                break
        self.store.patient(BRIEF_BUSY_MS)  # what follows the run (pruning) waits briefly
        if backlog:
            backlog = self._whole_if_moved(backlog)  # what went to a removed file is lost
            modules = backlog.modules()
            what = []
            if backlog.runs or backlog.ends:
                what.append("the run's own row")
            if modules:
                shown = ", ".join(modules[:8]) + (" …" if len(modules) > 8 else "")
                what.append(f"the records of {plural(len(modules), 'module')} ({shown})")
            if backlog.samples:
                what.append(f"{plural(len(backlog.samples), 'host sample')}")
            self.lost = f"{self.store.wanted}: not recorded ({failed}): {'; '.join(what)}"
            self.notes.put(Notice(self.lost, warning=True))

    def _last_write(self, backlog: Batch) -> Batch:
        """The run's last batch. When the file changed under the run (removed, replaced,
        repaired, back from being unusable; also while the last batches were written),
        what went to the old one is not in this one: the whole run is written again from
        its outcome, the rows replacing any already there. Raises sqlite3.Error."""
        self.store.follow()
        whole = self._whole_if_moved(backlog)
        if whole is not backlog:
            self.whole = None  # written with it (or, failing, the backlog to report)
        return whole

    def _whole_if_moved(self, backlog: Batch) -> Batch:
        """`backlog`, or the whole run with its closing values when what was written
        before is not in the file now at the path (see _last_write)."""
        store = self.store
        if self.whole is None or (store.generation == self.generation and store.path is not None):
            return backlog
        whole = self._whole_run(self.whole)
        whole.updates += backlog.updates  # (leftovers: the outcome does not hold them)
        whole.samples += backlog.samples
        whole.ends += backlog.ends
        return whole

    def _end_at(self) -> float:
        """Until when the run's last records may wait for another writer (monotonic):
        BUSY_TIMEOUT_MS from the run's end, no later than its deadline (`end_by`), but
        always BRIEF_BUSY_MS, as anything before the first spawn may wait."""
        now = time.monotonic()
        end = now + BUSY_TIMEOUT_MS / 1000
        if self.end_by is not None:
            end = min(end, max(now + BRIEF_BUSY_MS / 1000, self.end_by))
        return end

    def _stop_writer(self) -> None:
        if self.writer is not None:
            self.end_at = self._end_at()
            self.closing.set()
            self.hurry.set()
            self.queue.put(None)
            self.writer.join(SAY_WAIT_AFTER)
            if self.writer.is_alive():  # a wait no one would see ends with a word
                left = max(0.0, self.end_at - time.monotonic())
                self.notice(
                    Notice(
                        f"{self.store.wanted}: the database is held by another process (or "
                        f"slow); waiting up to {left:.1f}s to record this run",
                        warning=True,
                    )
                )
            self.writer.join()
            self.writer = None

    def _record(self, event: Event) -> None:
        if isinstance(event, ModuleStarted):
            self.started[(event.name, event.attempt)] = iso(event.start)
            self.batch.inserts.append(
                {
                    "run_id": self.run_id,
                    "module": event.name,
                    "attempt": event.attempt,
                    "status": Status.RUNNING,
                    "start": iso(event.start),
                    "pid": event.pid,
                    "pgid": event.pid,
                    "log_path": event.log_path,
                    "throttle_wait_s": event.throttle_wait_s,
                    "start_mono": event.start_mono,
                }
            )
        elif isinstance(event, ModuleFinished):
            r = event.result
            self.started.pop((r.name, r.attempt), None)
            values = self._ended(r)
            if r.pid == 0:  # it never started (spawn failed)
                self.batch.inserts.append(
                    {
                        "run_id": self.run_id,
                        "module": r.name,
                        "attempt": r.attempt,
                        "start": iso(r.start),
                        "start_mono": r.start_mono,
                        **values,
                    }
                )
            else:
                self.batch.updates.append(((self.run_id, r.name, r.attempt), values))
            self.flush()
            self._settle()  # about to be shown: committed first
        elif isinstance(event, ModuleSkipped):
            self.batch.inserts.append(
                {
                    "run_id": self.run_id,
                    "module": event.name,
                    "attempt": 0,
                    "status": Status.SKIPPED,
                    "reason": event.reason,
                }
            )
            self.flush()
        elif isinstance(event, Sampled):
            s = event.sample
            self.batch.samples.append(
                {
                    "run_id": self.run_id,
                    "t": s.wall,
                    "mono": s.t,
                    "load1": s.load1,
                    "runnable": s.runnable,
                    "runnable_avg": s.runnable_avg,
                    "mem_available": s.mem_available,
                    "psi_cpu": s.psi_cpu,
                    "psi_mem": s.psi_mem,
                    "psi_io": s.psi_io,
                    "cpu_busy": s.cpu_busy,
                    "running": event.running,
                    "waiting": event.waiting,
                    "gate": _text(event.gate),
                }
            )
        elif isinstance(event, Leftovers):
            for (name, attempt), count in event.counts.items():
                self.batch.updates.append(((self.run_id, name, attempt), {"leftovers": count}))
        elif isinstance(event, Idle):
            self.flush()
        elif isinstance(event, RunStarted):
            self.run_id = event.run_id
            self.generation = self.store.generation
            self.edges = [(event.run_id, a, b) for a, b in event.edges]
            self.run_row = {
                "run_id": event.run_id,
                "started": iso(event.started),
                "status": Status.RUNNING,
                "jobs": event.jobs.fixed,  # NULL: auto
                "modules_dir": self.modules_dirs,
                "module_set": self.module_set,
                "full": int(self.full),
                "targets": self.targets,
                "host": os.uname().nodename,
                "pid": os.getpid(),
                "boot_id": boot_id(),
                "pid_start": start_time(os.getpid()),
                "module_count": len(event.names),
                "selected": len(event.names),
                "cache_hits": self.cache[0],
                "cache_misses": self.cache[1],
                **self.containment,
            }
            self.batch.runs.append(self.run_row)
            self.batch.edges += self.edges
            self.writer = threading.Thread(
                target=self._write_guarded, name="corral-recorder", daemon=True
            )
            self.writer.start()
            self.flush()
        elif isinstance(event, RunFinished):
            work = sum(a.duration_s for m in event.modules for a in m.attempts)
            values = {
                "ended": iso(event.ended),
                "status": event.status,
                "exit_code": event.exit_code,
                "makespan_s": event.makespan_s,
                "work_s": work,
                "peak_load": event.peak_load,
                "throttle_s": event.throttle_s,
                "sampler_cpu_s": event.sampler_cpu_s,
                "supervisor_cpu_s": event.supervisor_cpu_s,
                "exit_signal": event.exit_code - 128 if event.exit_code > 128 else None,
            }
            if "cgroups" in self.containment:  # what is left of them: NULL when nothing
                values["cgroups"] = self.containment["cgroups"]
            figures = [
                attempt_figures(
                    m.name, a.status, a.duration_s, a.peak_rss_bytes, a.cpu_user_s, a.cpu_sys_s
                )
                for m in event.modules
                for a in m.attempts
            ]
            self.whole = event  # for a file that changed (_last_write)
            self.batch.ends.append((event.run_id, values, figures))
            self.flush()
            self._stop_writer()

    @staticmethod
    def _ended(r) -> dict:
        """An attempt's closing values, as module_runs holds them."""
        return {
            "status": r.status,
            "exit_code": r.exit_code,
            "signal": r.signal,
            "reason": r.reason or None,
            "end": iso(r.end),
            "duration_s": r.duration_s,
            "cpu_user_s": r.cpu_user_s,
            "cpu_sys_s": r.cpu_sys_s,
            "peak_rss_bytes": r.peak_rss_bytes,
            "read_bytes": r.read_bytes,
            "write_bytes": r.write_bytes,
            "mem_source": r.mem_source,
            "cpu_source": r.cpu_source,
            "io_source": r.io_source,
            "log_path": r.log_path,
            "log_bytes": r.log_bytes,
            "log_dropped_bytes": r.log_dropped_bytes,
            "log_incomplete": int(r.log_incomplete),
            "throttle_wait_s": r.throttle_wait_s,
            "throttle_reason": _text(r.throttle_reason),
            "throttle_kind": None if r.throttle_reason is None else str(r.throttle_reason.kind),
            "lock_wait_s": r.lock_wait_s,
            "lock_reason": r.lock_reason,
            "retry_in_s": r.retry_in,
        }

    def _whole_run(self, event: RunFinished) -> Batch:
        """Every record of the run, from its outcome (samples aside)."""
        batch = Batch(resets=[event.run_id], runs=[self.run_row], edges=list(self.edges))
        for m in event.modules:
            for a in m.attempts:
                batch.inserts.append(
                    {
                        "run_id": event.run_id,
                        "module": m.name,
                        "attempt": a.attempt,
                        "start": iso(a.start),
                        "pid": a.pid,
                        "pgid": a.pid,
                        **self._ended(a),
                    }
                )
            if not m.attempts:
                batch.inserts.append(
                    {
                        "run_id": event.run_id,
                        "module": m.name,
                        "attempt": 0,
                        "status": Status.SKIPPED,
                        "reason": m.reason,
                    }
                )
        return batch

    def abort(self, why: str) -> None:
        """The run ended without its RunFinished (an error in corral itself): close its
        row as crashed and its attempts still running (the executor stopped them) as
        interrupted with `why`, so no record says anything is still running."""
        if self.writer is None:
            return
        now = iso(time.time())
        for key in self.started:  # stopped with the executor: none is still running
            values = {"status": Status.INTERRUPTED, "reason": why, "end": now}
            self.batch.updates.append(((self.run_id, *key), values))
        self.batch.ends.append((self.run_id, {"ended": now, "status": "crashed"}, None))
        self.flush()
        self._stop_writer()
        while not self.notes.empty():
            self.notice(self.notes.get())
