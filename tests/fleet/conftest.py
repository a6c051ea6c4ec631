"""A real fleet on this machine: each host an `sshd` on its own loopback address, inside
its own mount and UTS namespace (its own hostname, and tmpfs over /var/lib/corral,
/var/tmp, /run/lock and root's home, so a host's records, shipped files, run locks and
state are its own), reached as root with a throwaway key through `-F <ssh_config>`.
One more name in the ssh_config points at an address nothing listens on.

Every wait is bounded; teardown kills every process of every host namespace, which
also ends the namespaces.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOSTS = 4
START_TIMEOUT = 10.0
# Per host: its own hostname, private tmpfs mounts, then sshd in the foreground.
HOST_SCRIPT = r"""
set -eu
for d in /var/lib/corral /var/tmp /run/lock "$HOME"; do
  mkdir -p "$d"
  mount -t tmpfs -o mode=0755 corral-fleet-test "$d"
done
chmod 1777 /var/tmp
hostname "$1"
mkdir -p /run/sshd
exec "$2" -D -e -f "$3"
"""


def need_tools() -> dict[str, str]:
    """sshd, ssh, ssh-keygen and unshare, or skip (fail under CORRAL_REQUIRE_TOOLS=1)."""
    found = {}
    for tool in ("sshd", "ssh", "ssh-keygen", "unshare", "nsenter"):
        path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if path is None:
            if os.environ.get("CORRAL_REQUIRE_TOOLS"):
                pytest.fail(f"{tool} is not installed (.ci/run installs openssh-server)")
            pytest.skip(f"{tool} is not installed (Debian package openssh-server)")
        found[tool] = path
    if os.geteuid() != 0:
        pytest.skip("the test fleet needs root (mount and UTS namespaces, sshd as root)")
    return found


@dataclass
class Host:
    name: str
    address: str
    proc: subprocess.Popen
    mntns: str = ""

    def pids(self) -> list[int]:
        """Every process in this host's mount namespace."""
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") == self.mntns:
                    out.append(int(entry))
            except OSError:
                continue
        return out

    def busy(self) -> list[str]:
        """Command lines of the host's processes other than its listening sshd."""
        out = []
        for pid in self.pids():
            if pid == self.proc.pid:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out.append(f.read().replace(b"\0", b" ").decode(errors="replace").strip())
            except OSError:
                continue
        return [c for c in out if c]

    def sessions(self) -> list[int]:
        """The sshd processes serving connections (children of the listener)."""
        out = []
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.proc.pid:
                out.append(pid)
        return out

    def sh(self, command: str, timeout: float = 20) -> subprocess.CompletedProcess:
        """Run `command` inside the host's namespaces (not through ssh)."""
        return subprocess.run(
            ["nsenter", "--target", str(self.proc.pid), "--mount", "--uts", "bash", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@dataclass
class Fleet:
    root: Path
    ssh_config: Path
    hosts: list[Host] = field(default_factory=list)
    unreachable: str = "ghost"  # nothing listens: refused at once
    silent: str = "silent"  # a test may listen there and never answer
    silent_address: tuple[str, int] = ("", 0)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def wait_idle(self, timeout: float = 30.0) -> dict[str, list[str]]:
        """Wait until no host runs anything but its sshd; returns what still runs."""
        end = time.monotonic() + timeout
        while True:
            busy = {h.name: h.busy() for h in self.hosts}
            busy = {k: v for k, v in busy.items() if v}
            if not busy or time.monotonic() > end:
                return busy
            time.sleep(0.1)


def _free_base() -> tuple[str, int]:
    """A random 127.a.b. prefix and a port every host address can bind."""
    for _ in range(50):
        prefix = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}."
        port = random.randint(20000, 60000)
        try:
            for n in range(1, HOSTS + 3):
                with socket.socket() as s:
                    s.bind((f"{prefix}{n}", port))
        except OSError:
            continue
        return prefix, port
    raise RuntimeError("no free loopback address and port for the test fleet")


def _wait_listening(address: str, port: int, proc: subprocess.Popen, log: Path) -> None:
    end = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd for {address} exited: {log.read_text()}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > end:
                raise RuntimeError(
                    f"sshd on {address}:{port} never listened: {log.read_text()}"
                ) from None
            time.sleep(0.02)


def start_fleet(root: Path, count: int = HOSTS) -> Fleet:
    tools = need_tools()
    root.mkdir(parents=True, exist_ok=True)
    key, hostkey = root / "id_ed25519", root / "hostkey"
    for path in (key, hostkey):
        subprocess.run(
            [tools["ssh-keygen"], "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True
        )
    (root / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    prefix, port = _free_base()
    config = [
        "Host *",
        f"  Port {port}",
        "  User root",
        f"  IdentityFile {key}",
        "  IdentitiesOnly yes",
        "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null",
        "  LogLevel ERROR",
        "",
    ]
    fleet = Fleet(root, root / "ssh_config")
    names = [(f"node{n}", f"{prefix}{n}") for n in range(1, count + 1)]
    fleet.silent_address = (f"{prefix}{count + 2}", port)
    for name, address in [
        *names,
        (fleet.unreachable, f"{prefix}{count + 1}"),
        (f"{fleet.unreachable}*", f"{prefix}{count + 1}"),  # ghost1, ghost2 ...: refused too
        (fleet.silent, fleet.silent_address[0]),
    ]:
        config[:0] = [f"Host {name}", f"  HostName {address}", ""]
    fleet.ssh_config.write_text("\n".join(config))
    try:
        for name, address in names:
            sshd_config = root / f"sshd_{name}.conf"
            sshd_config.write_text(
                "\n".join(
                    [
                        f"ListenAddress {address}:{port}",
                        f"HostKey {hostkey}",
                        "PermitRootLogin prohibit-password",
                        f"AuthorizedKeysFile {root}/authorized_keys",
                        "StrictModes no",
                        "UsePAM no",
                        "UseDNS no",
                        "PidFile none",
                        "PrintMotd no",
                        "MaxStartups 200",
                        "MaxSessions 200",
                        "LogLevel ERROR",
                        "",
                    ]
                )
            )
            log = root / f"sshd_{name}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [
                        tools["unshare"],
                        "--mount",
                        "--uts",
                        "--propagation",
                        "private",
                        "bash",
                        "-c",
                        HOST_SCRIPT,
                        "corral-test-host",
                        name,
                        tools["sshd"],
                        str(sshd_config),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"},
                    start_new_session=True,
                )
            host = Host(name, address, proc)
            fleet.hosts.append(host)
            _wait_listening(address, port, proc, log)
            host.mntns = os.readlink(f"/proc/{proc.pid}/ns/mnt")
            if host.mntns == os.readlink("/proc/self/ns/mnt"):
                raise RuntimeError(f"{name}: sshd is not in its own mount namespace")
    except BaseException:
        stop_fleet(fleet)
        raise
    return fleet


def stop_fleet(fleet: Fleet) -> None:
    """Kill every process of every host (the namespaces end with their last process)."""
    for host in fleet.hosts:
        for _ in range(3):
            pids = host.pids() if host.mntns else []
            if host.proc.poll() is None:
                pids.append(host.proc.pid)
            for pid in set(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                break
            time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            host.proc.wait(timeout=10)


@pytest.fixture
def fleet(tmp_path: Path):
    fleet = start_fleet(tmp_path / "fleet")
    try:
        yield fleet
    finally:
        stop_fleet(fleet)
