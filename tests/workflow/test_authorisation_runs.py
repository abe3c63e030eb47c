"""Authorisation where runs start: ``bcce workflow run`` and ``resume`` (and the runner itself)
check the workflow and every step's policy for the authenticated identity before anything runs
or is recorded; each decision reaches the audit trail.

Each invocation gets its own application (as each ``bcce`` process does), with a fake auth
provider in place of ``app.auth.authenticator``. Agent steps run a stand-in executor: what is
authorised is the step's policy, not what the agent does.
"""

from __future__ import annotations

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
from bcce.errors import ExitCode, NotAuthorised
from bcce.events.audit import search
from bcce.steps.base import StepContext, StepResult
from bcce.workflow.registry import StepType
from bcce.workflow.runner import RunOptions

ANA = Identity("ana", ("dev",), "fake-sso")
EVE = Identity("eve", ("guests",), "fake-sso")
ROOT = Identity("root", ("platform-admins",), "fake-sso")

CMD_WORKFLOW = """
version: 1
workflow: nightly-test
steps:
  - {id: hello, type: cmd, command: 'echo hello'}
"""

FAILING_WORKFLOW = """
version: 1
workflow: nightly-test
steps:
  - {id: check, type: cmd, command: 'test -e fixed'}
"""


def agent_workflow(policy: str) -> str:
    return f"""
version: 1
workflow: nightly-fix
steps:
  - id: fix
    type: agent
    prompt: Fix the failing test.
    policy: {policy}
"""


@dataclass
class FakeAuth:
    identity: Identity
    name: str = "fake-sso"

    def authenticate(self) -> Identity:
        return self.identity


class IdleAgent:
    """Stands in for Claude Code: succeeds without doing anything."""

    def execute(self, context: StepContext) -> StepResult:
        return StepResult("succeeded")


AppAs = Callable[..., Application]


@pytest.fixture
def app_as(make_workflow_app: Callable[..., Application]) -> AppAs:
    """``app_as(identity, policy=None, **authorization)``: an application in which ``identity``
    runs bcce, with ``auth.authorization`` enabled and the given rules (``enabled=False`` turns
    it off) and ``policy`` settings."""

    def make(
        identity: Identity, *, policy: dict[str, Any] | None = None, **authorization: Any
    ) -> Application:
        sections: dict[str, Any] = {"auth": {"authorization": {"enabled": True, **authorization}}}
        if policy is not None:
            sections["policy"] = policy
        app = make_workflow_app(**sections)
        app.auth.authenticator.override(providers.Object(FakeAuth(identity)))
        app.workflow.steps().register(StepType("agent", IdleAgent), replace=True)
        return app

    return make


def bcce(app: Application, *args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], obj=app)


def decisions(runs_dir: Path) -> list[dict[str, Any]]:
    return search(runs_dir / "audit.jsonl", types=["auth.decision"])


@pytest.fixture
def nightly(write_workflow: Callable[..., Path]) -> Path:
    return write_workflow(CMD_WORKFLOW, name="ci/nightly.yml")


def run(app: Application, workflow: Path, tmp_path: Path, *extra: str) -> Result:
    return bcce(
        app, "workflow", "run", workflow, "--run-id", "run-1", "--workspace", tmp_path, *extra
    )


# -- workflows -------------------------------------------------------------------------------------
def test_a_group_may_run_a_workflow_its_path_glob_matches(
    app_as: AppAs, nightly: Path, tmp_path: Path, runs_dir: Path
) -> None:
    app = app_as(ANA, workflows=[{"groups": ["dev"], "allow": ["ci/*.yml"]}])

    result = run(app, nightly, tmp_path)

    assert result.exit_code == 0, result.output
    assert (runs_dir / "run-1" / "run.json").is_file()


def test_a_group_may_run_a_workflow_its_name_glob_matches(
    app_as: AppAs, nightly: Path, tmp_path: Path
) -> None:
    app = app_as(ANA, workflows=[{"groups": ["dev"], "allow": ["name:nightly-*"]}])

    assert run(app, nightly, tmp_path).exit_code == 0


def test_a_workflow_no_rule_allows_is_refused_with_exit_6_and_leaves_no_run_directory(
    app_as: AppAs, nightly: Path, tmp_path: Path, runs_dir: Path
) -> None:
    app = app_as(EVE, workflows=[{"groups": ["dev"], "allow": ["ci/**", "name:nightly-*"]}])

    result = run(app, nightly, tmp_path)

    assert result.exit_code == ExitCode.NOT_AUTHORISED, result.output
    assert "[BCCE600]" in result.stderr
    assert "eve (fake-sso; groups: guests) may not run workflow ci/nightly.yml" in result.stderr
    assert "refused by rule 'no rule allows it'" in result.stderr
    assert "hint: an administrator can allow it in auth.authorization.workflows" in result.stderr
    assert not (runs_dir / "run-1").exists()
    assert "Traceback" not in result.output


def test_admins_may_run_any_workflow(app_as: AppAs, nightly: Path, tmp_path: Path) -> None:
    app = app_as(ROOT, admins=["platform-admins"])

    assert run(app, nightly, tmp_path).exit_code == 0


def test_the_runner_refuses_a_framework_caller_too(
    app_as: AppAs, nightly: Path, tmp_path: Path, runs_dir: Path
) -> None:
    runner = app_as(EVE).workflow.runner()

    with pytest.raises(NotAuthorised, match="no rule allows it"):
        runner.run(nightly, RunOptions(run_id="run-1", workspace=tmp_path))

    assert not (runs_dir / "run-1").exists()


def test_the_run_records_who_started_it(app_as: AppAs, nightly: Path, tmp_path: Path) -> None:
    runner = app_as(ANA, workflows=[{"users": ["ana"], "allow": ["**"]}]).workflow.runner()

    ran = runner.run(nightly, RunOptions(run_id="run-1", workspace=tmp_path))

    assert runner.status("run-1").started_by == {
        "user": "ana",
        "groups": ["dev"],
        "provider": "fake-sso",
    }
    assert ran.state.started_by == runner.status("run-1").started_by


def test_resume_is_refused_to_a_user_no_rule_allows_and_leaves_the_run_untouched(
    app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path, runs_dir: Path
) -> None:
    rules = {"workflows": [{"groups": ["dev"], "allow": ["**"]}]}
    workflow = write_workflow(FAILING_WORKFLOW, name="failing.yml")
    assert run(app_as(ANA, **rules), workflow, tmp_path).exit_code == ExitCode.RUN_FAILED
    journal = (runs_dir / "run-1" / "journal.jsonl").read_bytes()
    (tmp_path / "fixed").touch()

    refused = bcce(app_as(EVE, **rules), "workflow", "resume", "run-1")

    assert refused.exit_code == ExitCode.NOT_AUTHORISED, refused.output
    assert "may not resume workflow failing.yml" in refused.stderr
    assert (runs_dir / "run-1" / "journal.jsonl").read_bytes() == journal
    resumed = bcce(app_as(ANA, **rules), "workflow", "resume", "run-1")
    assert resumed.exit_code == 0, resumed.output


# -- policies ------------------------------------------------------------------------------------
def test_a_step_using_a_preset_is_refused_without_a_rule_granting_it(
    app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path, runs_dir: Path
) -> None:
    workflow = write_workflow(agent_workflow("test-fixer"))
    app = app_as(
        ANA,
        workflows=[{"groups": ["dev"], "allow": ["**"]}],
        policies=[{"groups": ["dev"], "presets": ["read-only-review"]}],
    )

    result = run(app, workflow, tmp_path)

    assert result.exit_code == ExitCode.NOT_AUTHORISED, result.output
    assert "may not use preset test-fixer (step fix)" in result.stderr
    assert "cmd_allowlist allows 'pytest'" in result.stderr
    assert "auth.authorization.policies" in result.stderr
    assert not (runs_dir / "run-1").exists()


def test_a_step_using_a_preset_runs_with_a_rule_granting_it(
    app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    workflow = write_workflow(agent_workflow("{preset: test-fixer, max_edits: 5}"))
    app = app_as(
        ANA,
        workflows=[{"groups": ["dev"], "allow": ["**"]}],
        policies=[{"groups": ["dev"], "presets": ["test-fixer"]}],
    )

    result = run(app, workflow, tmp_path)

    assert result.exit_code == 0, result.output


def test_a_policy_looser_than_the_default_is_refused_without_the_right(
    app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path, runs_dir: Path
) -> None:
    workflow = write_workflow(agent_workflow("{max_edits: 500}"))
    app = app_as(
        ANA,
        workflows=[{"groups": ["dev"], "allow": ["**"]}],
        policies=[{"groups": ["seniors"], "looser_than_default": True}],
    )

    result = run(app, workflow, tmp_path)

    assert result.exit_code == ExitCode.NOT_AUTHORISED, result.output
    assert "may not use the policy of step fix" in result.stderr
    assert "max_edits 500 > 20 (policy.default)" in result.stderr
    assert not (runs_dir / "run-1").exists()


def test_a_policy_looser_than_the_default_runs_with_the_right(
    app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    workflow = write_workflow(agent_workflow("{max_edits: 500}"))
    app = app_as(
        ANA,
        workflows=[{"groups": ["dev"], "allow": ["**"]}],
        policies=[{"groups": ["dev"], "looser_than_default": True}],
    )

    assert run(app, workflow, tmp_path).exit_code == 0


def test_a_policy_no_looser_than_the_default_needs_no_rule(
    app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    tighter = '{max_edits: 1, max_files: 3, timeout_seconds: 60, allowed_paths: ["src/**"]}'
    workflow = write_workflow(agent_workflow(tighter))
    app = app_as(ANA, workflows=[{"groups": ["dev"], "allow": ["**"]}])

    result = run(app, workflow, tmp_path)

    assert result.exit_code == 0, result.output


def test_a_cmd_steps_allowlist_beyond_the_organisations_is_looser(
    app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    text = CMD_WORKFLOW.replace(
        "command: 'echo hello'}", "command: 'echo hello', policy: {cmd_allowlist: [echo, curl]}}"
    )
    workflow = write_workflow(text)
    app = app_as(
        ANA,
        workflows=[{"groups": ["dev"], "allow": ["**"]}],
        policy={"cmd_allowlist": ["echo", "true"]},
    )

    result = run(app, workflow, tmp_path)

    assert result.exit_code == ExitCode.NOT_AUTHORISED, result.output
    assert "cmd_allowlist allows 'curl', which policy.cmd_allowlist's does not" in result.stderr


# -- the audit trail ----------------------------------------------------------------------------
def test_every_decision_reaches_the_audit_trail_with_the_identity(
    app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path, runs_dir: Path
) -> None:
    workflow = write_workflow(agent_workflow("{max_edits: 1}"))
    rules = {"workflows": [{"groups": ["dev"], "allow": ["name:nightly-*"]}]}
    assert run(app_as(ANA, **rules), workflow, tmp_path).exit_code == 0
    assert run(app_as(EVE, **rules), workflow, tmp_path).exit_code == ExitCode.NOT_AUTHORISED

    records = decisions(runs_dir)

    summary = [
        (
            r["payload"]["action"],
            r["payload"]["user"],
            r["payload"]["allowed"],
            r["payload"]["rule"],
        )
        for r in records
    ]
    assert summary == [
        ("workflow.run", "ana", True, "auth.authorization.workflows[0]"),
        ("policy.use", "ana", True, "no looser than policy.default"),
        ("workflow.run", "eve", False, "no rule allows it"),
    ]
    first = records[0]
    assert first["payload"]["groups"] == ["dev"]
    assert first["payload"]["provider"] == "fake-sso"
    assert first["payload"]["run_id"] == "run-1"
    assert first["payload"]["workflow"] == "nightly-fix"
    assert first["actor"]["user"] == "ana"
    assert records[1]["step"] == "fix"
    assert records[2]["actor"]["user"] == "eve"


def test_disabled_authorisation_allows_everything_and_still_audits(
    app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path, runs_dir: Path
) -> None:
    workflow = write_workflow(agent_workflow("{max_edits: 500}"))

    result = run(app_as(EVE, enabled=False), workflow, tmp_path)

    assert result.exit_code == 0, result.output
    assert [
        (r["payload"]["action"], r["payload"]["user"], r["payload"]["rule"])
        for r in decisions(runs_dir)
    ] == [
        ("workflow.run", "eve", "authorization disabled"),
        ("policy.use", "eve", "authorization disabled"),
    ]


class RefusingAuth:
    name = "fake-sso"

    def authenticate(self) -> Identity:
        from bcce.errors import AuthenticationFailed

        raise AuthenticationFailed("the token expired at 09:00", hint="sign in again")


def test_a_failed_login_exits_6_records_no_run_and_is_in_the_audit_trail(
    app_as: AppAs, nightly: Path, tmp_path: Path, runs_dir: Path
) -> None:
    app = app_as(ANA, enabled=False)
    app.auth.authenticator.override(providers.Object(RefusingAuth()))

    result = run(app, nightly, tmp_path)

    assert result.exit_code == ExitCode.NOT_AUTHORISED
    assert "the token expired at 09:00" in result.output
    assert not (runs_dir / "run-1").exists()
    (failed,) = search(runs_dir / "audit.jsonl", types=["auth.failed"])
    assert failed["payload"] == {"provider": "fake-sso", "error": "the token expired at 09:00"}
