"""Names, dependency resolution, selection, levels, priorities and the run-time Plan.

Edges point from a module to what it waits on. `requires` and `wants` select and
order; `after`/`before` only order, and only when both modules are in the run.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass, field
from enum import StrEnum

from corral.errors import HeaderError, Problem, UsageError
from corral.headers import NAME_RE, Header, split_list, unkeyed_message
from corral.status import FAILURES, Status
from corral.units import upper_median


class EdgeKind(StrEnum):
    """How a module waits on another: REQUIRES and WANTS select and order (a failed
    requirement skips the module, a failed want does not); AFTER and BEFORE only order."""

    REQUIRES = "requires"
    WANTS = "wants"
    AFTER = "after"
    BEFORE = "before"


ORDER_KINDS = tuple(EdgeKind)
# perf: what a module without edges of a kind waits on, shared: a set per module and
# kind was most of a 10,000-module run's memory (docs/architecture.md). Never mutated.
NONE: frozenset[str] = frozenset()
NO_EDGES: dict[EdgeKind, frozenset[str]] = dict.fromkeys(ORDER_KINDS, NONE)


@dataclass(frozen=True)
class Module:
    """A Bash file and its parsed header."""

    name: str
    path: str  # as found under the modules directory given by the user
    header: Header

    def problem(
        self, key: str, message: str, severity: str = "error", item: str | None = None
    ) -> Problem:
        """A problem at the line of header `key` (the line naming `item`, when given; line
        1 when the key is not written)."""
        return Problem(self.path, self.header.line_of(key, item), message, severity)


@dataclass
class Graph:
    """Every module of the modules directories, with resolved dependencies."""

    modules: dict[str, Module]
    # name -> kind -> canonical names it waits on (before-edges already turned around)
    waits: dict[str, dict[EdgeKind, set[str]]]
    warnings: list[Problem] = field(default_factory=list)

    def hard(self, name: str) -> set[str]:
        """What `name` requires: their failure skips it."""
        return self.waits[name][EdgeKind.REQUIRES]

    def selects(self, name: str) -> set[str]:
        """What selecting `name` selects too: its requirements and wants."""
        return self.waits[name][EdgeKind.REQUIRES] | self.waits[name][EdgeKind.WANTS]

    def order_edges(self, name: str, among: set[str] | None = None) -> set[str]:
        """Everything `name` must wait for, restricted to `among` when given."""
        kinds = self.waits[name]
        out = kinds["requires"] | kinds["wants"] | kinds["after"] | kinds["before"]
        return out if among is None else out & among


def build_graph(modules: list[Module], facilities: dict[str, tuple[str, ...]]) -> Graph:
    """Resolve names and dependencies; raises HeaderError listing every problem found."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    for module in modules:
        for p in module.header.problems:
            found = Problem(module.path, p.line, p.message, p.severity)
            (problems if p.severity == "error" else warnings).append(found)
    by_name, aliases = _names(modules, problems)
    resolver = _Resolver(by_name, aliases, facilities)
    given: dict[str, dict[EdgeKind, set[str]]] = {}  # only the edges there are

    def edges(name: str, kind: EdgeKind) -> set[str]:
        return given.setdefault(name, {}).setdefault(kind, set())

    all_users = []
    for name, module in by_name.items():
        for kind in ORDER_KINDS:
            for dep in getattr(module.header, kind):
                if dep == "$all":
                    all_users.append(name)
                    continue
                targets, message = resolver.resolve(dep)
                if message:
                    # insserv-style leniency: LSB headers often name scripts a host lacks
                    hard = (
                        kind is EdgeKind.REQUIRES
                        and not dep.startswith("$")
                        and not module.header.lsb
                    )
                    severity = "error" if hard else "warning"
                    # An ordering edge to an absent module is normal; to a near miss of a
                    # present one it is most likely a typo.
                    typo = "did you mean" in message
                    if kind in (EdgeKind.REQUIRES, EdgeKind.WANTS) or dep.startswith("$") or typo:
                        found = module.problem(
                            kind, f"{kind} {dep!r}: {message}", severity, item=dep
                        )
                        (problems if severity == "error" else warnings).append(found)
                for target in targets:
                    if kind is EdgeKind.BEFORE:
                        edges(target, EdgeKind.BEFORE).add(name)
                    else:
                        edges(name, kind).add(target)
    for module in by_name.values():
        problems.extend(_unkeyed(module, resolver))
    for name in all_users:  # insserv's $all: after every module that does not use $all itself
        edges(name, EdgeKind.AFTER).update(set(by_name) - set(all_users))
    waits: dict[str, dict[EdgeKind, set[str]]] = {}
    for m in by_name:
        kinds = given.get(m)
        waits[m] = {k: kinds.get(k, NONE) for k in ORDER_KINDS} if kinds else NO_EDGES  # type: ignore[assignment]
    graph = Graph(by_name, waits, warnings)
    problems.extend(_cycles(graph))
    if problems:
        raise HeaderError(sorted(problems, key=lambda p: (str(p.path), p.line)) + warnings)
    return graph


def _unkeyed(module: Module, resolver: _Resolver) -> list[Problem]:
    """A header line `# requires sleeper` (no colon) whose every word names a module, an
    alias or a known facility is a near miss of `# requires: sleeper`: an error, since it
    would let the module start too early. A line whose words are not all names is prose
    (`# after the reboot we check ...`) and is left alone (docs/usage.md)."""
    out = []
    for line, key, word, items in module.header.unkeyed:
        if all(item == "$all" or resolver.resolve(item)[1] is None for item in items):
            message = unkeyed_message(word, key, " ".join(items))
            out.append(Problem(module.path, line, message))
    return out


def _names(modules: list[Module], problems: list[Problem]):
    by_name: dict[str, Module] = {}
    aliases: dict[str, str] = {}
    owner: dict[str, Module] = {}
    for module in modules:
        if not NAME_RE.match(module.name):
            problems.append(
                Problem(
                    module.path,
                    1,
                    f"module name {module.name!r} is not "
                    "allowed (use letters, digits, _ . -, not starting with -)",
                )
            )
            continue
        for name in (module.name, *module.header.provides):
            other = owner.get(name)
            if other is not None and other is not module:
                problems.append(
                    module.problem(
                        "provides", f"name {name!r} is also provided by {other.path}", item=name
                    )
                )
                continue
            owner[name] = module
        by_name.setdefault(module.name, module)
    for name, module in owner.items():
        if name != module.name and module.name in by_name:
            aliases[name] = module.name
    return by_name, aliases


class _Resolver:
    def __init__(self, by_name, aliases, facilities):
        self.by_name, self.aliases, self.facilities = by_name, aliases, facilities

    def resolve(self, dep: str, seen: frozenset[str] = frozenset()) -> tuple[list[str], str | None]:
        """Canonical names for `dep`, and why it could not be found (None when it was).
        A facility met again inside itself adds nothing (config refuses such cycles)."""
        if dep in self.by_name:
            return [dep], None
        if dep in self.aliases:
            return [self.aliases[dep]], None
        if dep.startswith("$") and dep in self.facilities:
            if dep in seen:
                return [], None
            members = [m.lstrip("+") for m in self.facilities[dep]]
            found = [t for m in members for t in self.resolve(m, seen | {dep})[0]]
            return found, None
        if dep.startswith("$"):
            return [], "unknown facility (map it under facilities: in the config)"
        return [], "no module has that name or provides it" + self.suggest(dep)

    def suggest(self, name: str) -> str:
        """' (did you mean x?)' for the closest known names; '' when none is close."""
        return did_you_mean(name, [*self.by_name, *self.aliases])


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean a or b?)' naming up to three close matches; '' when none is close."""
    import difflib

    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.75)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def target_name(target: str, modules: dict[str, Module]) -> str:
    """A target as typed: a module name, or its file (`disk_usage.sh`, `modules/x.sh`).

    A path must be the module's own file; raises UsageError naming both otherwise."""
    import os

    if target in modules or not (target.endswith(".sh") or "/" in target):
        return target
    name = os.path.basename(target.rstrip("/"))
    name = name[:-3] if name.endswith(".sh") else name
    module = modules.get(name)
    if module is None:
        if os.path.isfile(target):  # a module file, of another modules directory
            where = os.path.dirname(os.path.abspath(target))
            dirs = sorted({os.path.dirname(os.path.abspath(m.path)) for m in modules.values()})
            ours = f" {', '.join(dirs)}" if dirs else ""
            raise UsageError(
                f"{target!r} is not in the modules directory{ours}: it is in {where} "
                f"(`corral --modules {where} ...`)"
            )
        return name  # not a module: the caller's did-you-mean looks at the name
    if "/" in target and os.path.realpath(target) != os.path.realpath(module.path):
        raise UsageError(
            f"{target!r} is not the module {name!r}, which is {os.path.abspath(module.path)}"
        )
    return name


def _cycles(graph: Graph) -> list[Problem]:
    """One problem per strongly connected component, listing a cycle's members in order."""
    if _acyclic(graph):
        return []  # perf: the usual case, a third of Tarjan's cost (docs/architecture.md)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    problems = []
    counter = 0
    for root in graph.modules:
        if root in index:
            continue
        work = [(root, iter(graph.order_edges(root)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.order_edges(child))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.order_edges(node):
                    problems.append(_cycle_problem(graph, set(component)))
    return problems


def _acyclic(graph: Graph) -> bool:
    """True when Kahn's walk over every ordering edge orders every module."""
    waits = {}
    for name, kinds in graph.waits.items():
        nonempty = [deps for deps in kinds.values() if deps]
        waits[name] = nonempty[0] if len(nonempty) == 1 else set().union(*nonempty)
    return len(_topo(waits, _users(waits))) == len(waits)


def _cycle_problem(graph: Graph, component: set[str]) -> Problem:
    start = min(component)
    path, seen = [start], {start}
    while True:  # walk inside the component until a member repeats
        here = path[-1]
        nxt = min(graph.order_edges(here, component))
        if nxt in seen:
            path = path[path.index(nxt) :] + [nxt]
            break
        path.append(nxt)
        seen.add(nxt)
    steps = []
    for a, b in zip(path, path[1:], strict=False):
        kind = next(k for k in ORDER_KINDS if b in graph.waits[a][k])
        steps.append(f"{b} before {a}" if kind is EdgeKind.BEFORE else f"{a} {kind} {b}")
    module = graph.modules[path[0]]
    first_kind = next(k for k in ORDER_KINDS if path[1] in graph.waits[path[0]][k])
    line = 1 if first_kind is EdgeKind.BEFORE else module.header.line_of(first_kind, path[1])
    message = f"dependency cycle: {' -> '.join(path)} ({'; '.join(steps)})"
    return Problem(module.path, line, message)


@dataclass(frozen=True)
class Selection:
    """The modules a command acts on, in a valid order, with waves and priorities."""

    names: tuple[str, ...]  # topological order: by level, then priority, then name
    level: dict[str, int]
    priority: dict[str, float]
    waits: dict[str, frozenset[str]]  # order edges among the selection
    excluded: dict[str, str]  # name -> why it was left out


def select(
    graph: Graph,
    targets: Iterable[str] = (),
    tags: Iterable[str] = (),
    exclude: Iterable[str] = (),
    durations: dict[str, float] | None = None,
    done: frozenset[str] = frozenset(),
) -> Selection:
    """Targets (all when none) filtered by tags, closed over requires/wants, minus exclusions.

    `done` names modules that already completed (`run --failed`): they are left out of the
    closure as satisfied, so what requires them still runs."""
    resolver = _Resolver(graph.modules, _alias_map(graph), {})
    targets = _split("target", targets)
    tags = set(_split("--tag", tags))
    exclude = _split("--exclude", exclude)
    start = set()
    for target in targets:
        name = target_name(target, graph.modules)
        names, message = resolver.resolve(name)
        if message:
            hint = resolver.suggest(name) or " (see `corral list`)"
            raise UsageError(f"no module named {target!r}{hint}")
        start.update(names)
    if not targets:
        start = set(graph.modules)
    if tags:
        known = {t for m in graph.modules.values() for t in m.header.tags}
        unknown = sorted(tags - known)
        if unknown:
            raise UsageError(
                f"--tag {', '.join(unknown)}: no module has that tag "
                f"(tags in use: {', '.join(sorted(known)) or 'none'})"
            )
        start = {n for n in start if tags & set(graph.modules[n].header.tags)}
        if not start:
            raise UsageError(f"no module among {', '.join(targets)} has tag {', '.join(tags)}")
    chosen = _closure(start, graph.selects) if targets or tags else start
    chosen -= done
    excluded = _exclusions(graph, chosen, exclude, resolver)
    chosen -= set(excluded)
    if not chosen:
        if excluded:
            raise UsageError(f"every selected module is excluded ({', '.join(sorted(excluded))})")
        if done:
            raise UsageError("nothing left to run: every selected module completed already")
        raise UsageError("no modules to run: the modules directory has no *.sh files")
    waits = {n: frozenset(graph.order_edges(n, chosen)) or NONE for n in chosen}
    users = _users(waits)
    topo = _topo(waits, users)
    level: dict[str, int] = {}
    for name in topo:
        level[name] = 1 + max([level[d] for d in waits[name]], default=-1)
    priority = priorities(users, topo, expected_durations(graph, topo, durations or {}))
    order = sorted(chosen, key=lambda n: (level[n], -priority[n], -len(users[n]), n))
    return Selection(tuple(order), level, priority, waits, excluded)


def _split(what: str, values: Iterable[str]) -> list[str]:
    """Each value split like a header list (`a,b c`); an empty one is an error, never
    "nothing given" (`corral run "$UNSET"` must not run every module)."""
    out = []
    for value in values:
        items = split_list(value)
        if not items:
            raise UsageError(f"{what} {value!r}: empty; name a module or tag")
        out += items
    return out


def _alias_map(graph: Graph) -> dict[str, str]:
    return {
        alias: m.name
        for m in graph.modules.values()
        for alias in m.header.provides
        if alias not in graph.modules
    }


def _closure(start: set[str], step) -> set[str]:
    seen, todo = set(start), list(start)
    while todo:
        for nxt in step(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _exclusions(graph, chosen, exclude, resolver) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in exclude:
        given = target_name(name, graph.modules)
        names, message = resolver.resolve(given)
        if message:
            hint = resolver.suggest(given)
            raise UsageError(f"--exclude {name!r}: no module has that name{hint}")
        for n in names:
            out[n] = "excluded"
    # A module whose hard requirement is excluded cannot run either: walk the reverse
    # `requires` edges from the exclusions, breadth first (linear, however many).
    users = _users({n: graph.hard(n) for n in chosen})
    queue = deque(sorted(out))
    while queue:
        gone = queue.popleft()
        for user in sorted(users.get(gone, ())):
            if user not in out:
                out[user] = f"requires {gone}, which is excluded"
                queue.append(user)
    return {n: why for n, why in out.items() if n in chosen}


def _users(waits: Mapping[str, Set[str]]) -> dict[str, list[str]]:
    """The reverse edges: who waits on each module (also on one outside `waits`)."""
    users: dict[str, list[str]] = dict.fromkeys(waits, ())  # type: ignore[arg-type]
    for n, deps in waits.items():
        for d in deps:
            got = users.get(d)
            if got:
                got.append(n)
            else:  # perf: a list only for a module someone waits on (docs/architecture.md)
                users[d] = [n]
    return users


def _topo(waits: Mapping[str, Set[str]], users: dict[str, list[str]]) -> list[str]:
    """Kahn's order of `waits`; shorter than `waits` exactly when it has a cycle."""
    remaining = {n: len(w) for n, w in waits.items()}
    ready = [n for n, c in remaining.items() if c == 0]
    out = []
    while ready:
        n = ready.pop()
        out.append(n)
        for u in users[n]:
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
    return out


TIMEOUT_SHARE = 0.25  # of its timeout, what a module is expected to take (until learned)


def expected_durations(
    graph: Graph, names: Iterable[str], durations: dict[str, float]
) -> dict[str, float]:
    """What each module is expected to take, from what the plan knows.

    History first. A module without history but with a declared `timeout:` takes a share
    of it: the median share among modules that have both, else TIMEOUT_SHARE. Any other
    module takes the median of those estimates (1.0 when there are none), and never more
    than its own timeout.
    """
    names = list(names)
    timeout = {n: graph.modules[n].header.timeout for n in names}
    shares = [durations[n] / timeout[n] for n in names if n in durations and timeout[n]]
    share = upper_median(shares, TIMEOUT_SHARE)
    out = {n: durations[n] for n in names if n in durations}
    for n in names:
        if n not in out and timeout[n]:
            out[n] = timeout[n] * share
    default = upper_median(out.values(), 1.0)
    for n in names:
        if n not in out:
            out[n] = min(default, timeout[n] or default)
    return out


def longest_paths(
    order: Iterable[str], before: Mapping[str, Iterable[str]], length: Mapping[str, float]
) -> dict[str, float]:
    """Each name's `length` plus the longest path through the names it comes after
    (`before[name]`, each earlier in `order`; one not in `order` counts 0.0, a name
    missing from `before` comes after nothing): the one longest-path walk of priorities
    and the ETA. {} for an empty `order`."""
    out: dict[str, float] = {}
    for name in order:
        after = before.get(name, ())
        out[name] = length[name] + max([out.get(b, 0.0) for b in after], default=0.0)
    return out


def priorities(
    users: dict[str, list[str]], topo: list[str], expected: dict[str, float]
) -> dict[str, float]:
    """Longest remaining path to the end of the run, weighted by expected duration
    (a module's own included); {} for no modules."""
    return longest_paths(reversed(topo), users, expected)


class Plan:
    """Run-time state of a selection: what is ready, running, done, skipped.

    The plan never spawns; the scheduler asks it what may start and tells it what ended.
    """

    def __init__(self, selection: Selection, graph: Graph):
        self.selection = selection
        self.graph = graph
        # perf: a module that waits on nothing shares NONE (docs/architecture.md): only
        # the sets of modules that wait on others are ever emptied (`_release`)
        self.missing = {n: set(selection.waits[n]) or NONE for n in selection.names}
        self.users = _users(selection.waits)
        # Highest priority first; between equals, the one that releases more modules.
        self._ready = [self._key(n) for n in selection.names if not self.missing[n]]
        heapq.heapify(self._ready)
        self._newly_ready = [key[-1] for key in self._ready]  # see take_newly_ready
        self.pending = set(selection.names)
        self.running: set[str] = set()
        self.skipped: dict[str, str] = {}

    def _key(self, name: str) -> tuple[float, int, str]:
        return (-self.selection.priority[name], -len(self.users[name]), name)

    def more_to_do(self) -> bool:
        """True while anything is pending or running."""
        return bool(self.pending or self.running)

    def describe(self) -> str:
        """The plan's state in a sentence, for an error message."""
        waiting = {n: sorted(self.missing[n]) for n in sorted(self.pending)[:5]}
        return (
            f"{len(self.pending)} pending (first: {waiting}), running {sorted(self.running)}, "
            f"ready {self.ready()[:5]}"
        )

    def take_newly_ready(self) -> list[str]:
        """Modules that became ready since the last call and still wait, in no particular
        order; [] when none. (What waits from before was in an earlier answer.)"""
        out = [n for n in self._newly_ready if n in self.pending and n not in self.running]
        self._newly_ready = []
        return out

    def ready(self) -> list[str]:
        """Ready modules, highest priority first; [] when nothing is ready."""
        return [key[-1] for key in sorted(self._ready) if key[-1] in self.pending]

    def take_ready(self, admit: Callable[[str], bool | None], limit: int) -> list[str]:
        """Start up to `limit` ready modules, highest priority first, that `admit` accepts.

        `admit` may refuse one (False: its lock is held; None: and nothing after it can
        start either, so stop looking); it stays ready. Returns [] when none.
        """
        taken: list[str] = []
        held = []
        while self._ready and len(taken) < limit:
            item = heapq.heappop(self._ready)
            name = item[-1]
            if name not in self.pending:
                continue  # skipped since it became ready
            verdict = admit(name)
            if verdict:
                self.pending.discard(name)
                self.running.add(name)
                taken.append(name)
            else:
                held.append(item)
                if verdict is None:
                    break
        for item in held:
            heapq.heappush(self._ready, item)
        return taken

    def finished(self, name: str, status: Status) -> list[tuple[str, str]]:
        """Record a final status; returns the (module, reason) pairs this skips, in order
        ([] unless `status` is one of FAILURES: wanters are released either way)."""
        self.running.discard(name)
        self.pending.discard(name)
        skipped = self._skip_dependents(name, status) if status in FAILURES else []
        for done in [name, *(n for n, _ in skipped)]:
            self._release(done)
        return skipped

    def skip_rest(self, reason: str) -> list[tuple[str, str]]:
        """Skip everything not yet started (fail-fast, SIGHUP); returns what was skipped."""
        out = [(n, reason) for n in self.selection.names if n in self.pending]
        for n, _ in out:
            self.pending.discard(n)
            self.skipped[n] = reason
        self._ready, self._newly_ready = [], []
        return out

    def _skip_dependents(self, name: str, status: Status) -> list[tuple[str, str]]:
        out = []
        todo = [(name, status)]
        while todo:
            failed, how = todo.pop(0)
            for user in sorted(self.users[failed]):
                if user in self.pending and failed in self.graph.hard(user):
                    reason = f"requires {failed}, which {how.verb}"
                    self.pending.discard(user)
                    self.skipped[user] = reason
                    out.append((user, reason))
                    todo.append((user, Status.SKIPPED))
        return out

    def _release(self, done: str) -> None:
        for user in self.users[done]:
            missing = self.missing[user]
            missing.discard(done)
            if not missing and user in self.pending:
                heapq.heappush(self._ready, self._key(user))
                self._newly_ready.append(user)
