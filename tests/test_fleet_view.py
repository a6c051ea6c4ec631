"""The fleet's live view in its three voices, fed events by hand."""

from __future__ import annotations

import io
import re
import time

from corral.fleet.hosts import (
    FAILED,
    OK,
    RUNNING,
    UNREACHABLE,
    FleetTick,
    HostFinished,
    HostProgress,
    HostResult,
    HostStarted,
)
from corral.fleet.run import FleetOutcome
from corral.fleet.view import FleetView, status_line


def script(view: FleetView) -> dict[str, HostResult]:
    hosts = {h: HostResult(h) for h in ("web1", "web2", "web3")}
    for r in hosts.values():
        r.status, r.since = RUNNING, time.monotonic()
        view(HostStarted(r))
    hosts["web1"].since -= 30
    hosts["web1"].running["apt_upgrade"] = time.monotonic()
    view(HostProgress(hosts["web1"], "apt_upgrade", 1, RUNNING, None))
    view(HostProgress(hosts["web2"], "disk", 1, "failed", 0.5))
    hosts["web2"].status, hosts["web2"].reason = FAILED, "disk failed (exit 1)"
    view(HostFinished(hosts["web2"]))
    hosts["web3"].status, hosts["web3"].reason = UNREACHABLE, "Connection refused"
    view(HostFinished(hosts["web3"]))
    view(FleetTick(hosts))
    return hosts


def test_status_line_counts_hosts_and_names_the_slowest():
    hosts = script(FleetView(io.StringIO(), tty=False))
    line = status_line(hosts, time.monotonic())
    assert line.startswith("fleet 2/3 done · 1 running · 1 failed · 1 unreachable")
    assert re.search(r"slowest web1 3\ds: apt_upgrade$", line)


def test_terminal_one_status_line_with_failures_above_it():
    out = io.StringIO()
    script(FleetView(out, tty=True))
    text = out.getvalue()
    assert "web2: failed: disk failed (exit 1)\n" in text
    assert "web3: unreachable: Connection refused\n" in text
    assert "started" not in text and "\n" not in text.rsplit("\r\033[K", 1)[1]
    assert text.rsplit("\r\033[K", 1)[1].startswith("fleet 2/3 done")


def test_cron_gets_timestamped_host_prefixed_lines():
    out = io.StringIO()
    script(FleetView(out, tty=False))
    lines = out.getvalue().splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* web\d: ", line) for line in lines)
    assert any(line.endswith("web1: started") for line in lines)
    assert any(line.endswith("web2: disk failed (0.50s)") for line in lines)
    assert "\033" not in out.getvalue()


def test_quiet_prints_only_what_went_wrong_per_host():
    out = io.StringIO()
    view = FleetView(out, tty=True, quiet=True)
    hosts = script(view)
    text = out.getvalue()
    assert "started" not in text and "fleet 2/3" not in text
    assert [line.split(" ", 1)[1] for line in text.splitlines()] == [
        "web2: disk failed (0.50s)",
        "web2: failed: disk failed (exit 1)",
        "web3: unreachable: Connection refused",
    ]
    hosts["web1"].status = OK
    quiet = io.StringIO()
    FleetView(quiet, tty=False, quiet=True).summary(FleetOutcome("r", "ok", 0, [hosts["web1"]]))
    assert quiet.getvalue() == ""
