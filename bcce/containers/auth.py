from __future__ import annotations

import operator

from dependency_injector import containers, providers

from bcce.auth import factories
from bcce.auth.authorization import Authoriser
from bcce.auth.provider import LocalAuthProvider
from bcce.settings.model import BcceSettings


class AuthContainer(containers.DeclarativeContainer):
    """Who is running bcce: the authentication provider chosen by ``auth.provider``; and what
    they may do: the ``authoriser`` (``auth.authorization``).

    The authoriser publishes its decisions on the event bus, which lives in the events container
    (built after this one, since the audit trail needs the authenticator): call it with the bus,
    ``app.auth.authoriser(bus=app.events.bus())``.
    """

    config = providers.Configuration()
    settings = providers.Dependency(instance_of=BcceSettings)
    aws = providers.DependenciesContainer()

    # `config.provider` is the Configuration's own `.provider` property, not the option.
    authenticator = providers.Selector(
        providers.Callable(operator.itemgetter("provider"), config),
        local=providers.Singleton(LocalAuthProvider),
        **{
            "identity-center": providers.Singleton(
                factories.identity_center,
                settings,
                aws.sts.provider,
                aws.identitystore.provider,
            ),
            "cognito-oidc": providers.Singleton(factories.cognito_oidc, settings),
        },
    )

    # The authenticator's provider, not its instance: an override (a test's fake identity)
    # applies from the next decision on.
    authoriser = providers.Factory(
        Authoriser,
        settings=settings.provided.auth.authorization,
        authenticator=authenticator.provider,
    )
