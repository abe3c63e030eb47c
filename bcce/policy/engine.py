"""The policy engine: the organisation's policy settings and the step policies derived from them."""

from __future__ import annotations

from bcce.settings.model import PolicySettings, StepPolicySettings


class PolicyEngine:
    """Holds the configured policy; decisions on commands and paths come from its checkers."""

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings

    @property
    def strict(self) -> bool:
        return self.settings.strict

    def default_step_policy(self) -> StepPolicySettings:
        return self.settings.default.model_copy(deep=True)
