"""The event bus: publish/subscribe with wildcard patterns, in process, thread-safe.

A failing subscriber never fails the publisher: its exception is logged and counted.
"""

from __future__ import annotations

import datetime
import fnmatch
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bcce.core.log import get_logger

log = get_logger("events")

_sequence = itertools.count(1)


@dataclass(frozen=True)
class Event:
    """Something that happened: ``type`` like ``step.completed``, a JSON-safe ``payload``."""

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    time: str = field(
        default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(
            timespec="milliseconds"
        )
    )
    seq: int = field(default_factory=lambda: next(_sequence))

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "time": self.time,
            "seq": self.seq,
            "run_id": self.run_id,
            "payload": dict(self.payload),
        }


Handler = Callable[[Event], Any]


class EventBus(Protocol):
    def subscribe(self, pattern: str, handler: Handler) -> None: ...
    def unsubscribe(self, pattern: str, handler: Handler) -> None: ...
    def publish(self, event: Event) -> None: ...


class InProcessEventBus:
    """Delivers each event synchronously, in publication order, to every matching subscriber."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._subscriptions: list[tuple[str, Handler]] = []
        self.failures = 0

    def subscribe(self, pattern: str, handler: Handler) -> None:
        with self._lock:
            self._subscriptions.append((pattern, handler))

    def unsubscribe(self, pattern: str, handler: Handler) -> None:
        with self._lock:
            self._subscriptions.remove((pattern, handler))

    def publish(self, event: Event) -> None:
        with self._lock:
            matching = [
                h
                for p, h in self._subscriptions
                if p == event.type or fnmatch.fnmatchcase(event.type, p)
            ]
            for handler in matching:
                try:
                    handler(event)
                except Exception:  # noqa: BLE001 - a subscriber must never break the publisher
                    self.failures += 1
                    log.opt(exception=True).warning(
                        "event subscriber {} failed on {}", _name(handler), event.type
                    )


def _name(handler: Handler) -> str:
    return getattr(handler, "__qualname__", None) or type(handler).__name__
