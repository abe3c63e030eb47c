"""Identifiers for runs and events: sortable by creation time, unique without coordination."""

from __future__ import annotations

import re
import secrets

from bcce.core.clock import Clock, SystemClock

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class IdGenerator:
    """Run ids like ``20261122-001650-3f9a2c``: time first so listings sort by age."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()

    def run_id(self) -> str:
        return f"{self._clock.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def is_valid_run_id(value: str) -> bool:
    """Run ids become directory names: letters, digits, ``.``, ``_`` and ``-`` only."""
    return bool(RUN_ID_PATTERN.match(value)) and ".." not in value
