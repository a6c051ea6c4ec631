"""What shell completion offers: module names, tags and hosts, read as cheaply as possible."""

from __future__ import annotations

from pathlib import Path

from corral.config import Config


def candidates(config: Config, what: str) -> list[str]:
    """Sorted words for `what` ("modules", "tags" or "hosts"); [] when nothing is known."""
    if what == "modules":
        names = {p.name[:-3] for d in config.modules if d.is_dir() for p in d.glob("*.sh")}
        return sorted(names)
    if what == "tags":
        from corral.api import load_modules, open_store

        store = open_store(config, on_warning=lambda _: None)
        try:
            modules = load_modules(config, store).modules
        finally:
            store.close()
        return sorted({tag for m in modules for tag in m.header.tags})
    if what == "hosts":
        return sorted(_ssh_hosts(Path.home() / ".ssh" / "config"))
    return []


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
