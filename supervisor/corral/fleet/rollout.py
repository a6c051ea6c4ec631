"""A fleet rollout in the scheduler's terms: hosts as the units of a plan.

The scheduler runs a fleet as it runs modules (`corral.backends.fleet` makes each
host one attempt), so the rollout's rules are said with what the scheduler already
has:

- the fan-out window is `--jobs` (`RunSettings.jobs`);
- the canary hosts are a first wave: every other host is ordered `after` all of them
  (an order, not a requirement: a host's outcome is not a module's);
- the canary gate and `--max-fail` are a stop policy (`RolloutPolicy`), told of each
  host that ended: once every canary has ended and one is not ok, or once more than
  PCT % of the finished hosts are not ok, nothing new starts and the rest are skipped
  with its reason (hosts already running finish);
- hosts start in the node set's order (their priorities fall along it).

Pure: no processes, no clock.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.graph import EdgeKind, Graph, Module, Selection
from corral.headers import Header
from corral.status import Status

from .hosts import OK

HOST = Header(description="a fleet host: its whole corral run")


def host_plan(hosts: list[str], canary: int) -> tuple[Graph, Selection]:
    """The graph and selection of a fleet run: one unit per host, the first `canary`
    hosts a wave the others wait for. `hosts` are distinct, in node-set order."""
    first = frozenset(hosts[: max(0, canary)])
    modules, waits, order = {}, {}, {}
    for host in hosts:
        modules[host] = Module(host, host, HOST)
        after = set() if host in first else set(first)
        waits[host] = {kind: set() for kind in EdgeKind} | {EdgeKind.AFTER: after}
        order[host] = frozenset(after)
    count = len(hosts)
    selection = Selection(
        names=tuple(hosts),
        level={h: 0 if h in first or not first else 1 for h in hosts},
        priority={h: float(count - i) for i, h in enumerate(hosts)},
        waits=order,
        excluded={},
    )
    return Graph(modules, waits), selection


class RolloutPolicy:
    """The canary gate and --max-fail as a scheduler stop policy (`RunSettings.stop_when`).

    `status_of(host)` is how the host ended as the fleet says it (ok, failed, lost …;
    a host whose modules all completed with a warning is ok).
    """

    def __init__(self, canary: list[str], max_fail: float | None, status_of: Callable[[str], str]):
        self.canary = list(canary)
        self.gated = bool(self.canary)
        self.max_fail = max_fail
        self.status_of = status_of
        self.finished: dict[str, str] = {}  # host -> status, in the order they ended
        self.refused: str | None = None

    def __call__(self, host: str, status: Status) -> str | None:
        """`host` ended: the reason to start no other host, or None."""
        self.finished[host] = self.status_of(host)
        if self.refused is not None:
            return None
        if self.gated and all(h in self.finished for h in self.canary):
            self.gated = False
            bad = [h for h in self.canary if self.finished[h] != OK]
            if bad:
                names = ", ".join(f"{h} {self.finished[h]}" for h in bad)
                return self._refuse(f"not started: canary {names}")
        failed = sum(s != OK for s in self.finished.values())
        if self.max_fail is not None and failed * 100 > self.max_fail * len(self.finished):
            return self._refuse(
                f"not started: --max-fail {self.max_fail:g}%: {failed} of "
                f"{len(self.finished)} finished hosts failed"
            )
        return None

    def _refuse(self, reason: str) -> str:
        self.refused = reason
        return reason
