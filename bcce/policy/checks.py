"""One policy question at a time: the checks ``bcce policy check`` answers."""

from __future__ import annotations

from pathlib import Path

from bcce.policy.commands import CommandAllowlist
from bcce.policy.decision import Decision
from bcce.policy.paths import PathScope
from bcce.settings.model import StepPolicySettings


def check_against(
    policy: StepPolicySettings,
    workspace: Path,
    *,
    command: str | None = None,
    read: str | None = None,
    write: str | None = None,
) -> Decision:
    """The decision the agent-step layers would make on one command or path."""
    if command is not None:
        if policy.cmd_allowlist is None:
            return Decision.deny(
                "cmd.no_allowlist", "the policy allows no commands (no cmd_allowlist)"
            )
        return CommandAllowlist(policy.cmd_allowlist).check(command)
    scope = PathScope(workspace.resolve(), policy.allowed_paths)
    if write is not None:
        return scope.check(write, for_write=True)
    assert read is not None
    return scope.check(read, for_write=False)
