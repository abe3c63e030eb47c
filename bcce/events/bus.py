"""The event bus: publish/subscribe with wildcard patterns, in process, thread-safe.

Semantics (docs/observability.md, "Events"):

- **Patterns.** ``subscribe(pattern, handler)``: ``pattern`` is an event type
  (``step.completed``), a shell-style wildcard (``step.*``, ``*``; ``*`` also crosses dots), or a
  tuple of them. One subscription has one queue and one order, whatever its patterns.
- **Handlers** are plain functions (or callables) or ``async def`` coroutine functions.
- **Delivery modes.** An ``inline`` handler (the default for a sync handler) runs in the
  publisher's thread, inside :meth:`InProcessEventBus.publish`. It may therefore be called from
  several threads at once (every publisher's), and must be thread-safe. A ``queued`` handler
  (every async handler is one) has a bounded queue and a thread of its own: ``publish`` only
  appends to the queue, and the handler sees one event at a time.
- **Order.** Each subscriber sees events in the order their ``publish`` calls were made. Where
  several threads publish, "the order of publication" is the order in which they call
  ``publish``: the workflow runner publishes a run's events under the run's lock, numbered by
  ``seq``, so every subscriber sees each run's events in ``seq`` order. A subscriber moved from
  inline to queued keeps the order: its earlier events were handled before ``publish`` returned.
- **Failures.** An exception from a handler never reaches the publisher. It is logged, counted
  (``failures`` in :meth:`InProcessEventBus.stats`) and published as
  ``events.subscriber_failed``; the other subscribers still receive the event.
- **The bound** (``timeout``, from ``events.subscriber_timeout_seconds``) limits how long
  subscribers can hold a run up:

  - publishing to a queued subscriber never waits for it. A full queue (``queue_size``) drops
    the event for that subscriber, and counts the drop (``dropped``).
  - an inline handler cannot be interrupted: one call holds the publisher up for as long as it
    takes. A call that exceeds the bound moves the subscriber to a queue of its own for every
    later event (``events.subscriber_slow``). So a slow inline subscriber delays a run by at
    most one slow call. A handler that never returns stalls its publisher, which is why bcce
    runs inline only local, cheap work (the run's ``events.jsonl``, the audit trail) and queues
    every subscriber that talks to a network.
  - an async handler is cancelled at the bound (``events.subscriber_failed``).
  - :meth:`InProcessEventBus.flush` (the runner calls it before ``run()``/``resume()`` return)
    and :meth:`InProcessEventBus.close` wait at most the bound, all subscribers together. When
    a flush gives up on a call that has lasted longer than the bound, later flushes do not wait
    while the subscriber is stuck on that same event, so a hung subscriber costs one bound, not
    one per run. It is reported once with ``events.subscriber_slow``.

- **Events about the bus** (``events.subscriber_failed``, ``events.subscriber_slow``) are
  process events: their ``run_id`` is ``None`` (a run's ``events.jsonl`` keeps only its own,
  numbered events) and their payload names the ``run_id`` and ``step`` of the event involved. A
  failure to deliver them is logged and counted but not reported again.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import fnmatch
import inspect
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bcce.core.log import get_logger

log = get_logger("events")

_sequence = itertools.count(1)
_clock = time.monotonic

Mode = Literal["inline", "queued"]
MODES: tuple[Mode, ...] = ("inline", "queued")

#: Events about the bus itself: never reported again when their own delivery fails.
SUBSCRIBER_FAILED = "events.subscriber_failed"
SUBSCRIBER_SLOW = "events.subscriber_slow"
_SELF_EVENTS = frozenset({SUBSCRIBER_FAILED, SUBSCRIBER_SLOW})


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened: ``type`` like ``step.completed``, a JSON-safe ``payload``.

    ``timestamp`` is seconds since the epoch; ``time`` renders it (ISO 8601, UTC, ms) when
    asked, so publishing stays cheap. ``seq`` is a process-wide counter unless the publisher
    numbers its events itself (the runner numbers each run's events from 1).
    """

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    timestamp: float = field(default_factory=time.time)
    seq: int = field(default_factory=_sequence.__next__)

    @property
    def time(self) -> str:
        moment = datetime.datetime.fromtimestamp(self.timestamp, datetime.UTC)
        return moment.isoformat(timespec="milliseconds")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "time": self.time,
            "seq": self.seq,
            "run_id": self.run_id,
            "payload": dict(self.payload),
        }


Handler = Callable[[Event], Any]
Patterns = str | tuple[str, ...]


class EventBus(Protocol):
    def subscribe(
        self,
        pattern: Patterns,
        handler: Handler,
        *,
        mode: Mode | None = None,
        name: str | None = None,
    ) -> Subscription: ...
    def unsubscribe(
        self, pattern: Patterns | Subscription, handler: Handler | None = None
    ) -> None: ...
    def publish(self, event: Event) -> None: ...
    def flush(self, timeout: float | None = None) -> bool: ...


class Subscription:
    """One handler on one pattern (or a tuple of them): its delivery mode and counters.

    ``delivered``, ``failures``, ``dropped`` and ``slow`` (calls over the bound) count events;
    ``demoted`` says an inline subscriber was moved to a queue for being slow.
    """

    def __init__(
        self, bus: InProcessEventBus, pattern: Patterns, handler: Handler, mode: Mode, name: str
    ) -> None:
        self.bus = bus
        self.pattern = pattern
        self.patterns = _patterns(pattern)
        self.handler = handler
        self.mode: Mode = mode
        self.name = name
        self.is_async = _is_async(handler)
        self.delivered = 0
        self.failures = 0
        self.dropped = 0
        self.slow = 0
        self.demoted = False
        self._reported_slow = False
        # One lock, two conditions: the drain thread waits for work, flushers for an empty queue.
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._drained = threading.Condition(self._lock)
        self._queue: collections.deque[Event] = collections.deque()
        self._pending = 0  # queued plus the batch being handled
        self._idle = False  # the drain thread waits for work
        self._in_hand = 0  # events of the batch being handled not handled yet
        self._busy_since: float | None = None
        self._busy_with: Event | None = None
        self._busy_counted = False  # the current call was already counted slow (by flush)
        self._given_up_on: Event | None = None  # a flush stopped waiting for this call
        self._thread: threading.Thread | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.name} {self.pattern!r} {self.mode}>"

    def matches(self, event_type: str) -> bool:
        return any(p == event_type or fnmatch.fnmatchcase(event_type, p) for p in self.patterns)

    # -- delivery (InProcessEventBus.publish makes the inline calls: the hot path) ----------
    def _demote(self, event: Event, elapsed: float) -> None:
        with self._lock:
            if self.mode == "queued":  # another publisher's call got there first
                return
            self.mode = "queued"
            self.demoted = True
            self.slow += 1
            self._reported_slow = True
        log.warning(
            "event subscriber {} took {:.2f}s on {} (bound {}s): queued from now on",
            self.name,
            elapsed,
            event.type,
            self.bus.timeout,
        )
        self.bus._report(SUBSCRIBER_SLOW, self, event, seconds=elapsed, action="queued")

    def _enqueue(self, event: Event) -> None:
        with self._lock:
            if self._closed or len(self._queue) + self._in_hand >= self.bus.queue_size:
                self.dropped += 1
                dropped = self.dropped
            else:
                self._queue.append(event)
                self._pending += 1
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._drain, name=f"bcce-events-{self.name}", daemon=True
                    )
                    self._thread.start()
                elif self._idle:
                    self._has_work.notify()
                return
        if dropped == 1 or dropped % 1000 == 0:
            log.warning(
                "event subscriber {} is {}: {} event(s) dropped so far",
                self.name,
                "closed" if self._closed else f"{self.bus.queue_size} events behind",
                dropped,
            )

    def _drain(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._queue:
                        if self._closed:
                            return
                        self._idle = True
                        self._has_work.wait()
                        self._idle = False
                    # The whole backlog at once: one lock round per batch, not per event.
                    batch, self._queue = self._queue, collections.deque()
                    self._in_hand = len(batch)
                handled = 0
                for event in batch:
                    if self._closed:  # close() drops what is left
                        break
                    self._handle(event)
                    handled += 1
                    self._in_hand -= 1
                with self._lock:
                    self._in_hand = 0
                    self.dropped += len(batch) - handled
                    self._pending -= len(batch)
                    if not self._pending:
                        self._drained.notify_all()
        finally:
            if self._loop is not None:
                self._loop.close()

    def _handle(self, event: Event) -> None:
        started = _clock()
        self._busy_with = event
        self._busy_counted = False
        self._busy_since = started
        try:
            if self.is_async:
                self._run_async(event)
            else:
                self.handler(event)
        except BaseException as exc:  # noqa: BLE001 - nobody above this thread to raise to
            self._failed(event, exc)
        else:
            self.delivered += 1
        finally:
            self._busy_since = None
            self._busy_with = None
        elapsed = _clock() - started
        if elapsed > self.bus.timeout:
            if not self._busy_counted:
                self.slow += 1
            if not self._reported_slow:
                self._reported_slow = True
                log.warning(
                    "queued event subscriber {} took {:.2f}s on {} (bound {}s)",
                    self.name,
                    elapsed,
                    event.type,
                    self.bus.timeout,
                )
                self.bus._report(SUBSCRIBER_SLOW, self, event, seconds=elapsed, action="none")

    def _run_async(self, event: Event) -> None:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        coroutine: Awaitable[Any] = self.handler(event)
        try:
            self._loop.run_until_complete(asyncio.wait_for(coroutine, self.bus.timeout))
        except TimeoutError:
            raise TimeoutError(f"not done within {self.bus.timeout}s (cancelled)") from None

    def _failed(self, event: Event, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            first = self.failures == 1
        # The whole traceback once per subscriber; a line for each later failure.
        (log.opt(exception=exc) if first else log).warning(
            "event subscriber {} failed on {}: {}: {}",
            self.name,
            event.type,
            type(exc).__name__,
            exc,
        )
        self.bus._report(SUBSCRIBER_FAILED, self, event, error=f"{type(exc).__name__}: {exc}")

    # -- draining --------------------------------------------------------------------------
    def flush(self, deadline: float) -> bool:
        """Wait until the queue is empty, until ``deadline`` (monotonic) at the latest.

        A flush that gives up on a call already longer than the bound remembers it: later
        flushes do not wait while the subscriber is still stuck on that same event.
        """
        stuck: Event | None = None
        elapsed = 0.0
        with self._lock:
            while self._pending:
                busy_with, busy_since = self._busy_with, self._busy_since
                if busy_with is not None and busy_with is self._given_up_on:
                    return False
                now = _clock()
                if now >= deadline:
                    if busy_with is not None and busy_since is not None:
                        elapsed = now - busy_since
                        if elapsed > self.bus.timeout:
                            stuck = self._given_up_on = busy_with
                    break
                self._drained.wait(deadline - now)
            else:
                return True
            report = stuck is not None and not self._reported_slow
            if stuck is not None:
                if not self._busy_counted:
                    self._busy_counted = True
                    self.slow += 1
                self._reported_slow = True
        if report and stuck is not None:
            log.warning(
                "event subscriber {} has been handling {} for {:.2f}s (bound {}s): "
                "not waiting for it",
                self.name,
                stuck.type,
                elapsed,
                self.bus.timeout,
            )
            self.bus._report(SUBSCRIBER_SLOW, self, stuck, seconds=elapsed, action="not waited for")
        return False

    def close(self, deadline: float) -> bool:
        """Flush (until ``deadline``), then stop the thread; what is left is dropped.

        True if every event queued was handled.
        """
        drained = self.flush(deadline)
        with self._lock:
            self._closed = True
            left = len(self._queue)
            self.dropped += left
            self._pending -= left
            self._queue.clear()
            self._has_work.notify_all()
            thread = self._thread
        if left:
            log.warning("event subscriber {} closed: {} queued event(s) dropped", self.name, left)
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - _clock()))
        return drained

    def stats(self) -> dict[str, Any]:
        return {
            "subscriber": self.name,
            "pattern": self.pattern if isinstance(self.pattern, str) else list(self.pattern),
            "mode": self.mode,
            "demoted": self.demoted,
            "delivered": self.delivered,
            "failures": self.failures,
            "slow": self.slow,
            "dropped": self.dropped,
            "queued": self._pending,
        }


class InProcessEventBus:
    """Delivers each event to every matching subscriber, inline or through its queue.

    ``timeout``: the bound of the module docstring (``events.subscriber_timeout_seconds``);
    ``queue_size``: how many events a queued subscriber may fall behind by
    (``events.queue_size``).
    """

    def __init__(self, *, timeout: float = 5.0, queue_size: int = 10_000) -> None:
        if timeout <= 0 or queue_size < 1:
            raise ValueError(f"timeout {timeout} must be > 0 and queue_size {queue_size} >= 1")
        self.timeout = timeout
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._subscriptions: list[Subscription] = []
        # Event type -> matching subscriptions; rebuilt lazily after (un)subscribe.
        self._routes: dict[str, tuple[Subscription, ...]] = {}
        self._reporting = threading.local()

    # -- subscribing -------------------------------------------------------------------------
    def subscribe(
        self,
        pattern: Patterns,
        handler: Handler,
        *,
        mode: Mode | None = None,
        name: str | None = None,
    ) -> Subscription:
        """Call ``handler`` for every event whose type matches ``pattern`` (or one of a tuple).

        ``mode`` defaults to ``inline`` for sync handlers and is always ``queued`` for async
        ones. ``name`` labels the subscriber in logs, stats and ``events.subscriber_*`` events
        (default: the handler's qualified name).
        """
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        chosen: Mode = "queued" if _is_async(handler) else (mode or "inline")
        subscription = Subscription(self, pattern, handler, chosen, name or _name(handler))
        with self._lock:
            self._subscriptions.append(subscription)
            self._routes = {}
        return subscription

    def unsubscribe(self, pattern: Patterns | Subscription, handler: Handler | None = None) -> None:
        """Remove a subscription (given, or the first with this pattern and handler).

        A queued subscription is closed: what it has queued is delivered first, within the
        bound. ``ValueError`` if there is no such subscription. An event published while this
        runs may still reach the handler.
        """
        with self._lock:
            if isinstance(pattern, Subscription):
                found = pattern if pattern in self._subscriptions else None
            else:
                found = next(
                    (
                        s
                        for s in self._subscriptions
                        if s.pattern == pattern and s.handler == handler
                    ),
                    None,
                )
            if found is None:
                raise ValueError(f"no subscription of {handler!r} to {pattern!r}")
            self._subscriptions.remove(found)
            self._routes = {}
        found.close(_clock() + self.timeout)

    # -- publishing --------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every matching subscriber; never raises for a subscriber."""
        matching = self._routes.get(event.type)
        if matching is None:
            matching = self._route(event.type)
        # One clock reading between two inline calls times both: this loop is the hot path.
        started = _clock()
        for subscription in matching:
            if subscription.mode != "inline":
                subscription._enqueue(event)
                continue
            try:
                subscription.handler(event)
            except Exception as exc:  # noqa: BLE001 - a subscriber must never break the publisher
                elapsed = _clock() - started
                subscription._failed(event, exc)
                ended = _clock()  # reporting the failure is not the subscriber's own time
            else:
                subscription.delivered += 1
                ended = _clock()
                elapsed = ended - started
            if elapsed > self.timeout:
                subscription._demote(event, elapsed)
                ended = _clock()
            started = ended

    def _route(self, event_type: str) -> tuple[Subscription, ...]:
        with self._lock:
            matching = tuple(s for s in self._subscriptions if s.matches(event_type))
            self._routes[event_type] = matching
        return matching

    def _report(
        self, event_type: str, subscription: Subscription, origin: Event, **details: Any
    ) -> None:
        """Publish an event about a subscriber (never about the bus's own events)."""
        if origin.type in _SELF_EVENTS or getattr(self._reporting, "active", False):
            return
        step = origin.payload.get("step")
        payload: dict[str, Any] = {
            "subscriber": subscription.name,
            "event": origin.type,
            "run_id": origin.run_id,
            "step": step if isinstance(step, str) else None,
        }
        if event_type == SUBSCRIBER_SLOW:
            payload["mode"] = subscription.mode
            payload["seconds"] = round(details["seconds"], 3)
            payload["bound_seconds"] = self.timeout
            payload["action"] = details["action"]
        else:
            payload["error"] = details["error"]
        self._reporting.active = True
        try:
            self.publish(Event(event_type, payload))
        finally:
            self._reporting.active = False

    # -- draining ----------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued subscriber has handled what it was given.

        Waits at most ``timeout`` (default: the bound) for all subscribers together, and not at
        all for one still stuck on a call an earlier flush gave up on. True if all are drained.
        """
        deadline = _clock() + (self.timeout if timeout is None else timeout)
        with self._lock:
            queued = [s for s in self._subscriptions if s._thread is not None]
        drained = [s.flush(deadline) for s in queued]  # every one, not just up to a laggard
        return all(drained)

    def close(self, timeout: float | None = None) -> bool:
        """Flush (bounded as :meth:`flush`) and stop every queued subscriber's thread.

        Events still queued then are dropped (and counted), as are later events for a queued
        subscriber. Inline subscribers keep receiving events. True if nothing was dropped.
        """
        deadline = _clock() + (self.timeout if timeout is None else timeout)
        with self._lock:
            subscriptions = list(self._subscriptions)
        closed = [s.close(deadline) for s in subscriptions]
        return all(closed)

    @property
    def failures(self) -> int:
        """Subscriber failures so far, all current subscribers together."""
        with self._lock:
            return sum(s.failures for s in self._subscriptions)

    def stats(self) -> list[dict[str, Any]]:
        """Per subscriber: mode, events delivered, failed, slow, dropped and still queued."""
        with self._lock:
            return [s.stats() for s in self._subscriptions]


def open_bus(*, timeout: float = 5.0, queue_size: int = 10_000) -> Iterator[InProcessEventBus]:
    """The bus as a container Resource: closed (queues flushed, bounded) at shutdown."""
    bus = InProcessEventBus(timeout=timeout, queue_size=queue_size)
    try:
        yield bus
    finally:
        bus.close()


def _patterns(pattern: Patterns) -> tuple[str, ...]:
    patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ValueError(f"a pattern is an event type or wildcard, or a tuple of them: {pattern!r}")
    return patterns


def _is_async(handler: Handler) -> bool:
    call = getattr(handler, "__call__", None)  # noqa: B004 - an object's own __call__
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def _name(handler: Handler) -> str:
    return getattr(handler, "__qualname__", None) or type(handler).__name__


__all__ = [
    "MODES",
    "SUBSCRIBER_FAILED",
    "SUBSCRIBER_SLOW",
    "Event",
    "EventBus",
    "Handler",
    "InProcessEventBus",
    "Mode",
    "Patterns",
    "Subscription",
    "open_bus",
]
