"""`--jobs`: how many modules may run at once (the gate, `throttle.py`, applies it).

perf: a module of its own, because every `Config` holds one and the gate's own classes
are not needed to plan (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Jobs:
    """`--jobs`: at most `fixed` modules at once, or auto (`fixed` None: the gate sizes
    the run from the CPU count and the workloads)."""

    fixed: int | None = None

    @classmethod
    def parse(cls, text: str) -> Jobs:
        """`auto`, 0 (no limit of its own: the run resolves it to the number of
        selected modules, as `ninja -j0`) or a whole number; raises ValueError otherwise."""
        if text.strip().lower() == "auto":
            return cls(None)
        n = int(text)
        if n < 0:
            raise ValueError("expected a whole number (0: no limit) or 'auto'")
        return cls(n)

    @property
    def auto(self) -> bool:
        """True for --jobs auto."""
        return self.fixed is None

    def slots(self, otherwise: int) -> int:
        """How many may run at once: the fixed number, or `otherwise` under auto."""
        return otherwise if self.fixed is None else self.fixed

    def __str__(self) -> str:
        return "auto" if self.fixed is None else str(self.fixed)
