"""The test fleet itself: each host answers ssh with its own name and its own state."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ssh(fleet, name: str, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "ssh",
            "-F",
            str(fleet.ssh_config),
            "-oBatchMode=yes",
            "-oConnectTimeout=5",
            name,
            command,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_each_host_is_its_own_machine(fleet):
    marks = []
    for host in fleet.hosts:
        command = "hostname; touch /var/lib/corral/mark-$(hostname); ls /var/lib/corral /var/tmp"
        result = ssh(fleet, host.name, command)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0] == host.name
        marks.append(host.sh("ls /var/lib/corral").stdout.split())
    # Shared directories would show every host's mark to each of them.
    assert marks == [[f"mark-{h.name}"] for h in fleet.hosts]
    assert not any(p.name.startswith("mark-") for p in Path("/var/lib/corral").glob("*"))
    assert fleet.wait_idle() == {}


def test_the_unreachable_name_is_refused_at_once(fleet):
    result = ssh(fleet, fleet.unreachable, "true")
    assert result.returncode == 255
    assert "Connection refused" in result.stderr
