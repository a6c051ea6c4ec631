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
    """One look-up in the plan memo: the scan and durations the key was made of, the
    key, and the memo found under it (None: a miss)."""

    __slots__ = ("scan", "durations", "key", "found")

    def __init__(self, scan: Scan, durations: dict[str, float], key: str, found):
        self.scan = scan
        self.durations = durations
        self.key = key
        self.found: tuple[str, str] | None = found


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
    durations = (
        store.history(module_set=module_set_key(config.modules)).durations if store.path else {}
    )
    key = plan_key(config, scan, targets, tags, exclude, durations)
    found = store.memo_plan(key) if store.path else None
    lookup = Lookup(scan, durations, key, found)
    if hand_over and found is None:
        _handed[whose] = lookup
    return lookup


def plan_key(
    config: Config,
    scan: Scan,
    targets: list[str],
    tags: list[str],
    exclude: list[str],
    durations: dict[str, float],
) -> str:
    """The memo key of a plan: a digest of every module file's (name, device, inode,
    size, ctime_ns), the files that are not modules, the directories, the facilities,
    the targets, tags and exclusions, the durations from history and the parser
    version. Any change to any of them is a new key, so a memo is never stale.

    perf: `_blake2` directly (hashlib would load OpenSSL first) over `marshal.dumps` of
    the (name, key) pairs (docs/architecture.md)."""
    try:
        from _blake2 import blake2b
    except ImportError:  # a Python built without its own hashes
        from hashlib import blake2b

    digest = blake2b(
        repr(
            (
                CACHE_TAG,
                [str(d.absolute()) for d, _, _ in scan],
                sorted(config.facilities.items()),
                targets,
                tags,
                exclude,
                sorted(durations.items()),
            )
        ).encode(),
        digest_size=20,
    )
    for _, entries, ignored in scan:
        digest.update(marshal.dumps(entries))
        digest.update(marshal.dumps([(p.path, p.message) for p in ignored]))
    return digest.hexdigest()
