"""Factories of the built-in authentication providers, for the auth container's Selector.

Each imports its implementation only when called, so choosing ``local`` (the default) never
loads boto3 or PyJWT.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bcce.auth.provider import AuthenticationProvider
    from bcce.settings.model import BcceSettings


def identity_center(
    settings: BcceSettings, sts: Callable[[], Any], identitystore: Callable[[], Any]
) -> AuthenticationProvider:
    from bcce.auth.identity_center import IdentityCenterProvider

    region = settings.auth.identity_center.region
    if region and region != settings.aws.region:
        identitystore = _regional_identitystore(settings, region)
    return IdentityCenterProvider.from_settings(settings, sts=sts, identitystore=identitystore)


def _regional_identitystore(settings: BcceSettings, region: str) -> Callable[[], Any]:
    """An Identity Store client factory for ``region``: the store may live in another region
    than the one bcce otherwise uses."""

    def make() -> Any:
        from bcce.aws.session import create_client, create_session

        session = create_session(settings.aws, region=region)
        return create_client(session, settings.aws, "identitystore", region=region)

    return make


def cognito_oidc(settings: BcceSettings) -> AuthenticationProvider:
    from bcce.auth.oidc import CognitoOidcProvider

    return CognitoOidcProvider.from_settings(settings)


__all__ = ["cognito_oidc", "identity_center"]
