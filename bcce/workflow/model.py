"""A loaded, validated workflow: immutable data the planner and runner work from."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

OnError = Literal["fail", "continue", "retry"]
FailureStrategy = Literal["abort", "continue"]

#: Step types whose children are steps.
CONTROL_TYPES = frozenset({"composite", "conditional", "parallel"})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    jitter: bool = True


@dataclass(frozen=True)
class Step:
    """One step. ``raw`` keeps every key the user wrote (after ``${VAR}`` substitution)."""

    id: str
    type: str
    raw: Mapping[str, Any]
    location: tuple[str | int, ...]
    needs: tuple[str, ...] = ()
    explicit_needs: bool = False
    condition: str | None = None  # `if:`
    branch_condition: str | None = None  # a conditional step's `condition:`
    timeout_seconds: float | None = None
    retry: RetryPolicy | None = None
    on_error: OnError = "fail"
    outputs: Mapping[str, str] = field(default_factory=dict)
    children: tuple[Step, ...] = ()
    else_children: tuple[Step, ...] = ()
    failure_strategy: FailureStrategy = "abort"
    max_parallel: int | None = None

    @property
    def name(self) -> str:
        return str(self.raw.get("name") or self.id)

    def walk(self) -> Iterator[Step]:
        """This step and every step nested in it, depth first."""
        yield self
        for child in (*self.children, *self.else_children):
            yield from child.walk()


@dataclass(frozen=True)
class Workflow:
    name: str
    source: Path
    digest: str
    steps: tuple[Step, ...]
    env: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None
    guardrails: tuple[str, ...] = ()
    max_runtime_seconds: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.source.parent

    def all_steps(self) -> Iterator[Step]:
        for step in self.steps:
            yield from step.walk()

    def step(self, step_id: str) -> Step:
        for step in self.all_steps():
            if step.id == step_id:
                return step
        raise KeyError(step_id)
