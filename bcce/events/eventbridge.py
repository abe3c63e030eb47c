"""The ``eventbridge`` subscriber: selected events put on an Amazon EventBridge bus.

Each event becomes one entry (``Source`` = ``events.eventbridge.source``, ``DetailType`` = the
event type, ``Detail`` = ``{"run_id", "seq", "time", "type", "payload"}``). Entries are sent
with ``PutEvents`` in batches of ``batch_size`` (at most 10, EventBridge's limit), when a batch
is full, when a run ends and when bcce shuts down. Entries EventBridge refuses (per-entry
``ErrorCode``) or a call that fails (throttling, a dropped connection) are tried again with
exponential backoff and jitter, up to ``max_attempts`` tries; what still fails is logged and
counted (:attr:`EventBridgeSubscriber.lost`), never raised: a run does not fail because its
events could not be published. An entry over EventBridge's 256 KB limit is sent with its
payload replaced by a note saying so.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bcce.core.log import get_logger
from bcce.errors import ConfigError

if TYPE_CHECKING:
    from bcce.events.bus import Event, Mode
    from bcce.settings.model import BcceSettings

log = get_logger("eventbridge")

#: EventBridge's limit on one PutEvents request (and so on one entry), in bytes.
MAX_REQUEST_BYTES = 256 * 1024
#: Entries per PutEvents call (EventBridge's limit).
MAX_BATCH = 10
#: A run's end sends what is buffered, whether or not these events are published themselves.
RUN_END = ("workflow.completed", "workflow.failed", "workflow.cancelled")
#: Per-entry error codes that no retry can fix.
PERMANENT_ERRORS = frozenset({"MalformedDetail", "InvalidArgument", "ValidationException"})
#: Backoff before the second try, and the most any single wait may be, in seconds.
BASE_DELAY = 0.1
MAX_DELAY = 5.0


@dataclass
class _Pending:
    """One entry waiting to be sent, and the tries it has had."""

    entry: dict[str, Any]
    size: int
    tries: int = 0
    last_error: str = ""


def entry_size(entry: dict[str, Any]) -> int:
    """The size EventBridge counts for a PutEvents entry (its documented calculation)."""
    size = 14 if entry.get("Time") is not None else 0  # a timestamp counts 14 bytes
    for key in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(key) or "").encode("utf-8"))
    for resource in entry.get("Resources") or ():
        size += len(str(resource).encode("utf-8"))
    return size


class EventBridgeSubscriber:
    """Publishes the events matching ``patterns`` to the EventBridge bus ``bus``.

    ``client`` returns a boto3 ``events`` client; it is called on first use only. Counters:
    ``sent`` (entries EventBridge accepted), ``retried`` (tries after a failure), ``trimmed``
    (entries sent without their payload, over the size limit), ``lost`` (entries given up on)
    and ``calls`` (PutEvents calls made).
    """

    name = "eventbridge"
    mode: Mode = "queued"

    def __init__(
        self,
        *,
        client: Callable[[], Any],
        bus: str,
        source: str = "bcce",
        events: Sequence[str] = ("*",),
        batch_size: int = MAX_BATCH,
        max_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client_factory = client
        self._client: Any = None
        self.bus = bus
        self.source = source
        self.events = tuple(events)
        self.patterns: tuple[str, ...] = tuple(dict.fromkeys((*self.events, *RUN_END)))
        self.batch_size = max(1, min(batch_size, MAX_BATCH))
        self.max_attempts = max(1, max_attempts)
        self._sleep = sleep
        self._buffer: list[_Pending] = []
        self._lock = threading.RLock()
        self.sent = 0
        self.retried = 0
        self.trimmed = 0
        self.lost = 0
        self.calls = 0

    @classmethod
    def from_settings(
        cls, settings: BcceSettings, *, client: Callable[[], Any]
    ) -> EventBridgeSubscriber:
        """The subscriber ``events.eventbridge`` describes; a ConfigError without a bus."""
        section = settings.events.eventbridge
        if not section.bus:
            raise ConfigError(
                "the eventbridge subscriber needs an event bus",
                key="events.eventbridge.bus",
                hint="set events.eventbridge.bus to the bus name or ARN "
                "(BCCE_EVENTS__EVENTBRIDGE__BUS), or take eventbridge out of events.subscribers",
            )
        return cls(
            client=client,
            bus=section.bus,
            source=section.source,
            events=section.events,
            batch_size=section.batch_size,
            max_attempts=section.max_attempts,
        )

    # -- the Subscriber protocol --------------------------------------------------------------
    def handle(self, event: Event) -> None:
        try:
            with self._lock:
                if self._wanted(event.type):
                    self._add(self._entry(event))
                if len(self._buffer) >= self.batch_size or event.type in RUN_END:
                    self._send_all()
        except Exception as exc:  # noqa: BLE001 - publishing events never fails a run
            log.opt(exception=exc).warning(
                "EventBridge: event {} not published: {}", event.type, exc
            )

    def flush(self) -> None:
        try:
            with self._lock:
                self._send_all()
        except Exception as exc:  # noqa: BLE001 - see handle
            log.opt(exception=exc).warning("EventBridge: flush failed: {}", exc)

    def close(self) -> None:
        self.flush()

    # -- entries ------------------------------------------------------------------------------
    def _wanted(self, event_type: str) -> bool:
        return any(p == event_type or fnmatch.fnmatchcase(event_type, p) for p in self.events)

    def _entry(self, event: Event) -> dict[str, Any]:
        detail = {
            "run_id": event.run_id,
            "seq": event.seq,
            "time": event.time,
            "type": event.type,
            "payload": dict(event.payload),
        }
        return {
            "Source": self.source,
            "DetailType": event.type,
            "Detail": json.dumps(detail, default=str, separators=(",", ":")),
            "EventBusName": self.bus,
            "Time": datetime.datetime.fromtimestamp(event.timestamp, datetime.UTC),
        }

    def _add(self, entry: dict[str, Any]) -> None:
        size = entry_size(entry)
        if size > MAX_REQUEST_BYTES:
            entry, size = self._trim(entry, size)
            if size > MAX_REQUEST_BYTES:
                self.lost += 1
                log.warning(
                    "EventBridge: a {} event is over the 256 KB limit even without its "
                    "payload: not published",
                    entry["DetailType"],
                )
                return
        if self._buffer and sum(p.size for p in self._buffer) + size > MAX_REQUEST_BYTES:
            self._send_all()  # one request may not carry more than 256 KB either
        self._buffer.append(_Pending(entry, size))

    def _trim(self, entry: dict[str, Any], size: int) -> tuple[dict[str, Any], int]:
        detail = json.loads(entry["Detail"])
        detail["payload"] = {
            "bcce_trimmed": True,
            "note": f"payload removed: the event was {size} bytes, over EventBridge's "
            f"{MAX_REQUEST_BYTES} byte limit; the run's events.jsonl has it whole",
        }
        trimmed = {**entry, "Detail": json.dumps(detail, default=str, separators=(",", ":"))}
        self.trimmed += 1
        log.warning(
            "EventBridge: the payload of a {} event ({} bytes) was removed to fit the limit",
            entry["DetailType"],
            size,
        )
        return trimmed, entry_size(trimmed)

    # -- sending ------------------------------------------------------------------------------
    def _send_all(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[: self.batch_size], self._buffer[self.batch_size :]
            self._deliver(batch)

    def _deliver(self, batch: list[_Pending]) -> None:
        """Send ``batch``, trying what fails again (backoff and jitter) up to max_attempts."""
        waiting = batch
        while waiting:
            for pending in waiting:
                pending.tries += 1
            waiting = self._put(waiting)
            gave_up = [p for p in waiting if p.tries >= self.max_attempts]
            for pending in gave_up:
                self._give_up(pending)
            waiting = [p for p in waiting if p.tries < self.max_attempts]
            if waiting:
                self.retried += len(waiting)
                tries = max(p.tries for p in waiting)
                self._sleep(random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2 ** (tries - 1))))  # noqa: S311 - jitter

    def _put(self, batch: list[_Pending]) -> list[_Pending]:
        """One PutEvents call; the entries to try again (refused, or all of them on an error)."""
        try:
            if self._client is None:
                self._client = self._client_factory()
            self.calls += 1
            response = self._client.put_events(Entries=[p.entry for p in batch])
        except Exception as exc:  # noqa: BLE001 - throttling, network: the whole call again
            for pending in batch:
                pending.last_error = f"{type(exc).__name__}: {exc}"
            return batch
        results = response.get("Entries") or []
        again: list[_Pending] = []
        for index, pending in enumerate(batch):
            result = results[index] if index < len(results) else {"ErrorCode": "NoResult"}
            code = result.get("ErrorCode")
            if not code:
                self.sent += 1
                continue
            pending.last_error = f"{code}: {result.get('ErrorMessage') or ''}".rstrip(": ")
            if code in PERMANENT_ERRORS:
                self._give_up(pending)
            else:
                again.append(pending)
        return again

    def _give_up(self, pending: _Pending) -> None:
        self.lost += 1
        log.warning(
            "EventBridge: a {} event was not published after {} tries: {}",
            pending.entry["DetailType"],
            pending.tries,
            pending.last_error,
        )

    def stats(self) -> dict[str, int]:
        """The counters, for status output and tests."""
        return {
            "sent": self.sent,
            "retried": self.retried,
            "trimmed": self.trimmed,
            "lost": self.lost,
            "calls": self.calls,
        }


__all__ = ["EventBridgeSubscriber", "entry_size"]
