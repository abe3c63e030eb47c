"""The step registry: step type name -> executor. Built-ins and plugins register the same way."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from bcce.errors import BcceError, WorkflowError

STEP_TYPE = re.compile(r"^(?:[a-z][a-z0-9_]*|[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*)$")


@dataclass(frozen=True)
class StepType:
    """A registered step type: its name, who provides it, and how to build its executor.

    ``schema`` checks the keys a step of this type carries (plugin types); ``lease``, when set,
    is entered for the whole of a run that uses the type, keeping its provider alive (a plugin
    reloaded mid-run keeps serving that run with the version it started with).
    """

    name: str
    factory: Callable[[], Any]
    provider: str = "builtin"
    description: str = ""
    schema: Mapping[str, Any] | None = field(default=None, compare=False)
    lease: Callable[[], AbstractContextManager[Any]] | None = field(default=None, compare=False)


class StepRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[str, StepType] = {}
        self._unavailable: dict[str, BcceError] = {}

    @classmethod
    def with_types(cls, types: Callable[[], Iterable[StepType]]) -> StepRegistry:
        registry = cls()
        for step_type in types():
            registry.register(step_type)
        return registry

    def register(self, step_type: StepType, *, replace: bool = False) -> None:
        if not STEP_TYPE.match(step_type.name):
            raise WorkflowError(
                f"invalid step type name {step_type.name!r}",
                hint="use lower-case 'name' for built-ins or 'namespace:name' for plugins",
            )
        with self._lock:
            existing = self._types.get(step_type.name)
            if existing is not None and not replace:
                raise WorkflowError(
                    f"step type {step_type.name!r} is already registered by {existing.provider}",
                    hint="choose another name or unload the other provider first",
                )
            self._types[step_type.name] = step_type

    def unregister(self, name: str) -> None:
        with self._lock:
            self._types.pop(name, None)

    def mark_unavailable(self, name: str, reason: BcceError) -> None:
        """A type whose provider failed: using it raises ``reason`` (not 'unknown type')."""
        with self._lock:
            self._unavailable[name] = reason

    def unavailable(self) -> dict[str, BcceError]:
        """Types whose provider failed, with the reason."""
        with self._lock:
            return {k: v for k, v in self._unavailable.items() if k not in self._types}

    def get(self, name: str) -> StepType:
        try:
            return self._types[name]
        except KeyError:
            if name in self._unavailable:
                raise self._unavailable[name] from None
            raise WorkflowError(
                f"unknown step type {name!r}",
                hint=f"registered types: {', '.join(sorted(self._types)) or 'none'}",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[StepType]:
        return iter(sorted(self._types.values(), key=lambda t: t.name))

    def names(self) -> list[str]:
        return sorted(self._types)
