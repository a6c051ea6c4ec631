"""How corral writes durations, sizes, counts and stored times for people: one copy,
used everywhere.

Pure functions of a value (None where a figure is missing reads "-").
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable

MiB = 1 << 20
GiB = 1 << 30


def seconds(value: float | None) -> str:
    """'0.25s', '59.99s', then '2m03.4s'; '-' for None."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.2f}s"
    minutes, secs = divmod(value, 60)
    return f"{int(minutes)}m{secs:04.1f}s"


def clock(value: float | None) -> str:
    """'4.2s', '3m05s', '1h02m': short enough for a status line; '?' for None."""
    if value is None:
        return "?"
    if value < 60:
        return f"{value:.1f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def written(value: float) -> str:
    """'30s', '0.5s', '5m', '1h30m': a duration as a person writes it (a setting said
    back); whole seconds from a minute up."""
    whole = int(round(value))
    if whole < 60:
        return f"{value:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v)


def decimal(value: float | None, unit: str = "") -> str:
    """A figure in a table: two decimals and `unit` ('1.25', '1.25s'); '-' for None."""
    return "-" if value is None else f"{value:.2f}{unit}"


def percent(value: float | None) -> str:
    """A share as a whole percentage ('42%'); '-' for None."""
    return "-" if value is None else f"{value:.0%}"


def mib(value: float | None, unit: str = "") -> str:
    """Bytes in MiB with one decimal ('12.5', or '12.5MiB' with `unit`); '-' for 0 or None
    (a figure never measured)."""
    return "-" if not value else f"{value / MiB:.1f}{unit}"


def size(value: float) -> str:
    """A size in a sentence: '300 bytes', '12K' below a MiB, '512M' below a GiB, '1.5G'
    from one up (never '0M' for what is there)."""
    if value < 1024:
        return plural(int(value), "byte")
    if value < MiB:
        return f"{value / 1024:.0f}K"
    return f"{value / MiB:.0f}M" if value < GiB else f"{value / GiB:.1f}G"


# Nouns whose plural is not noun + "s".
_PLURALS = {"process": "processes", "entry": "entries", "was": "were", "is": "are"}


def plural(n: int, noun: str, grouped: bool = False) -> str:
    """'1 module', '3 modules', '0 modules', '1 process', '2 processes': every count
    corral writes for people goes through here (never "1 modules" or "module(s)"). The
    last word of a noun of several is the one made plural ('2 leftover processes');
    `grouped` writes the number with thousands separators ('1,000,002 hosts')."""
    number = f"{n:,}" if grouped else f"{n}"
    if n == 1:
        return f"{number} {noun}"
    head, _, last = noun.rpartition(" ")
    return f"{number} {head}{' ' if head else ''}{_PLURALS.get(last, last + 's')}"


def utc(text: str | None, width: int = 19) -> str:
    """A stored UTC timestamp as shown, cut to `width` characters and marked with its Z:
    2026-11-23 05:20:01Z; "-" for none."""
    return f"{text[:width].replace('T', ' ')}Z" if text else "-"


def local_stamp() -> str:
    """Now, in local time to the second with its offset (2026-11-23T06:20:01+01:00), as
    the lines of a run are stamped; in UTC when the local zone cannot be written (a TZ
    such as EST+99999999, whose offset is a day or more: datetime refuses it)."""
    now = dt.datetime.now(dt.UTC)
    with contextlib.suppress(ValueError, OverflowError, OSError):
        now = now.astimezone()
    return now.isoformat(timespec="seconds")


def upper_median(values: Iterable[float], empty: float) -> float:
    """The upper median of `values` (of an even count, the later middle one); `empty`
    when there are none. The one estimate of a typical duration: history's, the plan's
    and the ETA's."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else empty
