"""Run nothing someone else could have changed: the checks corral makes as root."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from corral.trust import untrusted

from ..test_lint import need
from .attacker import NOBODY, NOGROUP, as_nobody, corral_in

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the trust rules apply to root")


def test_world_writable_module_is_refused_and_nothing_runs(corral):
    marker = corral.modules.parent / "ran"
    corral.module("safe", body=f"touch {marker}")
    bad = corral.module("open", body="echo pwned")
    bad.chmod(0o666)
    result = corral("run")
    assert result.code == 2
    assert f"{bad}:1: refusing to run as root: {bad} is world-writable (mode 0666)" in result.err
    assert not marker.exists()
    bad.chmod(0o644)  # the control: the same files, protected, do run
    assert corral("run").code == 0 and marker.exists()


def test_a_writable_directory_or_a_foreign_owner_is_refused(corral, tmp_path):
    module = corral.module("a")
    corral.modules.chmod(0o777)
    result = corral("run")
    assert result.code == 2 and f"its directory {corral.modules} is world-writable" in result.err
    corral.modules.chmod(0o755)
    os.chown(module, 1234, 0)
    result = corral("run")
    assert result.code == 2 and "is owned by uid 1234, not root" in result.err
    os.chown(module, 0, 0)
    assert corral("run").code == 0


def test_library_and_config_files_count_too(corral):
    lib = corral.modules.parent / "lib"
    lib.mkdir()
    (lib / "log.sh").write_text("log() { :; }\n")
    (lib / "log.sh").chmod(0o646)
    corral.module("a")
    result = corral("run")
    assert result.code == 2 and "lib/log.sh" in result.err
    (lib / "log.sh").chmod(0o644)
    config = corral.modules.parent / "corral.yaml"
    config.write_text("jobs: 2\n")
    config.chmod(0o666)
    result = corral("--config", str(config), "run")
    assert result.code == 2 and "corral.yaml:1: refusing to read as root" in result.err


def test_the_rules_hold_for_a_sticky_tmp_and_not_for_other_users(tmp_path):
    safe = tmp_path / "x.sh"
    safe.write_text("true\n")
    assert untrusted([safe]) == []  # /tmp is world-writable but sticky
    safe.chmod(0o664)
    os.chown(safe, 0, 1234)
    assert "writable by group 1234" in untrusted([safe])[0].message
    assert untrusted([safe], euid=1000) == []  # a user may run their own files


# Attacks by a real unprivileged user -------------------------------------------------
# Each: `nobody` changes what a root module run would execute; `check`, `run --dry-run`
# and `run` all refuse alike; no code of theirs runs as root. The control runs the same
# file with bash as root, as corral would without the checks: the attacker's code runs.

REFUSERS = (("check",), ("run", "--dry-run"), ("run",))


def refused_everywhere(corral, message: str) -> None:
    for args in REFUSERS:
        result = corral(*args)
        assert result.code == 2, (args, result.err)
        assert message in result.err, (args, result.err)
        assert "Traceback" not in result.err


def root_runs(path) -> None:
    """The control: root runs the file as corral would without the checks."""
    subprocess.run(["bash", str(path)], capture_output=True, timeout=30)


def test_a_module_linked_into_a_directory_another_user_owns_never_runs(corral, arena):
    real = arena.mine / "tool.sh"
    real.write_text("#!/bin/bash\necho benign\n")  # root's file, but in nobody's directory
    link = corral.modules / "tool.sh"
    link.symlink_to(real)
    # The swap: nobody owns the directory, so nobody may replace root's file in it.
    new = arena.mine / "new"
    as_nobody(f"printf '%s\\n' '{arena.attacker_code()}' > {new}; mv -f {new} {real}")
    refused_everywhere(
        corral, f"{arena.mine}, on the way to the real file, is owned by uid {NOBODY}"
    )
    assert not arena.ran_as_root()
    root_runs(link)
    assert arena.ran_as_root()


def test_a_link_another_user_owns_is_not_followed(corral, arena):
    """A sticky /tmp-like directory may be passed through, but not a link of nobody's in
    it: nobody may point it anywhere at any time (fs.protected_symlinks may be off)."""
    tools = arena.root / "tools"
    tools.mkdir()
    (tools / "tool.sh").write_text(f"{arena.attacker_code()}\n")  # root's, not a module
    shared = arena.root / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    as_nobody(f"ln -s {tools} {shared}/hop")
    (corral.modules / "hop.sh").symlink_to(shared / "hop" / "tool.sh")
    refused_everywhere(
        corral, f"the link {shared}/hop on its way is a symbolic link owned by uid {NOBODY}"
    )
    assert not arena.ran_as_root()
    root_runs(corral.modules / "hop.sh")
    assert arena.ran_as_root()


def test_a_module_another_user_may_write_through_an_acl_never_runs(corral, arena):
    need("setfacl")
    corral = corral_in(arena, corral)
    module = corral.module("acl", body="echo fine")
    subprocess.run([need("setfacl"), "-m", "u:nobody:rw", str(module)], check=True)
    assert module.stat().st_mode & 0o777 == 0o775  # the mode bits alone look safe (mask rw)
    as_nobody(f"echo '{arena.attacker_code()}' >> {module}")
    refused_everywhere(corral, f"{module} is writable by user {NOBODY} through its ACL")
    assert not arena.ran_as_root()
    root_runs(module)
    assert arena.ran_as_root()


def test_an_acl_on_the_modules_or_lib_directory_counts_too(corral, arena):
    need("setfacl")
    corral = corral_in(arena, corral)
    corral.module("a")
    subprocess.run([need("setfacl"), "-m", "u:nobody:rwx", str(corral.modules)], check=True)
    refused_everywhere(
        corral, f"its directory {corral.modules} is writable by user {NOBODY} through its ACL"
    )
    subprocess.run([need("setfacl"), "-b", str(corral.modules)], check=True)
    lib = corral.modules.parent / "lib"
    lib.mkdir()
    (lib / "log.sh").write_text("log() { :; }\n")
    subprocess.run([need("setfacl"), "-m", "g:nogroup:w", str(lib / "log.sh")], check=True)
    refused_everywhere(corral, f"{lib / 'log.sh'} is writable by group {NOGROUP} through its ACL")
    subprocess.run([need("setfacl"), "-b", str(lib / "log.sh")], check=True)
    assert corral("run").code == 0  # the control: without the ACL entries it runs


def test_a_sticky_world_writable_modules_directory_is_not_trusted(corral, arena):
    corral = corral_in(arena, corral)
    corral.module("a")
    corral.modules.chmod(0o1777)
    # nobody cannot write root's files there, but may add a link to any root-owned script.
    tool = arena.root / "tool.sh"
    tool.write_text(f"{arena.attacker_code()}\n")
    as_nobody(f"ln -s {tool} {corral.modules}/zz.sh")
    refused_everywhere(
        corral,
        f"its directory {corral.modules} is world-writable (mode 1777) "
        "(sticky, but anyone may add to it)",
    )
    assert not arena.ran_as_root()
    root_runs(corral.modules / "zz.sh")
    assert arena.ran_as_root()


def test_a_module_changed_after_the_checks_is_checked_again_when_it_starts(corral):
    second = corral.module("second", "requires: first", "echo second ran")
    corral.module("first", body=f"chmod o+w {second}")
    result = corral("run", "--json")
    assert result.code == 1, result.err
    reason = {m["name"]: m["reason"] for m in result.json()["modules"]}["second"]
    assert reason.startswith(f"cannot start: refusing to run as root through {second}: ")
    assert "world-writable (mode 0757)" in reason
    assert "second ran" not in result.out


@pytest.mark.parametrize(
    "change",
    [
        "chmod o+w {modules}",
        "chown {nobody} {modules}",
        "setfacl -m u:{nobody}:rwx {modules}",
        "chmod g+w {above} && chgrp {nogroup} {above}",
        "setfacl -m u:{nobody}:rwx {above}",
    ],
)
def test_a_directory_changed_after_a_module_ran_from_it_is_checked_again(corral, change):
    """corral keeps the directories it checked for a module and checks them again for
    the next: each one changed since (owner, mode, ACL) is refused as at the start. The
    control: without the change, the second module runs."""
    modules, above = corral.modules, corral.modules.parent
    command = change.format(modules=modules, above=above, nobody=NOBODY, nogroup=NOGROUP)
    marker = above / "second ran"
    corral.module("first", body=f"{command}")
    second = corral.module("second", "requires: first", f"touch '{marker}'")
    result = corral("run", "--json")
    assert result.code == 1, result.err
    reason = {m["name"]: m["reason"] for m in result.json()["modules"]}["second"]
    assert reason.startswith("cannot start: refusing to run as root through "), reason
    assert str(second).startswith(reason.split(" through ")[1].split(":")[0]), reason
    assert not marker.exists()
    (modules / "first.sh").write_text("#!/usr/bin/env bash\ntrue\n")
    os.chmod(modules, 0o755)
    os.chown(modules, 0, 0)
    subprocess.run(["setfacl", "-b", str(modules), str(above)], check=True)
    os.chmod(above, 0o755)
    os.chown(above, 0, 0)
    control = corral("run", "--json")
    assert control.code == 0 and marker.exists(), control.err


def test_a_module_changed_after_it_ran_once_is_checked_again_for_its_retry(corral):
    """A file that passed for an attempt and was changed since is checked again for the
    next: its second attempt changes it, the third is refused; the control: unchanged,
    the third attempt runs."""
    count, ran = corral.modules.parent / "count", corral.modules.parent / "third ran"
    body = (
        f"n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}\n"
        f"if (( n == 3 )); then touch '{ran}'; exit 0; fi\n"
        f'if (( n == 2 )); then setfacl -m u:{NOBODY}:rw "$0"; fi\nexit 1'
    )
    (corral.modules.parent / "corral.yaml").write_text("retry_backoff: 0.01\n")
    corral.module("flaky", "retries: 2", body)
    result = corral("run", "--json")
    assert result.code == 1 and not ran.exists(), result.err
    assert count.read_text() == "2\n"
    reason = result.json()["modules"][0]["reason"]
    assert "writable by user" in reason and "through its ACL" in reason, reason
    count.unlink()
    corral.module("flaky", "retries: 2", body.replace("setfacl", ": setfacl"))
    control = corral("run", "--json")
    assert control.code == 0 and ran.exists(), control.err


@pytest.mark.parametrize("owner", ["theirs", "roots"])
def test_a_module_swapped_while_bash_starts_is_never_run(corral, arena, owner):
    """The race behind the checks: the module is opened and checked, then bash opens it
    by its path (so $0 and BASH_SOURCE are the path). Here `nobody` is made owner of
    the modules' directory after the run's checks (by the first module, as a careless
    root might), and swaps each root-owned module with their own file as fast as they
    can. Whatever corral opened and bash then opened, no code of theirs runs as root:
    a swapped file is refused when it is opened (not root's) or not run by bash (the
    proof before its first command, exit 126). `roots`: the files swapped in are root's
    (other scripts of root's in that directory): refused at start, as the directory is
    walked again for each attempt."""
    corral = corral_in(arena, corral)
    racing = arena.root / "racing"
    racing.mkdir(mode=0o755)
    count = 24
    names = [f"b{i}" for i in range(count)]

    def lay_out() -> None:  # root's modules in place, theirs beside them
        for stale in racing.glob("*.root"):
            stale.unlink()
        for name in names:
            corral.module(name, "requires: handover", "echo fine")
            (racing / f"{name}.evil").write_text(f"{arena.attacker_code()}\n")
            if owner == "theirs":
                os.chown(racing / f"{name}.evil", NOBODY, NOGROUP)

    lay_out()
    go = arena.root / "go"
    corral.module(
        "handover",
        body=f"chown nobody: {corral.modules} {racing}; touch {go}; sleep 0.5",
    )
    # nobody's swapper: theirs in place of every module, then root's back, and again
    swapper = arena.root / "swap.py"
    swapper.write_text(
        "import os, sys, time\n"
        f"mods, racing, go = {str(corral.modules)!r}, {str(racing)!r}, {str(go)!r}\n"
        f"names = {names!r}\n"
        "while not os.path.exists(go): time.sleep(0.01)\n"
        "end = time.monotonic() + float(sys.argv[1])\n"
        "while time.monotonic() < end:\n"
        "    for n in names:  # theirs in place of every module …\n"
        "        os.rename(f'{mods}/{n}.sh', f'{racing}/{n}.root')\n"
        "        os.rename(f'{racing}/{n}.evil', f'{mods}/{n}.sh')\n"
        "    for n in names:  # … then root's back\n"
        "        os.rename(f'{mods}/{n}.sh', f'{racing}/{n}.evil')\n"
        "        os.rename(f'{racing}/{n}.root', f'{mods}/{n}.sh')\n"
    )
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    racer = subprocess.Popen([*nobody, "/usr/bin/python3", str(swapper), "20"])
    try:
        result = corral("run", "-j", "4", "--json")
    finally:
        racer.kill()
        racer.wait()
    assert not arena.ran_as_root(), arena.marker.read_text()
    assert result.out, result.err
    reasons = [m.get("reason") or "" for m in result.json()["modules"]]
    caught = [r for r in reasons if f"owned by uid {NOBODY}" in r]
    logs = "".join(p.read_text() for p in (corral.db.parent / "logs").glob("2*/b*.log"))
    proved = logs.count("is not the file corral checked (replaced since); not run")
    assert caught or proved, (reasons, logs)  # the race did happen
    # the control: root running the module by name alone, while nobody swaps, runs theirs
    lay_out()  # (the racer was stopped halfway through a swap)
    go.touch()
    racer = subprocess.Popen([*nobody, "/usr/bin/python3", str(swapper), "30"])
    try:
        for _ in range(200):
            subprocess.run(["bash", str(corral.modules / "b0.sh")], capture_output=True)
            if arena.ran_as_root():
                break
    finally:
        racer.kill()
        racer.wait()
    assert arena.ran_as_root()


@pytest.mark.parametrize(
    "where",
    ["sub/evil.sh", ".hidden/evil.sh", "settings.conf"],
    ids=["subdirectory", "hidden-directory", "not-a-.sh-file"],
)
def test_every_file_and_directory_under_lib_counts(corral, where):
    """A module may source anything under $CORRAL_LIB: a file nobody owns anywhere in the
    tree (a subdirectory, a hidden one, any name) is refused like lib/*.sh is."""
    marker = corral.modules.parent / "pwned"
    lib = corral.modules.parent / "lib"
    (lib / "log.sh").parent.mkdir(parents=True)
    (lib / "log.sh").write_text("log() { :; }\n")
    evil = lib / where
    evil.parent.mkdir(parents=True, exist_ok=True)
    evil.write_text(f"touch {marker}\n")
    module = corral.module("user", body=f'. "$CORRAL_LIB/{where}"')
    os.chown(evil, NOBODY, NOGROUP)
    if evil.parent != lib:
        os.chown(evil.parent, NOBODY, NOGROUP)  # nobody's directory: it could add files
    refused_everywhere(corral, f"{evil.parent if evil.parent != lib else evil}")
    assert not marker.exists()
    env = {**os.environ, "CORRAL_LIB": str(lib)}
    subprocess.run(["bash", str(module)], env=env, capture_output=True, timeout=30)
    assert marker.exists()  # the control: without the check, root runs nobody's file


def test_an_empty_directory_another_user_owns_under_lib_is_refused(corral):
    lib = corral.modules.parent / "lib"
    (lib / "later").mkdir(parents=True)
    os.chown(lib / "later", NOBODY, NOGROUP)
    corral.module("a")
    refused_everywhere(corral, f"{lib / 'later'}")
    os.chown(lib / "later", 0, 0)  # the control: root's directory is fine
    assert corral("run").code == 0


# The config file: one found beside the modules that another user could change is
# ignored (never read) with a warning naming it; one named with --config is an error.

ATTACKER_CONFIG = "attacker: [yes"  # if read: invalid YAML, exit 2


def _plant_config(arena, how: str):
    """A corral.yaml beside the modules that `nobody` could write (or reach through
    their own link), with the attacker's content in it; returns (path, make it safe)."""
    config = arena.root / "corral.yaml"
    if how == "link":  # root's file elsewhere, reached through a link nobody owns
        real = arena.root / "real.yaml"
        real.write_text(f"{ATTACKER_CONFIG}\n")
        config.symlink_to(real)
        os.lchown(config, NOBODY, NOGROUP)
        return config, lambda: os.lchown(config, 0, 0)
    config.touch()
    if how == "world":
        config.chmod(0o666)
    elif how == "group":
        os.chown(config, 0, NOGROUP)
        config.chmod(0o664)
    else:  # owner
        os.chown(config, NOBODY, NOGROUP)
    as_nobody(f"printf '%s\\n' '{ATTACKER_CONFIG}' > {config}")  # the attack

    def safe() -> None:
        os.chown(config, 0, 0)
        config.chmod(0o644)

    return config, safe


@pytest.mark.parametrize("how", ["world", "group", "owner", "link"])
def test_a_found_config_another_user_could_change_is_ignored_never_read(corral, arena, how):
    corral = corral_in(arena, corral)
    marker = arena.root / "ran"
    corral.module("a", body=f"touch {marker}")
    config, make_safe = _plant_config(arena, how)
    for args in (("check",), ("run", "--dry-run"), ("run",)):
        result = corral(*args)
        assert result.code == 0, (args, result.err)
        assert f"corral: warning: ignoring {config}: not read: refusing to read as root" in (
            result.err
        )
        assert "invalid YAML" not in result.err and "Traceback" not in result.err
    assert marker.exists()
    make_safe()  # the control: the same file, root's alone, is read (and refused)
    result = corral("run")
    assert result.code == 2 and "invalid YAML" in result.err and "ignoring" not in result.err


def test_a_config_named_with_config_that_another_user_could_change_is_an_error(corral, arena):
    corral = corral_in(arena, corral)
    marker = arena.root / "ran"
    corral.module("a", body=f"touch {marker}")
    config = arena.root / "given.yaml"
    config.touch()
    os.chown(config, NOBODY, NOGROUP)
    as_nobody(f"printf 'jobs: 2\\n' > {config}")
    for args in (("check",), ("run",)):
        result = corral("--config", str(config), *args)
        assert result.code == 2, result.err
        assert f"{config}:1: refusing to read as root: {config} is owned by uid {NOBODY}" in (
            result.err
        )
    mine = arena.mine / "corral.yaml"  # root's file, in nobody's directory
    mine.write_text("jobs: 2\n")
    result = corral("--config", str(mine), "run")
    assert result.code == 2 and f"its directory {arena.mine} is owned by uid" in result.err
    assert not marker.exists()
    os.chown(config, 0, 0)  # the control: root's file in root's directory is read
    assert corral("--config", str(config), "run").code == 0 and marker.exists()


# What the environment makes root run: corral's own bash, BASH_ENV, PATH's directories.


def test_a_bash_another_user_put_on_path_is_never_run(corral, arena):
    """corral starts bash by absolute path, and refuses a PATH on which another user
    could put a command a module would run as root."""
    corral = corral_in(arena, corral)
    marker = arena.root / "ran"
    corral.module("a", body=f"touch {marker}")
    fake = f'#!/bin/sh\n{arena.attacker_code()}\nexec /bin/bash "$@"\n'
    as_nobody(f"printf '%s' '{fake}' > {arena.mine}/bash && chmod 755 {arena.mine}/bash")
    path = f"{arena.mine}:{corral.env['PATH']}"
    for args in REFUSERS:
        result = corral(*args, extra_env={"PATH": path})
        assert result.code == 2, (args, result.err)
        assert (
            f"refusing to run as root: the PATH entry {arena.mine}: {arena.mine} is owned by "
            f"uid {NOBODY}, not root" in result.err
        )
    assert not arena.ran_as_root() and not marker.exists()
    # the control: root looking bash up on that PATH runs nobody's
    subprocess.run(["bash", "-c", "true"], env={**os.environ, "PATH": path}, check=True)
    assert arena.ran_as_root()


@pytest.mark.parametrize("entry", [".", "", "later"], ids=["dot", "empty", "missing"])
def test_a_relative_or_makeable_path_entry_is_refused(corral, arena, entry):
    corral.module("a")
    if entry == "later":  # missing, in a directory anyone may add to (fs.protected_* off)
        shared = arena.root / "shared"
        shared.mkdir()
        shared.chmod(0o1777)
        entry = str(shared / "bin")
    result = corral("check", extra_env={"PATH": f"{entry}:/usr/bin:/bin"})
    assert result.code == 2
    assert "refusing to run as root: the PATH entry" in result.err
    assert ("another user could make it" if entry.startswith("/") else "is relative") in result.err
    assert corral("check", extra_env={"PATH": "/usr/bin:/bin"}).code == 0  # the control


def test_a_bash_env_file_another_user_could_change_is_refused(corral, arena):
    corral = corral_in(arena, corral)
    startup = arena.mine / "env.sh"
    as_nobody(f"echo '{arena.attacker_code()}' > {startup}")
    corral.module("a")
    for args in REFUSERS:
        result = corral(*args, extra_env={"BASH_ENV": str(startup)})
        assert result.code == 2, (args, result.err)
        assert f"{startup}:1: refusing to run as root: its directory {arena.mine}" in result.err
        assert "BASH_ENV names it" in result.err
    assert not arena.ran_as_root()
    subprocess.run(["bash", "-c", "true"], env={**os.environ, "BASH_ENV": str(startup)})
    assert arena.ran_as_root()  # the control: any root bash given it runs nobody's code


def test_a_fleet_bundle_cache_another_user_controls_is_never_shipped(arena):
    """The zipapp every host runs as root is cached under ~/.cache/corral: with a HOME
    sudo kept, that is another user's. Their planted zipapp is never read, and root
    writes nothing through their directory; root's own cache is used as before."""
    from corral.fleet import bundle

    cache = arena.mine / ".cache" / "corral"
    name = f"corral-{bundle.sources_key()}.pyz"  # anyone can compute it: sizes and times
    planted = b"PK planted by nobody"
    as_nobody(f"mkdir -p {cache} && printf '%s' '{planted.decode()}' > {cache}/{name}")
    data = bundle.cached_zipapp(cache)
    assert data != planted and data.startswith(b"PK")
    assert sorted(p.name for p in cache.iterdir()) == [name]  # nothing of root's there
    assert all(p.stat().st_uid == NOBODY for p in cache.iterdir())
    assert (cache / name).read_bytes() == planted  # the control: by name, root reads theirs
    mine = arena.root / "rootcache"  # root's own cache: kept, then read back
    assert bundle.cached_zipapp(mine) == data
    assert (mine / name).read_bytes() == data
    (mine / name).write_bytes(b"PK root's")
    assert bundle.cached_zipapp(mine) == b"PK root's"


def test_modules_that_cannot_start_one_after_another_end_the_run_as_failures(corral):
    """Each module made unsafe after the checks fails as it is started, more of them
    than -j: the run takes the next ones, it is never 'stuck' (an internal error)."""
    names = [f"b{i}" for i in range(6)]
    for name in names:
        corral.module(name, "requires: first", "echo ran")
    corral.module("first", body=f"chmod o+w {corral.modules}/b*.sh")
    result = corral("run", "-j", "2", "--json")
    assert result.code == 1, result.err
    assert "internal error" not in result.err
    failed = {m["name"]: m["reason"] for m in result.json()["modules"] if m["name"] != "first"}
    assert sorted(failed) == names
    assert all(r.startswith("cannot start: refusing to run as root") for r in failed.values())
    for path in corral.modules.glob("b*.sh"):  # the control: the same run, files safe
        path.chmod(0o644)
    (corral.modules / "first.sh").write_text("true\n")
    assert corral("run", "-j", "2").code == 0


def test_clustershell_config_under_another_users_home_never_runs(corral, arena):
    """`sudo corral run -w @web` with the user's HOME kept: ClusterShell reads
    groups.conf from ~/.config/clustershell too, and runs its upcalls to resolve a
    group. corral gives ClusterShell root's own home then: nobody's upcall never runs."""
    pytest.importorskip("ClusterShell")
    home = arena.mine
    conf = home / ".config" / "clustershell"
    as_nobody(f"mkdir -p {conf} && touch {conf}/groups.conf")
    (conf / "groups.conf").write_text(  # nobody's file: what is in it is theirs
        f"[Main]\ndefault: theirs\n[theirs]\nmap: {arena.attacker_code()}; echo h1\n"
    )
    corral.module("a")
    env = {k: v for k, v in corral.env.items() if not k.startswith(("XDG_CONFIG", "CLUSTERSHELL"))}
    result = corral("run", "-w", "@web", "--dry-run", extra_env={**env, "HOME": str(home)})
    assert "Traceback" not in result.err
    assert not arena.ran_as_root()
    # the control: ClusterShell loaded by root with that HOME runs nobody's upcall
    subprocess.run(
        [sys.executable, "-c", "from ClusterShell.NodeSet import NodeSet; NodeSet('@web')"],
        env={**env, "HOME": str(home)},
        capture_output=True,
    )
    assert arena.ran_as_root()


HIDDEN_PROC = r"""
set -u
{hide}
"$PYTHON" -m corral --modules "$MODULES" --db "$DB" run -q 2>err
echo "rc=$?"
cat err
"""


@pytest.mark.parametrize("hidden", [True, False], ids=["proc-hidden", "control"])
def test_as_root_without_proc_bash_would_run_modules_unproven_so_none_runs(corral, hidden):
    """bash skips a BASH_ENV it cannot open, in silence: with /proc hidden (a tmpfs over
    it, in a private mount namespace) the stub that proves the checked file and enters
    the cgroups never ran, and the module ran unproven. As root, corral refuses that run
    (exit 71, one line). The control, the same namespace with /proc as it is, runs it."""
    from .conftest import private_mounts

    if os.geteuid() != 0:
        pytest.skip("the proof is root's")
    marker = corral.modules.parent / "ran"
    corral.module("a", body=f"touch {marker}")
    hide = "mount -t tmpfs tmpfs /proc || exit 99" if hidden else ""
    done = private_mounts(corral, HIDDEN_PROC.format(hide=hide))
    assert "Traceback" not in done.stdout, done.stdout
    if hidden:
        assert "rc=71" in done.stdout and "/proc/self/fd is missing" in done.stdout, done.stdout
        assert not marker.exists()
    else:
        assert "rc=0" in done.stdout, done.stdout
        assert marker.exists()
