"""The tool set of an agent step: workflow ``available_tools`` mapped to Claude Code tools.

This is the first policy layer: Claude Code is offered only the tools the step's
``available_tools`` map to (the SDK's ``tools`` option), and every other tool it has is named in
``disallowed_tools`` as well, so that neither a settings file nor a later CLI default can add one
back. A call to a tool that is not offered fails in Claude Code itself ("No such tool
available") without reaching the PreToolUse hook.

Mapping (:data:`TOOL_MAP`)
  ``ReadFile``  -> ``Read``
  ``Search``    -> ``Grep``, ``Glob``
  ``Diff``      -> ``Edit``, ``MultiEdit``  change existing files in place (the change set is the
  ``Apply``     -> ``Edit``, ``MultiEdit``  diff); neither can create a file
  ``WriteFile`` -> ``Write``                create or overwrite whole files
  ``Cmd``       -> ``Bash``
  ``Bash``      -> ``Bash``
``MultiEdit`` is kept for CLIs that still have it: the bundled Claude Code 2.1.330 has no
``MultiEdit`` and ignores the name. Notebooks, the web, subagents, tasks, skills, worktrees,
scheduling and MCP tools are never offered.

``prompt`` steps are read-only (:meth:`ToolSet.from_available` with ``read_only=True``): only
``ReadFile``, ``Search`` and, when named, ``Cmd``/``Bash`` (whose commands the allowlist still
decides); naming an edit tool is a :class:`~bcce.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from bcce.errors import ConfigError

TOOL_MAP: Final[Mapping[str, tuple[str, ...]]] = {
    "ReadFile": ("Read",),
    "Search": ("Grep", "Glob"),
    "Diff": ("Edit", "MultiEdit"),
    "Apply": ("Edit", "MultiEdit"),
    "WriteFile": ("Write",),
    "Cmd": ("Bash",),
    "Bash": ("Bash",),
}
"""Workflow tool name -> the Claude Code tools it stands for."""

READ_ONLY_NAMES: Final = frozenset({"ReadFile", "Search", "Cmd", "Bash"})
"""Workflow tool names a read-only (``prompt``) step may use."""

DEFAULT_PROMPT_TOOLS: Final = ("ReadFile", "Search")
"""What a ``prompt`` step gets when it names no tools."""

READ_TOOLS: Final = frozenset({"Read", "Grep", "Glob"})
EDIT_TOOLS: Final = frozenset({"Edit", "MultiEdit", "Write", "NotebookEdit"})

KNOWN_TOOLS: Final[tuple[str, ...]] = (
    # offered by the bundled Claude Code 2.1.330 (its system/init message, every tool enabled)
    "Agent",
    "Bash",
    "CronCreate",
    "CronDelete",
    "CronList",
    "Edit",
    "EnterWorktree",
    "ExitWorktree",
    "Glob",
    "Grep",
    "ListAgents",
    "Monitor",
    "NotebookEdit",
    "Read",
    "ReportFindings",
    "ScheduleWakeup",
    "SendMessage",
    "Skill",
    "Task",
    "TaskCreate",
    "TaskGet",
    "TaskList",
    "TaskStop",
    "TaskUpdate",
    "ToolSearch",
    "WebFetch",
    "WebSearch",
    "Workflow",
    "Write",
    # present in that CLI but enabled only in some modes, or in other versions
    "AskUserQuestion",
    "BashOutput",
    "EnterPlanMode",
    "ExitPlanMode",
    "KillBash",
    "KillShell",
    "LS",
    "LSP",
    "ListMcpResourcesTool",
    "MultiEdit",
    "NotebookRead",
    "PowerShell",
    "PushNotification",
    "REPL",
    "ReadMcpResourceTool",
    "RemoteTrigger",
    "SendUserMessage",
    "SlashCommand",
    "TaskOutput",
    "TeamCreate",
    "TeamDelete",
    "TodoRead",
    "TodoWrite",
)
"""Every Claude Code tool name bcce knows of; the ones a step is not given are disallowed."""

MCP_TOOLS: Final = "mcp__*"
"""Disallows every MCP tool (checked: Claude Code treats it as a wildcard)."""


@dataclass(frozen=True)
class ToolSet:
    """The Claude Code tools one step may use.

    ``allowed`` goes to the SDK's ``tools`` (what is offered) and ``allowed_tools``;
    ``disallowed`` to ``disallowed_tools``.
    """

    allowed: tuple[str, ...]
    sources: tuple[str, ...] = ()

    @classmethod
    def from_available(cls, names: Iterable[str], *, read_only: bool = False) -> ToolSet:
        """The tools that workflow tool ``names`` map to (see the module docstring).

        Raises :class:`ConfigError` for an unknown name, or an edit tool when ``read_only``.
        """
        if isinstance(names, str):
            raise ConfigError("available_tools must be a list of tool names", key="available_tools")
        sources: list[str] = []
        allowed: list[str] = []
        for position, name in enumerate(names):
            key = f"available_tools[{position}]"
            if not isinstance(name, str) or name not in TOOL_MAP:
                raise ConfigError(
                    f"unknown tool {name!r}",
                    key=key,
                    hint=f"use one of: {', '.join(TOOL_MAP)}",
                )
            if read_only and name not in READ_ONLY_NAMES:
                raise ConfigError(
                    f"{name} changes files, and this step is read-only",
                    key=key,
                    hint=f"a prompt step may use {', '.join(sorted(READ_ONLY_NAMES))}; "
                    "use an agent step to change files",
                )
            sources.append(name)
            allowed.extend(TOOL_MAP[name])
        return cls(tuple(dict.fromkeys(allowed)), tuple(dict.fromkeys(sources)))

    @classmethod
    def for_prompt(cls, names: Sequence[str] | None = None) -> ToolSet:
        """The read-only tool set of a ``prompt`` step (default: ``ReadFile`` and ``Search``)."""
        return cls.from_available(DEFAULT_PROMPT_TOOLS if names is None else names, read_only=True)

    @property
    def disallowed(self) -> tuple[str, ...]:
        """Every other known Claude Code tool, and all MCP tools."""
        given = set(self.allowed)
        return (*(name for name in KNOWN_TOOLS if name not in given), MCP_TOOLS)

    @property
    def read_only(self) -> bool:
        """True when no tool in the set edits files or runs commands."""
        return set(self.allowed) <= READ_TOOLS

    def __contains__(self, tool_name: object) -> bool:
        return tool_name in self.allowed


__all__ = [
    "DEFAULT_PROMPT_TOOLS",
    "EDIT_TOOLS",
    "KNOWN_TOOLS",
    "MCP_TOOLS",
    "READ_ONLY_NAMES",
    "READ_TOOLS",
    "TOOL_MAP",
    "ToolSet",
]
