"""Who may approve an ``apply_diff`` change set, and four-eyes: never the person who started
the run.

A stand-in agent step proposes a one-line fix (``changes.patch``); ``apply_diff`` waits for an
approval. Each ``bcce`` invocation gets its own application with a fake auth provider in place
of ``app.auth.authenticator``, as each process would authenticate its own user.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from dependency_injector import providers

from bcce.auth.provider import Identity
from bcce.cli.main import cli
from bcce.containers.application import Application
from bcce.errors import ExitCode
from bcce.events.audit import search
from bcce.settings.layers import LayerOptions
from bcce.steps.approval import Approval, ApprovalRequest, Verdict
from bcce.steps.base import StepContext, StepResult
from bcce.testing.auth import StaticAuthProvider
from bcce.workflow.registry import StepType
from bcce.workflow.runner import RunOptions

ANA = Identity("ana", ("dev",), "fake-sso")
BOB = Identity("bob", ("reviewers",), "fake-sso")
CAROL = Identity("carol", ("guests",), "fake-sso")

WORKFLOW = """
version: 1
workflow: fix-typo
steps:
  - {id: fix, type: agent, prompt: Fix the typo.}
  - {id: apply, type: apply_diff}
"""
APPROVED_BY_WORKFLOW = WORKFLOW.replace("type: apply_diff}", "type: apply_diff, approve: true}")
PATCH = """\
diff --git a/src/app.py b/src/app.py
--- a/src/app.py
+++ b/src/app.py
@@ -1,2 +1,2 @@
 def greet():
-    return 'helo'
+    return 'hello'
"""
BEFORE = "def greet():\n    return 'helo'\n"
AFTER = "def greet():\n    return 'hello'\n"


class PatchingAgent:
    """Stands in for Claude Code: proposes the fix as the agent step's change set."""

    def execute(self, context: StepContext) -> StepResult:
        (context.artifacts / "changes.patch").write_text(PATCH)
        return StepResult("succeeded")


@dataclass
class FakeGate:
    """An approval integration answering at once."""

    approval: Approval
    name: str = "approval:fake"
    asked: ApprovalRequest | None = None

    def request(self, request: ApprovalRequest) -> Approval:
        self.asked = request
        return self.approval


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text(BEFORE)
    return tmp_path


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    path = tmp_path / "fix.yml"
    path.write_text(WORKFLOW)
    return path


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


AppAs = Callable[..., Application]


@pytest.fixture
def app_as(
    bcce_make_app: Callable[..., Application], bcce_layer_options: LayerOptions, runs: Path
) -> AppAs:
    """``app_as(identity, four_eyes=True, **approvals)``: ``identity`` runs bcce; everyone may
    run any workflow; ``approvals`` (default: groups dev and reviewers) may approve."""
    bcce_layer_options.environ["PATH"] = os.environ["PATH"]

    def make(identity: Identity, *, four_eyes: bool = True, **approvals: Any) -> Application:
        rules = {
            "enabled": True,
            "workflows": [{"groups": ["dev", "reviewers", "guests"], "allow": ["**"]}],
            "approvals": {
                "groups": ["dev", "reviewers"],
                **approvals,
                "four_eyes": four_eyes,
            },
        }
        app = bcce_make_app(workflow={"state_dir": str(runs)}, auth={"authorization": rules})
        app.auth.authenticator.override(providers.Object(StaticAuthProvider(identity)))
        app.workflow.steps().register(StepType("agent", PatchingAgent), replace=True)
        return app

    return make


def bcce(app: Application, *args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], obj=app)


def start(app: Application, workflow: Path, workspace: Path, *extra: str) -> Result:
    return bcce(
        app, "workflow", "run", workflow, "--run-id", "r1", "--workspace", workspace, *extra
    )


def state(runs: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((runs / "r1" / "run.json").read_text())
    return data


@pytest.fixture
def waiting(app_as: AppAs, workflow: Path, workspace: Path, runs: Path) -> None:
    """Ana has started run r1; its apply_diff step waits for an approval."""
    result = start(app_as(ANA), workflow, workspace)
    assert result.exit_code == 0, result.output
    assert state(runs)["steps"]["apply"]["status"] == "awaiting_approval"


# -- the command line ---------------------------------------------------------------------------
@pytest.mark.usefixtures("waiting")
def test_the_starters_own_approve_is_refused_and_the_step_keeps_waiting(
    app_as: AppAs, workspace: Path, runs: Path
) -> None:
    result = bcce(app_as(ANA), "workflow", "resume", "r1", "--approve")

    assert result.exit_code == ExitCode.NOT_AUTHORISED, result.output
    assert "ana (fake-sso; groups: dev) may not approve step apply of run r1" in result.stderr
    assert "refused by rule 'auth.authorization.approvals.four_eyes'" in result.stderr
    assert "hint: four-eyes approval" in result.stderr
    assert state(runs)["status"] == "awaiting_approval"
    assert state(runs)["steps"]["apply"]["status"] == "awaiting_approval"
    assert (workspace / "src" / "app.py").read_text() == BEFORE


@pytest.mark.usefixtures("waiting")
def test_another_approvers_approval_applies_the_change(
    app_as: AppAs, workspace: Path, runs: Path
) -> None:
    assert bcce(app_as(ANA), "workflow", "resume", "r1", "--approve").exit_code == 6

    result = bcce(app_as(BOB), "workflow", "resume", "r1", "--approve")

    assert result.exit_code == 0, result.output
    assert state(runs)["status"] == "succeeded"
    assert (workspace / "src" / "app.py").read_text() == AFTER
    approval = json.loads((runs / "r1" / "apply" / "approval.json").read_text())
    assert (approval["verdict"], approval["by"]) == ("approved", "bob")


@pytest.mark.usefixtures("waiting")
def test_someone_outside_the_approvals_groups_may_not_approve(
    app_as: AppAs, workspace: Path
) -> None:
    result = bcce(app_as(CAROL), "workflow", "resume", "r1", "--approve")

    assert result.exit_code == ExitCode.NOT_AUTHORISED, result.output
    assert "refused by rule 'no rule allows it'" in result.stderr
    assert "auth.authorization.approvals" in result.stderr
    assert (workspace / "src" / "app.py").read_text() == BEFORE


def test_without_four_eyes_an_approver_may_approve_their_own_run(
    app_as: AppAs, workflow: Path, workspace: Path, runs: Path
) -> None:
    assert start(app_as(ANA, four_eyes=False), workflow, workspace).exit_code == 0

    result = bcce(app_as(ANA, four_eyes=False), "workflow", "resume", "r1", "--approve")

    assert result.exit_code == 0, result.output
    assert (workspace / "src" / "app.py").read_text() == AFTER


def test_run_approve_by_the_starter_is_refused_before_anything_runs(
    app_as: AppAs, workflow: Path, workspace: Path, runs: Path
) -> None:
    result = start(app_as(ANA), workflow, workspace, "--approve")

    assert result.exit_code == ExitCode.NOT_AUTHORISED, result.output
    assert "four_eyes" in result.stderr
    assert not (runs / "r1").exists()


@pytest.mark.usefixtures("waiting")
def test_the_approval_decisions_reach_the_audit_trail_with_both_identities(
    app_as: AppAs, runs: Path
) -> None:
    bcce(app_as(ANA), "workflow", "resume", "r1", "--approve")
    bcce(app_as(BOB), "workflow", "resume", "r1", "--approve")

    approvals = [
        r["payload"]
        for r in search(runs / "audit.jsonl", types=["auth.decision"])
        if r["payload"]["action"] == "approval.give"
    ]

    assert [(p["user"], p["allowed"], p["rule"], p["started_by"]) for p in approvals] == [
        ("ana", False, "auth.authorization.approvals.four_eyes", "fake-sso:ana"),
        ("bob", True, "auth.authorization.approvals", "fake-sso:ana"),
    ]
    assert {(p["run_id"], p["step"], p["via"]) for p in approvals} == {
        ("r1", "apply", "command line")
    }


# -- approvals that come during the run -----------------------------------------------------------
def run_with_gate(
    app: Application, workflow: Path, workspace: Path, approval: Approval
) -> tuple[str, str, FakeGate]:
    runner = app.workflow.runner()
    gate = FakeGate(approval)
    runner.approval_gates = [gate]
    result = runner.run(workflow, RunOptions(run_id="r1", workspace=workspace))
    step = result.state.steps["apply"]
    return step["status"], step.get("error") or "", gate


def test_an_integrations_approval_counts_as_the_named_user_with_no_groups(
    app_as: AppAs, workflow: Path, workspace: Path
) -> None:
    slack = Approval(Verdict.APPROVED, "bob", "approval:fake")

    status, error, gate = run_with_gate(app_as(ANA), workflow, workspace, slack)

    assert status == "awaiting_approval"
    assert "the approval by bob (approval:fake) was refused by rule 'no rule allows it'" in error
    assert (workspace / "src" / "app.py").read_text() == BEFORE
    assert gate.asked is not None and gate.asked.requested_by == "ana"


def test_an_integrations_user_named_in_approvals_users_may_approve(
    app_as: AppAs, workflow: Path, workspace: Path
) -> None:
    slack = Approval(Verdict.APPROVED, "bob", "approval:fake")

    status, _, _ = run_with_gate(app_as(ANA, users=["bob"]), workflow, workspace, slack)

    assert status == "succeeded"
    assert (workspace / "src" / "app.py").read_text() == AFTER


def test_an_integration_naming_the_starter_is_refused_by_four_eyes(
    app_as: AppAs, workflow: Path, workspace: Path
) -> None:
    slack = Approval(Verdict.APPROVED, "ana", "approval:fake")

    status, error, _ = run_with_gate(app_as(ANA, users=["ana"]), workflow, workspace, slack)

    assert status == "awaiting_approval"
    assert "'auth.authorization.approvals.four_eyes'" in error


def test_the_workflows_approve_true_is_the_starters_approval(
    app_as: AppAs, tmp_path: Path, workspace: Path, runs: Path
) -> None:
    workflow = tmp_path / "auto.yml"
    workflow.write_text(APPROVED_BY_WORKFLOW)

    result = start(app_as(ANA), workflow, workspace)

    assert result.exit_code == 0, result.output
    assert state(runs)["steps"]["apply"]["status"] == "awaiting_approval"
    assert "four_eyes" in state(runs)["steps"]["apply"]["error"]
    assert (workspace / "src" / "app.py").read_text() == BEFORE
