#!/usr/bin/env python3
"""How long after a module's finished line is shown is its row committed?

    python3 scripts/record_lag.py [MODULES]

Runs MODULES (default 20) modules that end 0.15 s apart beside one that sleeps, reads
corral's output as a person would, and after each `ok` line polls the database every
2 ms until that module's row says `ok`: from then on a SIGKILL of corral cannot lose
it. Prints the lags (median, max, each). docs/reliability.md quotes them: an end
that is shown is committed before its line, so the row should be there at the first
look.
Everything runs in a temporary directory; corral is killed at the end (its watchdog
stops the sleeper).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    tmp = Path(tempfile.mkdtemp(prefix="corral-lag-"))
    modules = tmp / "modules"
    modules.mkdir()
    for i in range(count):
        (modules / f"m{i:03d}.sh").write_text(f"#!/usr/bin/env bash\nsleep {0.15 * (i + 1):.2f}\n")
    (modules / "zz_long.sh").write_text("#!/usr/bin/env bash\nsleep 600\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["XDG_STATE_HOME"] = str(tmp / "state")
    db = tmp / "corral.db"
    argv = [sys.executable, "-m", "corral", "--modules", str(modules), "--db", str(db)]
    argv += ["run", "-j", str(count + 1), "--max-load", "1000"]
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lags: list[float] = []
    conn = None
    try:
        for line in proc.stdout:
            if " ok in " not in line:
                continue
            shown = time.monotonic()
            name = line.split(" | ")[0].split()[-1]
            while True:
                try:
                    conn = conn or sqlite3.connect(db)
                    row = conn.execute(
                        "SELECT status FROM module_runs WHERE module = ?", (name,)
                    ).fetchone()
                except sqlite3.Error:
                    row = None
                if row and row[0] == "ok":
                    break
                time.sleep(0.002)
            lags.append((time.monotonic() - shown) * 1000)
            if len(lags) == count:
                break
    finally:
        proc.kill()
        proc.wait()
        if conn is not None:
            conn.close()
    lags.sort()
    print(
        f"{len(lags)} modules, load {os.getloadavg()[0]:.1f}: line shown -> row committed "
        f"median {statistics.median(lags):.1f} ms, max {lags[-1]:.1f} ms; "
        f"each: {[round(x, 1) for x in lags]}"
    )


if __name__ == "__main__":
    main()
