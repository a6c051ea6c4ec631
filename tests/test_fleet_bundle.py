"""What the zipapp carries, derived from installed distributions' real metadata.

Each test lays out a site directory of `.dist-info` metadata as pip leaves it
(METADATA with Requires-Dist, top_level.txt or RECORD) and reads it with
importlib.metadata, as `bundle.shipped_distributions` does for the real one."""

from __future__ import annotations

import pytest

from corral.fleet import bundle


def install(site, name, version="1.0", requires=(), top=None, files=()):
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"]
    lines += [f"Requires-Dist: {r}\n" for r in requires]
    (info / "METADATA").write_text("".join(lines))
    if top is not None:
        (info / "top_level.txt").write_text("".join(f"{t}\n" for t in top))
    for f in files:
        (site / f).parent.mkdir(parents=True, exist_ok=True)
        (site / f).write_text("")
    record = [*files, f"{info.name}/METADATA"]
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in record))


def site_with(tmp_path, dateutil_requires=()):
    site = tmp_path / "site"
    install(
        site,
        "corral",
        requires=[
            "click>=8.1",
            "psutil>=5.9",
            "sqlite-utils>=3.35",
            'pytest>=8; extra == "test"',
        ],
    )
    install(site, "click", "8.4", ["colorama; platform_system == 'Windows'"], ["click"])
    install(site, "colorama", top=["colorama"])  # installed, for another platform
    install(site, "psutil", top=["psutil"])
    install(site, "pytest", top=["pytest"])
    install(site, "sqlite_utils", "4.2", ["python-dateutil", "pip", "tabulate"], ["sqlite_utils"])
    install(site, "pip", top=["pip"])
    install(site, "python-dateutil", "4.0", dateutil_requires, ["dateutil"])
    install(site, "six", "1.17", top=["six"])  # installed, required by nothing
    return [str(site)]  # tabulate is required and not installed


def test_a_dependency_a_newer_version_dropped_is_not_shipped(tmp_path):
    # python-dateutil 4 no longer requires six: six may be installed, it is not shipped,
    # and tabulate (required, not installed) is no reason to refuse
    path = site_with(tmp_path)
    assert bundle.shipped_distributions(path) == ["click", "python-dateutil", "sqlite-utils"]


def test_the_same_dependency_is_shipped_while_it_is_required(tmp_path):
    # Control for the test above: python-dateutil 2.9 requires six
    path = site_with(tmp_path, dateutil_requires=["six >=1.5"])
    assert "six" in bundle.shipped_distributions(path)


def test_extras_other_platforms_and_what_a_host_never_needs_are_left_out(tmp_path):
    shipped = bundle.shipped_distributions(site_with(tmp_path))
    assert "pytest" not in shipped  # an extra of corral's
    assert "colorama" not in shipped  # click's, on Windows only
    assert "psutil" not in shipped and "pip" not in shipped  # NOT_ON_HOSTS


def test_top_level_names_from_top_level_txt_or_from_record(tmp_path):
    site = tmp_path / "site"
    install(site, "PyYAML", "6.0", top=["_yaml", "yaml"])
    install(site, "click-default-group", files=["click_default_group.py"])
    install(site, "flat", files=["flatpkg/__init__.py", "flatpkg/sub/x.py", "../../bin/flat"])
    assert bundle.top_level("PyYAML", [str(site)]) == ["_yaml", "yaml"]
    assert bundle.top_level("click-default-group", [str(site)]) == ["click_default_group"]
    assert bundle.top_level("flat", [str(site)]) == ["flatpkg"]


def test_without_corral_installed_the_fleet_says_so(tmp_path):
    site = tmp_path / "empty"
    site.mkdir()
    with pytest.raises(LookupError, match="corral is not installed"):
        bundle.shipped_distributions([str(site)])


def test_this_installation_ships_importable_packages_only():
    # The real environment: every shipped name is importable here, and the run path's
    # own imports are among them (the fleet tests run the zipapp with python3 -I -S).
    names = bundle.shipped()
    assert {"corral", "click", "yaml", "sqlite_utils"} <= set(names)
    for name in names:
        assert bundle.package_files(name), name


def test_the_zipapp_is_the_same_whatever_the_building_process_holds():
    # marshal writes a string in full or as a back-reference by how often the process
    # refers to it: compiled in the controller, the bytes (and so the bundle's digest)
    # changed with what it had imported, and every host got the bundle again whenever
    # the cache was rebuilt. Here: a fresh interpreter, and this one after corral.cli.
    import hashlib
    import os
    import subprocess
    import sys

    import corral.cli  # noqa: F401

    fresh = subprocess.run(
        [
            sys.executable,
            "-c",
            "import hashlib; from corral.fleet import bundle; "
            "print(hashlib.sha256(bundle.zipapp_bytes()).hexdigest())",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=True,
    )
    assert hashlib.sha256(bundle.zipapp_bytes()).hexdigest() == fresh.stdout.strip()


def test_what_does_not_compile_is_left_to_the_host(tmp_path):
    (tmp_path / "bad.py").write_text("def (:\n")
    assert bundle.compile_all([(str(tmp_path / "bad.py"), "bad.py")], tmp_path) == {}


def test_the_zipapps_key_is_memoized_until_a_source_or_an_installation_changes(
    tmp_path, monkeypatch
):
    """A controller's start reads the cached zipapp by a quick key (sys.path directories'
    and corral's own files' times) instead of walking the installed distributions."""
    import os
    import sys

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    cache = tmp_path / "cache"
    walks = []
    real = bundle.sources_key
    monkeypatch.setattr(bundle, "sources_key", lambda: walks.append(1) or real())
    monkeypatch.setattr(bundle, "zipapp_bytes", lambda: b"PK built")
    assert bundle.cached_zipapp(cache) == b"PK built"
    assert len(walks) == 1
    assert bundle.cached_zipapp(cache) == b"PK built"
    assert len(walks) == 1  # memoized: the distributions were not walked again
    # The controls: a distribution installed in a sys.path directory, or one of
    # corral's sources edited in place, and the key is worked out again.
    install(site, "newdep", top=["newdep"])
    assert bundle.cached_zipapp(cache) == b"PK built" and len(walks) == 2
    assert bundle.cached_zipapp(cache) == b"PK built" and len(walks) == 2
    source = bundle.__file__
    st = os.stat(source)
    try:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert bundle.cached_zipapp(cache) == b"PK built" and len(walks) == 3
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["corral", "key"]
