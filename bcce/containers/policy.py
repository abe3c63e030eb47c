from __future__ import annotations

from dependency_injector import containers, providers

from bcce.policy.engine import PolicyEngine
from bcce.settings.model import PolicySettings


class PolicyContainer(containers.DeclarativeContainer):
    """The policy engine and its checkers."""

    settings = providers.Dependency(instance_of=PolicySettings)

    engine = providers.Singleton(PolicyEngine, settings=settings)
