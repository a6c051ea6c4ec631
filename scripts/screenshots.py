#!/usr/bin/env python3
"""Screenshots for docs/screenshots/: the live view at a terminal, `corral status` from a
second terminal during the same run (and, with a second module set running beside it,
`corral status` of every run), and the plain progress lines a cron log gets.

Runs a small provisioning-like module set in tmux (real terminals), captures the panes
with their colours (`tmux capture-pane -e`), keeps the text and renders each as a PNG
(needs Pillow and the DejaVu Sans Mono font).

    python3 scripts/screenshots.py [OUT_DIR]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
COLOURS = {
    30: (40, 40, 40),
    31: (205, 49, 49),
    32: (13, 160, 80),
    33: (200, 160, 0),
    34: (36, 114, 200),
    35: (188, 63, 188),
    36: (17, 168, 205),
    37: (229, 229, 229),
    90: (118, 118, 118),
    91: (241, 76, 76),
    92: (35, 209, 139),
    93: (245, 245, 67),
    94: (59, 142, 234),
    95: (214, 112, 214),
    96: (41, 184, 219),
    97: (255, 255, 255),
}
MODULES = {
    "base_packages": ("locks: pkgdb\ndescription: apt baseline", "sleep 2"),
    "pkg_nginx": ("locks: pkgdb\nrequires: base_packages", "sleep 3; echo nginx 1.22 installed"),
    "pkg_postgres": ("locks: pkgdb\nrequires: base_packages", "sleep 2"),
    "users": ("", "sleep 1; echo 3 users ok"),
    "sshd_config": ("requires: users", "sleep 4"),
    "firewall": ("requires: sshd_config", "sleep 1"),
    "tls_certs": (
        "warning-exit: 3",
        "sleep 2; echo 'WARN  cert for www expires in 9 days' >&2; exit 3",
    ),
    "site_config": ("requires: pkg_nginx, tls_certs", "sleep 2"),
    "db_schema": ("requires: pkg_postgres", "sleep 3"),
    "backups": ("requires: db_schema", "sleep 1"),
}
# A second module set sharing the database, running at the same time: `corral status`
# without --modules shows both runs (status-all).
AUDIT = {
    "disk_usage": ("tags: audit", "sleep 7"),
    "open_ports": ("tags: audit\nrequires: disk_usage", "sleep 1"),
}


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", "corral-shots", *args], capture_output=True, text=True, check=True
    ).stdout


def write_modules(directory: Path, modules: dict = MODULES) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (header, body) in modules.items():
        lines = ["#!/usr/bin/env bash", *(f"# {h}" for h in header.splitlines() if h)]
        lines += ["set -euo pipefail", body, ""]
        (directory / f"{name}.sh").write_text("\n".join(lines))


def render(text: str, path: Path, cols: int) -> None:
    """A captured pane (with SGR escapes) as a PNG: light text on a dark terminal."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(FONT, 14)
    cw, ch = font.getbbox("M")[2], 18
    lines = text.rstrip("\n").split("\n")
    image = Image.new("RGB", (cw * cols + 20, ch * len(lines) + 20), (24, 24, 27))
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        x, fg, dim, bold = 0, (220, 220, 220), False, False
        for part in re.split(r"(\x1b\[[0-9;]*m)", line):
            if part.startswith("\x1b["):
                for code in [int(c) for c in part[2:-1].split(";") if c] or [0]:
                    if code == 0:
                        fg, dim, bold = (220, 220, 220), False, False
                    elif code == 1:
                        bold = True
                    elif code == 2:
                        dim = True
                    elif code == 22:
                        dim = bold = False
                    elif code == 39:
                        fg = (220, 220, 220)
                    elif code in COLOURS:
                        fg = COLOURS[code]
                continue
            colour = tuple(int(c * 0.6) for c in fg) if dim else fg
            for char in part:
                draw.text((10 + x * cw, 10 + row * ch), char, font=font, fill=colour)
                if bold:
                    draw.text((11 + x * cw, 10 + row * ch), char, font=font, fill=colour)
                x += 1
    image.save(path)


def main(out: Path) -> int:
    if not shutil.which("tmux"):
        print("tmux is needed", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="corral-shots-"))
    modules = work / "modules"
    write_modules(modules)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")},
        "CORRAL_DB": str(work / "corral.db"),
        "PYTHONPATH": str(REPO / "supervisor"),
    }
    corral = f"{sys.executable} -m corral --modules {modules}"
    audit = work / "audit"
    write_modules(audit, AUDIT)
    audit_run = [sys.executable, "-m", "corral", "--modules", str(audit), "run", "-l", "100"]
    # A first run gives history, so the second has an ETA.
    subprocess.run([*corral.split(), "run", "-q", "-l", "100"], env=env, check=False)
    subprocess.run([*audit_run, "-q"], env=env, check=False)
    cols, rows = 110, 26
    exports = " ".join(f"{k}={v}" for k, v in env.items() if k in ("CORRAL_DB", "PYTHONPATH"))
    tmux("new-session", "-d", "-s", "live", "-x", str(cols), "-y", str(rows))
    tmux("new-window", "-t", "live", "-n", "other")
    tmux("new-window", "-t", "live", "-n", "all")
    tmux("send-keys", "-t", "live:0", f"clear; {exports} {corral} run -j 3 -l 100", "Enter")
    time.sleep(1)
    other = subprocess.Popen([*audit_run, "-q"], env=env)
    time.sleep(4.5)
    live = tmux("capture-pane", "-e", "-p", "-t", "live:0")
    tmux("send-keys", "-t", "live:1", f"clear; {exports} {corral} status", "Enter")
    everything = f"cd {work}; {exports} {sys.executable} -m corral status"  # every set's
    tmux("send-keys", "-t", "live:2", f"clear; {everything}", "Enter")
    time.sleep(2.5)
    status = tmux("capture-pane", "-e", "-p", "-t", "live:1")
    status_all = tmux("capture-pane", "-e", "-p", "-t", "live:2")
    other.wait()
    time.sleep(6)
    tmux("kill-server")
    plain = subprocess.run(
        [*corral.split(), "run", "-j", "3", "-l", "100"],
        env={**env, "CORRAL_PROGRESS_INTERVAL": "3"},
        capture_output=True,
        text=True,
    ).stdout
    progress = "\n".join(ln for ln in plain.splitlines() if "corral:" in ln or "⚠" in ln)
    shots = (("live", live), ("status", status), ("status-all", status_all), ("progress", progress))
    for name, text in shots:
        lines = [ln.rstrip() for ln in text.rstrip().splitlines()]
        while lines and re.search(r"[#$]$", lines[-1]):  # the shell's prompt after it
            lines.pop()
        text = "\n".join(lines)
        (out / f"{name}.txt").write_text(re.sub(r"\x1b\[[0-9;]*m", "", text) + "\n")
        render(text, out / f"{name}.png", cols if name != "progress" else 140)
        print(f"wrote {out / name}.txt and .png")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "screenshots"))
