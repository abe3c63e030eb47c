"""Authorisation where runs start and stop: ``bcce workflow run`` and ``resume`` (and the runner
itself) check the workflow and every step's policy for the authenticated identity before anything
runs or is recorded, and ``cancel`` checks who may stop the run before anything is written; each
decision reaches the audit trail.

Each invocation gets its own application (as each ``bcce`` process does), with a fake auth
provider in place of ``app.auth.authenticator``. Agent steps run a stand-in executor: what is
authorised is the step's policy, not what the agent does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
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
from bcce.events.bus import Event
from bcce.steps.base import StepContext, StepResult
from bcce.testing.auth import StaticAuthProvider
from bcce.workflow.registry import StepType
from bcce.workflow.runner import RunOptions, RunResult

ANA = Identity("ana", ("dev",), "fake-sso")
EVE = Identity("eve", ("guests",), "fake-sso")
ROOT = Identity("root", ("platform-admins",), "fake-sso")
OLGA = Identity("olga", ("ops",), "fake-sso")

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


#: Waits in its step for ``release`` to appear: a run that a process is driving.
HELD_WORKFLOW = """
version: 1
workflow: nightly-held
steps:
  - {id: wait, type: cmd, command: 'touch started; while [ ! -e release ]; do sleep 0.05; done'}
"""

#: Stops awaiting approval: a run that no process drives.
FIX_WORKFLOW = """
version: 1
workflow: nightly-fix
steps:
  - {id: fix, type: agent, prompt: Fix the typo.}
  - {id: apply, type: apply_diff}
"""
PATCH = """\
diff --git a/app.py b/app.py
--- a/app.py
+++ b/app.py
@@ -1 +1 @@
-greeting = 'helo'
+greeting = 'hello'
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


class IdleAgent:
    """Stands in for Claude Code: succeeds without doing anything."""

    def execute(self, context: StepContext) -> StepResult:
        return StepResult("succeeded")


class PatchingAgent:
    """Stands in for Claude Code: proposes a one-line fix, which apply_diff waits to apply."""

    def execute(self, context: StepContext) -> StepResult:
        (context.artifacts / "changes.patch").write_text(PATCH)
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
        app.auth.authenticator.override(providers.Object(StaticAuthProvider(identity)))
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


# -- cancelling runs ------------------------------------------------------------------------------
#: Everyone in dev may run the workflows under ci/; ops may run nightly-* by name.
CANCEL_RULES: dict[str, Any] = {
    "admins": ["platform-admins"],
    "workflows": [{"groups": ["dev"], "allow": ["ci/**"]}],
}


@pytest.fixture
def awaiting(app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path) -> Path:
    """Run ``run-1`` of ci/fix.yml as ana until it awaits approval (no process drives it);
    returns its run directory."""
    (tmp_path / "app.py").write_text("greeting = 'helo'\n")
    app = app_as(ANA, **CANCEL_RULES)
    app.workflow.steps().register(StepType("agent", PatchingAgent), replace=True)

    result = run(app, write_workflow(FIX_WORKFLOW, name="ci/fix.yml"), tmp_path)

    assert result.exit_code == 0, result.output
    assert app.workflow.runner().status("run-1").status == "awaiting_approval"
    return tmp_path / "runs" / "run-1"


@dataclass
class Held:
    """``run-1`` of HELD_WORKFLOW, driven by ana's runner in a thread, its step waiting."""

    thread: threading.Thread
    results: list[RunResult]
    release: Path

    def join(self) -> RunResult:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the run did not end"
        return self.results[0]

    def finish(self) -> RunResult:
        self.release.touch()
        return self.join()


@pytest.fixture
def held(
    app_as: AppAs,
    write_workflow: Callable[..., Path],
    tmp_path: Path,
    wait_until: Callable[..., None],
) -> Iterator[Held]:
    runner = app_as(ANA, **CANCEL_RULES).workflow.runner()
    workflow = write_workflow(HELD_WORKFLOW, name="ci/held.yml")
    results: list[RunResult] = []
    thread = threading.Thread(
        target=lambda: results.append(
            runner.run(workflow, RunOptions(run_id="run-1", workspace=tmp_path))
        )
    )
    thread.start()
    wait_until(
        lambda: (tmp_path / "started").exists() or not thread.is_alive(), what="the step to start"
    )
    assert thread.is_alive()
    held = Held(thread, results, tmp_path / "release")
    yield held
    if thread.is_alive():
        held.finish()


def run_files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def cancelled_events(directory: Path) -> list[dict[str, Any]]:
    lines = (directory / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e["type"] == "workflow.cancelled"]


def test_the_identity_that_started_a_run_may_cancel_it_without_a_rule(
    app_as: AppAs, awaiting: Path
) -> None:
    result = bcce(app_as(ANA), "workflow", "cancel", "run-1")  # no workflows rule now

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "run run-1 cancelled"
    assert json.loads((awaiting / "run.json").read_text())["status"] == "cancelled"
    (event,) = cancelled_events(awaiting)
    assert event["payload"]["cancelled_by"] == "fake-sso:ana"


def test_cancelling_someone_elses_run_is_refused_with_exit_6_and_writes_nothing(
    app_as: AppAs, awaiting: Path
) -> None:
    before = run_files(awaiting)

    result = bcce(app_as(EVE, **CANCEL_RULES), "workflow", "cancel", "run-1")

    assert result.exit_code == ExitCode.NOT_AUTHORISED, result.output
    assert "[BCCE600]" in result.stderr
    assert "eve (fake-sso; groups: guests) may not cancel run run-1" in result.stderr
    assert "eve did not start the run (it was started by fake-sso:ana)" in result.stderr
    assert "hint: an administrator can allow it in auth.authorization.workflows" in result.stderr
    assert run_files(awaiting) == before
    assert "Traceback" not in result.output


def test_admins_may_cancel_any_run(app_as: AppAs, awaiting: Path) -> None:
    result = bcce(app_as(ROOT, **CANCEL_RULES), "workflow", "cancel", "run-1")

    assert result.exit_code == 0, result.output
    (event,) = cancelled_events(awaiting)
    assert event["payload"]["cancelled_by"] == "fake-sso:root"


@pytest.mark.parametrize("allow", ["ci/*.yml", "name:nightly-*"])
def test_a_workflows_rule_for_the_runs_workflow_allows_cancelling_it(
    app_as: AppAs, awaiting: Path, allow: str
) -> None:
    app = app_as(OLGA, workflows=[{"groups": ["ops"], "allow": [allow]}])

    result = bcce(app, "workflow", "cancel", "run-1")

    assert result.exit_code == 0, result.output
    assert json.loads((awaiting / "run.json").read_text())["status"] == "cancelled"


def test_a_refused_cancel_of_a_running_run_requests_nothing(
    app_as: AppAs, held: Held, runs_dir: Path
) -> None:
    result = bcce(app_as(EVE, **CANCEL_RULES), "workflow", "cancel", "run-1")

    assert result.exit_code == ExitCode.NOT_AUTHORISED, result.output
    assert not (runs_dir / "run-1" / "cancel.request").exists()
    assert held.finish().state.status == "succeeded"


def test_the_process_driving_a_run_names_who_cancelled_it(
    app_as: AppAs, held: Held, runs_dir: Path
) -> None:
    result = bcce(app_as(ROOT, **CANCEL_RULES), "workflow", "cancel", "run-1")

    assert result.exit_code == 0, result.output
    assert "cancellation requested" in result.stdout
    assert held.join().state.status == "cancelled"  # its step stopped, never released
    (event,) = cancelled_events(runs_dir / "run-1")
    assert event["payload"]["cancelled_by"] == "fake-sso:root"
    (record,) = search(runs_dir / "audit.jsonl", types=["workflow.cancelled"])
    assert record["actor"]["user"] == "ana"  # the driving process's identity
    assert record["payload"]["cancelled_by"] == "fake-sso:root"


def test_a_program_requesting_a_cancel_is_held_to_the_same_rules(
    app_as: AppAs, awaiting: Path
) -> None:
    runner = app_as(EVE, **CANCEL_RULES).workflow.runner()

    with pytest.raises(NotAuthorised, match="may not cancel run run-1"):
        runner.request_cancel("run-1")

    assert not (awaiting / "cancel.request").exists()


def test_the_process_running_a_run_stops_it_unasked_even_before_it_is_driven(
    app_as: AppAs, write_workflow: Callable[..., Path], tmp_path: Path
) -> None:
    runner = app_as(ANA, **CANCEL_RULES).workflow.runner()
    workflow = write_workflow(CMD_WORKFLOW, name="ci/nightly.yml")

    def stop(event: Event) -> None:  # as a signal handler would, while the run is authorised
        if event.payload.get("action") == "workflow.run":
            runner.request_cancel("run-1")

    runner.bus.subscribe("auth.decision", stop)
    ran = runner.run(workflow, RunOptions(run_id="run-1", workspace=tmp_path))

    assert ran.state.status == "cancelled"
    (event,) = cancelled_events(tmp_path / "runs" / "run-1")
    assert event["payload"]["cancelled_by"] is None


def test_every_cancel_decision_reaches_the_audit_trail_with_the_identity(
    app_as: AppAs, awaiting: Path, runs_dir: Path
) -> None:
    assert bcce(app_as(EVE, **CANCEL_RULES), "workflow", "cancel", "run-1").exit_code == 6
    assert bcce(app_as(ROOT, **CANCEL_RULES), "workflow", "cancel", "run-1").exit_code == 0

    records = [r for r in decisions(runs_dir) if r["payload"]["action"] == "workflow.cancel"]

    assert [
        (r["actor"]["user"], r["payload"]["user"], r["payload"]["allowed"], r["payload"]["rule"])
        for r in records
    ] == [
        ("eve", "eve", False, "no rule allows it"),
        ("root", "root", True, "auth.authorization.admins"),
    ]
    payload = records[0]["payload"]
    assert payload["run_id"] == "run-1"
    assert payload["subject"] == "run run-1"
    assert payload["started_by"] == "fake-sso:ana"
    assert (payload["workflow"], payload["path"]) == ("nightly-fix", "ci/fix.yml")
