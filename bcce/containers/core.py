from __future__ import annotations

from dependency_injector import containers, providers

from bcce.core.clock import SystemClock
from bcce.core.ids import IdGenerator
from bcce.core.log import configure_logging
from bcce.core.redaction import Redactor
from bcce.settings.model import SECRET_OPTION, BcceSettings


def _secrets(settings: BcceSettings) -> list[str]:
    """Every secret value the settings hold: each is redacted wherever it would appear."""
    values = [s.get_secret_value() for s in settings.core.secrets]
    if settings.agent.api_key is not None:
        values.append(settings.agent.api_key.get_secret_value())
    options = [i.model_dump() for i in settings.plugins.integrations]
    for entries in (*options, *settings.plugins.config.values()):
        values += [
            v for k, v in entries.items() if isinstance(v, str) and v and SECRET_OPTION.search(k)
        ]
    dumped = settings.model_dump(mode="python")
    for path, origin in settings.provenance:
        if origin.secret:  # e.g. an SSM SecureString
            value: object = dumped
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, str):
                values.append(value)
    return values


class CoreContainer(containers.DeclarativeContainer):
    """Logging, time, ids and redaction: what every other container may use."""

    config = providers.Configuration()
    settings = providers.Dependency(instance_of=BcceSettings)

    clock = providers.Singleton(SystemClock)
    ids = providers.Singleton(IdGenerator, clock=clock)
    redactor = providers.ThreadSafeSingleton(
        Redactor,
        secrets=providers.Callable(_secrets, settings),
        patterns=config.redact_patterns,
    )
    logging = providers.Resource(
        configure_logging,
        level=config.log_level,
        fmt=config.log_format,
        redact=redactor.provided.redact,
    )
