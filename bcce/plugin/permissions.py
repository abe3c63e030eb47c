"""Plugin permissions: what a manifest declares, what an administrator grants, what a plugin gets.

A permission is a kind (``filesystem:read``, ``filesystem:write``, ``network:http``,
``network:https``, ``network:ldap``, ``env:read``, ``process:spawn``) with an optional scope: path
globs for the filesystem kinds, host patterns for the network kinds, variable names for
``env:read``. A kind without a scope is unrestricted. In a manifest or a grant a permission is
written as a string, ``"filesystem:read"``, or as
``{"permission": "filesystem:read", "scope": ["/data/**"]}``.

A plugin gets :func:`effective` permissions: the intersection of the declaration and the grant.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from wcmatch import glob

from bcce.errors import PluginError

PermissionKind = Literal[
    "filesystem:read",
    "filesystem:write",
    "network:http",
    "network:https",
    "network:ldap",
    "env:read",
    "process:spawn",
]
KINDS: Final[tuple[PermissionKind, ...]] = get_args(PermissionKind)
FILESYSTEM_KINDS: Final = frozenset({"filesystem:read", "filesystem:write"})
#: The kinds that give a worker the network. The OS sandbox cannot tell them apart (a TCP
#: connection is a TCP connection): each one scopes hosts, and the plugin checks the kind that
#: matches the protocol it speaks (the URL's scheme) before it connects.
NETWORK_KINDS: Final[tuple[PermissionKind, ...]] = ("network:http", "network:https", "network:ldap")

_GLOB_FLAGS: Final = glob.GLOBSTAR | glob.DOTGLOB | glob.FORCEUNIX
_SCOPED_HINTS: Final[Mapping[str, str]] = {
    "filesystem:read": "a path glob",
    "filesystem:write": "a path glob",
    "network:http": "a host pattern",
    "network:https": "a host pattern",
    "network:ldap": "a host pattern",
    "env:read": "a variable name",
}


@dataclass(frozen=True)
class Permission:
    """A permission kind; ``scope`` None is unrestricted, a tuple limits it to those patterns."""

    kind: PermissionKind
    scope: tuple[str, ...] | None = None

    def to_manifest(self) -> str | dict[str, object]:
        """The permission as written in a manifest or a grant."""
        if self.scope is None:
            return self.kind
        return {"permission": self.kind, "scope": list(self.scope)}


class PermissionSet:
    """Permissions by kind; what a sandboxed worker is allowed to do."""

    def __init__(self, permissions: Iterable[Permission] = ()) -> None:
        merged: dict[PermissionKind, Permission] = {}
        for permission in permissions:
            merged[permission.kind] = _merge(merged.get(permission.kind), permission)
        self._by_kind = merged

    def __iter__(self) -> Iterator[Permission]:
        return iter(self._by_kind[kind] for kind in KINDS if kind in self._by_kind)

    def __len__(self) -> int:
        return len(self._by_kind)

    def __contains__(self, kind: object) -> bool:
        return kind in self._by_kind

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PermissionSet) and self._by_kind == other._by_kind

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"PermissionSet({list(self)!r})"

    def get(self, kind: PermissionKind) -> Permission | None:
        """The permission of ``kind``, or None when it is not held."""
        return self._by_kind.get(kind)

    def allows(self, kind: PermissionKind, target: str | None = None) -> bool:
        """Whether ``kind`` is held and, when ``target`` is given, covers it."""
        permission = self._by_kind.get(kind)
        if permission is None:
            return False
        if permission.scope is None or target is None:
            return True
        return any(_covers(kind, pattern, target) for pattern in permission.scope)

    def to_list(self) -> list[str | dict[str, object]]:
        """The set as a manifest-style list (for audit records and the worker)."""
        return [permission.to_manifest() for permission in self]


def parse_permissions(entries: Iterable[object], *, key: str = "permissions") -> PermissionSet:
    """Parse a manifest's or a grant's permission list; a bad entry is a :class:`PluginError`."""
    if isinstance(entries, str | bytes | Mapping):
        raise PluginError("permissions must be a list", key=key)
    parsed: list[Permission] = []
    for index, entry in enumerate(entries):
        where = f"{key}[{index}]"
        if isinstance(entry, str):
            parsed.append(Permission(_kind(entry, where)))
            continue
        if not isinstance(entry, Mapping) or set(entry) - {"permission", "scope"}:
            raise PluginError(
                "a permission is a string or {permission, scope}",
                hint='e.g. "env:read" or {"permission": "env:read", "scope": ["HOME"]}',
                key=where,
            )
        kind = _kind(entry.get("permission"), where)
        scope = entry.get("scope")
        if scope is None:
            parsed.append(Permission(kind))
            continue
        if kind == "process:spawn":
            raise PluginError("process:spawn takes no scope", key=f"{where}.scope")
        if isinstance(scope, str):
            scope = [scope]
        if not isinstance(scope, list) or not all(isinstance(s, str) and s for s in scope):
            raise PluginError(
                f"scope must be a list of non-empty strings ({_SCOPED_HINTS[kind]} each)",
                key=f"{where}.scope",
            )
        if kind in FILESYSTEM_KINDS and not all(s.startswith("/") for s in scope):
            raise PluginError("filesystem scopes must be absolute path globs", key=f"{where}.scope")
        parsed.append(Permission(kind, tuple(scope)))
    return PermissionSet(parsed)


def effective(declared: PermissionSet, granted: PermissionSet) -> PermissionSet:
    """The intersection: a kind needs both a declaration and a grant; scopes are narrowed.

    A grant broader than the declaration gives only the declaration; a declaration broader than
    the grant gives only the grant; where neither pattern covers the other, nothing of them.
    """
    result: list[Permission] = []
    for wanted in declared:
        given = granted.get(wanted.kind)
        if given is None:
            continue
        if given.scope is None or wanted.scope is None:
            scope = wanted.scope if given.scope is None else given.scope
            result.append(Permission(wanted.kind, scope))
            continue
        kept = [p for p in wanted.scope if any(_covers(wanted.kind, g, p) for g in given.scope)]
        kept += [p for p in given.scope if any(_covers(wanted.kind, w, p) for w in wanted.scope)]
        if kept:
            result.append(Permission(wanted.kind, tuple(dict.fromkeys(kept))))
    return PermissionSet(result)


def explain_denial(kind: PermissionKind | str | Sequence[str], target: str | None = None) -> str:
    """A message naming the missing permission (or the kinds that would do) and how to get it."""
    if isinstance(kind, str):
        kinds = repr(kind)
    else:
        names = [repr(k) for k in kind] or ["a permission"]
        kinds = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    what = f"{kinds} for {target!r}" if target else kinds
    return (
        f"permission denied: the plugin lacks {what}; the plugin must declare it in "
        "bcce.plugin.json and the administrator must grant it in plugins.grants.<name>"
    )


def _kind(value: object, where: str) -> PermissionKind:
    if value not in KINDS:
        raise PluginError(
            f"unknown permission {value!r}", hint=f"one of: {', '.join(KINDS)}", key=where
        )
    return value


def _merge(old: Permission | None, new: Permission) -> Permission:
    if old is None:
        return new
    if old.scope is None or new.scope is None:
        return Permission(new.kind)
    return Permission(new.kind, tuple(dict.fromkeys(old.scope + new.scope)))


def _covers(kind: PermissionKind, pattern: str, target: str) -> bool:
    """Whether ``pattern`` covers ``target`` (a concrete value or a narrower pattern)."""
    if kind in FILESYSTEM_KINDS:
        if not glob.is_magic(target, flags=_GLOB_FLAGS):
            target = os.path.realpath(target)
        root = pattern.rstrip("/") or "/"
        # `DIR/**` covers DIR itself too: a grant of a tree includes its top.
        tree = pattern[:-3] if pattern.endswith("/**") else None
        return target in (root, tree) or glob.globmatch(target, pattern, flags=_GLOB_FLAGS)
    if kind in NETWORK_KINDS:
        return fnmatch.fnmatchcase(target.lower(), pattern.lower())
    return fnmatch.fnmatchcase(target, pattern)


__all__ = [
    "FILESYSTEM_KINDS",
    "KINDS",
    "NETWORK_KINDS",
    "Permission",
    "PermissionKind",
    "PermissionSet",
    "effective",
    "explain_denial",
    "parse_permissions",
]
