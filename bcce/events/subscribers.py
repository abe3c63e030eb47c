"""Event subscribers chosen by configuration, and how they are attached to the bus.

``events.subscribers`` names the subscribers a process attaches: ``audit`` (the tamper-evident
trail), ``metrics`` (events turned into metrics on the ``events.metrics`` collector),
``tracing`` (OpenTelemetry spans) and ``eventbridge`` (selected events put on an EventBridge
bus). Each is a component of the events container, built only when it is named, so an
unused subscriber costs nothing, not even its imports: the factories below import their
implementation modules when called.

A subscriber says which events it wants (``patterns``) and how it is delivered (``mode``):
``inline`` in the publisher's thread (cheap local work: the audit trail), or ``queued`` on a
thread of its own (anything that may be slow: network calls). ``flush`` pushes out what it
has buffered; ``close`` flushes and releases what it holds, at application shutdown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from bcce.core.log import get_logger

if TYPE_CHECKING:
    from bcce.auth.provider import AuthenticationProvider
    from bcce.events.bus import Event, InProcessEventBus, Mode, Subscription
    from bcce.events.metrics import MetricsCollector
    from bcce.settings.model import BcceSettings

log = get_logger("events")


@runtime_checkable
class Subscriber(Protocol):
    """A component that receives events from the bus."""

    name: str
    patterns: tuple[str, ...]
    mode: Mode

    def handle(self, event: Event) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def attach(
    bus: InProcessEventBus,
    names: Sequence[str],
    factories: Mapping[str, Callable[[], Subscriber]],
) -> Iterator[list[Subscriber]]:
    """Subscribe the subscribers ``names`` names (built by ``factories``); a container Resource.

    At shutdown the bus is flushed (bounded by ``events.subscriber_timeout_seconds``), then
    every subscriber is closed, each failure logged and the others still closed.
    """
    subscribers = [factories[name]() for name in dict.fromkeys(names)]
    subscriptions: list[Subscription] = []
    for subscriber in subscribers:
        subscriptions.append(
            bus.subscribe(
                subscriber.patterns, subscriber.handle, mode=subscriber.mode, name=subscriber.name
            )
        )
    try:
        yield subscribers
    finally:
        bus.flush()
        for subscription in subscriptions:
            with contextlib.suppress(ValueError):  # already removed by its owner
                bus.unsubscribe(subscription)
        for subscriber in subscribers:
            try:
                subscriber.close()
            except Exception as exc:  # noqa: BLE001 - one subscriber's failure stops no other
                log.opt(exception=exc).warning(
                    "closing subscriber {} failed: {}", subscriber.name, exc
                )


# -- factories: each imports its implementation only when it is called -----------------------
def audit_trail(
    settings: BcceSettings, authenticator: Callable[[], AuthenticationProvider]
) -> Subscriber:
    from bcce.events.audit import AuditTrail

    return AuditTrail.from_settings(settings, authenticator=authenticator)


def metrics_subscriber(collector: MetricsCollector) -> Subscriber:
    from bcce.events.metrics import MetricsSubscriber

    return MetricsSubscriber(collector)


def tracing(settings: BcceSettings) -> Subscriber:
    from bcce.events.otel import TracingSubscriber

    return TracingSubscriber.from_settings(settings)


def eventbridge(settings: BcceSettings, client: Callable[[], Any]) -> Subscriber:
    from bcce.events.eventbridge import EventBridgeSubscriber

    return EventBridgeSubscriber.from_settings(settings, client=client)


def prometheus_collector(settings: BcceSettings) -> MetricsCollector:
    from bcce.events.prometheus import PrometheusCollector

    return PrometheusCollector.from_settings(settings)


def cloudwatch_collector(settings: BcceSettings, client: Callable[[], Any]) -> MetricsCollector:
    from bcce.events.cloudwatch import CloudWatchCollector

    return CloudWatchCollector.from_settings(settings, client=client)


def otel_collector(settings: BcceSettings) -> MetricsCollector:
    from bcce.events.otel import OtelMetricsCollector

    return OtelMetricsCollector.from_settings(settings)


__all__ = [
    "Subscriber",
    "attach",
    "audit_trail",
    "cloudwatch_collector",
    "eventbridge",
    "metrics_subscriber",
    "otel_collector",
    "prometheus_collector",
    "tracing",
]
