from __future__ import annotations

from dependency_injector import containers, providers

from bcce.settings.model import BcceSettings
from bcce.storage import factories
from bcce.storage.backend import LocalStorageBackend


class StorageContainer(containers.DeclarativeContainer):
    """Where artifacts live: the backend chosen by ``storage.backend``."""

    config = providers.Configuration()
    settings = providers.Dependency(instance_of=BcceSettings)
    aws = providers.DependenciesContainer()

    backend = providers.Selector(
        config.backend,
        local=providers.Singleton(LocalStorageBackend, root=config.root),
        s3=providers.Singleton(factories.s3, settings, aws.s3.provider),
    )
