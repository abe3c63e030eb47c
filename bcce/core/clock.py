"""Time, injectable so tests can control it."""

from __future__ import annotations

import datetime
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime.datetime: ...
    def monotonic(self) -> float: ...


class SystemClock:
    """Wall-clock time in UTC and a monotonic clock for durations."""

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def monotonic(self) -> float:
        return time.monotonic()
