"""The local provider (the default): the operating-system user and its Unix groups."""

from __future__ import annotations

import getpass
import grp
import os
from collections.abc import Callable

from bcce.auth.provider import AuthenticationProvider, LocalAuthProvider
from bcce.containers.application import Application


def test_the_local_identity_is_the_os_user_with_its_groups() -> None:
    identity = LocalAuthProvider().authenticate()

    primary = grp.getgrgid(os.getgid()).gr_name
    assert (identity.user, identity.provider) == (getpass.getuser(), "local")
    assert primary in identity.groups
    assert list(identity.groups) == sorted(set(identity.groups))


def test_local_is_the_default_provider_of_the_application(
    bcce_make_app: Callable[..., Application],
) -> None:
    provider = bcce_make_app().auth.authenticator()

    assert isinstance(provider, LocalAuthProvider)
    assert isinstance(provider, AuthenticationProvider)
    assert provider.authenticate().user == getpass.getuser()
