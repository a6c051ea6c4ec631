"""No success without work (issue 12.6) and a header or config means what it says (12.7):
real modules that leave markers, run by the real corral. A refused run runs nothing
(no marker) and says why with exit 2; the controls show the same modules do run."""

from __future__ import annotations

import pytest

NOT_MODULES = {
    "a.sh~": "backup",
    ".a.sh.swp": "backup",
    "a.sh.orig": "backup",
    "a.sh.dpkg-old": "backup",
    "b.bash": ".bash",
    "50-cleanup": "without .sh",
}


@pytest.fixture
def tagged(corral, tmp_path):
    """Modules a (tags: web) and b (tags: db), leaving markers; the markers' directory."""
    marks = tmp_path / "marks"
    marks.mkdir()
    corral.module("a", "tags: web", f"touch {marks}/a")
    corral.module("b", "tags: db", f"touch {marks}/b")
    return marks


def ran(marks) -> set[str]:
    return {p.name for p in marks.iterdir()}


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--tag", "wbe"], "--tag wbe: no module has that tag (tags in use: db, web)"),
        (["--tag", "web,nope"], "--tag nope: no module has that tag"),
        (["--tag", "db", "a"], "no module among a has tag db"),
        (["--exclude", "a,b"], "every selected module is excluded (a, b)"),
        (["--tag", ""], "--tag '': empty"),
        ([""], "target '': empty"),
    ],
)
def test_a_selection_of_nothing_is_an_error_that_says_why(corral, tagged, args, why):
    result = corral("run", *args)
    assert result.code == 2 and why in result.err, result.err
    assert not ran(tagged) and "Traceback" not in result.err


def test_tags_split_like_a_header_list(corral, tagged):
    """The control for the cases above: the same modules, selected, do run."""
    result = corral("run", "--tag", "web,db")
    assert result.code == 0, result.err
    assert ran(tagged) == {"a", "b"}
    assert corral("plan", "--tag", "wbe").code == 2  # plan refuses it too


def test_a_directory_without_modules_is_an_error_naming_what_is_there(corral, tmp_path):
    for name in NOT_MODULES:
        (corral.modules / name).write_text("#!/bin/bash\ntouch ran\n")
    result = corral("run")
    assert result.code == 2 and "no modules to run: no *.sh files" in result.err
    assert all(name in result.err for name in NOT_MODULES), result.err
    assert not (corral.modules / "ran").exists()


@pytest.mark.parametrize("command", [["run", "-q"], ["run", "--json"], ["check"]])
def test_files_that_look_like_scripts_but_are_not_modules_are_warned_of(corral, command):
    corral.module("a")
    for name in NOT_MODULES:
        (corral.modules / name).write_text("#!/bin/bash\ntrue\n")
    (corral.modules / "README").write_text("not a script\n")
    (corral.modules / "data.csv").write_text("1,2\n")
    result = corral(*command)
    assert result.code == 0, result.err
    warned = [line for line in result.err.splitlines() if "not run:" in line]
    assert sorted(n for n in NOT_MODULES if any(f"/{n}:" in w for w in warned)) == sorted(
        NOT_MODULES
    )
    assert len(warned) == len(NOT_MODULES)  # README and data.csv are no scripts


@pytest.mark.parametrize("command", [["run", "-q"], ["run", "--json"]])
def test_every_warning_reaches_stderr_also_when_quiet(corral, command):
    corral.module("a", "colour: blue")
    result = corral(*command)
    assert result.code == 0 and "unknown key 'colour'" in result.err, result.err


@pytest.mark.parametrize("marks", [1, 2], ids=["one mark", "two marks"])
def test_a_byte_order_mark_does_not_hide_the_header(corral, tmp_path, marks):
    """Two: a file with a mark pasted after another file's."""
    done = tmp_path / "marks"
    done.mkdir()
    corral.module("first", body=f"sleep 0.3; touch {done}/first")
    path = corral.module("second", "requires: first", f"test -e {done}/first")
    path.write_bytes(b"\xef\xbb\xbf" * marks + path.read_bytes())
    result = corral("run", "--json", "second")
    assert result.code == 0, result.err
    assert [m["name"] for m in result.json()["modules"]] == ["first", "second"]


@pytest.mark.parametrize("command", [("run", "-q"), ("check",)])
def test_windows_line_endings_are_warned_of(corral, command):
    """The header reads the same with CRLF line endings; bash does not (`true\r`: command
    not found), so run (also under -q) and check say why the module will fail."""
    path = corral.module("dos", "requires: plain")
    corral.module("plain")
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    result = corral(*command)
    assert "dos.sh:1: warning: Windows (CRLF) line endings" in result.err, result.err
    assert "Traceback" not in result.err
    # The control: a file with a carriage return inside a line only is left alone.
    path.write_bytes(b"# requires: plain\necho 'a\r\nb'\n")
    assert "CRLF" not in corral(*command).err


def test_a_misspelt_ordering_key_is_an_error_not_a_silent_early_start(corral, tmp_path):
    corral.module("first", body="sleep 0.3")
    corral.module("second", "require: first", "touch ran")
    result = corral("run")
    assert result.code == 2 and "did you mean 'requires'?" in result.err
    assert "second.sh:2:" in result.err
    assert not (corral.modules / "ran").exists()


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ('fail_fast: "perhaps"', "2: fail_fast"),
        ("jobs: 1e100", "2: jobs"),
        ("max_load: .nan", "2: max_load"),
        ("grace: 99999999999999999d", "2: grace"),
        ("log_limit: [1M]", "2: log_limit"),
        ("facilities: {net: [$dns], dns: [$net]}", "2: facilities: cycle $dns -> $net -> $dns"),
        ("pools: {apt: 0}", "2: pools"),
        ("pools:\n  ok: 2\n  apt: 99999999999999999999999", "4: pools"),
        ("pools:\n  apt: 4097", "3: pools: cannot read {'apt': 4097}: apt: 4097 is not a pool"),
        ("keep_runs: 99999999999999999999999", "2: keep_runs"),
        ("fanout: 1000000", "2: fanout"),
        ("connect_timeout: 99999d", "2: connect_timeout"),
        ("backend: fleet", "2: backend: cannot read 'fleet': fleet is chosen by -w NODESET"),
        ("backend: dryrun", "2: backend: cannot read 'dryrun': dryrun is chosen by --dry-run"),
        ("backend: cloud", "2: backend: cannot read 'cloud': expected one of: local"),
        ("grace: -5", "2: grace: cannot read -5: expected a duration of more than 0"),
        ("deadline: 0", "2: deadline: cannot read 0: expected a duration of more than 0"),
        ("min_free_mem: -1G", "2: min_free_mem: cannot read '-1G': expected a size such as"),
        ("jobs: 2\nmax_load: 9\njobs: 3", "4: invalid YAML: 'jobs' is given twice (first on"),
        ("pools:\n  apt: 2\n  apt: 3", "4: invalid YAML: 'apt' is given twice (first on line 3)"),
        ("max-load: 9\nmax_load: 3", "3: max_load is given twice: as 'max-load' and as"),
        ("fail_fast: yes\nkeep_going: yes", "3: fail_fast and keep_going set one thing"),
        ('pools: {"": 2}', "2: pools: cannot read {'': 2}: '' is not a lock name a header"),
        ('pools:\n  ok: 1\n  "a b": 2', "4: pools: cannot read {'ok': 1, 'a b': 2}: 'a b' is"),
        ("[]", "1: config must be a mapping"),
        ("0", "1: config must be a mapping"),
        ('""', "1: config must be a mapping"),
    ],
)
def test_a_config_value_that_is_not_what_it_says_is_an_error_naming_the_key(
    corral, tmp_path, setting, key
):
    """The error names the file and the line of the key (of the pool's own entry)."""
    corral.module("a", body=f"touch {tmp_path}/ran")
    (corral.modules.parent / "corral.yaml").write_text("# settings\n" + setting + "\n")
    result = corral("run")
    assert result.code == 2 and f"corral.yaml:{key}" in result.err, result.err
    assert "Traceback" not in result.err and not (tmp_path / "ran").exists()
    assert len(result.err) < 400  # a huge number is not repeated back


@pytest.mark.parametrize(("text", "fail_fast"), [('"false"', False), ("on", True)])
def test_fail_fast_as_text_means_what_it_says(corral, tmp_path, text, fail_fast):
    corral.module("bad", body="exit 1")
    corral.module("later", "after: bad", f"touch {tmp_path}/later")
    (corral.modules.parent / "corral.yaml").write_text(f"fail_fast: {text}\n")
    result = corral("run", "-j", "1")
    assert result.code == 1
    assert (tmp_path / "later").exists() != fail_fast


@pytest.mark.parametrize("flag", ["--max-load=nan", "-j=99999"])
def test_a_flag_out_of_range_is_an_error_naming_it(corral, tmp_path, flag):
    corral.module("a", body=f"touch {tmp_path}/ran")
    result = corral("run", *flag.split("=", 1))
    assert result.code == 2 and flag.split("=")[0].lstrip("-") in result.err, result.err
    assert not (tmp_path / "ran").exists()
