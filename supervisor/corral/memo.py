"""The plan memo's look-up: `plan --json` text kept in the store under a digest of
everything it depends on, so that a plan asked again is answered without reading a
header or building the graph.

perf (docs/architecture.md): the click-free `plan --json` of `entry.py` imports this
and what it stands on (config, discover's scan, the store), and nothing of the graph.
"""

from __future__ import annotations

import marshal
from collections.abc import Iterable

from corral.config import Config
from corral.discover import Scan, scan_modules
from corral.schema import module_set_key
from corral.store import CACHE_TAG, Store

# A look-up that missed in `entry.py`, kept for the one that `cli.py` makes next in the
# same process, so the modules are listed and stated once (see `look_up`).
_handed: dict[tuple, Lookup] = {}


class Lookup:
    """One look-up in the plan memo: the scan and the runs the key was made of, the key,
    and the memo found under it (None: a miss)."""

    __slots__ = ("scan", "runs", "key", "found", "_durations")

    def __init__(self, scan: Scan, runs: list, key: str, found, durations=None):
        self.scan = scan
        self.runs = runs  # Store.recent_figures
        self.key = key
        self.found: tuple[str, str] | None = found
        self._durations: dict[str, float] | None = durations

    def durations(self, store: Store) -> dict[str, float]:
        """The durations from history that the plan weighs its priorities with."""
        if self._durations is None:
            self._durations = store.history_of(self.runs).durations
        return self._durations


def look_up(
    config: Config,
    store: Store,
    targets: Iterable[str] = (),
    tags: Iterable[str] = (),
    exclude: Iterable[str] = (),
    hand_over: bool = False,
) -> Lookup:
    """Scan the modules, read their durations from history and look the plan up in the
    memo; `found` is None on a miss (and always for an in-memory store). With
    `hand_over`, a miss is kept for the next look-up with the same arguments in this
    process (the click path after `entry.py`'s), which takes it instead of scanning
    again: the same answer as a scan made a moment earlier."""
    targets, tags, exclude = list(targets), sorted(tags), sorted(exclude)
    whose = (
        config.modules,
        repr(sorted(config.facilities.items())),
        store.path,
        tuple(targets),
        tuple(tags),
        tuple(exclude),
    )
    kept = _handed.pop(whose, None)
    if kept is not None:
        return kept
    scan = scan_modules(config)
    runs = store.recent_figures(module_set=module_set_key(config.modules)) if store.path else []
    durations = None
    if all(record is not None for _, record in runs):
        # perf: the durations are a function of these records alone: the key names them
        # (by digest) instead of working the medians out (docs/architecture.md)
        history: object = ("runs", [(run_id, _digest(record)) for run_id, record in runs])
    else:  # a run without a record: its attempt rows may still change
        durations = store.history_of(runs).durations
        history = ("durations", sorted(durations.items()))
    key = plan_key(config, scan, targets, tags, exclude, history)
    found = store.memo_plan(key) if store.path else None
    lookup = Lookup(scan, runs, key, found, durations)
    if hand_over and found is None:
        _handed[whose] = lookup
    return lookup


def plan_key(
    config: Config,
    scan: Scan,
    targets: list[str],
    tags: list[str],
    exclude: list[str],
    history: object,
) -> str:
    """The memo key of a plan: a digest of every module file's (name, device, inode,
    size, ctime_ns), the files that are not modules, the directories, the facilities,
    the targets, tags and exclusions, what history says (`history`: the recent runs'
    records, or the durations worked out from them) and the parser version. Any change
    to any of them is a new key, so a memo is never stale.

    perf: `_blake2` directly over `marshal.dumps` of the (name, key) pairs
    (docs/architecture.md)."""
    digest = _blake2b(
        repr(
            (
                CACHE_TAG,
                [str(d.absolute()) for d, _, _ in scan],
                sorted(config.facilities.items()),
                targets,
                tags,
                exclude,
                history,
            )
        ).encode(),
        digest_size=20,
    )
    for _, entries, ignored in scan:
        digest.update(marshal.dumps(entries))
        digest.update(marshal.dumps([(p.path, p.message) for p in ignored]))
    return digest.hexdigest()


def _blake2b(data: bytes = b"", digest_size: int = 64):
    """A BLAKE2b hash of `data`. perf: `_blake2` directly, as hashlib would load OpenSSL
    first (docs/architecture.md)."""
    try:
        from _blake2 import blake2b
    except ImportError:  # a Python built without its own hashes
        from hashlib import blake2b
    return blake2b(data, digest_size=digest_size)


def _digest(record: bytes) -> bytes:
    return _blake2b(record, 20).digest()
