from __future__ import annotations

from dependency_injector import containers, providers

from bcce.storage.backend import LocalStorageBackend


class StorageContainer(containers.DeclarativeContainer):
    """Where artifacts live."""

    config = providers.Configuration()
    aws = providers.DependenciesContainer()

    backend = providers.Selector(
        config.backend,
        local=providers.Singleton(LocalStorageBackend, root=config.root),
    )
