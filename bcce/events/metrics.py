"""Metrics collectors. ``log`` writes each measurement as a debug log record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bcce.core.log import get_logger

log = get_logger("metrics")


class MetricsCollector(Protocol):
    def record(
        self, name: str, value: float, dimensions: Mapping[str, str] | None = None
    ) -> None: ...


class LogMetricsCollector:
    """Writes each measurement to the log (at DEBUG) and keeps running totals in memory."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}

    def record(self, name: str, value: float, dimensions: Mapping[str, str] | None = None) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + value
        log.debug("metric {}={} {}", name, value, dict(dimensions or {}))
