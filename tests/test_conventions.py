"""The conventions make, ninja and systemd users bring: short flags, environment defaults
with flags > environment > config file > defaults, `corral config`, config files where
users put them, reports under the state directory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import Result


@pytest.fixture
def user(corral, tmp_path):
    """Runs corral as a user would in `tmp_path`: no --db unless given."""

    def run(*args: str, env: dict | None = None, cwd=tmp_path) -> Result:
        proc = subprocess.run(
            [sys.executable, "-m", "corral", *args],
            capture_output=True,
            text=True,
            env={**corral.env, **(env or {})},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def test_short_flags_as_make_and_ninja_spell_them(corral):
    for name in "abcde":
        corral.module(name, body="sleep 0.1")
    corral.module("bad", body="exit 1")
    corral.module("after_bad", "after: bad")
    dry = corral("run", "-n", "-j0")
    assert dry.code == 0 and "would run" in dry.out and "-j 7" in dry.out, dry.out
    assert not corral.db.exists() or "ok" not in corral("history").out
    result = corral("run", "-k", "-l", "1000", "-j", "0")
    assert result.code == 1 and "with -j 7" in result.out
    assert "after_bad" in result.out and "ok" in result.out.split("after_bad", 1)[1]
    assert corral("run", "-j", "-1").code == 2


def test_precedence_flag_over_environment_over_config_file(user, tmp_path):
    modules = tmp_path / "modules"
    (tmp_path / "corral.yaml").write_text("jobs: 5\ndb: from_config.db\nmax_load: 7\n")
    unset = {"CORRAL_MAX_LOAD": ""}  # the fixture's (an empty value is unset)
    config = user("config", "--json", env=unset).json()
    assert config["jobs"] == {"value": 5, "source": f"config {tmp_path / 'corral.yaml'}"}
    assert config["db"]["value"] == str(tmp_path / "from_config.db")
    env = {"CORRAL_DB": str(tmp_path / "from_env.db"), "CORRAL_JOBS": "3", **unset}
    config = user("config", "--json", env=env).json()
    assert config["db"] == {"value": str(tmp_path / "from_env.db"), "source": "env CORRAL_DB"}
    assert config["jobs"] == {"value": 3, "source": "env CORRAL_JOBS"}
    assert config["max_load"]["value"] == 7.0
    config = user("--db", str(tmp_path / "flag.db"), "config", "--json", env=env).json()
    assert config["db"]["source"] == "flag --db"
    # Really applied, not only printed: the run uses the environment's database and jobs.
    modules.joinpath("m.sh").write_text("#!/bin/bash\ntrue\n")
    run = user("run", env=env)
    assert run.code == 0 and "-j 3" in run.out, run.out + run.err
    assert (tmp_path / "from_env.db").exists() and not (tmp_path / "from_config.db").exists()
    assert "-j 2" in user("run", "-n", "-j", "2", env=env).out
    bad = user("config", env={"CORRAL_JOBS": "many"})
    assert bad.code == 2 and "$CORRAL_JOBS" in bad.err and "Traceback" not in bad.err


def test_config_table_names_each_source(user, tmp_path):
    (tmp_path / "modules").mkdir(exist_ok=True)
    out = user("config", env={"CORRAL_MAX_LOAD": "2.5"}).out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "(env CORRAL_MAX_LOAD)" in lines["max_load"] and "2.5" in lines["max_load"]
    assert "(default)" in lines["jobs"] and "(none found)" in lines["config_file"]
    # for a person: units, the modules directory as a full path, and whether it is there
    assert lines["grace"].split()[1] == "5s" and lines["log_limit"].split()[1] == "64M"
    assert lines["keep_days"].split()[1:3] == ["90", "days"]
    assert lines["modules"].split()[1] == str(tmp_path / "modules")
    gone = user("--modules", "nowhere", "config").out.splitlines()[0]
    assert "(flag --modules; nowhere not found)" in gone and str(tmp_path / "nowhere") in gone


def test_config_file_found_inside_the_modules_dir_or_a_warning_names_the_ignored(user, tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir(exist_ok=True)
    (modules / "corral.yml").write_text("jobs: 4\n")
    result = user("config", "--json")
    assert result.json()["jobs"]["value"] == 4 and result.err == ""
    assert result.json()["config_file"]["source"] == "found in the modules directory"
    (tmp_path / "corral.yaml").write_text("jobs: 6\n")
    result = user("config", "--json")
    assert result.json()["jobs"]["value"] == 6
    assert f"ignoring {modules / 'corral.yml'}" in result.err
    elsewhere = tmp_path / "other" / "modules"
    elsewhere.mkdir(parents=True)
    result = user("--modules", str(elsewhere), "config")
    assert result.code == 0
    assert f"ignoring {tmp_path / 'corral.yaml'}" in result.err and str(elsewhere) in result.err


def test_docs_out_defaults_under_the_state_directory(corral, tmp_path):
    pytest.importorskip("matplotlib")
    corral.module("a")
    assert corral("run", "-q").code == 0
    result = corral("docs", extra_env={"HOME": str(tmp_path)})
    assert result.code == 0, result.err
    assert (corral.db.parent / "report" / "README.md").is_file()
    assert not (tmp_path / "docs").exists()


def test_modules_at_the_top_of_the_filesystem_get_corrals_lib_not_the_systems(user, tmp_path):
    """Modules in /checks (or /usr/local/checks) do not see /lib (/usr/local/lib) as
    $CORRAL_LIB: that is the system's, and as root every file under it would be walked
    by the trust checks. The control: a lib/ beside modules anywhere else is theirs."""
    for modules, system in (
        ("/corral-no-such-checks", "/lib"),
        ("/usr/corral-no-such", "/usr/lib"),
    ):
        lib = user("--modules", modules, "config", "--json").json()["lib"]
        assert lib["value"] != system and lib["source"].startswith("default: corral's own;")
        assert f"{system} beside the modules is the system's" in lib["source"]
    (tmp_path / "modules").mkdir(exist_ok=True)
    (tmp_path / "lib").mkdir()
    lib = user("config", "--json").json()["lib"]
    assert lib == {
        "value": str(tmp_path / "lib"),
        "source": "default: lib/ beside the modules directory",
    }
