"""Where each effective settings value came from."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from bcce.core.strict_yaml import dotted

LayerKind = Literal["override", "env", "ssm", "file", "plugin", "default"]
PathKey = tuple[str | int, ...]

__all__ = ["LAYER_ORDER", "LayerKind", "Origin", "PathKey", "Provenance", "dotted"]

#: Highest precedence first.
LAYER_ORDER: tuple[LayerKind, ...] = ("override", "env", "ssm", "file", "plugin", "default")


@dataclass(frozen=True)
class Origin:
    """One value's source: the layer kind and a detail (file:line:col, variable or parameter)."""

    layer: LayerKind
    detail: str
    secret: bool = False

    def __str__(self) -> str:
        return f"{self.layer}: {self.detail}"

    @property
    def location(self) -> str:
        """How an error message points here: ``file:line:col`` for files, else ``env BCCE_X``."""
        return self.detail if self.layer in ("file", "default") else f"{self.layer} {self.detail}"


@dataclass
class Provenance:
    """Maps each settings path (``("storage", "backend")``) to its :class:`Origin`."""

    origins: dict[PathKey, Origin] = field(default_factory=dict)
    #: The layers that were loaded, highest first, e.g. ``["env: 2 variables", "file: bcce.yaml"]``.
    sources: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[tuple[PathKey, Origin]]:
        return iter(sorted(self.origins.items(), key=lambda item: [str(p) for p in item[0]]))

    def origin_of(self, path: Sequence[str | int]) -> Origin | None:
        """The origin of ``path`` itself, else of its nearest ancestor, else of a descendant."""
        key = tuple(path)
        probe = key
        while probe:
            if probe in self.origins:
                return self.origins[probe]
            probe = probe[:-1]
        for candidate, origin in self.origins.items():
            if candidate[: len(key)] == key:
                return origin
        return None

    def is_secret(self, path: Sequence[str | int]) -> bool:
        origin = self.origins.get(tuple(path))
        return origin is not None and origin.secret
