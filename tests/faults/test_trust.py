"""Run nothing someone else could have changed: the checks corral makes as root."""

from __future__ import annotations

import os

import pytest

from corral.trust import untrusted

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
    result = corral("run")
    assert result.code == 2 and "corral.yaml" in result.err


def test_the_rules_hold_for_a_sticky_tmp_and_not_for_other_users(tmp_path):
    safe = tmp_path / "x.sh"
    safe.write_text("true\n")
    assert untrusted([safe]) == []  # /tmp is world-writable but sticky
    safe.chmod(0o664)
    os.chown(safe, 0, 1234)
    assert "writable by group 1234" in untrusted([safe])[0].message
    assert untrusted([safe], euid=1000) == []  # a user may run their own files
