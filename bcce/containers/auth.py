from __future__ import annotations

import operator

from dependency_injector import containers, providers

from bcce.auth.provider import LocalAuthProvider


class AuthContainer(containers.DeclarativeContainer):
    """Who is running bcce."""

    config = providers.Configuration()
    aws = providers.DependenciesContainer()

    # `config.provider` is the Configuration's own `.provider` property, not the option.
    authenticator = providers.Selector(
        providers.Callable(operator.itemgetter("provider"), config),
        local=providers.Singleton(LocalAuthProvider),
    )
