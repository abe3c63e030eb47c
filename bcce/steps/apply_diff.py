"""``apply_diff`` steps: earlier agent steps' changes, audited, approved, applied all-or-nothing.

With authorisation enabled, an approval counts only if its giver may approve (and, with
four-eyes, did not start the run); a refused approval leaves the step awaiting approval.
"""

from __future__ import annotations

import json
from pathlib import Path

from bcce.steps.approval import Approval, ApprovalRequest, Verdict
from bcce.steps.base import StepContext, StepResult


def gather_patches(context: StepContext) -> list[tuple[str, Path]]:
    """Change sets of the agent steps that succeeded before this one, in run order."""
    found = []
    run_dir = context.artifacts.parent
    for step in context.workflow.all_steps():
        if step.id == context.step.id:
            break
        patch = run_dir / step.id / "changes.patch"
        state = context.step_states.get(step.id, {})
        ready = step.type == "agent" and state.get("status") == "succeeded"
        if ready and patch.is_file() and patch.stat().st_size:
            found.append((step.id, patch))
    return found


class ApplyDiffExecutor:
    def execute(self, context: StepContext) -> StepResult:
        from bcce.policy.apply import apply_patches
        from bcce.policy.paths import PathScope
        from bcce.steps.agent import effective_policy

        patches = gather_patches(context)
        if not patches:
            return StepResult("succeeded", {"applied": 0, "files": []})
        combined = "".join(path.read_text(encoding="utf-8") for _, path in patches)
        (context.artifacts / "proposed.patch").write_text(combined)
        files = _files(combined)
        approval, refusal = self._authorised(context, self._approval(context, combined, files))
        (context.artifacts / "approval.json").write_text(
            json.dumps(
                {
                    "verdict": approval.verdict,
                    "by": approval.by,
                    "via": approval.via,
                    "reason": approval.reason,
                    "steps": [s for s, _ in patches],
                },
                indent=2,
            )
            + "\n"
        )
        context.publish(
            f"approval.{approval.verdict}",
            {"step": context.step.id, "by": approval.by, "via": approval.via, "files": files},
        )
        if approval.verdict is Verdict.PENDING:
            return StepResult(
                "awaiting_approval",
                {"files": files},
                error=(f"{refusal}; " if refusal else "")
                + f"waiting for approval: `bcce workflow resume {context.run_id} --approve` "
                "(or --reject)",
            )
        if approval.verdict is Verdict.REJECTED:
            (context.artifacts / "rejected.patch").write_text(combined)
            return StepResult("failed", {"files": files}, error=f"rejected by {approval.by}")
        policy = effective_policy(context)
        scope = PathScope(context.workspace, policy.allowed_paths)
        result = apply_patches(context.workspace, [path for _, path in patches], scope)
        (context.artifacts / "applied.patch").write_text(combined)
        return StepResult(
            "succeeded",
            {"applied": len(patches), "files": files, "approved_by": approval.by},
            metrics={"files": len(files), "summary": getattr(result, "summary", None)},
        )

    def _approval(self, context: StepContext, diff: str, files: list[str]) -> Approval:
        if context.step.raw.get("approve") is True:
            return Approval(Verdict.APPROVED, "workflow", "workflow", "approve: true")
        if context.approval is not None:
            return context.approval
        starter = context.started_by
        request = ApprovalRequest(
            context.run_id,
            context.step.id,
            context.workflow.name,
            diff,
            files,
            requested_by=starter.user if starter is not None else None,
        )
        for gate in context.approval_gates:
            answer = gate.request(request)
            if answer.verdict is not Verdict.PENDING:
                return answer
        if context.approver is not None:
            return context.approver(request)
        return Approval(Verdict.PENDING, "nobody", "none", "no approval given")

    def _authorised(self, context: StepContext, approval: Approval) -> tuple[Approval, str]:
        """The approval if its giver may give it, else a pending one and why it was refused.

        A ``--approve`` (``context.approval``) was checked when the run (re)started, so that a
        refusal stopped it before anything ran (exit 6); the workflow's ``approve: true``, the
        terminal's and the integrations' answers are checked here.
        """
        authoriser = context.authoriser
        if (
            approval.verdict is not Verdict.APPROVED
            or authoriser is None
            or approval is context.approval
        ):
            return approval, ""
        from bcce.auth.authorization import approver_identity

        decision = authoriser.decide(
            approver_identity(approval, context.started_by),
            "approval.give",
            f"step {context.step.id} of run {context.run_id}",
            run_id=context.run_id,
            step=context.step.id,
            via=approval.via,
            started_by=context.started_by,
        )
        if decision.allowed:
            return approval, ""
        refusal = (
            f"the approval by {approval.by} ({approval.via}) was refused by rule "
            f"'{decision.rule}': {decision.reason}"
        )
        return Approval(Verdict.PENDING, "nobody", "none", refusal), refusal


def _files(diff: str) -> list[str]:
    files = []
    for line in diff.splitlines():
        if line.startswith("diff --git "):
            parts = line.split(" b/", 1)
            if len(parts) == 2:
                files.append(parts[1])
    return sorted(set(files))
