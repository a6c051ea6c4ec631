"""What shell completion offers: module names, tags, hosts and run ids, read as cheaply as
possible."""

from __future__ import annotations

from pathlib import Path

from corral.config import Config


def candidates(config: Config, what: str) -> list[str]:
    """Sorted words for `what` ("modules", "tags", "hosts", or "runs": newest first);
    [] when nothing is known."""
    if what == "modules":
        names = {p.name[:-3] for d in config.modules if d.is_dir() for p in d.glob("*.sh")}
        return sorted(names)
    if what == "tags":
        from corral.api import open_store
        from corral.discover import load_modules

        store = open_store(config, on_warning=lambda _: None)
        try:
            modules = load_modules(config, store).modules
        finally:
            store.close()
        return sorted({tag for m in modules for tag in m.header.tags})
    if what == "runs":  # the runs' log directories: one scandir, no database
        import os

        with os.scandir(config.log_dir) as entries:
            names = [
                e.name for e in entries if e.name[:1].isdigit() and e.is_dir(follow_symlinks=False)
            ]
        return sorted(names, reverse=True)
    if what == "hosts":
        from corral.store import known_hosts

        groups = _groups()
        ssh = Path.home() / ".ssh"
        hosts = _ssh_hosts(ssh / "config") | _known_hosts(ssh / "known_hosts")
        hosts |= set(known_hosts(config.db))
        hosts |= _members(groups)
        return sorted(hosts) + sorted(f"@{g}" for g in groups)
    return []


def nodeset_words(words: list[str], incomplete: str) -> list[str]:
    """Completions of the last element of a node set being typed (`web01,db` completes
    `db`): each candidate whole, with what comes before the last comma kept, and none
    that is already in the set."""
    head, _, last = incomplete.rpartition(",")
    prefix, given = (f"{head},", set(head.split(","))) if head else ("", set())
    return [prefix + w for w in words if w.startswith(last) and w not in given]


def _groups() -> list[str]:
    """The node groups of ClusterShell's default group source (`@web` …), as `cluset
    -L` lists them; [] without ClusterShell or its groups."""
    try:
        from corral.fleet.run import clustershell_as_root

        clustershell_as_root()
        from ClusterShell.NodeSet import grouplist

        return list(grouplist())
    except Exception:  # noqa: BLE001 - a broken group source offers nothing
        return []


def _members(groups: list[str], limit: int = 10_000) -> set[str]:
    """The hosts of those groups, at most `limit` of them (a completion stays quick)."""
    names: set[str] = set()
    try:
        from corral.fleet.run import clustershell_as_root

        clustershell_as_root()
        from ClusterShell.NodeSet import NodeSet

        for group in groups:
            for node in NodeSet(f"@{group}"):
                names.add(node)
                if len(names) >= limit:
                    return names
    except Exception:  # noqa: BLE001 - a broken group source offers what it gave
        pass
    return names


def _ssh_hosts(path: Path) -> set[str]:
    """Concrete `Host` names of an OpenSSH client config (patterns left out)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return set()
    hosts = set()
    for line in lines:
        words = line.split()
        if len(words) > 1 and words[0].lower() == "host":
            hosts.update(w for w in words[1:] if not any(c in w for c in "*?!"))
    return hosts


def _known_hosts(path: Path, limit: int = 1 << 20) -> set[str]:
    """The host names in an OpenSSH known_hosts file (its first `limit` bytes): hashed
    entries (`|1|…`, HashKnownHosts) cannot be read back, and addresses are left out (a
    name is what one types in a node set); `[name]:port` gives name."""
    import ipaddress

    try:
        with path.open("rb") as f:
            data = f.read(limit).decode(errors="replace")
    except OSError:
        return set()
    hosts = set()
    for line in data.splitlines():
        fields = line.split()
        if fields and fields[0].startswith("@"):  # @cert-authority, @revoked: hosts next
            fields = fields[1:]
        if not fields or fields[0].startswith(("#", "|")):
            continue
        for name in fields[0].split(","):
            if name.startswith("["):
                name = name[1:].partition("]")[0]
            if not name or any(c in name for c in "*?!"):
                continue
            try:
                ipaddress.ip_address(name)
            except ValueError:
                hosts.add(name)
    return hosts
