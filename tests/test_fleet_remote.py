"""What the controller sends to hosts: POSIX sh that shellcheck accepts, in every form."""

from __future__ import annotations

import subprocess

import pytest

from corral.fleet.remote import export_command, start_command

from .test_lint import need


@pytest.mark.parametrize(
    "script",
    [
        start_command("0123abcd", "20261123-060000-abcd", ["-j", "2", "--", "it's"], ship=False),
        start_command("0123abcd", "20261123-060000-abcd", [], ship=True),
        export_command("2026-11-22T06:00:00+00:00"),
        export_command(""),
    ],
)
def test_remote_scripts_pass_shellcheck_as_posix_sh(script, tmp_path):
    path = tmp_path / "remote.sh"
    path.write_text(script)
    result = subprocess.run(
        [need("shellcheck"), "-s", "sh", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_a_host_without_the_bundle_says_need_and_starts_nothing(tmp_path):
    script = start_command("feedface", "k", ["x"], ship=False)
    result = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": "/usr/bin:/bin", "XDG_STATE_HOME": str(tmp_path), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0 and result.stdout == "corral-fleet:need {}\n"
    assert not (tmp_path / "corral").exists()
