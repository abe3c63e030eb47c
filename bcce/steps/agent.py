"""``agent`` and ``prompt`` steps: the real Claude Code, under the step's policy, in isolation.

Layers, each stopping on its own what it covers (docs/security-model.md):
1. the tool set (only the tools ``available_tools`` maps to are offered),
2. the PreToolUse hook (paths, commands, budgets; failing closed),
3. isolation (a throwaway copy of the workspace; a sandbox for subprocesses where available),
4. the post-run audit of the change set (a violation fails the step and discards the changes),
5. the timeout (the whole process tree is killed).
Changes never reach the user's tree here: they are kept as ``changes.patch`` for ``apply_diff``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bcce.steps.base import StepContext, StepResult

if TYPE_CHECKING:
    from bcce.agent.session import AgentResult
    from bcce.events.cost import CostRecord
    from bcce.policy.audit import OutsideWatch
    from bcce.policy.hook import ToolPolicy
    from bcce.policy.isolation import IsolatedWorkspace
    from bcce.policy.spend import BudgetLimit
    from bcce.policy.tools import ToolSet
    from bcce.settings.model import StepPolicySettings

DEFAULT_AGENT_TOOLS = ("ReadFile", "Search", "Diff", "Apply", "WriteFile")
DEFAULT_FILE_SIZE_LIMIT_KB = 256
#: What Claude Code's sandbox creates in a repository's git dir (``info/``) while it runs Bash.
SANDBOX_MARKER = ".claude-sandbox-noreplace"


def effective_policy(context: StepContext) -> StepPolicySettings:
    """The step's policy, keys it leaves out taken from the configured default policy."""
    from bcce.settings.model import StepPolicySettings

    default = context.policy.default_step_policy()
    declared = dict(context.step.raw.get("policy") or {})
    declared.pop("preset", None)  # already expanded by the loader
    merged = {**default.model_dump(), **{k: v for k, v in declared.items() if v is not None}}
    if merged.get("cmd_allowlist") is None and context.policy.settings.cmd_allowlist is not None:
        merged["cmd_allowlist"] = list(context.policy.settings.cmd_allowlist)
    return StepPolicySettings.model_validate(merged)


def build_prompt(context: StepContext, policy: StepPolicySettings, tools: list[str]) -> str:
    """The step's prompt, the contents of its input files, and the policy it runs under."""
    raw = context.step.raw
    text = raw.get("prompt")
    if text is None and raw.get("prompt_file"):
        path = context.workflow.directory / str(raw["prompt_file"])
        text = path.read_text(encoding="utf-8")
    parts = [str(context.render(text or "")).strip()]
    inputs = raw.get("inputs") or {}
    limit = int(inputs.get("file_size_limit_kb", DEFAULT_FILE_SIZE_LIMIT_KB)) * 1024
    for name, target in input_files(context.workspace, inputs.get("paths") or []):
        size = target.stat().st_size
        if size > limit:
            parts.append(f"(input {name}: {size} bytes, over {limit // 1024} KB: skipped)")
            continue
        parts.append(f"--- {name} ---\n{target.read_bytes().decode('utf-8', 'replace')}")
    return "\n\n".join(p for p in parts if p)


MAX_INPUT_FILES = 200


def input_files(workspace: Path, patterns: list[str]) -> list[tuple[str, Path]]:
    """Files matching ``inputs.paths`` globs (``**`` semantics), inside the workspace, in order."""
    from wcmatch import glob

    root = workspace.resolve()
    found: dict[str, Path] = {}
    for pattern in patterns:
        names = glob.glob(str(pattern), flags=glob.GLOBSTAR | glob.DOTGLOB, root_dir=str(root))
        for name in sorted(names):
            target = (root / name).resolve()
            # Resolved inside the workspace: a symlink cannot smuggle an outside file in.
            if target.is_relative_to(root) and target.is_file() and name not in found:
                found[name] = target
            if len(found) >= MAX_INPUT_FILES:
                return list(found.items())
    return list(found.items())


def policy_statement(policy: StepPolicySettings, tools: list[str]) -> str:
    commands = (
        "none" if not policy.cmd_allowlist else ", ".join(f"`{c}`" for c in policy.cmd_allowlist)
    )
    return (
        "You are running as a bcce workflow step under an enforced policy. "
        f"Tools available: {', '.join(tools) or 'none'}. "
        f"You may read and change only files matching {', '.join(policy.allowed_paths)}; "
        f"at most {policy.max_files} distinct files and {policy.max_edits} edits. "
        f"Shell commands allowed: {commands} (no redirections, substitutions or chaining tricks). "
        "Calls outside this policy are denied; do not try to work around a denial."
    )


LAYERS = frozenset({"tools", "hook", "sandbox", "audit", "timeout"})


class AgentExecutor:
    """Runs one agent (or, with ``read_only``, prompt) step.

    ``disabled_layers`` exists for the test suite, which proves each layer stops what it covers
    with the others off; it is not reachable from configuration.
    """

    read_only = False

    def __init__(
        self, runtime_factory: Any = None, *, disabled_layers: frozenset[str] = frozenset()
    ) -> None:
        unknown = disabled_layers - LAYERS
        if unknown:
            raise ValueError(f"unknown policy layers: {sorted(unknown)}")
        self._runtime_factory = runtime_factory
        self.disabled = disabled_layers

    def execute(self, context: StepContext) -> StepResult:
        from bcce.policy.audit import OutsideWatch
        from bcce.policy.isolation import Workspace, watch_candidates
        from bcce.policy.sandbox import probe_sandbox, require_sandbox
        from bcce.policy.tools import ToolSet

        step, raw, artifacts = context.step, context.step.raw, context.artifacts
        budget = context.budget
        refused = budget.start() if budget is not None else None
        if budget is not None and refused is not None:
            # Nothing left of a budget: a policy denial before Claude Code starts (not retried).
            return StepResult(
                "failed",
                denied=True,
                error=budget.refusal(refused),
                metrics={"budget": refused.to_dict()},
            )
        policy = effective_policy(context)
        if self.read_only:
            tools = ToolSet.for_prompt(raw.get("available_tools"))
            policy = policy.model_copy(update={"max_edits": 0})
        else:
            tools = ToolSet.from_available(raw.get("available_tools") or DEFAULT_AGENT_TOOLS)
        if "tools" in self.disabled:
            tools = ToolSet.from_available(
                ["ReadFile", "Search", "Diff", "Apply", "WriteFile", "Bash"]
            )
        tier = probe_sandbox()
        sandboxed = tier.claude_code_ready and "sandbox" not in self.disabled
        context.publish(
            "policy.isolation",
            {
                "step": step.id,
                "strict": context.policy.strict,
                "sandboxed": sandboxed,
                **tier.to_dict(),
            },
        )
        require_sandbox(tier, strict=context.policy.strict, claude_code=True)
        model = str(raw.get("model") or context.workflow.model or context.settings.agent.model)
        run_dir = artifacts.parent
        workspace = Workspace().isolate(context.workspace, run_dir, step.id)
        # Claude Code's Bash sandbox marks the repository's shared git dir; that marker is its
        # doing, not the agent's: left out of the outside watch, and removed if it is new.
        marker = workspace.common_dir / "info" / SANDBOX_MARKER if workspace.common_dir else None
        marker_existed = marker is not None and marker.exists()
        try:
            watch = OutsideWatch.start(
                watch_candidates(workspace), exclude=[run_dir, *([marker] if marker else [])]
            )
            # The run directory changes under bcce's own writes, so the watch leaves it out;
            # what apply_diff will apply (earlier steps' change sets) is fingerprinted instead.
            earlier = _change_set_digests(run_dir, step.id)
            sandbox = _sandbox_settings(workspace.path, policy.allowed_paths) if sandboxed else None
            (artifacts / "policy.json").write_text(
                json.dumps(
                    {
                        "policy": policy.model_dump(),
                        "tools": list(tools.allowed),
                        "disallowed_tools": list(tools.disallowed),
                        "isolation": {
                            "workspace": workspace.mode,
                            "sandbox": "claude-code-bubblewrap" if sandboxed else "none",
                            "tier": tier.to_dict(),
                            "sandbox_settings": sandbox,
                        },
                        "strict": context.policy.strict,
                        "model": model,
                        "provider": context.settings.agent.provider,
                    },
                    indent=2,
                )
                + "\n"
            )
            result, tool_policy, charge = self._session(
                context, policy, tools, workspace.path, model, sandbox
            )
            tampered = sorted(
                name
                for name, digest in _change_set_digests(run_dir, step.id).items()
                if earlier.get(name) != digest
            ) + sorted(set(earlier) - set(_change_set_digests(run_dir, step.id)))
            return self._conclude(
                context, policy, workspace, watch, tool_policy, result, tampered, charge
            )
        finally:
            workspace.cleanup()
            if marker is not None and not marker_existed and marker.is_dir():
                shutil.rmtree(marker, ignore_errors=True)

    def _session(
        self,
        context: StepContext,
        policy: StepPolicySettings,
        tools: ToolSet,
        workspace: Path,
        model: str,
        sandbox: dict[str, Any] | None,
    ) -> tuple[AgentResult, ToolPolicy, _Charge]:
        from bcce.agent.endpoint import open_endpoint
        from bcce.agent.runtime import ClaudeCodeRuntime
        from bcce.agent.session import AgentRequest
        from bcce.policy.hook import ToolPolicy, make_hook_matchers

        step, artifacts = context.step, context.artifacts
        lock = threading.Lock()
        decisions = (artifacts / "decisions.jsonl").open("a", encoding="utf-8")
        transcript = (artifacts / "transcript.jsonl").open("a", encoding="utf-8")

        def on_decision(record: dict[str, Any]) -> None:
            with lock:
                decisions.write(json.dumps(record, default=str) + "\n")
                decisions.flush()
            context.publish(
                "policy.decision",
                {
                    "step": step.id,
                    "kind": "tool",
                    "tool": record.get("tool"),
                    "tool_use_id": record.get("tool_use_id"),
                    "input": record.get("input"),
                    "allowed": bool(record.get("allowed")),
                    "rule": record.get("rule"),
                    "reason": record.get("reason"),
                    "layer": record.get("layer"),
                },
            )
            if not record.get("allowed"):
                context.publish(
                    "policy.denied",
                    {
                        "step": step.id,
                        "tool": record.get("tool"),
                        "rule": record.get("rule"),
                        "reason": record.get("reason"),
                        "layer": record.get("layer"),
                    },
                )

        offered = _ToolSetWitness(on_decision)

        def on_message(record: dict[str, Any]) -> None:
            clean = context.redactor.redact_data(record)
            with lock:
                transcript.write(json.dumps(clean, default=str) + "\n")
                transcript.flush()
            offered.observe(record)
            for call_id, is_error in _tool_results(record):
                context.publish(
                    "agent.tool_result",
                    {
                        "step": step.id,
                        "tool_use_id": call_id,
                        "tool": offered.calls.get(call_id, ("?", None))[0],
                        "is_error": is_error,
                    },
                )

        endpoint = open_endpoint(
            context.settings.agent,
            context.settings.aws,
            model=model,
            step_id=step.id,
            placeholders={"workspace": str(workspace)},
            otel=context.settings.events.otel,
            run_id=context.run_id,
            workflow=context.workflow.name,
        )
        for secret in endpoint.secrets:
            context.redactor.add_secret(secret)
        try:
            tool_policy = ToolPolicy.from_step(
                policy, workspace, tools, on_decision=on_decision, redact=context.redactor.redact
            )
            runtime = (
                self._runtime_factory(context.settings.agent.cli_path)
                if self._runtime_factory
                else context.agent_runtime or ClaudeCodeRuntime(context.settings.agent.cli_path)
            )
            # A private HOME, gone after the session: Claude Code keeps its own unredacted
            # session log there; the redacted transcript is the record.
            home_dir = tempfile.TemporaryDirectory(prefix="bcce-agent-home-")
            home = Path(home_dir.name)
            request = AgentRequest(
                prompt=build_prompt(context, policy, list(tools.allowed)),
                system_append=policy_statement(policy, list(tools.allowed)),
                workspace=workspace,
                home=home,
                cli=None,
                env=endpoint.env,
                tools=list(tools.allowed),
                disallowed_tools=list(tools.disallowed),
                hooks=None if "hook" in self.disabled else make_hook_matchers(tool_policy),
                cookie=context.cookie,
                model=model,
                max_turns=context.settings.agent.max_turns,
                max_budget_usd=context.budget.allowance_usd if context.budget else None,
                deadline=None if "timeout" in self.disabled else _deadline(context, policy),
                should_stop=context.should_stop,
                on_message=on_message,
                sandbox=_deny_reading(sandbox, endpoint.secret_dir),
                settings=endpoint.settings,
            )
            result = runtime.run(request, artifacts)
        finally:
            endpoint.close()
            decisions.close()
            transcript.close()
            if "home_dir" in locals():
                home_dir.cleanup()
        _write_transcript_markdown(artifacts)
        return result, tool_policy, _write_usage(artifacts, result, model, context)

    def _conclude(
        self,
        context: StepContext,
        policy: StepPolicySettings,
        workspace: IsolatedWorkspace,
        watch: OutsideWatch,
        tool_policy: ToolPolicy,
        result: AgentResult,
        tampered: list[str],
        charge: _Charge | None = None,
    ) -> StepResult:
        from bcce.policy.audit import AuditPolicy, AuditViolation, audit_changes

        artifacts = context.artifacts
        audit = audit_changes(
            workspace,
            AuditPolicy.from_mapping(policy),
            tool_policy.budget.usage().edits,
            watch=watch,
        )
        if tampered:
            extra = tuple(
                AuditViolation("audit.outside", name, "an earlier step's change set changed")
                for name in tampered
            )
            audit = dataclasses.replace(audit, ok=False, violations=(*audit.violations, *extra))
        patch = context.redactor.redact_bytes(audit.patch)
        (artifacts / "audit.json").write_text(json.dumps(audit.to_dict(), indent=2) + "\n")
        outputs = {
            "result": result.text,
            "changed_files": len(audit.files),
            "turns": result.num_turns,
            "cost_usd": result.total_cost_usd,
        }
        metrics = {"turns": result.num_turns, "cost_usd": result.total_cost_usd}
        if result.timed_out:
            return StepResult(
                "timed_out",
                outputs,
                metrics=metrics,
                error="the agent exceeded "
                "its timeout; its processes were killed and its changes discarded",
            )
        if result.cancelled:
            return StepResult("cancelled", outputs, error="cancelled", metrics=metrics)
        if charge is not None and charge.exceeded is not None and context.budget is not None:
            # Stopped (or gone past its allowance) for a budget: a policy failure, not retried.
            (artifacts / "rejected.patch").write_bytes(patch)
            return StepResult(
                "failed",
                outputs,
                denied=True,
                metrics={**metrics, "budget": charge.exceeded.to_dict()},
                error=context.budget.exceeded(charge.exceeded, charge.record),
            )
        if not audit.ok and "audit" not in self.disabled:
            (artifacts / "rejected.patch").write_bytes(patch)
            for violation in audit.violations:
                context.publish(
                    "policy.denied",
                    {
                        "step": context.step.id,
                        "layer": "audit",
                        "rule": violation.rule,
                        "reason": violation.reason,
                    },
                )
            return StepResult(
                "failed",
                outputs,
                denied=True,
                metrics=metrics,
                error="change set rejected by the audit, changes discarded: "
                + "; ".join(audit.reasons),
            )
        if result.error or result.is_error:
            return StepResult(
                "failed",
                outputs,
                metrics=metrics,
                error=result.error or f"the agent ended with {result.subtype}: {result.text[:200]}",
            )
        if self.read_only and audit.files:
            return StepResult(
                "failed",
                outputs,
                denied=True,
                metrics=metrics,
                error="a prompt step changed files; the changes were discarded",
            )
        (artifacts / "changes.patch").write_bytes(patch)
        return StepResult("succeeded", outputs, metrics=metrics)


class _ToolSetWitness:
    """Logs the calls the tool-set layer stopped: a tool that is not offered never reaches the
    hook (Claude Code answers "No such tool available"), so it is read off the transcript."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.calls: dict[str, tuple[str, Any]] = {}

    def observe(self, record: dict[str, Any]) -> None:
        content = record.get("content")
        if not isinstance(content, list):
            return
        for block in content:
            if not isinstance(block, dict):
                continue
            if "name" in block and "input" in block and "id" in block:
                self.calls[str(block["id"])] = (str(block["name"]), block["input"])
            elif block.get("is_error") and "No such tool available" in str(block.get("content")):
                name, tool_input = self.calls.get(str(block.get("tool_use_id")), ("?", {}))
                self.sink(
                    {
                        "time": record.get("time"),
                        "layer": "tools",
                        "tool": name,
                        "tool_use_id": block.get("tool_use_id"),
                        "input": tool_input,
                        "allowed": False,
                        "rule": "tool.not_offered",
                        "reason": f"{name} is not among the step's tools (available_tools)",
                    }
                )


def _tool_results(record: dict[str, Any]) -> list[tuple[str, bool]]:
    """The ``(tool_use_id, is_error)`` of each tool result a transcript message carries."""
    content = record.get("content")
    if record.get("kind") != "UserMessage" or not isinstance(content, list):
        return []
    return [
        (str(block["tool_use_id"]), bool(block.get("is_error")))
        for block in content
        if isinstance(block, dict) and block.get("tool_use_id")
    ]


def _change_set_digests(run_dir: Path, own_step: str) -> dict[str, str]:
    """sha256 of every other step's ``changes.patch`` in the run directory."""
    digests = {}
    for path in sorted(run_dir.glob("*/changes.patch")):
        if path.parent.name != own_step:
            digests[f"{path.parent.name}/changes.patch"] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    return digests


def _deny_reading(sandbox: dict[str, Any] | None, secret_dir: Path | None) -> dict[str, Any] | None:
    """The agent's sandboxed commands may not read the credentials Claude Code itself uses."""
    if sandbox is None or secret_dir is None:
        return sandbox
    filesystem = dict(sandbox.get("filesystem") or {})
    filesystem["denyRead"] = [*filesystem.get("denyRead", []), str(secret_dir)]
    return {**sandbox, "filesystem": filesystem}


def _sandbox_settings(workspace: Path, allowed_paths: list[str]) -> dict[str, Any]:
    """Claude Code's Bash sandbox: the copy is writable except what the policy puts out of
    reach (top-level entries no allowed path leads into); the audit checks the exact globs."""
    from bcce.policy.sandbox import claude_code_sandbox_settings, writable_paths

    writable = writable_paths(workspace, allowed_paths)
    root = Path(workspace).resolve()
    denied = [
        entry
        for entry in sorted(root.iterdir())
        if not any(w == entry or entry in w.parents or w in entry.parents for w in writable)
    ]
    return claude_code_sandbox_settings(deny_write=denied)


class PromptExecutor(AgentExecutor):
    """A read-only agent run whose text result is the step output."""

    read_only = True


def _deadline(context: StepContext, policy: StepPolicySettings) -> float | None:
    import time

    limit = time.monotonic() + policy.timeout_seconds
    return limit if context.deadline is None else min(limit, context.deadline)


@dataclasses.dataclass(frozen=True)
class _Charge:
    """An attempt's cost record and the budget it exceeded, if any."""

    record: CostRecord
    exceeded: BudgetLimit | None


def _write_usage(artifacts: Path, result: AgentResult, model: str, context: StepContext) -> _Charge:
    from bcce.events.cost import CostRecord

    usage = {
        "model": model,
        "provider": context.settings.agent.provider,
        "usage": result.usage,
        "model_usage": result.model_usage,
        "total_cost_usd": result.total_cost_usd,
        "num_turns": result.num_turns,
        "duration_ms": result.duration_ms,
        "subtype": result.subtype,
        "terminal_reason": result.terminal_reason,
    }
    (artifacts / "usage.json").write_text(json.dumps(usage, indent=2, default=str) + "\n")
    record = CostRecord.from_result(
        result,
        run_id=context.run_id,
        step=context.step.id,
        attempt=context.attempt,
        workflow=context.workflow.name,
        team=context.settings.core.team,
        project=context.settings.core.project,
        model=model,
        provider=context.settings.agent.provider,
    )
    if context.budget is None:  # no run bookkeeping (an executor driven on its own)
        context.publish("cost.recorded", record.event_payload())
        return _Charge(record, None)
    # The ledger and the run's journal are written before any event: enforcement and resume
    # never depend on event delivery.
    return _Charge(record, context.budget.charge(record))


def _write_transcript_markdown(artifacts: Path) -> None:
    lines = ["# Transcript", ""]
    source = artifacts / "transcript.jsonl"
    if source.is_file():
        for line in source.read_text(encoding="utf-8").splitlines():
            lines.extend(_markdown(json.loads(line)))
    (artifacts / "transcript.md").write_text("\n".join(lines) + "\n")


def _markdown(record: dict[str, Any]) -> list[str]:
    kind = record.get("kind")
    if kind == "ResultMessage":
        return [f"## Result ({record.get('subtype')})", "", str(record.get("result") or ""), ""]
    if kind not in ("AssistantMessage", "UserMessage"):
        return []
    out = []
    who = "Assistant" if kind == "AssistantMessage" else "Tool results"
    content = record.get("content")
    blocks = content if isinstance(content, list) else [{"text": content}]
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if "name" in block and "input" in block:
            out += [
                f"**{who} → {block['name']}**",
                "",
                "```json",
                json.dumps(block["input"], indent=2)[:4000],
                "```",
                "",
            ]
        elif "tool_use_id" in block:
            flag = " (error)" if block.get("is_error") else ""
            text = block.get("content")
            shown = text if isinstance(text, str) else json.dumps(text)[:4000]
            out += [f"**{who}{flag}**", "", "```", str(shown)[:4000], "```", ""]
        elif block.get("text"):
            out += [f"**{who}:** {block['text']}", ""]
    return out
