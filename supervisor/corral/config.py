"""YAML config + environment + flags -> one frozen `Config`.

Each setting comes from the first of: a flag, its `CORRAL_*` environment variable, the
config file, the default; `Config.sources` says which, for `corral config`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from corral.errors import UsageError
from corral.headers import FALSE_WORDS, TRUE_WORDS, parse_duration, parse_size, split_list
from corral.jobs import Jobs
from corral.visible import is_text

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
    progress_interval: float = 30.0  # without a terminal: a progress line at most this often
    keep_runs: int = 1000  # runs kept per module set (0: no limit); older ones are pruned
    keep_days: float = 90.0  # runs kept this many days at most (0: no limit)
    log_limit: int = 64 << 20
    lib: Path | None = None
    facilities: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pools: dict[str, int] = field(default_factory=dict)
    backend: str = "local"  # where real runs start attempts: a name in corral.backends
    deadline: float | None = None  # seconds the whole run may take; None: no bound
    # setting -> where its value came from ("flag --jobs", "env CORRAL_JOBS", a file, "default")
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    ssh_options: str | None = None  # fleets: passed to ssh, as in clush.conf
    fanout: int = 64  # fleets: hosts at once
    connect_timeout: float = 10.0  # fleets: seconds to reach a host

    def with_flags(self, **flags: object) -> Config:
        """A copy with every flag that was actually given (not None) applied: flags win
        over the environment, the config file and the defaults."""
        given = {k: v for k, v in flags.items() if v is not None}
        for key, value in given.items():
            try:
                _in_range(key, value)  # the same ranges as for the file
            except ValueError as exc:
                flag = "--" + FLAG_NAMES.get(key, key).replace("_", "-")
                shown = value.fixed if isinstance(value, Jobs) else value
                raise UsageError(f"{flag}: {shown!r}: {exc}") from None
        sources = dict(self.sources)
        sources.update({k: f"flag --{FLAG_NAMES.get(k, k).replace('_', '-')}" for k in given})
        return replace(self, **given, sources=sources)


# Settings a `CORRAL_*` environment variable may set. Not CORRAL_LIB or CORRAL_LOG_DIR:
# corral sets those for its modules, and a module that runs corral must not inherit them.
ENV_SETTINGS = (
    "jobs",
    "max_load",
    "min_free_mem",
    "fail_fast",
    "grace",
    "retry_backoff",
    "sample_interval",
    "progress_interval",
    "log_limit",
    "keep_runs",
    "keep_days",
)
FLAG_NAMES = {"fail_fast": "fail-fast/--keep-going"}
# What corral reads from CORRAL_* variables, and what it sets for its modules (or reads
# for its tests): a variable close to the first but neither is a typo.
ENV_NAMES = {f"CORRAL_{k.upper()}" for k in (*ENV_SETTINGS, "modules", "db", "config")}
ENV_OTHERS = {
    "CORRAL_RUN_ID",
    "CORRAL_MODULE",
    "CORRAL_LIB",
    "CORRAL_LOG_DIR",
    "CORRAL_ATTEMPT",
    "CORRAL_DEBUG",
    "CORRAL_CGROUPS",
    "CORRAL_LOG_LEVEL",
}
CONFIG_NAMES = ("corral.yaml", "corral.yml")


def default_db() -> Path:
    """$CORRAL_DB, else $XDG_STATE_HOME/corral/corral.db, /var/lib/corral when root."""
    if os.environ.get("CORRAL_DB"):
        return Path(os.environ["CORRAL_DB"])
    if os.geteuid() == 0 and not os.environ.get("XDG_STATE_HOME"):
        return Path("/var/lib/corral/corral.db")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "corral" / "corral.db"


def find_config(directory: Path) -> tuple[Path | None, list[Path]]:
    """The config file for a modules directory, and the other candidates found and ignored.

    Looked for, in order: corral.yaml and corral.yml beside the modules directory, then
    inside it. Returns (None, []) when there is none."""
    absolute = directory.absolute()
    found = [
        d / name
        for d in (absolute.parent, absolute)
        for name in CONFIG_NAMES
        if (d / name).is_file()
    ]
    return (found[0], found[1:]) if found else (None, [])


def _one_config(path: Path | None, dirs: tuple[Path, ...]) -> None:
    """Several modules directories are one module set with one config: a config file
    found for any other directory than the first (and not the same file) would be
    silently ignored, its pools and facilities with it. Raises UsageError naming it."""
    used = path.resolve() if path is not None else None
    others = []
    for directory in dirs[1:]:
        found, _ = find_config(directory)
        if found is not None and found.resolve() != used and found not in others:
            others.append(found)
    if others:
        raise UsageError(
            f"{', '.join(map(str, others))}: not read: with several modules directories "
            f"corral reads one config file, the one of the first ({path or 'none found'} "
            f"for {dirs[0]}); merge them into one and name it with --config FILE (or "
            "$CORRAL_CONFIG)"
        )


def load_config(
    modules: tuple[str, ...] = (), db: str | None = None, config_file: str | None = None
) -> Config:
    """Resolve modules dirs, database and the YAML file; raises UsageError naming the file.

    Precedence, for every setting: flag > CORRAL_* environment variable > config file >
    default."""
    env = os.environ
    _require_cwd(modules, env.get("CORRAL_MODULES"))
    sources: dict[str, str] = {}
    warnings: list[str] = []
    if modules:
        dirs, sources["modules"] = tuple(Path(d) for d in modules), "flag --modules"
    elif env.get("CORRAL_MODULES"):
        dirs = tuple(Path(d) for d in env["CORRAL_MODULES"].split(os.pathsep) if d)
        sources["modules"] = "env CORRAL_MODULES"
        if not dirs:
            raise UsageError(
                f"$CORRAL_MODULES={env['CORRAL_MODULES']!r} names no directory "
                "(a list of directories separated by ':')"
            )
    else:
        dirs, sources["modules"] = (Path("modules"),), "default"
    config_file = config_file or env.get("CORRAL_CONFIG") or None
    if config_file:
        path: Path | None = Path(config_file)
        how = "flag --config" if config_file != env.get("CORRAL_CONFIG") else "env CORRAL_CONFIG"
        require_cwd_for(path, "--config" if how.startswith("flag") else "$CORRAL_CONFIG")
        try:
            data = _read_yaml(path, required=True)
        except UnsafeConfig as exc:  # named on purpose: an error, never ignored
            raise UsageError(f"{path}:1: {exc}; nothing was run") from None
    else:
        path, ignored = find_config(dirs[0])
        _one_config(path, dirs)
        how = "found beside the modules directory"
        if path is not None and path.parent == dirs[0].absolute():
            how = "found in the modules directory"
        stray = [
            Path(name).absolute()
            for name in CONFIG_NAMES
            if Path(name).is_file() and Path(name).absolute() not in (path, *ignored)
        ]
        if stray:
            warnings.append(
                f"ignoring {', '.join(map(str, stray))}: the config file is read beside or "
                f"inside the modules directory ({dirs[0].absolute()}); --config FILE names "
                "another"
            )
        if ignored:
            warnings.append(
                f"using {path}; ignoring {', '.join(map(str, ignored))} "
                "(one config file per modules directory; --config chooses)"
            )
        try:
            data = _read_yaml(path, required=False) if path else {}
        except UnsafeConfig as exc:  # found, not chosen: ignored (never read), said
            warnings.append(f"ignoring {path}: not read: {exc}")
            path, data = None, {}
    sources["config_file"] = how if path else "none found"
    origin = f"config {path}"
    for key in data:
        if key != "modules":
            sources[key] = origin
    if db:
        db_path, sources["db"] = Path(db), "flag --db"
    elif env.get("CORRAL_DB"):
        db_path, sources["db"] = Path(env["CORRAL_DB"]), "env CORRAL_DB"
    elif "db" in data:
        db_path = Path(path.parent, _path_text(path, "db", data.pop("db")))  # type: ignore[union-attr]
    else:
        db_path, sources["db"] = default_db(), "default"
    if "db" in data:  # checked even when a flag or $CORRAL_DB overrides it
        _path_text(path, "db", data.pop("db"))
    if not modules and not env.get("CORRAL_MODULES") and "modules" in data:
        value = data.pop("modules")
        sources["modules"] = origin
        items = value if isinstance(value, list) and value else [value]
        dirs = tuple(Path(path.parent, _path_text(path, "modules", d)) for d in items)  # type: ignore[union-attr]
    elif "modules" in data:
        value = data.pop("modules")
        for d in value if isinstance(value, list) and value else [value]:
            _path_text(path, "modules", d)  # checked even when a flag overrides it
        sources["modules"] = sources["modules"] + " (over the config file's)"
    if "log_dir" in data:
        log_dir = Path(path.parent, _path_text(path, "log_dir", data.pop("log_dir")))  # type: ignore[union-attr]
    else:
        log_dir, sources["log_dir"] = db_path.parent / "logs", "default: beside the database"
    lib = Path(path.parent, _path_text(path, "lib", data.pop("lib"))) if "lib" in data else None  # type: ignore[union-attr]
    values = _typed(data, path) if path else _typed({}, Path("-"))
    if lib is not None:
        values["lib"] = lib
    for key in ENV_SETTINGS:
        name = f"CORRAL_{key.upper()}"
        if env.get(name, "").strip():
            values[key] = _from_env(name, key, env[name])
            sources[key] = f"env {name}"
    if "keep_going" in sources:
        sources["fail_fast"] = sources.pop("keep_going")
    warnings += _env_typos(env)
    for value, key in ((db_path, "db"), (log_dir, "log_dir"), (lib, "lib")):
        if value is not None:
            source = sources.get(key, "")
            what = {"flag --db": "--db", "env CORRAL_DB": "$CORRAL_DB"}.get(source, key + ":")
            require_cwd_for(value, what)
    # Paths corral records as text (the database's, the logs' beside it): one that is not
    # UTF-8 would be lost from the records (the modules directory: discover.py says so).
    named = [(db_path, "database"), (log_dir, "log directory"), (lib, "library")]
    for value, what in [*named, (path, "config file")]:
        if value is not None and not is_text(_absolute(value)):
            raise UsageError(
                f"{_absolute(value)}: the {what}'s path is not valid UTF-8, and corral "
                "records it as text: rename it (or reach it through a link whose name is)"
            )
    return Config(
        modules=dirs,
        db=_absolute(db_path),
        log_dir=_absolute(log_dir),
        config_file=path if path and path.exists() else None,
        sources=sources,
        warnings=tuple(warnings),
        **values,
    )


PATH_KEYS = ("db", "log_dir", "modules", "lib")  # read before _typed: relative to the file


def _path_text(path: Path | None, key: str, value: object) -> str:
    """A path setting's text: a non-empty string, never a list, number or switch (which
    would become a file named "['a', 'b']" or "True"). Raises UsageError naming the key."""
    if not isinstance(value, str) or not value.strip():
        raise UsageError(
            f"{at(path, key)}: {key}: expected a path (a non-empty string), not {_shown(value)}"
        )
    return value


def _absolute(path: Path) -> Path:
    """`path` from the current directory, because a run changes directory (into its
    modules' directory) before it writes its records; as given when that is gone."""
    try:
        return Path(os.path.abspath(path))
    except OSError:
        return path


def _require_cwd(modules: tuple[str, ...], from_env: str | None) -> None:
    """A relative modules path with the working directory gone is a clear error."""
    given = modules or tuple((from_env or "modules").split(os.pathsep))
    for d in given:
        if d:
            require_cwd_for(d, "--modules" if modules else "$CORRAL_MODULES" if from_env else "")


def require_cwd_for(path: str | Path, what: str) -> None:
    """A relative path (`what` gave it: "--db", "$CORRAL_DB" …; "" for the default
    ./modules) with the working directory gone is a usage error naming both: nothing
    relative can be found or made then."""
    if os.path.isabs(path):
        return
    try:
        os.getcwd()
    except OSError:
        given = f"given by {what}" if what else "the default"
        how = f"give {what} an absolute path" if what else "give --modules an absolute path"
        raise UsageError(
            f"{path}: a relative path ({given}), and the current directory no longer exists; {how}"
        ) from None


def _from_env(name: str, key: str, text: str) -> object:
    """An environment variable's value, converted and checked as the config file's."""
    try:
        value = _bool_text(text) if key == "fail_fast" else _CONVERTERS[key](text.strip())
        _in_range(key, value)
        return value
    except (TypeError, ValueError, OverflowError) as exc:
        raise UsageError(f"${name}: cannot read {_shown(text)}: {exc}") from None


def _env_typos(env) -> list[str]:
    """A warning for each CORRAL_* variable corral does not read that is close to one it
    does (`CORRAL_JOB=4`): it would be ignored in silence."""
    out = []
    for name in sorted(env):
        if (
            not name.startswith("CORRAL_")
            or name in ENV_NAMES
            or name in ENV_OTHERS
            or name.startswith("CORRAL_TEST_")
            or not env[name].strip()
        ):
            continue
        import difflib  # perf: only for a variable corral does not read (docs/architecture.md)

        close = difflib.get_close_matches(name, sorted(ENV_NAMES), n=1, cutoff=0.8)
        if close:
            out.append(f"${name} is not a setting corral reads (did you mean ${close[0]}?)")
    return out


def _bool_text(text: str) -> bool:
    """yes/no, true/false, on/off, 1/0, as a shell variable spells a switch."""
    word = text.strip().lower()
    if word in ("1", "yes", "true", "on"):
        return True
    if word in ("0", "no", "false", "off"):
        return False
    raise ValueError("expected yes or no (true/false, 1/0)")


class UnsafeConfig(Exception):
    """As root: a config file another user could change (why, in words)."""


def _config_text(path: Path) -> str:
    """The config file's text; as root read from the descriptor checked as a module's
    is (trust.py: root's, writable by no one else, no one else's link or directory on
    the way), UnsafeConfig otherwise. Raises OSError, UnicodeDecodeError."""
    if os.geteuid() != 0:
        return path.read_text()
    from corral.safepath import UnsafePath
    from corral.trust import read_checked, refusal

    try:
        return read_checked(path).decode()
    except UnsafePath as exc:
        raise UnsafeConfig(refusal(str(path), exc, "read")) from None


def _read_yaml(path: Path, required: bool) -> dict:
    """The config file's mapping ({} when it is missing and not `required`); raises
    UsageError naming the file and line, UnsafeConfig (as root) before reading a byte
    of a file another user could change."""
    if not path.exists():
        if required:
            raise UsageError(f"{path}: config file not found")
        return {}
    import yaml

    try:
        data = yaml.load(_config_text(path), Loader=_loader())
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read config: {exc}") from None
    except ValueError as exc:  # an integer of thousands of digits
        raise UsageError(f"{path}: cannot read config: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark else ""
        raise UsageError(f"{path}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:  # empty, or comments only
        data = {}
    if not isinstance(data, dict):  # also `[]`, `0` or `""`: never read as no settings
        raise UsageError(f"{path}:1: config must be a mapping of names to values")
    out: dict = {}
    given: dict[str, str] = {}
    for k, v in data.items():
        key = str(k).replace("-", "_")
        same = "fail_fast" if key == "keep_going" else "keep_going" if key == "fail_fast" else key
        for one in {key, same} & set(given):  # max-load and max_load; keep_going: its opposite
            what = f"{key} is given twice" if one == key else f"{one} and {key} set one thing"
            raise UsageError(f"{at(path, key)}: {what}: as {given[one]!r} and as {k!r}")
        out[key], given[key] = v, str(k)
    return out


def at(path: Path | None, key: str, sub: str | None = None) -> str:
    """`FILE:LINE` of setting `key` (of its entry `sub`, for a mapping such as pools:) in
    the config file, for an error; `FILE` when the line cannot be found. Only an error
    pays for it: the file is read again, as YAML nodes, which carry their lines."""
    import yaml

    try:
        node = yaml.compose(path.read_text(), Loader=_loader()) if path else None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        node = None
    line = None
    for k, v in node.value if isinstance(node, yaml.MappingNode) else ():
        if str(k.value).replace("-", "_") != key:
            continue
        line = k.start_mark.line + 1
        for k2, _ in v.value if sub is not None and isinstance(v, yaml.MappingNode) else ():
            if str(k2.value) == sub:
                line = k2.start_mark.line + 1
    return f"{path}:{line}" if line else f"{path}"


def _shown(value: object) -> str:
    """A value as an error quotes it: its repr, cut (a number of 5,000 digits is not
    repeated back)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:36]}...{text[-1]}"


def _loader():
    """PyYAML's safe loader with YAML 1.2's integers: `010` is ten (read as decimal),
    never YAML 1.1's octal eight; `0x1F` is still hex, `1:30` is text (not 90)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            """A key given twice is an error naming its second line (YAML would keep
            the last in silence, and the first would read as what is set)."""
            seen: dict = {}
            for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:
                    continue  # an unhashable key: the constructor says so
                if first != key_node.start_mark.line + 1:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"{key!r} is given twice (first on line {first})",
                        key_node.start_mark,
                    )
            return super().construct_mapping(node, deep)

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:int",
        re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$"),
        list("-+0123456789"),
    )
    return Loader


def _typed(data: dict, path: Path) -> dict:
    """Check and convert each config value; unknown names are errors, not silent typos,
    and a value is what it says or an error naming the key (never `bool("false")`)."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if key not in _CONVERTERS:
            known = ", ".join(sorted([*_CONVERTERS, *PATH_KEYS]))
            raise UsageError(f"{at(path, key)}: unknown setting {key!r} (known: {known})") from None
        try:
            out[key] = _CONVERTERS[key](value)
            _in_range(key, out[key])
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            why = exc if isinstance(exc, ValueError) and str(exc) else "not a valid value"
            sub = getattr(exc, "key", None)
            raise UsageError(
                f"{at(path, key, sub)}: {key}: cannot read {_shown(value)}: {why}"
            ) from None
    _check_facilities(out.get("facilities", {}), path)
    if "keep_going" in out:
        out["fail_fast"] = out.pop("keep_going")
    facilities = dict(DEFAULT_FACILITIES)
    facilities.update(out.get("facilities", {}))
    out["facilities"] = facilities
    return out


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError("expected a whole number of at least 1")
    if isinstance(value, str) and not value.strip().isascii():
        raise ValueError("expected a whole number of at least 1")
    if int(value) < 1:  # type: ignore[arg-type]
        raise ValueError("expected a whole number of at least 1")
    return int(value)  # type: ignore[arg-type]


def _whole(value: object) -> int:
    """A whole number of at least 0 (0: no limit); never int() of thousands of digits."""
    text = str(value).strip() if isinstance(value, int | str) else ""
    if isinstance(value, bool) or not (text.isascii() and text.isdigit() and len(text) < 19):
        raise ValueError("expected a whole number (0: no limit)")
    return int(text)


MAX_DAYS = 36525  # a century; 0 is how to say "no limit"


def _days(value: object) -> float:
    """Days as a number (`30`, `0.5`), or a duration (`12h`, `2d`); 0: no limit."""
    text = str(value).strip()
    try:
        days = float(text)
    except ValueError:
        days = parse_duration(text) / 86400
    if not 0 <= days <= MAX_DAYS:  # also NaN and infinity
        raise ValueError(f"expected days, 0 to {MAX_DAYS} (0: no limit)")
    return days


def _flag(value: object) -> bool:
    """YAML's true/false, or yes/no, true/false, on/off, 1/0 as text; nothing else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError("expected true or false")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError("expected a number") from None


def _text(value: object) -> str:
    if isinstance(value, list | dict | tuple):
        raise ValueError("expected a single value, not a list or mapping")
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a value, not true/false or nothing")
    return str(value)


# Bounds of every number a run uses: past them a value is a typo, and a duration past
# a year overflows the kernel's timers. (key: (lowest, highest, what it is))
LIMITS: dict[str, tuple[float, float, str]] = {
    "jobs": (0, 4096, "modules at once (0: no limit of its own)"),
    "max_load": (0.01, 1e6, "runnable tasks"),
    "min_free_mem": (0, 1 << 50, "bytes"),
    "grace": (0.0, 86400, "seconds"),
    "retry_backoff": (0.0, 86400, "seconds"),
    "sample_interval": (0.01, 60, "seconds"),
    "progress_interval": (0.1, 86400, "seconds"),
    "log_limit": (0, 1 << 50, "bytes"),
    "deadline": (0.001, 366 * 86400, "seconds"),
    "keep_runs": (0, 2**31 - 1, "runs (0: no limit)"),
    "fanout": (1, 65536, "hosts at once"),
    "connect_timeout": (0.001, 86400, "seconds"),
}
MAX_POOL = 4096  # holders of one lock at once: as many as --jobs may run


def _in_range(key: str, value: object) -> None:
    """Raise ValueError when a number is not finite or outside LIMITS."""
    if isinstance(value, Jobs):
        value = value.fixed
    if key not in LIMITS or value is None or isinstance(value, bool | str):
        return
    low, high, unit = LIMITS[key]
    if not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"expected {low:g} to {high:g} {unit}")


def _check_facilities(facilities: dict[str, tuple[str, ...]], path: Path) -> None:
    """A facility that includes itself, directly or through others, is an error naming
    the cycle (insserv refuses it too)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for member in facilities.get(name, ()):
            member = member.lstrip("+")
            if member not in facilities:
                continue
            if state.get(member) == 1:
                cycle = trail[trail.index(member) :] + [member] if member in trail else [member]
                raise UsageError(
                    f"{at(path, 'facilities')}: facilities: cycle {' -> '.join(cycle)}"
                )
            if member not in state:
                visit(member, [*trail, member])
        state[name] = 2

    for name in sorted(facilities):
        if name not in state:
            visit(name, [name])


def _jobs(text: str) -> Jobs:
    try:
        return Jobs.parse(text)
    except ValueError:
        raise ValueError("expected a whole number (0: no limit), or auto") from None


def _facilities(value: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping such as {$network: [networking]}")
    out = {}
    for name, members in value.items():
        name = name if str(name).startswith("$") else f"${name}"
        if isinstance(members, dict):
            raise ValueError(f"{name}: expected a list of module names")
        items = split_list(members) if isinstance(members, str) else list(members or ())
        out[name] = tuple(_text(m) for m in items)
    return out


def _backend(value: object) -> str:
    from corral.backends import BACKENDS, BY_FLAG

    name = str(value)
    if name in BY_FLAG:
        raise ValueError(f"{name} is chosen by {BY_FLAG[name]}, not in the config")
    if name not in BACKENDS:
        known = ", ".join(sorted(n for n in BACKENDS if n not in BY_FLAG))
        raise ValueError(f"expected one of: {known}")
    return name


def _pools(value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ValueError("expected a mapping of lock names to pool sizes")
    out = {}
    for name, size in value.items():
        text = str(name) if isinstance(name, str | int) and not isinstance(name, bool) else ""
        if split_list(text) != [text]:  # '', 'a b', None: no header can name it
            error = ValueError(f"{_shown(name)} is not a lock name a header can give (a word)")
            error.key = name
            raise error
        try:
            out[str(name)] = _positive_int(size)
            if out[str(name)] > MAX_POOL:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            error = ValueError(
                f"{name}: {_shown(size)} is not a pool size (a whole number, 1 to {MAX_POOL})"
            )
            error.key = name  # its own line (`at`)
            raise error from None
    return out


_CONVERTERS = {
    "jobs": lambda v: _jobs(_text(v)),
    "sample_interval": lambda v: parse_duration(_text(v)),
    "progress_interval": lambda v: parse_duration(_text(v)),
    "fail_fast": _flag,
    "keep_going": lambda v: not _flag(v),
    "max_load": _number,
    "min_free_mem": lambda v: parse_size(_text(v)),
    "grace": lambda v: parse_duration(_text(v)),
    "retry_backoff": lambda v: parse_duration(_text(v)),
    "log_limit": lambda v: parse_size(_text(v)),
    "keep_runs": _whole,
    "keep_days": _days,
    "facilities": _facilities,
    "pools": _pools,
    "backend": lambda v: _backend(_text(v)),
    "deadline": lambda v: parse_duration(_text(v)),
    "ssh_options": _text,
    "fanout": _positive_int,
    "connect_timeout": lambda v: parse_duration(_text(v)),
}
