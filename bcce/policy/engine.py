"""The policy engine: the organisation's policy and the decisions derived from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bcce.settings.model import PolicySettings, StepPolicySettings


@dataclass(frozen=True)
class CommandDecision:
    """Whether a command may run, why, and the exact command line to run if it may."""

    allowed: bool
    rule: str
    reason: str
    layer: str = "policy"
    command: str | None = None


class PolicyEngine:
    """Holds the configured policy and answers policy questions for steps."""

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings

    @property
    def strict(self) -> bool:
        return self.settings.strict

    def default_step_policy(self) -> StepPolicySettings:
        return self.settings.default.model_copy(deep=True)

    def command_allowlist(self, step_policy: Mapping[str, Any] | None) -> Sequence[str] | None:
        """The allowlist for a cmd step: the step's own, else the organisation's, else none."""
        if step_policy and step_policy.get("cmd_allowlist") is not None:
            return list(step_policy["cmd_allowlist"])
        return self.settings.cmd_allowlist

    def check_step_command(
        self, command: str, step_policy: Mapping[str, Any] | None
    ) -> CommandDecision:
        """Decide a cmd step's command; without an allowlist every command may run."""
        allowlist = self.command_allowlist(step_policy)
        if allowlist is None:
            return CommandDecision(
                True, "cmd.no_allowlist", "no allowlist applies", command=command
            )
        return self.check_command(command, allowlist)

    def check_command(self, command: str, allowlist: Sequence[str]) -> CommandDecision:
        """Decide ``command``; if allowed, ``command`` in the decision is what to execute: the
        parsed words re-quoted, so the shell runs exactly what was checked."""
        from bcce.policy.commands import CommandAllowlist, parse_command, render_commands

        decision = CommandAllowlist(allowlist).check(command)
        if not decision.allowed:
            return CommandDecision(False, decision.rule, decision.reason, decision.layer)
        return CommandDecision(
            True,
            decision.rule,
            decision.reason,
            decision.layer,
            render_commands(parse_command(command)),
        )
