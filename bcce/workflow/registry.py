"""The step registry: step type name -> executor. Built-ins and plugins register the same way."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bcce.errors import WorkflowError

STEP_TYPE = re.compile(r"^(?:[a-z][a-z0-9_]*|[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*)$")


@dataclass(frozen=True)
class StepType:
    """A registered step type: its name, who provides it, and how to build its executor."""

    name: str
    factory: Callable[[], Any]
    provider: str = "builtin"
    description: str = ""


class StepRegistry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[str, StepType] = {}

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

    def get(self, name: str) -> StepType:
        try:
            return self._types[name]
        except KeyError:
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
