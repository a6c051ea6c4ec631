"""Hypothesis drives random DAGs of tiny real modules through the real executor.

Invariants, checked from the times the modules themselves write: every module runs
once or is skipped for a reason, never before its requirements end, never more than
--jobs at once, never two holders of one lock; failures skip exactly the modules that
transitively require them. The same invariants are checked on hundreds of scripted
histories in tests/test_scheduler.py; these few examples are about real processes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import api
from corral.config import load_config
from corral.throttle import Jobs

from .conftest import write_module
from .runtrace import max_overlap, read_trace, traced


@st.composite
def dags(draw):
    n = draw(st.integers(2, 9))
    modules = []
    for i in range(n):
        earlier = list(range(i))
        requires = (
            draw(st.lists(st.sampled_from(earlier), unique=True, max_size=3)) if earlier else []
        )
        wants = draw(st.lists(st.sampled_from(earlier), unique=True, max_size=2)) if earlier else []
        modules.append(
            {
                "name": f"m{i}",
                "requires": [f"m{r}" for r in requires],
                "wants": [f"m{w}" for w in wants if w not in requires],
                "locks": draw(st.lists(st.sampled_from(["a", "b"]), unique=True, max_size=2)),
                "fails": draw(st.booleans()) and draw(st.booleans()),
                "sleep": draw(st.sampled_from(["0", "0.01", "0.03"])),
            }
        )
    jobs = draw(st.integers(1, 4))
    return modules, jobs


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_random_dags_keep_every_invariant(case):
    modules, jobs = case
    root = Path(tempfile.mkdtemp(prefix="corral-prop-"))
    trace = root / "trace"
    os.environ["TRACE"] = str(trace)
    try:
        for m in modules:
            header = []
            if m["requires"]:
                header.append(f"requires: {' '.join(m['requires'])}")
            if m["wants"]:
                header.append(f"wants: {' '.join(m['wants'])}")
            if m["locks"]:
                header.append(f"locks: {' '.join(m['locks'])}")
            body = traced(f"sleep {m['sleep']}" + ("; exit 1" if m["fails"] else ""))
            write_module(root / "modules", m["name"], "\n".join(header), body)
        config = load_config((str(root / "modules"),), str(root / "db.sqlite"))
        config = config.with_flags(jobs=Jobs(jobs))
        store = api.open_store(config)
        try:
            outcome = api.run_modules(config, store, want_output=False)
        finally:
            store.close()
        seen = {name: runs for name, runs in read_trace(trace).items()}
        status = {m.name: m for m in outcome.modules}
        spec = {m["name"]: m for m in modules}

        # Expected statuses, from the spec alone.
        expected: dict[str, str] = {}
        for m in modules:
            if any(expected[r] != "ok" for r in m["requires"]):
                expected[m["name"]] = "skipped"
            else:
                expected[m["name"]] = "failed" if m["fails"] else "ok"
        assert {n: s.status for n, s in status.items()} == expected

        for name, runs in seen.items():
            assert len(runs) == 1, f"{name} ran {len(runs)} times"
        assert set(seen) == {n for n, s in expected.items() if s != "skipped"}
        for name, (run,) in seen.items():
            for dep in spec[name]["requires"] + spec[name]["wants"]:
                if dep in seen:
                    assert run.start >= seen[dep][0].end, f"{name} started before {dep} ended"
        intervals = [runs[0] for runs in seen.values()]
        assert max_overlap(intervals) <= jobs
        for lock in ("a", "b"):
            holders = [seen[n][0] for n in seen if lock in spec[n]["locks"]]
            assert max_overlap(holders) <= 1, f"lock {lock} was shared"
        for s in status.values():
            if s.status == "skipped":
                assert s.reason.startswith("requires ")
        assert outcome.exit_code == (0 if set(expected.values()) == {"ok"} else 1)
    finally:
        os.environ.pop("TRACE", None)
        shutil.rmtree(root, ignore_errors=True)
