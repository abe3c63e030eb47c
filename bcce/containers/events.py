from __future__ import annotations

from dependency_injector import containers, providers

from bcce.events.bus import InProcessEventBus
from bcce.events.metrics import LogMetricsCollector


class EventsContainer(containers.DeclarativeContainer):
    """The event bus and what listens to it."""

    config = providers.Configuration()
    core = providers.DependenciesContainer()

    bus = providers.ThreadSafeSingleton(InProcessEventBus)
    metrics = providers.Selector(
        config.metrics,
        log=providers.Singleton(LogMetricsCollector),
    )
