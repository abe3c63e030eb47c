"""The PreToolUse hook: the policy layer that decides every tool call an agent step makes.

:class:`ToolPolicy` decides one call from the step's policy; :func:`make_pre_tool_use_hook`
wraps it as a claude-agent-sdk PreToolUse callback and :func:`make_hook_matchers` builds the
SDK's ``hooks`` option. Claude Code runs the callback before every tool call, in subagents too.

Rules (``rule`` ids; the first failure decides)
  ``tool.invalid_input``  the call is malformed: no tool name, input not an object, a required
                          field missing or of the wrong type.
  ``tool.not_available``  the tool is not in the step's :class:`~bcce.policy.tools.ToolSet`.
  ``tool.unsupported``    the tool is in the set but bcce has no rule for it.
  ``path.home``           a path or pattern starting with ``~``: Claude Code expands it to the
                          home directory (checked: ``Grep`` ``path: "~"`` searches ``$HOME``),
                          while a path check would see a directory named ``~``.
  ``path.glob_escape``    a ``Glob`` pattern or ``Grep`` ``glob`` with a ``..`` component.
  ``path.*``              :class:`~bcce.policy.paths.PathScope` on ``file_path`` (``Read``
                          reads; ``Edit``, ``MultiEdit``, ``Write`` write), ``notebook_path``
                          (``NotebookEdit`` writes) and on the directory a search starts in:
                          ``Grep``/``Glob`` ``path`` (default: the workspace) joined with the
                          literal leading directories of a ``Glob`` pattern. A search root must
                          itself match ``allowed_paths`` (write ``src/**`` and search in ``src``):
                          search results cannot be filtered, so searching a wider directory
                          would reveal files outside the scope.
  ``bash.background``     ``run_in_background``: the output tools are never offered and a
                          detached command would outlive its decision.
  ``bash.sandbox_override`` ``dangerouslyDisableSandbox``.
  ``cmd.no_allowlist``    ``Bash`` without a ``cmd_allowlist``. Fail closed: an agent's commands
                          are allowed only by an explicit allowlist (an empty list allows none).
  ``cmd.*``               :class:`~bcce.policy.commands.CommandAllowlist` on ``command``.
  ``budget.max_files``    the call would take the distinct files read or changed (``Read``,
                          ``Edit``, ``MultiEdit``, ``Write``, ``NotebookEdit``; counted by
                          resolved path) past ``max_files``. Searches are not counted: which
                          files they touch is unknown before they run.
  ``budget.max_edits``    the call would take the edits past ``max_edits``: ``Edit``, ``Write``
                          and ``NotebookEdit`` count 1, ``MultiEdit`` one per edit in it (it is
                          that many edits in one call). ``max_edits: 0`` makes the step read-only.
  ``hook.error``          anything unexpected while deciding, or a decision that cannot be
                          logged (``on_decision`` raised): deny. In the second case the call's
                          budget stays spent, which only errs on the strict side.
An allowed call is reported with its path or command rule (``path.allowed``,
``cmd.allowlisted``) and consumes its budget atomically (:class:`~bcce.policy.budget.Budget`),
even if the tool then fails; a denied call consumes nothing.

Every decision is appended to the decision log (:attr:`ToolPolicy.decisions`, and the
``on_decision`` callback) as a JSON-ready dict: ``time``, ``layer`` (``"hook"``), ``tool``,
``tool_use_id``, ``agent_id`` (subagents), ``input`` (a summary: paths, patterns and commands,
redacted and truncated; file contents only as sizes), ``allowed``, ``rule``, ``reason`` and
``counters`` (budget usage after the decision).

Failing closed: Claude Code runs a tool when a hook callback raises, unless the matcher says
``on_failure="block"``. :meth:`ToolPolicy.decide` never raises, the callback never raises, and
:func:`make_hook_matchers` sets ``on_failure="block"`` as a second net.

Paths in tool input are decided relative to the workspace, so Claude Code must run with the
workspace as its ``cwd`` (it resolves relative paths against its cwd).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from bcce.core.clock import Clock, SystemClock
from bcce.policy.budget import Budget
from bcce.policy.commands import CommandAllowlist
from bcce.policy.decision import Decision
from bcce.policy.paths import PathScope
from bcce.policy.tools import ToolSet

if TYPE_CHECKING:
    from claude_agent_sdk import HookMatcher
    from claude_agent_sdk.types import HookCallback, HookEvent

    from bcce.settings.model import StepPolicySettings

LAYER: Final = "hook"
MAX_LOGGED_CHARS: Final = 1000

DecisionSink = Callable[[dict[str, Any]], None]
"""Receives every decision record, e.g. to append it to ``decisions.jsonl``."""


class PathChecker(Protocol):
    """What the hook needs from a path scope (:class:`~bcce.policy.paths.PathScope`)."""

    def check(self, path: str, *, for_write: bool) -> Decision: ...


class CommandChecker(Protocol):
    """What the hook needs from a command allowlist (:class:`CommandAllowlist`)."""

    def check(self, command: str) -> Decision: ...


class _InvalidInput(Exception):
    """A malformed tool call; becomes a ``tool.invalid_input`` deny."""


_MAGIC: Final = frozenset("*?[]{}()!\\")
_SIZED_KEYS: Final = ("content", "old_string", "new_string", "new_source")
_SHOWN_KEYS: Final = (
    "file_path",
    "notebook_path",
    "path",
    "pattern",
    "glob",
    "command",
    "output_mode",
    "replace_all",
    "run_in_background",
    "dangerouslyDisableSandbox",
)


def _optional_text(tool_input: Mapping[str, Any], key: str) -> str | None:
    value = tool_input.get(key)
    if value is not None and not isinstance(value, str):
        raise _InvalidInput(f"`{key}` is a {type(value).__name__}, not text")
    return value


def _text(tool_input: Mapping[str, Any], key: str) -> str:
    value = _optional_text(tool_input, key)
    if value is None:
        raise _InvalidInput(f"`{key}` is missing")
    return value


def _home_problem(text: str) -> Decision | None:
    if text.startswith("~"):
        return Decision.deny(
            "path.home",
            f"{text!r} starts with `~`, which Claude Code expands to the home directory",
        )
    return None


def _pattern_problem(pattern: str) -> Decision | None:
    problem = _home_problem(pattern)
    if problem is not None:
        return problem
    if ".." in pattern.split("/"):
        return Decision.deny(
            "path.glob_escape", f"the pattern {pattern!r} has a `..` component; it may escape"
        )
    return None


def _literal_prefix(pattern: str) -> str:
    """The leading directories of a glob pattern that contain no glob syntax."""
    parts = pattern.split("/")
    fixed: list[str] = []
    for part in parts:
        if _MAGIC.intersection(part):
            break
        fixed.append(part)
    prefix = "/".join(fixed)
    return "/" if not prefix and pattern.startswith("/") else prefix


def _clip(text: str) -> str:
    if len(text) <= MAX_LOGGED_CHARS:
        return text
    return f"{text[:MAX_LOGGED_CHARS]}...(+{len(text) - MAX_LOGGED_CHARS} chars)"


class ToolPolicy:
    """Decides the tool calls of one agent step: tool set, path scope, commands and budgets.

    Thread-safe: budgets are checked and consumed atomically, so concurrent calls (parallel tool
    use, subagents) cannot overshoot them together.
    """

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        tools: ToolSet,
        *,
        allowed_paths: Sequence[str] = ("**",),
        cmd_allowlist: Sequence[str] | None = None,
        max_files: int = 50,
        max_edits: int = 20,
        on_decision: DecisionSink | None = None,
        redact: Callable[[str], str] | None = None,
        clock: Clock | None = None,
        path_scope: PathChecker | None = None,
        commands: CommandChecker | None = None,
    ) -> None:
        scope = PathScope(workspace, allowed_paths)
        self.workspace = scope.workspace
        self.tools = tools
        self.budget = Budget(max_files, max_edits)
        self._paths: PathChecker = path_scope if path_scope is not None else scope
        self._commands: CommandChecker | None = commands
        if commands is None and cmd_allowlist is not None:
            self._commands = CommandAllowlist(cmd_allowlist)
        self._on_decision = on_decision
        self._redact = redact
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._log: list[dict[str, Any]] = []
        self._log_lock = threading.Lock()
        self._search_hint = ", ".join(
            sorted({_literal_prefix(item) or "." for item in allowed_paths})
        )
        self._checkers: dict[str, Callable[[Mapping[str, Any]], Decision]] = {
            "Read": self._check_read,
            "Edit": self._check_edit,
            "MultiEdit": self._check_multi_edit,
            "Write": self._check_edit,
            "NotebookEdit": self._check_notebook_edit,
            "Grep": self._check_grep,
            "Glob": self._check_glob,
            "Bash": self._check_bash,
        }

    @classmethod
    def from_step(
        cls,
        policy: StepPolicySettings,
        workspace: str | os.PathLike[str],
        tools: ToolSet,
        *,
        on_decision: DecisionSink | None = None,
        redact: Callable[[str], str] | None = None,
        clock: Clock | None = None,
    ) -> ToolPolicy:
        """The policy of a step from its effective (merged) policy settings."""
        return cls(
            workspace,
            tools,
            allowed_paths=policy.allowed_paths,
            cmd_allowlist=policy.cmd_allowlist,
            max_files=policy.max_files,
            max_edits=policy.max_edits,
            on_decision=on_decision,
            redact=redact,
            clock=clock,
        )

    @property
    def decisions(self) -> list[dict[str, Any]]:
        """A copy of the decision log so far."""
        with self._log_lock:
            return list(self._log)

    def decide(
        self,
        tool_name: object,
        tool_input: object,
        *,
        tool_use_id: str | None = None,
        agent_id: str | None = None,
    ) -> Decision:
        """Allow or deny one tool call and log the decision. Never raises: errors deny."""
        try:
            decision = self._decide(tool_name, tool_input)
        except _InvalidInput as exc:
            decision = Decision.deny("tool.invalid_input", f"malformed {tool_name} call: {exc}")
        except Exception as exc:  # noqa: BLE001 - fail closed: a checker bug must deny
            decision = Decision.deny(
                "hook.error", f"the call could not be checked ({type(exc).__name__}); denied"
            )
        decision = replace(decision, layer=LAYER)
        try:
            return self._record(decision, tool_name, tool_input, tool_use_id, agent_id)
        except Exception as exc:  # noqa: BLE001 - an unlogged call must not run
            denied = Decision.deny(
                "hook.error",
                f"the decision could not be logged ({type(exc).__name__}); denied",
                layer=LAYER,
            )
            with self._log_lock:
                self._log.append({"layer": LAYER, "allowed": False, "rule": denied.rule})
            return denied

    # deciding ---------------------------------------------------------------------------------

    def _decide(self, tool_name: object, tool_input: object) -> Decision:
        if not isinstance(tool_name, str) or not tool_name:
            raise _InvalidInput("the tool name is not text")
        if tool_name not in self.tools:
            offered = ", ".join(self.tools.allowed) or "none"
            return Decision.deny(
                "tool.not_available",
                f"{tool_name} is not available to this step (available: {offered})",
            )
        if not isinstance(tool_input, Mapping):
            raise _InvalidInput("the tool input is not an object")
        checker = self._checkers.get(tool_name)
        if checker is None:
            return Decision.deny("tool.unsupported", f"bcce has no policy for {tool_name}")
        return checker(tool_input)

    def _check_path(self, raw: str, *, for_write: bool) -> Decision:
        return _home_problem(raw) or self._paths.check(raw, for_write=for_write)

    def _file_key(self, raw: str) -> str:
        return os.path.realpath(os.path.join(self.workspace, raw))  # noqa: PTH118

    def _file_call(self, raw: str, *, for_write: bool, edits: int) -> Decision:
        decision = self._check_path(raw, for_write=for_write)
        if not decision.allowed:
            return decision
        spent = self.budget.reserve(files=[self._file_key(raw)], edits=edits)
        return decision if spent.allowed else spent

    def _check_read(self, tool_input: Mapping[str, Any]) -> Decision:
        return self._file_call(_text(tool_input, "file_path"), for_write=False, edits=0)

    def _check_edit(self, tool_input: Mapping[str, Any]) -> Decision:
        return self._file_call(_text(tool_input, "file_path"), for_write=True, edits=1)

    def _check_notebook_edit(self, tool_input: Mapping[str, Any]) -> Decision:
        return self._file_call(_text(tool_input, "notebook_path"), for_write=True, edits=1)

    def _check_multi_edit(self, tool_input: Mapping[str, Any]) -> Decision:
        path = _text(tool_input, "file_path")
        edits = tool_input.get("edits")
        if not isinstance(edits, list) or not edits:
            raise _InvalidInput("`edits` is not a non-empty list")
        return self._file_call(path, for_write=True, edits=len(edits))

    def _search_root(self, decision: Decision) -> Decision:
        if decision.allowed or decision.rule != "path.not_allowed":
            return decision
        return Decision.deny(
            decision.rule,
            f"{decision.reason}; search inside an allowed directory ({self._search_hint})",
        )

    def _check_grep(self, tool_input: Mapping[str, Any]) -> Decision:
        path = _optional_text(tool_input, "path")
        file_filter = _optional_text(tool_input, "glob")
        if file_filter is not None:
            problem = _pattern_problem(file_filter)
            if problem is not None:
                return problem
        root = self.workspace if path is None else path
        return self._search_root(self._check_path(root, for_write=False))

    def _check_glob(self, tool_input: Mapping[str, Any]) -> Decision:
        pattern = _text(tool_input, "pattern")
        path = _optional_text(tool_input, "path")
        problem = _pattern_problem(pattern)
        if problem is not None:
            return problem
        if path is not None and (home := _home_problem(path)) is not None:
            return home
        base = self.workspace if path is None else os.path.join(self.workspace, path)  # noqa: PTH118
        root = os.path.join(base, _literal_prefix(pattern))  # noqa: PTH118
        return self._search_root(self._check_path(root, for_write=False))

    def _check_bash(self, tool_input: Mapping[str, Any]) -> Decision:
        command = _text(tool_input, "command")
        if tool_input.get("run_in_background"):
            return Decision.deny("bash.background", "background commands are not allowed")
        if tool_input.get("dangerouslyDisableSandbox"):
            return Decision.deny(
                "bash.sandbox_override", "commands may not ask to leave the sandbox"
            )
        if self._commands is None:
            return Decision.deny(
                "cmd.no_allowlist", "this step has no command allowlist, so no command may run"
            )
        return self._commands.check(command)

    # logging ----------------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        return _clip(self._redact(text) if self._redact is not None else text)

    def _shown(self, value: object) -> object:
        if isinstance(value, str):
            return self._clean(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        return f"<{type(value).__name__}>"

    def _summary(self, tool_input: object) -> dict[str, Any]:
        if not isinstance(tool_input, Mapping):
            return {"type": type(tool_input).__name__}
        summary: dict[str, Any] = {}
        for key in _SHOWN_KEYS:
            if key in tool_input:
                summary[key] = self._shown(tool_input[key])
        for key in _SIZED_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str):
                summary[f"{key}_chars"] = len(value)
        edits = tool_input.get("edits")
        if isinstance(edits, list):
            summary["edits"] = len(edits)
        other = sorted(
            self._clean(str(key))
            for key in tool_input
            if key not in _SHOWN_KEYS and key not in _SIZED_KEYS and key != "edits"
        )
        if other:
            summary["other_keys"] = other
        return summary

    def _record(
        self,
        decision: Decision,
        tool_name: object,
        tool_input: object,
        tool_use_id: str | None,
        agent_id: str | None,
    ) -> Decision:
        reason = self._clean(decision.reason)
        record: dict[str, Any] = {
            "time": self._clock.now().isoformat(),
            "layer": LAYER,
            "tool": self._clean(tool_name) if isinstance(tool_name, str) else repr(tool_name),
            "tool_use_id": tool_use_id,
            "input": self._summary(tool_input),
            "allowed": decision.allowed,
            "rule": decision.rule,
            "reason": reason,
            "counters": self.budget.usage().to_dict(),
        }
        if agent_id is not None:
            record["agent_id"] = agent_id
        with self._log_lock:
            self._log.append(record)
        if self._on_decision is not None:
            self._on_decision(record)
        return replace(decision, reason=reason)


# the claude-agent-sdk callback ------------------------------------------------------------------


def hook_output(decision: Decision) -> dict[str, Any]:
    """The PreToolUse hook answer for ``decision``."""
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "allow" if decision.allowed else "deny",
            "permissionDecisionReason": f"bcce policy [{decision.rule}]: {decision.reason}",
        }
    }


_HOOK_FAILED: Final = Decision.deny("hook.error", "the policy hook failed; denied", layer=LAYER)


def make_pre_tool_use_hook(policy: ToolPolicy) -> HookCallback:
    """A claude-agent-sdk PreToolUse callback that asks ``policy``; it never raises."""

    async def bcce_pre_tool_use(
        input_data: Any, tool_use_id: str | None, context: Any
    ) -> dict[str, Any]:
        try:
            fields: Mapping[str, Any] = input_data if isinstance(input_data, Mapping) else {}
            call_id = tool_use_id if tool_use_id is not None else fields.get("tool_use_id")
            agent_id = fields.get("agent_id")
            decision = policy.decide(
                fields.get("tool_name"),
                fields.get("tool_input"),
                tool_use_id=call_id if isinstance(call_id, str) else None,
                agent_id=agent_id if isinstance(agent_id, str) else None,
            )
            return hook_output(decision)
        except Exception:  # noqa: BLE001 - the callback must answer, and answer deny
            return hook_output(_HOOK_FAILED)

    return cast("HookCallback", bcce_pre_tool_use)


def make_hook_matchers(
    policy: ToolPolicy, *, timeout: float | None = None
) -> dict[HookEvent, list[HookMatcher]]:
    """The SDK ``hooks`` option: the policy hook on every tool, blocking when it fails."""
    from claude_agent_sdk import HookMatcher

    matcher = HookMatcher(
        matcher=None,
        hooks=[make_pre_tool_use_hook(policy)],
        timeout=timeout,
        on_failure="block",
    )
    return {"PreToolUse": [matcher]}


__all__ = [
    "LAYER",
    "MAX_LOGGED_CHARS",
    "CommandChecker",
    "DecisionSink",
    "PathChecker",
    "ToolPolicy",
    "hook_output",
    "make_hook_matchers",
    "make_pre_tool_use_hook",
]
