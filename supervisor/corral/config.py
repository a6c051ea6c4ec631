"""YAML config + environment + flags -> one frozen `Config`. Flags win over env over file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from corral.errors import UsageError
from corral.headers import parse_duration, parse_size
from corral.throttle import Jobs

# insserv.conf's system facilities: known names that resolve to nothing until mapped,
# so `Required-Start: $remote_fs` on a host without such a module is not an error.
DEFAULT_FACILITIES: dict[str, tuple[str, ...]] = {
    name: ()
    for name in (
        "$local_fs",
        "$remote_fs",
        "$network",
        "$named",
        "$portmap",
        "$syslog",
        "$time",
        "$x-display-manager",
        "$mail-transport-agent",
    )
}
SECRET_PATTERNS = ("*_TOKEN", "*_PASSWORD", "*_SECRET", "*_KEY", "*PASSWD*")


@dataclass(frozen=True)
class Config:
    """Everything a command needs to know, resolved once."""

    modules: tuple[Path, ...]
    db: Path
    log_dir: Path
    config_file: Path | None = None
    jobs: Jobs = field(default_factory=lambda: Jobs(os.cpu_count() or 1))
    fail_fast: bool = False
    max_load: float | None = None
    min_free_mem: int | None = None
    grace: float = 5.0
    retry_backoff: float = 1.0
    sample_interval: float = 0.2
    log_limit: int = 64 << 20
    lib: Path | None = None
    facilities: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pools: dict[str, int] = field(default_factory=dict)
    secret_patterns: tuple[str, ...] = SECRET_PATTERNS
    backend: str = "local"  # where real runs start attempts: a name in corral.backends

    def with_flags(self, **flags: object) -> Config:
        """A copy with every flag that was actually given (not None) applied."""
        given = {k: v for k, v in flags.items() if v is not None}
        return replace(self, **given)


def default_db() -> Path:
    """$CORRAL_DB, else $XDG_STATE_HOME/corral/corral.db, /var/lib/corral when root."""
    if os.environ.get("CORRAL_DB"):
        return Path(os.environ["CORRAL_DB"])
    if os.geteuid() == 0 and not os.environ.get("XDG_STATE_HOME"):
        return Path("/var/lib/corral/corral.db")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "corral" / "corral.db"


def load_config(
    modules: tuple[str, ...] = (), db: str | None = None, config_file: str | None = None
) -> Config:
    """Resolve modules dirs, database and the YAML file; raises UsageError naming the file."""
    dirs = tuple(Path(d) for d in modules) or (Path(os.environ.get("CORRAL_MODULES", "modules")),)
    path = Path(config_file) if config_file else dirs[0].absolute().parent / "corral.yaml"
    data = _read_yaml(path, required=config_file is not None)
    db_path = Path(db) if db else (Path(data.pop("db")) if "db" in data else default_db())
    if not modules and "modules" in data:
        value = data.pop("modules")
        dirs = tuple(Path(path.parent, d) for d in ([value] if isinstance(value, str) else value))
    data.pop("modules", None)
    log_dir = Path(data.pop("log_dir", db_path.parent / "logs"))
    if "lib" in data:
        data["lib"] = path.parent / str(data["lib"])
    values = _typed(data, path)
    return Config(
        modules=dirs,
        db=db_path,
        log_dir=log_dir,
        config_file=path if path.exists() else None,
        **values,
    )


def _read_yaml(path: Path, required: bool) -> dict:
    if not path.exists():
        if required:
            raise UsageError(f"{path}: config file not found")
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read config: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark else ""
        raise UsageError(f"{path}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}:1: config must be a mapping of names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _typed(data: dict, path: Path) -> dict:
    """Check and convert each config value; unknown names are errors, not silent typos."""
    out: dict[str, object] = {}
    for key, value in data.items():
        try:
            out[key] = _CONVERTERS[key](value)
        except KeyError:
            known = ", ".join(sorted(_CONVERTERS))
            raise UsageError(f"{path}: unknown setting {key!r} (known: {known})") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{path}: {key}: cannot read {value!r}: {exc}") from None
    if "keep_going" in out:
        out["fail_fast"] = out.pop("keep_going")
    facilities = dict(DEFAULT_FACILITIES)
    facilities.update(out.get("facilities", {}))
    out["facilities"] = facilities
    return out


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or int(value) < 1:  # type: ignore[arg-type]
        raise ValueError("expected a whole number of at least 1")
    return int(value)  # type: ignore[arg-type]


def _facilities(value: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping such as {$network: [networking]}")
    out = {}
    for name, members in value.items():
        name = name if str(name).startswith("$") else f"${name}"
        items = members.split() if isinstance(members, str) else list(members or ())
        out[name] = tuple(str(m) for m in items)
    return out


def _backend(value: object) -> str:
    from corral.backends import BACKENDS

    name = str(value)
    if name not in BACKENDS or name == "dryrun":
        known = ", ".join(sorted(n for n in BACKENDS if n != "dryrun"))
        raise ValueError(f"expected one of: {known}")
    return name


def _pools(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of lock names to pool sizes")
    return {str(k): _positive_int(v) for k, v in value.items()}


_CONVERTERS = {
    "jobs": lambda v: Jobs.parse(str(v)),
    "sample_interval": lambda v: parse_duration(str(v)),
    "fail_fast": bool,
    "keep_going": lambda v: not bool(v),
    "max_load": float,
    "min_free_mem": lambda v: parse_size(str(v)),
    "grace": lambda v: parse_duration(str(v)),
    "retry_backoff": lambda v: parse_duration(str(v)),
    "log_limit": lambda v: parse_size(str(v)),
    "lib": lambda v: Path(str(v)),
    "facilities": _facilities,
    "pools": _pools,
    "secret_patterns": lambda v: tuple(str(p) for p in v),
    "backend": _backend,
}
