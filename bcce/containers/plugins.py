from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dependency_injector import containers, providers

from bcce.plugin.discovery import discover
from bcce.plugin.manager import PluginManager, managed
from bcce.settings.model import BcceSettings


class PluginsContainer(containers.DeclarativeContainer):
    """Plugin discovery and lifecycle.

    ``report`` is what discovery found; :func:`bcce.create_application` hands in the report it
    already made while layering plugin defaults into the settings, so plugins are searched once.
    ``manager`` is a Resource: shutting the application down closes every plugin. The step
    registry is attached to it once the tree is built (the workflow container depends on this
    one, so it cannot be injected here).
    """

    settings = providers.Dependency(instance_of=BcceSettings)
    events = providers.DependenciesContainer()

    #: Where discovery looks besides the settings: the working directory and the environment
    #: (None: the process's own). create_application passes its LayerOptions' ones.
    cwd: providers.Object[Path | None] = providers.Object(None)
    environ: providers.Object[Mapping[str, str] | None] = providers.Object(None)

    report = providers.Singleton(discover, settings.provided.plugins, cwd=cwd, environ=environ)
    manager = providers.Resource(
        managed,
        providers.Singleton(
            PluginManager,
            settings=settings.provided.plugins,
            report=report,
            bus=events.bus,
            cwd=cwd,
            environ=environ,
            provenance=settings.provided.provenance,
        ),
    )
