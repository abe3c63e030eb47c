from __future__ import annotations

from dependency_injector import containers, providers

from bcce.core.clock import SystemClock
from bcce.core.ids import IdGenerator
from bcce.core.log import configure_logging


class CoreContainer(containers.DeclarativeContainer):
    """Logging, time, ids and redaction: what every other container may use."""

    config = providers.Configuration()

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(IdGenerator, clock=clock)
    logging = providers.Resource(configure_logging, level=config.log_level, fmt=config.log_format)
