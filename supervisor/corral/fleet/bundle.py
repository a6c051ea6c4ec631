"""What a host needs to run corral, as one content-addressed bundle.

A bundle holds the selected modules, lib/, the config (with the controller's own
paths taken out) and corral's run path as a zipapp of pure Python: the corral
package and the pure-Python sources of what its requirements name, recursively, as
installed here (click, PyYAML without its C extension, sqlite-utils and what that
requires; see `shipped_distributions`). A host needs only bash and
python3 >= 3.11; the zipapp runs with `python3 -I -S`, so nothing installed on the
host is ever imported by mistake.

The digest covers every shipped file (name, mode, bytes): a host that already
unpacked a bundle of that digest gets nothing copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from corral import safepath

# Installed distributions a host never gets, whatever the requirements say, and why.
NOT_ON_HOSTS = {
    "psutil": "a C extension; the run path reads /proc itself",
    "clustershell": "the controller's engine; a host never connects onward",
    "matplotlib": "the charts of `corral docs` (an extra; older corrals required it)",
    "pip": "sqlite-utils' `install` command; the run path installs nothing",
}
_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"\bextra\s*==")


def _key(name: str) -> str:
    """A distribution's name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def shipped_distributions(path: list[str] | None = None) -> list[str]:
    """The distributions the zipapp carries besides corral: corral's run-time
    requirements and theirs, recursively, as installed in `path` (default: sys.path).
    Left out: requirements of an extra or for another platform, what is not installed
    (an optional dependency, or one a newer version dropped, as python-dateutil 4
    dropped six) and NOT_ON_HOSTS. Sorted by name; raises LookupError when corral
    itself is not installed."""
    from importlib import metadata  # perf: only when the zipapp's key is not memoized

    where = sys.path if path is None else path

    def installed(name: str) -> metadata.Distribution | None:
        return next(iter(metadata.Distribution.discover(name=name, path=where)), None)

    corral = installed("corral")
    if corral is None:
        raise LookupError(
            "corral is not installed (pip install .): the fleet ships what its requirements name"
        )
    found: dict[str, object] = {}
    todo = [corral]
    while todo:
        for requirement in todo.pop().requires or ():
            text, _, marker = requirement.partition(";")
            name = _NAME.match(text)
            if name is None or _EXTRA.search(marker) or not _applies(marker):
                continue
            key = _key(name.group(1))
            if key in found or key in NOT_ON_HOSTS or key == "corral":
                continue
            dist = installed(name.group(1))
            if dist is not None:
                found[key] = dist
                todo.append(dist)
    return sorted(found)


def _applies(marker: str) -> bool:
    """Whether an environment marker holds here; True when it cannot be read (without
    `packaging`, what another platform needs is not installed here anyway)."""
    if not marker.strip():
        return True
    try:
        from packaging.markers import Marker

        return Marker(marker).evaluate()
    except Exception:
        return True


def top_level(name: str, path: list[str] | None = None) -> list[str]:
    """The importable top-level packages and modules of an installed distribution."""
    from importlib import metadata

    dist = next(iter(metadata.Distribution.discover(name=name, path=path or sys.path)))
    text = dist.read_text("top_level.txt")
    if text:
        return sorted(set(text.split()))
    out = set()
    for file in dist.files or ():
        parts = file.parts
        if len(parts) == 1 and parts[0].endswith(".py"):
            out.add(parts[0][:-3])
        elif len(parts) == 2 and parts[1] == "__init__.py":
            out.add(parts[0])
    return sorted(out)


def shipped() -> tuple[str, ...]:
    """The packages the zipapp carries: corral and the top-level packages of
    `shipped_distributions()`."""
    names = {n for dist in shipped_distributions() for n in top_level(dist)}
    return ("corral", *sorted(names))


# Settings that name places on the controller, not on the host.
CONTROLLER_ONLY = ("db", "log_dir", "modules", "lib", "ssh_options", "fanout", "connect_timeout")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so the same sources make the same bytes
MAIN = b"""\
import sys

if sys.version_info < (3, 11):
    version = sys.version.split()[0]
    sys.exit("corral: this host has Python %s; corral needs python3 >= 3.11" % version)
from corral.fleet.agent import main

main(sys.argv[1:])
"""


@dataclass
class Bundle:
    """Files to unpack on a host, by their path in the bundle, and their digest."""

    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # path -> (mode, data)

    def add(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Put `data` at `path` in the bundle (replacing what was there), with file mode
        `mode`."""
        self.files[path] = (mode, data)

    @property
    def digest(self) -> str:
        """32 hex digits of SHA-256 over every path, mode and content in path order: the same
        files give the same digest."""
        h = hashlib.sha256()
        for path in sorted(self.files):
            mode, data = self.files[path]
            h.update(f"{path}\0{mode:o}\0{len(data)}\0".encode())
            h.update(data)
        return h.hexdigest()[:32]

    def tarball(self) -> bytes:
        """The files as a gzip'd tar, owned by root, with fixed times."""
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz", compresslevel=6) as tar:
            for path in sorted(self.files):
                mode, data = self.files[path]
                info = tarfile.TarInfo(path)
                info.size, info.mode, info.mtime = len(data), mode, 0
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


def package_files(name: str) -> list[tuple[Path, str]]:
    """(file, path inside the zip) for every .py file of an importable package or module."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise LookupError(f"{name} is not installed; the fleet ships it to every host")
    origin = Path(spec.origin)
    if origin.name != "__init__.py":
        return [(origin, origin.name)]
    root = origin.parent
    out = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                path = Path(directory, f)
                out.append((path, f"{name}/{path.relative_to(root).as_posix()}"))
    return out


def zipapp_bytes() -> bytes:
    """corral's run path as a zipapp: sources, and bytecode compiled here that the host
    uses when its Python has the same magic number (and ignores otherwise)."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf,
        tempfile.TemporaryDirectory() as tmp,
    ):
        entries = [e for name in shipped() for e in package_files(name)]
        entries.append((None, "__main__.py"))
        entries.sort(key=lambda e: e[1])
        compiled = compile_all(
            [(str(source), arcname) for source, arcname in entries if source], Path(tmp)
        )
        for source, arcname in entries:
            _write(zf, arcname, MAIN if source is None else source.read_bytes())
            if arcname in compiled:
                _write(zf, arcname[:-3] + ".pyc", compiled[arcname].read_bytes())
    return out.getvalue()


# Compiles each (source, name) of the JSON list on stdin into DIR/N.pyc; what does not
# compile is left out (the host compiles that source itself).
COMPILE = """
import json, py_compile, sys
for n, (source, name) in enumerate(json.load(sys.stdin)):
    try:
        py_compile.compile(source, cfile=f"{sys.argv[1]}/{n}.pyc", dfile=name, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    except py_compile.PyCompileError:
        pass
"""


def compile_all(sources: list[tuple[str, str]], into: Path) -> dict[str, Path]:
    """Bytecode for each (source file, name in the zip), by name; compiled in a fresh
    interpreter, because marshal's output depends on what the compiling process holds
    (how often each string is referenced): compiled here, the bytes, and so the bundle's
    digest, changed with whatever this process had imported, and every host got the
    bundle again whenever the cache was rebuilt."""
    import subprocess

    subprocess.run(
        [sys.executable, "-I", "-S", "-c", COMPILE, str(into)],
        input=json.dumps(sources).encode(),
        env={"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "")},
        check=True,
    )
    out = {}
    for n, (_, name) in enumerate(sources):
        path = into / f"{n}.pyc"
        if path.exists():
            out[name] = path
    return out


def _write(zf: zipfile.ZipFile, arcname: str, data: bytes) -> None:
    info = zipfile.ZipInfo(arcname, ZIP_TIME)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def sources_key() -> str:
    """Names what the zipapp is built from: every source file's path, size and mtime,
    and this Python's bytecode magic."""
    h = hashlib.sha256(importlib.util.MAGIC_NUMBER)
    for name in shipped():
        for path, arcname in package_files(name):
            st = path.stat()
            h.update(f"{arcname}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def quick_key() -> str:
    """What `sources_key` is worked out from, cheaply: this Python, every sys.path
    directory's modification time (a distribution installed, upgraded or removed there
    changes it) and each of corral's own source files' size and mtime (they are edited in
    place). Without importing importlib.metadata, walking the requirements or statting
    the dependencies' files, which cost a controller's start about 20 ms."""
    import corral

    h = hashlib.sha256(importlib.util.MAGIC_NUMBER + sys.executable.encode())
    for entry in filter(None, sys.path):  # not '' (the working directory: it varies)
        with contextlib.suppress(OSError):
            h.update(f"{entry}\0{os.stat(entry).st_mtime_ns}\n".encode())
    root = Path(corral.__file__).parent
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                st = os.stat(os.path.join(directory, f))
                h.update(f"{directory}/{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/corral, else ~/.cache/corral: where the built zipapp is kept."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "corral"


def cached_zipapp(cache_dir: Path | None) -> bytes:
    """The zipapp, from `cache_dir` when it was built from the same sources (building it
    compiles a few hundred files). As root the cache is reached as everything root
    writes is (`corral.safepath`): a cache directory or file another user could change
    (a HOME kept by sudo) is never read, since every host would run what it holds as
    root, nor written through their links; the zipapp is then built afresh."""
    if cache_dir is None:
        return zipapp_bytes()
    try:
        dir_fd = safepath.open_dir(cache_dir, 0o700)
    except (OSError, safepath.UnsafePath):  # no cache: it only costs time
        return zipapp_bytes()

    def read(name: str) -> bytes | None:
        with (
            contextlib.suppress(OSError, safepath.UnsafePath),
            os.fdopen(
                safepath.open_in(dir_fd, name, os.O_RDONLY, shown=cache_dir / name), "rb"
            ) as f,
        ):
            return f.read()
        return None

    def write(name: str, data: bytes, stale: str, keep_same: bool = False) -> None:
        """`name` replaced atomically; the other files starting with `stale` removed
        (other zipapps), but with `keep_same` those that hold `data` too (memos naming
        the same key: several ways of starting python, each with its own sys.path)."""
        with contextlib.suppress(OSError, safepath.UnsafePath):
            for old in os.listdir(dir_fd):
                if old.startswith(stale) and old != name and not (keep_same and read(old) == data):
                    os.unlink(old, dir_fd=dir_fd)
            tmp = f".{name}.{os.getpid()}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            with os.fdopen(safepath.open_in(dir_fd, tmp, flags, 0o600), "wb") as f:
                f.write(data)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    try:
        # perf: the quick key names the full one (docs/architecture.md)
        memo = f"key-{quick_key()}"
        key = (read(memo) or b"").decode("ascii", "replace")
        if re.fullmatch(r"[0-9a-f]{24}", key):
            data = read(f"corral-{key}.pyz")
            if data is not None:
                return data
        key = sources_key()
        name = f"corral-{key}.pyz"
        data = read(name)
        if data is None:
            data = zipapp_bytes()
            write(name, data, "corral-")
        write(memo, key.encode(), "key-", keep_same=True)
        return data
    finally:
        os.close(dir_fd)


def host_config(config_file: Path | None) -> bytes:
    """The config as the hosts get it: the controller's paths taken out. Written as JSON,
    which YAML reads as it is."""
    if config_file is None:
        return b"{}\n"
    import yaml

    data = yaml.safe_load(config_file.read_text()) or {}
    kept = {k: v for k, v in data.items() if str(k).replace("-", "_") not in CONTROLLER_ONLY}
    return (json.dumps(kept, indent=1, sort_keys=True, default=str) + "\n").encode()


def build(
    module_paths: list[str], lib: Path | None, config_file: Path | None, cache_dir: Path | None
) -> Bundle:
    """The bundle for these module files, this lib directory and this config."""
    bundle = Bundle()
    bundle.add("corral.pyz", cached_zipapp(cache_dir))
    bundle.add("corral.yaml", host_config(config_file))
    for path in module_paths:
        p = Path(path)
        bundle.add(f"modules/{p.name}", p.read_bytes(), 0o755)
    if lib is not None and lib.is_dir():
        for p in sorted(lib.glob("*.sh")):
            bundle.add(f"lib/{p.name}", p.read_bytes(), 0o644)
    return bundle
