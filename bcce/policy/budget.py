"""File and edit budgets of an agent step, checked and consumed atomically.

``max_files`` limits the distinct files the agent may read or change; ``max_edits`` limits its
edits. :meth:`Budget.reserve` checks a tool call's whole cost and consumes it in one step under
a lock, so concurrent tool calls can never overshoot a limit together, and a call that is denied
consumes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from bcce.errors import ConfigError
from bcce.policy.decision import Decision


@dataclass(frozen=True)
class BudgetUsage:
    """How much of each budget has been used, and the limits."""

    files: int
    max_files: int
    edits: int
    max_edits: int

    def to_dict(self) -> dict[str, int]:
        return {
            "files": self.files,
            "max_files": self.max_files,
            "edits": self.edits,
            "max_edits": self.max_edits,
        }


class Budget:
    """The remaining file and edit budget of one agent step; safe to share between threads."""

    def __init__(self, max_files: int, max_edits: int) -> None:
        for key, value in (("max_files", max_files), ("max_edits", max_edits)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{key} must be a whole number of at least 0", key=key)
        self._max_files = max_files
        self._max_edits = max_edits
        self._files: set[str] = set()
        self._edits = 0
        self._lock = threading.Lock()

    def reserve(self, *, files: Iterable[str] = (), edits: int = 0) -> Decision:
        """Consume ``files`` (distinct keys, already counted ones are free) and ``edits``.

        Either the whole cost fits and is consumed (``budget.ok``), or nothing is consumed
        (``budget.max_files`` / ``budget.max_edits``).
        """
        wanted = set(files)
        if edits < 0:
            raise ValueError("edits must not be negative")
        with self._lock:
            new = wanted - self._files
            if len(self._files) + len(new) > self._max_files:
                return Decision.deny(
                    "budget.max_files",
                    f"the file budget is used up: {len(self._files)} of {self._max_files}"
                    f" distinct files already read or changed",
                )
            if self._edits + edits > self._max_edits:
                return Decision.deny(
                    "budget.max_edits",
                    f"the edit budget is used up: {self._edits} of {self._max_edits} edits made"
                    + (f", this call needs {edits}" if edits > 1 else ""),
                )
            self._files |= new
            self._edits += edits
            return Decision.allow(
                "budget.ok",
                f"within budget: {len(self._files)}/{self._max_files} files,"
                f" {self._edits}/{self._max_edits} edits",
            )

    def usage(self) -> BudgetUsage:
        """A consistent snapshot of the counters."""
        with self._lock:
            return BudgetUsage(len(self._files), self._max_files, self._edits, self._max_edits)

    @property
    def files(self) -> frozenset[str]:
        """The distinct files counted so far."""
        with self._lock:
            return frozenset(self._files)


__all__ = ["Budget", "BudgetUsage"]
