"""One policy question at a time: what ``bcce policy check`` answers.

The answer comes from the agent step's own PreToolUse decision (:class:`ToolPolicy`), asked
about a single Read, Write or Bash call, so administrators see exactly the rule the hook applies.
"""

from __future__ import annotations

import os
from pathlib import Path

from bcce.policy.decision import Decision
from bcce.policy.hook import ToolPolicy
from bcce.policy.tools import ToolSet
from bcce.settings.model import StepPolicySettings

ALL_TOOLS = ("ReadFile", "Search", "Diff", "Apply", "WriteFile", "Bash")


def check_against(
    policy: StepPolicySettings,
    workspace: Path,
    *,
    command: str | None = None,
    read: str | None = None,
    write: str | None = None,
) -> Decision:
    """The hook's decision on one command, one read or one write under ``policy``."""
    decider = ToolPolicy.from_step(policy, workspace.resolve(), ToolSet.from_available(ALL_TOOLS))
    if command is not None:
        return decider.decide("Bash", {"command": command})
    target = write if write is not None else read
    assert target is not None
    if not (target.startswith("~") or Path(target).is_absolute()):
        # Claude Code hands the hook absolute paths, resolved against its working directory.
        target = os.path.join(workspace.resolve(), target)  # noqa: PTH118 - keep `..` as given
    if write is not None:
        return decider.decide("Write", {"file_path": target, "content": ""})
    return decider.decide("Read", {"file_path": target})
