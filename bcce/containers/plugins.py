from __future__ import annotations

from dependency_injector import containers, providers

from bcce.plugin.manager import PluginManager
from bcce.settings.model import PluginsSettings


class PluginsContainer(containers.DeclarativeContainer):
    """Plugin discovery and lifecycle."""

    settings = providers.Dependency(instance_of=PluginsSettings)
    events = providers.DependenciesContainer()

    manager = providers.Singleton(PluginManager, settings=settings)
