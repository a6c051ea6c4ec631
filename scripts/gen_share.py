#!/usr/bin/env python3
"""Write share/: the man page (from the click help) and the bash, zsh and fish completions.

The package installs share/ as data files (man finds share/man beside the bin/ on PATH).
Run after changing a command or an option; `--check` exits 1 when share/ is out of date
(the tests run it).

    python3 scripts/gen_share.py [--check]
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
SHARE = REPO / "share"
COMPLETIONS = {
    "bash": "bash-completion/completions/corral",
    "zsh": "zsh/site-functions/_corral",
    "fish": "fish/vendor_completions.d/corral.fish",
}


def _roff(text: str) -> str:
    """Escape text for a roff line: backslashes, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def _paragraphs(text: str) -> list[str]:
    """A click docstring as roff: prose paragraphs filled, indented blocks kept verbatim."""
    out: list[str] = []
    for block in inspect.cleandoc(click.unstyle(text or "")).split("\n\n"):
        lines = block.splitlines()
        if lines and all(line.startswith("    ") for line in lines if line.strip()):
            out += [".PP", ".RS 4", ".nf", *(_roff(line[4:]) for line in lines), ".fi", ".RE"]
        else:
            out += [".PP", _roff(" ".join(line.strip() for line in lines))]
    return out


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option):
            continue  # arguments are in the usage line (and only newer clicks list them)
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out += [".TP", f"\\fB{_roff(names)}\\fR", _roff(click.unstyle(help_text))]
    return out


def man_page() -> str:
    """corral(1) from the click commands: synopsis, each command's help and options."""
    from corral import __version__
    from corral.cli import main

    ctx = main.make_context("corral", [], resilient_parsing=True)
    lines = [
        f'.TH CORRAL 1 "" "corral {__version__}" "User Commands"',
        ".SH NAME",
        "corral \\- run a directory of Bash modules in parallel, in dependency order",
        ".SH SYNOPSIS",
        "\\fBcorral\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
        *_paragraphs(main.help or ""),
        ".SH OPTIONS",
        *_options(main, ctx),
        ".SH COMMANDS",
    ]
    for name, command in _commands(main, ctx):
        sub = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        usage = " ".join(command.collect_usage_pieces(sub))
        lines += [".SS", f"\\fBcorral {_roff(name)}\\fR {_roff(usage)}"]
        lines += _paragraphs(command.help or "")
        lines += _options(command, sub)
    lines += [
        ".SH FILES",
        ".TP",
        "\\fI$XDG_STATE_HOME/corral/corral.db\\fR",
        "The records (\\fI/var/lib/corral/corral.db\\fR as root); logs beside it.",
        ".SH SEE ALSO",
        "make(1), ninja(1), parallel(1), run\\-parts(8)",
    ]
    return "\n".join(lines) + "\n"


def _commands(group: click.Group, ctx: click.Context, prefix: str = ""):
    for name in sorted(group.list_commands(ctx)):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            yield full, command
            yield from _commands(command, ctx, f"{full} ")
        else:
            yield full, command


# Each completion file asks the installed corral for click's script when the shell loads it,
# so the script always matches the click that answers it (click's scripts and its reply
# format change between versions; a script generated here would not).
COMPLETION_LOADERS = {
    "bash": "# bash completion for corral: click's script, from corral itself\n"
    'eval "$(_CORRAL_COMPLETE=bash_source corral 2>/dev/null)"\n',
    "zsh": (
        "#compdef corral\n"
        "# zsh completion for corral: click's script, from corral itself\n"
        'eval "$(_CORRAL_COMPLETE=zsh_source corral 2>/dev/null)"\n'
        '_corral_completion "$@"\n'
    ),
    "fish": "# fish completion for corral: click's script, from corral itself\n"
    "_CORRAL_COMPLETE=fish_source corral 2>/dev/null | source\n",
}


def completion(shell: str) -> str:
    """The completion file for `shell`: a loader of click's script from the installed corral."""
    return COMPLETION_LOADERS[shell]


def wanted() -> dict[Path, str]:
    files = {SHARE / "man" / "man1" / "corral.1": man_page()}
    for shell, path in COMPLETIONS.items():
        files[SHARE / path] = completion(shell)
    return files


def main(argv: list[str]) -> int:
    stale = []
    for path, text in wanted().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if "--check" not in argv:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        verb = "out of date" if "--check" in argv else "wrote"
        print(f"{verb}: {path.relative_to(REPO)}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
