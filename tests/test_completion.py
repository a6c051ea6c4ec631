"""Host completion for `-w`, as a bash user gets it: the shipped completion file sourced
in bash, a `corral` on PATH, COMP_WORDS as readline fills them. Hosts come from
~/.ssh/config and ~/.ssh/known_hosts, the hosts this database has fleet records of, and
ClusterShell's groups (`@group` and their hosts); after a comma the next host of the node
set is completed."""

from __future__ import annotations

import os
import shlex
import sqlite3
import subprocess
import sys

from .conftest import REPO

SCRIPT = REPO / "share" / "bash-completion" / "completions" / "corral"


def complete(env: dict, *words: str) -> list[str]:
    line = " ".join(shlex.quote(w) for w in words)
    done = subprocess.run(
        [
            "bash",
            "-c",
            f'source "{SCRIPT}"; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; '
            '_corral_completion corral; printf "%s\\n" "${COMPREPLY[@]}"',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done.stdout.split()


def user(tmp_path, corral) -> dict:
    """A home with an ssh config, ClusterShell groups of its own and `corral` on PATH."""
    home, bin_dir, cfg = tmp_path / "home", tmp_path / "bin", tmp_path / "clustershell"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(
        "Host bastion web-*\n  User admin\nHost db1 db2\n  Port 2222\n"
    )
    (cfg / "groups.d").mkdir(parents=True)
    (cfg / "groups.conf").write_text(
        "[Main]\ndefault: lab\nconfdir: $CFGDIR/groups.d\nautodir: $CFGDIR/groups.d\n"
    )
    (cfg / "groups.d" / "lab.yaml").write_text("lab:\n  web: 'web[01-03]'\n  dbs: 'db[1-2]'\n")
    bin_dir.mkdir()
    wrapper = bin_dir / "corral"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m corral "$@"\n')
    wrapper.chmod(0o755)
    env = {**corral.env, "HOME": str(home), "CLUSTERSHELL_CFGDIR": str(cfg)}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", str(REPO / "supervisor"))
    return env


def test_w_completes_hosts_groups_and_the_next_member_of_a_node_set(corral, tmp_path):
    corral.module("a")
    env = user(tmp_path, corral)
    base = ("corral", "--modules", str(corral.modules), "--db", str(corral.db))
    hosts = complete(env, *base, "run", "-w", "")
    assert {"bastion", "db1", "db2", "web01", "web02", "web03", "@web", "@dbs"} <= set(hosts)
    assert "web-*" not in hosts  # a pattern is not a host
    assert complete(env, *base, "run", "-w", "web0") == ["web01", "web02", "web03"]
    assert complete(env, *base, "run", "--nodes", "@w") == ["@web"]
    assert complete(env, *base, "run", "-w", "web01,d") == ["web01,db1", "web01,db2"]
    assert complete(env, *base, "fleet", "gather", "-w", "bas") == ["bastion"]


def test_hosts_the_database_has_records_of_are_offered(corral, tmp_path):
    env = user(tmp_path, corral)
    corral.module("a")
    assert corral("run").code == 0  # a database of corral's schema
    base = ("corral", "--modules", str(corral.modules), "--db", str(corral.db))
    assert "edge7" not in complete(env, *base, "run", "-w", "")  # the control
    conn = sqlite3.connect(corral.db)
    conn.execute("INSERT INTO fleet_hosts (fleet_run, host, status) VALUES ('f', 'edge7', 'ok')")
    conn.commit()
    conn.close()
    assert complete(env, *base, "run", "-w", "ed") == ["edge7"]


def test_a_completion_without_groups_or_database_offers_what_it_can(corral, tmp_path):
    """No ClusterShell groups, a database that does not exist: no error, no traceback,
    and the database is not created by asking."""
    env = user(tmp_path, corral)
    env["CLUSTERSHELL_CFGDIR"] = str(tmp_path / "nowhere")
    db = tmp_path / "none" / "c.db"
    words = complete(env, "corral", "--modules", str(corral.modules), "--db", str(db), "run",
                     "-w", "")  # fmt: skip
    assert "bastion" in words and not db.exists()


def test_zsh_and_fish_get_the_same_hosts(corral, tmp_path):
    """The zsh and fish files run click's protocol for their shell: the same callback,
    asked the way those shells ask it; a host already in the node set is not offered."""
    env = user(tmp_path, corral)
    base = f"corral --modules {corral.modules} --db {corral.db} run -w"
    for shell, cword in (("zsh", "7"), ("fish", "web01,web0")):
        done = subprocess.run(
            [sys.executable, "-m", "corral"],
            env={
                **env,
                "_CORRAL_COMPLETE": f"{shell}_complete",
                "COMP_WORDS": f"{base} web01,web0",
                "COMP_CWORD": cword,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0 and not done.stderr, done.stderr
        # fish's protocol gives TYPE,VALUE from click 8.2 on ("plain,web01,web02")
        words = [w.removeprefix("plain,") for w in done.stdout.split()]
        words = [w for w in words if w.startswith("web01,")]
        assert words == ["web01,web02", "web01,web03"], (shell, done.stdout)


def test_a_run_argument_completes_run_ids_newest_first(corral, tmp_path):
    """`corral status RUN`, `why MODULE RUN`, `log MODULE RUN`: the runs' ids, newest
    first, from the log directory (no database read); the control: before any run,
    nothing is offered."""
    env = user(tmp_path, corral)
    corral.module("a")
    base = ("corral", "--modules", str(corral.modules), "--db", str(corral.db))
    assert complete(env, *base, "status", "") == []
    for _ in range(2):
        assert corral("run").code == 0
    runs = [r["run_id"] for r in corral("history", "--json").json()]
    assert len(runs) == 2
    offered = complete(env, *base, "status", "")
    assert sorted(offered) == sorted(runs)
    stamps = [r.rsplit("-", 1)[0] for r in offered]  # newest first, to the second
    assert stamps == sorted(stamps, reverse=True)
    assert complete(env, *base, "log", "a", runs[1][:-1]) == [runs[1]]
    assert complete(env, *base, "why", "a", "") == offered


def test_w_completes_the_names_of_known_hosts_but_not_hashed_entries_or_addresses(corral, tmp_path):
    """~/.ssh/known_hosts: plain names (and `[name]:port`, and a @cert-authority line's)
    are offered; a hashed entry cannot be read back and an address is not a name. The
    control: before the file exists, none of them is offered."""
    env = user(tmp_path, corral)
    corral.module("a")
    base = ("corral", "--modules", str(corral.modules), "--db", str(corral.db))
    assert "gw1" not in complete(env, *base, "run", "-w", "")
    (tmp_path / "home" / ".ssh" / "known_hosts").write_text(
        "gw1,10.0.0.1 ssh-ed25519 AAAAC3Nz\n"
        "[gw2.lab]:2222 ssh-ed25519 AAAAC3Nz\n"
        "|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= ssh-rsa AAAA\n"
        "@cert-authority *.lab,gw3 ssh-ed25519 AAAAC3Nz\n"
        "# a comment\n"
        "fe80::1 ssh-ed25519 AAAAC3Nz\n"
    )
    words = complete(env, *base, "run", "-w", "")
    assert {"gw1", "gw2.lab", "gw3"} <= set(words)
    assert not any(w.startswith(("|", "10.", "fe80", "*", "[")) for w in words), words
    assert complete(env, *base, "run", "-w", "gw") == ["gw1", "gw2.lab", "gw3"]
