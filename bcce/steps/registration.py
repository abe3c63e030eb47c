"""The built-in step types, registered like any plugin's."""

from __future__ import annotations

from bcce.steps.base import UnavailableExecutor
from bcce.steps.cmd import CmdExecutor
from bcce.workflow.model import CONTROL_TYPES
from bcce.workflow.registry import StepType

_AGENT_PENDING = "the Claude Code agent runtime is not part of this build yet"


class _ControlStep:
    """Composite, conditional and parallel steps are scheduled by the runner itself."""

    def execute(self, context: object) -> object:  # pragma: no cover - never called
        raise AssertionError("control steps are run by the workflow runner")


def builtin_step_types() -> list[StepType]:
    types = [
        StepType("cmd", CmdExecutor, description="a shell command in the workspace"),
        StepType(
            "agent",
            lambda: UnavailableExecutor("agent", _AGENT_PENDING),
            description="Claude Code with tools, under the step's policy",
        ),
        StepType(
            "prompt",
            lambda: UnavailableExecutor("prompt", _AGENT_PENDING),
            description="a read-only Claude Code run whose answer is the output",
        ),
        StepType(
            "apply_diff",
            lambda: UnavailableExecutor("apply_diff", _AGENT_PENDING),
            description="apply earlier agent steps' changes after approval",
        ),
        StepType(
            "custom",
            lambda: UnavailableExecutor("custom", "custom handlers run as plugins"),
            description="a handler from a plugin",
        ),
    ]
    types += [
        StepType(name, _ControlStep, description=f"{name} control step")
        for name in sorted(CONTROL_TYPES)
    ]
    return types
