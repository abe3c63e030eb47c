from __future__ import annotations

from dependency_injector import containers, providers

from bcce.events import subscribers
from bcce.events.bus import open_bus
from bcce.events.metrics import LogMetricsCollector
from bcce.settings.model import BcceSettings


class EventsContainer(containers.DeclarativeContainer):
    """The event bus and what listens to it.

    The bus is a Resource: shutting the application down flushes the queued subscribers (within
    ``events.subscriber_timeout_seconds``) and stops their threads. ``subscribers`` attaches
    the components ``events.subscribers`` names; each is built only when named, and every one
    can be overridden like any provider (``app.events.audit.override(mock)``) before the
    application attaches them.
    """

    config = providers.Configuration()
    settings = providers.Dependency(instance_of=BcceSettings)
    core = providers.DependenciesContainer()
    aws = providers.DependenciesContainer()
    auth = providers.DependenciesContainer()

    bus = providers.Resource(
        open_bus, timeout=config.subscriber_timeout_seconds, queue_size=config.queue_size
    )
    metrics = providers.Selector(
        config.metrics,
        log=providers.Singleton(LogMetricsCollector),
        prometheus=providers.Singleton(subscribers.prometheus_collector, settings),
        cloudwatch=providers.Singleton(
            subscribers.cloudwatch_collector, settings, aws.cloudwatch.provider
        ),
        otel=providers.Singleton(subscribers.otel_collector, settings),
    )

    audit = providers.Singleton(subscribers.audit_trail, settings, auth.authenticator.provider)
    metrics_subscriber = providers.Singleton(subscribers.metrics_subscriber, metrics)
    tracing = providers.Singleton(subscribers.tracing, settings)
    eventbridge = providers.Singleton(subscribers.eventbridge, settings, aws.events.provider)

    attached = providers.Resource(
        subscribers.attach,
        bus,
        config.subscribers,
        providers.Dict(
            audit=audit.provider,
            metrics=metrics_subscriber.provider,
            tracing=tracing.provider,
            eventbridge=eventbridge.provider,
        ),
    )
