"""Stopping the local backend's attempts: TERM (and CONT), KILL after the grace period,
giving up on what no signal ends, and the deadlines that drive them (a module's timeout,
the grace period a finished attempt's leftovers get, the KILL, the giving up). The wait
loop calls `_enforce_deadlines` and sleeps no longer than `_next_deadline`.
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING

from corral import procfs
from corral.kill import ASK, signal_group
from corral.status import Status
from corral.units import plural

if TYPE_CHECKING:
    from corral.backends.local import Job


class Stopping:
    """`LocalExecutor`'s stops and deadlines (a mixin: no object of its own, so no
    indirection on the wait loop's way). It uses the executor's `grace`, `containment`,
    `run_id`, `leftovers`, `_jobs`, `_trees`, `_timed`, `_notices`, `_given_up`,
    `_abandoned` and `_exited`."""

    def stop(self, job: Job, cause: Status | None, now: bool = False) -> None:
        """TERM (and CONT, so a stopped process hears it) everything the attempt
        started; KILL after the grace period, or at once with `now`. After its main
        process exited, what is left is stopped and the outcome stays as it was."""
        if not job.exited:
            job.cause = job.cause or cause
        if now:
            self._killed(job)
            return
        if job.kill_at is None:
            if job.exited:
                self._count_leftovers(job)
            for signum in ASK:
                self._signal(job, signum)
            if not job.exited:
                job.stop_signal = job.stop_signal or signal.SIGTERM
            job.kill_at = time.monotonic() + self.grace
            self._timed.add(job)

    def _count_leftovers(self, job: Job) -> None:
        if job.member is not None:
            count = len(job.member.pids())
            if count:
                key = (job.spec.name, job.spec.attempt)
                self.leftovers[key] = self.leftovers.get(key, 0) + count

    def _signal(self, job: Job, signum: int) -> None:
        if job.member is None:
            signal_group(job.pid, signum)
        elif signum == signal.SIGKILL:
            self.containment.kill(job.member)
        else:
            self.containment.signal(job.member, signum)

    def _stop_all(self, cause: Status, now: bool = False) -> None:
        for job in list(self._jobs.values()):
            if not (job.exited and job.spec.detach):
                self.stop(job, cause, now)

    def _next_deadline(self) -> float | None:
        times = [
            t
            for job in self._timed
            for t in (job.kill_at if job.kill_at is not None else job.deadline, job.abandon_at)
            if t
        ]
        return min(times) if times else None

    def _killed(self, job: Job) -> None:
        """KILL everything the attempt started; what is still there a grace period later
        cannot be stopped (_abandon)."""
        self._signal(job, signal.SIGKILL)
        if not job.exited:
            job.stop_signal = signal.SIGKILL
        job.kill_at = None
        if job.abandon_at is None and not job.abandoned:
            job.abandon_at = time.monotonic() + self.grace
            self._timed.add(job)

    def _abandon(self, job: Job) -> None:
        """A grace period after the KILL the attempt's processes are still there: they
        wait in the kernel (uninterruptible, as on a hung NFS server) or are frozen, and
        no signal ends them. Waiting for them would hang the run (its requirers, its end)
        without a word: corral says which and stops waiting; they are counted as leftovers
        (their cgroup, if any, stays, as a detached daemon's does)."""
        job.abandon_at = None
        self._timed.discard(job)
        if self.containment.gone(job.member) if job.member is not None else job.exited:
            return
        pids = sorted(job.member.pids()) if job.member is not None else [job.pid]
        if not pids and self.run_id:  # the fallback saw none of them: find its mark
            mark = (job.spec.name, job.spec.attempt)
            pids = sorted(p for p, of in procfs.marked(self.run_id).items() if of == mark)
        self._given_up.update(pids)
        shown = ", ".join(map(str, pids[:8])) + (" …" if len(pids) > 8 else "")
        self._notices.append(
            f"{job.spec.name}: {plural(len(pids), 'process')} ({shown}) still there "
            f"{self.grace:g}s after SIGKILL (waiting in the kernel, or frozen): no signal "
            "ends them; corral no longer waits for them and leaves them"
        )
        job.abandoned = self._abandoned = True
        key = (job.spec.name, job.spec.attempt)  # left: counted once (also if when stopped)
        self.leftovers[key] = max(self.leftovers.get(key, 0), len(pids))
        if not job.exited:  # its main process: the outcome is what stopping it made it
            job.cause = job.cause or Status.INTERRUPTED
            self._exited(job, signal.SIGKILL, None)  # (a wait status: killed by KILL)
            self._jobs.pop(job.pid, None)  # if it ever ends, it is reaped as an orphan
            self._trees[job.pid] = job

    def _enforce_deadlines(self) -> None:
        if not self._timed:
            return
        now = time.monotonic()
        for job in list(self._timed):
            if job.kill_at is not None and now >= job.kill_at:
                self._killed(job)
                job.deadline = None
            elif job.abandon_at is not None and job.kill_at is None and now >= job.abandon_at:
                self._abandon(job)
            elif job.deadline is not None and job.kill_at is None and now >= job.deadline:
                self.stop(job, None if job.exited else Status.TIMEOUT)
                job.deadline = None
