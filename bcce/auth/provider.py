"""Who is running bcce: the authentication provider interface and the local (OS user) provider."""

from __future__ import annotations

import getpass
import grp
import os
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Identity:
    """An authenticated principal: user name, group names, and the provider that vouched for it."""

    user: str
    groups: tuple[str, ...] = ()
    provider: str = "local"
    attributes: dict[str, str] = field(default_factory=dict, compare=False)


@runtime_checkable
class AuthenticationProvider(Protocol):
    name: str

    def authenticate(self) -> Identity: ...


class LocalAuthProvider:
    """The operating-system user running the process, with its Unix groups."""

    name = "local"

    def authenticate(self) -> Identity:
        user = getpass.getuser()
        groups = sorted({_group_name(gid) for gid in {os.getgid(), *os.getgroups()}})
        return Identity(user=user, groups=tuple(groups), provider=self.name)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
