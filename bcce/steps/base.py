"""What a step executor gets and returns."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from bcce.auth.authorization import Authoriser
    from bcce.auth.provider import Identity
    from bcce.core.redaction import Redactor
    from bcce.policy.engine import PolicyEngine
    from bcce.policy.spend import StepBudget
    from bcce.settings.model import BcceSettings
    from bcce.steps.approval import Approval, ApprovalGate, Approver
    from bcce.workflow.model import Step, Workflow

ResultStatus = Literal["succeeded", "failed", "timed_out", "cancelled", "awaiting_approval"]


@dataclass
class StepContext:
    """Everything an executor may use; it must honour ``deadline`` and ``should_stop``."""

    run_id: str
    workflow: Workflow
    step: Step
    attempt: int
    workspace: Path
    artifacts: Path
    env: dict[str, str]
    deadline: float | None
    should_stop: Callable[[], bool]
    render: Callable[[Any], Any]
    publish: Callable[[str, Mapping[str, Any]], None]
    redactor: Redactor
    policy: PolicyEngine
    settings: BcceSettings
    echo: Callable[[str, bytes], None] | None = None
    cookie: str = ""
    step_states: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    approval: Approval | None = None  # given on the command line (--approve / --reject)
    approver: Approver | None = None  # asks a person at the terminal
    approval_gates: Sequence[ApprovalGate] = ()
    agent_runtime: Any = None  # the container's agent.runtime choice
    #: The attempt's spend budgets (step, run, team); agent and prompt steps enforce them.
    budget: StepBudget | None = None
    #: Who may approve (apply_diff asks it), and who started the run (four-eyes).
    authoriser: Authoriser | None = None
    started_by: Identity | None = None


@dataclass
class StepResult:
    status: ResultStatus
    outputs: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    error: str | None = None
    denied: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


@runtime_checkable
class StepExecutor(Protocol):
    def execute(self, context: StepContext) -> StepResult: ...


class UnavailableExecutor:
    """A step type known to the schema whose executor is not part of this build."""

    def __init__(self, step_type: str, reason: str) -> None:
        self.step_type = step_type
        self.reason = reason

    def execute(self, context: StepContext) -> StepResult:
        return StepResult("failed", error=f"{self.step_type} steps cannot run: {self.reason}")
