"""The built-in step types, registered like any plugin's."""

from __future__ import annotations

from bcce.steps.agent import AgentExecutor, PromptExecutor
from bcce.steps.apply_diff import ApplyDiffExecutor
from bcce.steps.base import UnavailableExecutor
from bcce.steps.cmd import CmdExecutor
from bcce.workflow.model import CONTROL_TYPES
from bcce.workflow.registry import StepType


class _ControlStep:
    """Composite, conditional and parallel steps are scheduled by the runner itself."""

    def execute(self, context: object) -> object:  # pragma: no cover - never called
        raise AssertionError("control steps are run by the workflow runner")


def builtin_step_types() -> list[StepType]:
    types = [
        StepType("cmd", CmdExecutor, description="a shell command in the workspace"),
        StepType(
            "agent", AgentExecutor, description="Claude Code with tools, under the step's policy"
        ),
        StepType(
            "prompt",
            PromptExecutor,
            description="a read-only Claude Code run; its answer is the output",
        ),
        StepType(
            "apply_diff",
            ApplyDiffExecutor,
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
