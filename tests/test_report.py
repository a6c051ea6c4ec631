"""What each module cost, and `corral docs`: records checked against known work."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

from .conftest import REPO

MIB = 1 << 20


def hold(megabytes: int, seconds: float = 1.0) -> str:
    return (
        f'python3 -c "\nb = bytearray({megabytes} << 20)\n'
        f"for i in range(0, len(b), 4096): b[i] = 1\n"
        f'import time; time.sleep({seconds})\n"'
    )


def modules_of(result) -> dict:
    return {m["name"]: m for m in result.json()["modules"]}


def test_peak_rss_of_a_child_is_recorded_within_ten_percent(corral):
    corral.module("big", body=hold(200))
    result = corral("run", "--json")
    assert result.code == 0, result.err
    peak = modules_of(result)["big"]["peak_rss_bytes"]
    assert abs(peak - 200 * MIB) <= 20 * MIB, peak / MIB


def test_peak_rss_is_the_whole_tree_not_one_process(corral):
    corral.module("two", body=f"{hold(100, 1.5)} &\n{hold(100, 1.5)} &\nwait")
    result = corral("run", "--json")
    peak = modules_of(result)["two"]["peak_rss_bytes"]
    assert peak >= 190 * MIB, peak / MIB


def test_cpu_of_children_is_accounted(corral):
    corral.module(
        "worker",
        # busy until the child itself has used 0.4 s of CPU (not of wall time: on a busy
        # host a wall-clock loop gets less)
        body="bash -c 'hz=$(getconf CLK_TCK); while read -ra s < /proc/$BASHPID/stat; "
        "(( (s[13] + s[14]) * 10 < hz * 4 )); do :; done'",
    )
    result = corral("run", "--json")
    m = modules_of(result)["worker"]
    assert m["cpu_user_s"] + m["cpu_sys_s"] >= 0.3


def test_history_priorities_start_the_slow_module_first(corral):
    corral.module("a_fast", body="sleep 0.01")
    corral.module("b_fast", body="sleep 0.01")
    corral.module("z_slow", body="sleep 0.4")
    assert corral("run", "-j", "1").code == 0
    second = modules_of(corral("run", "-j", "1", "--json"))
    assert second["z_slow"]["start"] < second["a_fast"]["start"]
    plan = {m["name"]: m["priority"] for m in corral("plan", "--json").json()["modules"]}
    assert plan["z_slow"] > plan["a_fast"]


def test_history_figures_equal_what_the_attempt_rows_say(corral):
    """A finished run's figures are kept as one record for speed; they must be the
    attempt rows' figures exactly (retries and failures included), and a run without
    that record (a crash) is still read from its rows."""
    from corral.store import Store

    corral.module("ok", body="sleep 0.06")
    corral.module(
        "flaky",
        "retries: 1",
        'test -e "$CORRAL_LOG_DIR/../once" || '
        '{ touch "$CORRAL_LOG_DIR/../once"; exit 3; }; sleep 0.07',
    )
    corral.module("bad", body="exit 1")
    corral.module("after", "requires: bad")
    for _ in range(2):
        corral("run", "-q")
    store = Store.open(corral.db)
    from_records = store.history()
    assert store.conn.execute("SELECT count(*) FROM run_figures").fetchone()[0] == 2
    store.conn.execute("DELETE FROM run_figures")
    from_rows = store.history()
    store.close()
    assert from_records == from_rows
    assert set(from_rows.durations) == {"ok", "flaky"}


def svg_ok(path) -> bool:
    root = ET.parse(path).getroot()
    return root.tag.endswith("svg") and path.stat().st_size > 5000


def test_docs_writes_markdown_charts_and_flags_a_regression(corral, tmp_path):
    corral.module("base", body="sleep 0.05")
    corral.module("grows", "requires: base", "sleep 0.1")
    corral.module("side", body="sleep 0.02")
    for _ in range(3):  # with the gate open: a busy test host must not hold them back
        assert corral("run", "-q", "--max-load", "1000").code == 0
    corral.module("grows", "requires: base", "sleep 0.4")
    assert corral("run", "-q", "--max-load", "1000").code == 0
    out = tmp_path / "report"
    result = corral("docs", "--out", str(out))
    assert result.code == 0, result.err
    text = (out / "README.md").read_text()
    for name in ("gantt.svg", "load.svg", "history.svg"):
        assert f"]({name})" in text
        assert svg_ok(out / name), name
    for module in ("base", "grows", "side"):
        assert f"| {module} |" in text
    assert "## Regressions" in text and "| grows |" in text.split("## Regressions")[1]
    assert "Critical path" in text and "base → grows" in text
    assert "**Bottleneck:**" in text and "parallel efficiency" in text


def test_docs_html_is_one_self_contained_page(corral, tmp_path):
    corral.module("a", body="sleep 0.05")
    corral("run", "-q")
    out = tmp_path / "html"
    assert corral("docs", "--out", str(out), "--format", "html").code == 0
    page = (out / "index.html").read_text()
    assert page.count("<svg") >= 3 and "<table>" in page and "src=" not in page
    assert sorted(out.iterdir()) == [out / "index.html", out / "report.json"]


def test_docs_without_runs_says_so(corral, tmp_path):
    result = corral("docs", "--out", str(tmp_path / "x"))
    assert result.code == 2 and "no finished runs" in result.err


def test_docs_from_the_shipped_example_modules(corral, tmp_path):
    modules = tmp_path / "shipped"
    shutil.copytree(REPO / "modules", modules)
    shutil.copytree(REPO / "lib", tmp_path / "lib")
    corral.modules = modules
    for _ in range(2):
        result = corral("run", "-q")
        assert result.code in (0, 1, 5), result.err  # a check may fail or warn on a host
    out = tmp_path / "perf"
    assert corral("docs", "--out", str(out)).code == 0
    text = (out / "README.md").read_text()
    assert "| summary |" in text and svg_ok(out / "gantt.svg")
