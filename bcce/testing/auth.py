"""An authentication provider for tests: whoever the test says is running bcce.

from dependency_injector import providers
from bcce.auth.provider import Identity
from bcce.testing.auth import StaticAuthProvider

app.auth.authenticator.override(
    providers.Object(StaticAuthProvider(Identity("ana", ("dev",), "fake-sso")))
)
"""

from __future__ import annotations

from dataclasses import dataclass

from bcce.auth.provider import Identity


@dataclass
class StaticAuthProvider:
    """Authenticates every time as ``identity``."""

    identity: Identity
    name: str = "fake-sso"

    def authenticate(self) -> Identity:
        return self.identity


__all__ = ["StaticAuthProvider"]
