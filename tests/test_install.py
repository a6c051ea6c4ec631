"""The README's two commands, as a new user runs them: a user install in a fresh virtual
environment (not editable, no test tools, no plotting library) that runs the shipped
modules from any directory and carries lib/, the man page and the completions."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import REPO, write_module

# A venv, a pip install from the index and a run of the shipped modules: minutes on a
# loaded 2-CPU machine, more than the suite's default per-test limit.
pytestmark = pytest.mark.timeout(600)

# What a fresh venv holds before anything is installed into it: not corral's cost.
VENV_OWN = {"pip", "setuptools", "pkg_resources", "_distutils_hack"}


def readme_commands() -> list[str]:
    """The indented command lines of the README's set-up section, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [line[4:] for line in section.splitlines() if line.startswith("    ")]


@dataclass
class Install:
    home: Path
    venv: Path
    result: subprocess.CompletedProcess
    env: dict

    @property
    def corral(self) -> Path:
        return self.venv / "bin" / "corral"

    def site_packages(self) -> Path:
        (path,) = (self.venv / "lib").glob("python3*/site-packages")
        return path


def _user_env(home: Path) -> dict:
    """The user's environment without a checkout on PYTHONPATH, an active venv or CORRAL_*."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CORRAL_")}
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / ".local" / "state"))
    return env


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Install:
    """The README's first command, verbatim, in a copy of the source tree."""
    root = tmp_path_factory.mktemp("user")
    home, src = root / "home", root / "src"
    home.mkdir()
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
    )
    if listed.returncode != 0:  # not a checkout (an unpacked archive): take the tree
        skip = shutil.ignore_patterns(".venv", "build", "*.egg-info", "__pycache__", ".*cache")
        shutil.copytree(REPO, src, ignore=skip)
    for name in filter(None, listed.stdout.split(b"\0") if listed.returncode == 0 else []):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            target = src / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    env = _user_env(home)
    first = readme_commands()[0]
    result = subprocess.run(
        ["bash", "-c", first], cwd=src, env=env, capture_output=True, text=True, timeout=300
    )
    venv = Path(re.match(r"python3 -m venv (\S+)", first).group(1).replace("~", str(home)))
    return Install(home, venv, result, env)


def test_readme_has_two_commands_and_ci_runs_the_test_one():
    install_cmd, test_cmd = readme_commands()
    assert "-e " not in install_cmd and "[test" not in install_cmd  # a user install
    assert "corral --modules modules run" in install_cmd
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert ci[-1] == test_cmd  # exactly the README's test command


def test_readme_install_runs_the_shipped_modules(install):
    r = install.result
    assert r.returncode in (0, 1, 5), r.stderr  # 5: a check warned, 1: one failed here
    assert "Traceback" not in r.stderr and "warning" not in r.stderr.lower(), r.stderr
    assert re.search(r"corral: \w+: 12 modules", r.stdout), r.stdout[-2000:]


def test_user_install_is_small_and_carries_lib_man_and_completions(install):
    site = install.site_packages()
    sizes = {
        p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else 0
        for p in site.iterdir()
    }
    corral_cost = sum(v for k, v in sizes.items() if k.split("-")[0] not in VENV_OWN)
    print(f"runtime install: {corral_cost / 2**20:.1f} MiB in {site}")
    assert corral_cost < 20 << 20  # a few MB, not matplotlib's 200
    assert not any(k.startswith(("matplotlib", "numpy", "pytest", "ruff")) for k in sizes)
    assert not list(site.glob("__editable__*")) and not list(site.glob("*.egg-link"))
    assert sorted(p.name for p in (site / "corral" / "lib").glob("*.sh")) == sorted(
        p.name for p in (REPO / "lib").glob("*.sh")
    )
    share = install.venv / "share"
    for path in (
        "man/man1/corral.1",
        "bash-completion/completions/corral",
        "zsh/site-functions/_corral",
        "fish/vendor_completions.d/corral.fish",
    ):
        assert (share / path).is_file(), path
    if shutil.which("man"):
        page = subprocess.run(
            ["man", "-l", str(share / "man/man1/corral.1")],
            capture_output=True,
            text=True,
            env={**install.env, "MANPAGER": "cat", "MANWIDTH": "100"},
        )
        assert "corral run" in page.stdout and "--dry-run" in page.stdout


def test_installed_corral_runs_copied_modules_from_any_directory(install, tmp_path):
    modules = tmp_path / "some" / "dir"
    shutil.copytree(REPO / "modules", modules)
    (modules / "lib_probe.sh").write_text(
        "#!/usr/bin/env bash\n# description: where lib is\nset -euo pipefail\n"
        'source "$CORRAL_LIB/log.sh"\nlog::info "lib=$CORRAL_LIB"\n'
    )
    result = subprocess.run(
        [str(install.corral), "--modules", str(modules), "run", "lib_probe", "disk_usage"],
        cwd="/",
        env=install.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    assert f"lib={install.site_packages() / 'corral' / 'lib'}" in result.stdout


def test_docs_without_the_report_extra_asks_for_it_by_name(install, tmp_path):
    result = subprocess.run(
        [str(install.corral), "docs", "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=install.env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "matplotlib" in result.stderr and "corral[report]" in result.stderr
    # the command it gives names what pyproject's report extra requires (corral is
    # installed from its source: `pip install corral[report]` would fetch nothing of it)
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (wanted,) = extra["optional-dependencies"]["report"]
    assert f"{install.corral.parent / 'pip'} install '{wanted}'" in result.stderr, result.stderr


def test_share_is_generated_from_the_current_click_help():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_share.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + "\nrun: python3 scripts/gen_share.py"


def test_bash_completion_offers_module_names_and_tags(install, tmp_path):
    modules = tmp_path / "mods"
    for name in ("web_nginx", "web_php", "db_pg"):
        write_module(modules, name, "tags: frontend" if name.startswith("web") else "tags: data")
    script = install.venv / "share" / "bash-completion" / "completions" / "corral"

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        result = subprocess.run(
            [
                "bash",
                "-c",
                f'source "{script}"; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; '
                '_corral_completion corral; printf "%s\\n" "${COMPREPLY[@]}"',
            ],
            env={**install.env, "PATH": f"{install.venv / 'bin'}:{install.env['PATH']}"},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.split()

    base = ("corral", "--modules", str(modules), "--db", str(tmp_path / "c.db"))
    assert complete(*base, "run", "web") == ["web_nginx", "web_php"]
    assert complete(*base, "run", "--tag", "''") == ["data", "frontend"]
    assert complete(*base, "history", "d") == ["db_pg"]
    assert complete(*base, "pl") == ["plan"]


def test_a_fleet_run_from_the_user_install_ships_what_its_hosts_need(install, tmp_path):
    """The zipapp is derived from this fresh venv's own metadata (whatever versions the
    index gave it: python-dateutil 4 without six, sqlite-utils requiring pip …) and runs
    on simulated hosts under `python3 -I -S`, importing nothing installed there."""
    import json

    modules = tmp_path / "modules"
    write_module(modules, "a", "", "true")
    write_module(modules, "b", "requires: a", "true")
    launch = f"env XDG_STATE_HOME={tmp_path}/%h HOME={tmp_path}/%h bash -c"
    script = (
        "import json\n"
        "from corral import api\n"
        "from corral.config import load_config\n"
        "from corral.fleet import bundle\n"
        f"config = load_config(({str(modules)!r},), {str(tmp_path / 'controller.db')!r})\n"
        "outcome = api.run_fleet(config, api.open_store(config), 'sim[1-2]', [], fanout=2,"
        f" exec_command={launch!r})\n"
        "print(json.dumps({'shipped': bundle.shipped_distributions(), 'code': outcome.exit_code,"
        " 'hosts': [h.as_json() for h in outcome.hosts]}))\n"
    )
    result = subprocess.run(
        [str(install.venv / "bin" / "python"), "-c", script],
        cwd=tmp_path,
        env=install.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["code"] == 0, out["hosts"]
    assert [h["status"] for h in out["hosts"]] == ["ok", "ok"]
    assert [m["name"] for m in out["hosts"][0]["run"]["modules"]] == ["a", "b"]
    installed = {
        re.sub(r"[-_.]+", "-", p.name.split("-")[0]).lower()
        for p in install.site_packages().glob("*.dist-info")
    }
    assert set(out["shipped"]) <= installed  # only what this venv has …
    assert {"click", "pyyaml", "sqlite-utils"} <= set(out["shipped"])
    assert not {"pip", "psutil", "clustershell"} & set(out["shipped"])  # … and hosts need
