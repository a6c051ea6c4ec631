"""Graph: names, selection, levels, cycles; `plan` order on random DAGs of real files."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import api
from corral.config import load_config
from corral.errors import HeaderError, UsageError
from corral.graph import TIMEOUT_SHARE, Plan, expected_durations
from corral.store import Store

from .conftest import write_module

DATA = Path(__file__).parent / "data" / "initd"


def plan(modules: Path, *targets, tags=(), exclude=(), config_file=None):
    config = load_config((str(modules),), ":memory:", config_file)
    store = Store.open(Path(tempfile.mkdtemp()) / "c.db")
    return api.plan_modules(config, store, targets, tags, exclude)


def problems(modules: Path) -> list[str]:
    with pytest.raises(HeaderError) as exc:
        plan(modules)
    return [str(p) for p in exc.value.problems if p.severity == "error"]


@st.composite
def dags(draw):
    n = draw(st.integers(1, 14))
    names = [f"m{i}" for i in range(n)]
    edges = {}
    for i, name in enumerate(names):
        kinds = {}
        for kind in ("requires", "wants", "after"):
            kinds[kind] = draw(
                st.lists(st.sampled_from(names[:i]), max_size=3, unique=True) if i else st.just([])
            )
        # `before` points forward: m_i before m_j with j > i keeps the graph acyclic
        kinds["before"] = draw(
            st.lists(st.sampled_from(names[i + 1 :]), max_size=2, unique=True)
            if i < n - 1
            else st.just([])
        )
        edges[name] = kinds
    shuffled = draw(st.permutations(names))
    return shuffled, edges


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_plan_order_respects_every_edge_and_level_is_the_longest_chain(dag):
    names, edges = dag
    with tempfile.TemporaryDirectory() as tmp:
        modules = Path(tmp) / "modules"
        for name in names:  # written in a random order: order must not depend on it
            header = "\n".join(f"{k}: {' '.join(v)}" for k, v in edges[name].items() if v)
            write_module(modules, name, header)
        graph, selection = plan(modules)
        out = api.plan_json(graph, selection)
    position = {name: i for i, name in enumerate(out["order"])}
    assert sorted(out["order"]) == sorted(names)
    waits = {n: set() for n in names}
    for name, kinds in edges.items():
        waits[name] |= set(kinds["requires"]) | set(kinds["wants"]) | set(kinds["after"])
        for later in kinds["before"]:
            waits[later].add(name)
    level = {}
    for name in out["order"]:
        assert all(position[d] < position[name] for d in waits[name])
        level[name] = 1 + max((level[d] for d in waits[name]), default=-1)
    assert {m["name"]: m["level"] for m in out["modules"]} == level


def test_selecting_a_target_brings_what_it_requires_and_wants_but_not_after(tmp_path):
    write_module(tmp_path, "a")
    write_module(tmp_path, "b")
    write_module(tmp_path, "c", "requires: a\nwants: b\nafter: d")
    write_module(tmp_path, "d")
    write_module(tmp_path, "e", "requires: c")
    _, selection = plan(tmp_path, "c")
    assert set(selection.names) == {"a", "b", "c"}


def test_aliases_resolve_and_targets_may_use_them(tmp_path):
    write_module(tmp_path, "os_release", "provides: osinfo")
    write_module(tmp_path, "x", "requires: osinfo")
    graph, selection = plan(tmp_path, "osinfo")
    assert selection.names == ("os_release",)
    assert graph.hard("x") == {"os_release"}


def test_tag_and_exclude_refine_the_selection(tmp_path):
    write_module(tmp_path, "base")
    write_module(tmp_path, "disk", "requires: base\ntags: storage")
    write_module(tmp_path, "net", "tags: network")
    write_module(tmp_path, "late", "requires: disk\ntags: storage")
    _, selection = plan(tmp_path, tags=["storage"])
    assert set(selection.names) == {"base", "disk", "late"}
    _, selection = plan(tmp_path, tags=["storage"], exclude=["disk"])
    assert set(selection.names) == {"base"}
    assert selection.excluded == {"disk": "excluded", "late": "requires disk, which is excluded"}


def test_unknown_target_is_a_usage_error(tmp_path):
    write_module(tmp_path, "a")
    with pytest.raises(UsageError, match="no module named 'nope'"):
        plan(tmp_path, "nope")


def test_cycle_lists_members_in_order_with_file_and_line(tmp_path):
    write_module(tmp_path, "a", "description: x\nrequires: b")
    write_module(tmp_path, "b", "after: c")
    write_module(tmp_path, "c", "wants: a")
    write_module(tmp_path, "d", "requires: a")
    assert problems(tmp_path) == [
        f"{tmp_path}/a.sh:3: dependency cycle: a -> b -> c -> a "
        "(a requires b; b after c; c wants a)"
    ]


def test_before_cycle_and_self_requirement(tmp_path):
    write_module(tmp_path, "a", "before: b")
    write_module(tmp_path, "b", "before: a")
    write_module(tmp_path, "s", "requires: s")
    found = problems(tmp_path)
    assert len(found) == 2
    assert "dependency cycle: a -> b -> a (b before a; a before b)" in found[0]
    assert found[1].endswith("s.sh:2: dependency cycle: s -> s (s requires s)")


def test_missing_hard_dependency_names_who_needs_it(tmp_path):
    write_module(tmp_path, "a", "wants: ghost\nrequires: phantom")
    write_module(tmp_path, "b", "after: nobody")
    assert problems(tmp_path) == [
        f"{tmp_path}/a.sh:3: requires 'phantom': no module has that name or provides it"
    ]


def test_duplicate_name_names_both_files(tmp_path):
    write_module(tmp_path, "a", "provides: web")
    write_module(tmp_path, "b", "provides: web")
    assert problems(tmp_path) == [
        f"{tmp_path}/b.sh:2: name 'web' is also provided by {tmp_path}/a.sh"
    ]


def test_every_error_is_reported_not_just_the_first(tmp_path):
    write_module(tmp_path, "a", "timeout: never")
    write_module(tmp_path, "b", "requires: ghost")
    write_module(tmp_path, "c", "memory: huge")
    assert len(problems(tmp_path)) == 3


def test_priority_is_the_longest_remaining_path(tmp_path):
    write_module(tmp_path, "root")
    write_module(tmp_path, "mid", "requires: root")
    write_module(tmp_path, "leaf", "requires: mid")
    write_module(tmp_path, "lone")
    _, selection = plan(tmp_path)
    assert selection.priority == {"root": 3, "mid": 2, "leaf": 1, "lone": 1}
    assert selection.names[0] == "root"


def test_a_first_run_weighs_modules_by_what_their_headers_declare(tmp_path):
    """No history: a declared timeout is an upper bound (a share of it is expected), the
    rest weigh the median of those estimates, never above their own timeout."""
    write_module(tmp_path, "short", "timeout: 4s")
    write_module(tmp_path, "long", "timeout: 40s")
    write_module(tmp_path, "quiet")  # declares nothing
    write_module(tmp_path, "tiny", "timeout: 1s")
    graph, selection = plan(tmp_path)
    expected = expected_durations(graph, selection.names, {})
    share = TIMEOUT_SHARE
    assert expected == {"short": 4 * share, "long": 40 * share, "quiet": 4 * share,
                        "tiny": 1 * share}  # fmt: skip
    assert selection.names[0] == "long"
    # With history, the share is learned from modules that have both: long took 20 s.
    expected = expected_durations(graph, selection.names, {"long": 20.0, "quiet": 3.0})
    assert expected["short"] == 2.0 and expected["tiny"] == 0.5
    assert expected["long"] == 20.0 and expected["quiet"] == 3.0


def test_between_equal_priorities_the_module_releasing_more_goes_first(tmp_path):
    write_module(tmp_path, "a")
    write_module(tmp_path, "b")
    for i in range(3):
        write_module(tmp_path, f"user{i}", "requires: b")
    write_module(tmp_path, "c")
    write_module(tmp_path, "usera", "requires: a")
    write_module(tmp_path, "usera2", "requires: a")
    write_module(tmp_path, "userc", "requires: c")
    graph, selection = plan(tmp_path)
    assert selection.priority["a"] == selection.priority["b"] == selection.priority["c"]
    plan_ = Plan(selection, graph)
    assert plan_.take_ready(lambda name: True, 3) == ["b", "a", "c"]
    assert list(selection.names[:3]) == ["b", "a", "c"]


def test_debian_init_scripts_order_like_insserv(tmp_path):
    modules = tmp_path / "initd"
    modules.mkdir()
    for script in DATA.iterdir():
        name = script.name if script.name.endswith(".sh") else f"{script.name}.sh"
        shutil.copy(script, modules / name)
    (tmp_path / "corral.yaml").write_text(
        "facilities:\n  $syslog: [rsyslog]\n  $time: [+hwclock]\n  $network: []\n"
    )
    graph, selection = plan(modules)
    order = list(selection.names)
    assert order.index("rsyslog") < order.index("cron")
    assert order.index("hwclock") < order.index("rsyslog")
    assert order.index("rsyslog") < order.index("dbus")
    assert order.index("rsyslog") < order.index("ssh")  # Provides: sshd, file ssh
    assert "sshd" in graph.modules["ssh"].header.provides
    # procps requires mountkernfs, which this host lacks: a warning, as insserv has it
    assert any("mountkernfs" in p.message for p in graph.warnings)
