"""apply_diff after real agent steps: discarded change sets, all-or-nothing, approval flows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

AgentRun = Any  # conftest.AgentRun: a finished run and its run directory


def call(name: str, **tool_input: Any) -> dict[str, Any]:
    """One scripted turn making one tool call."""
    return {"tool_use": [{"name": name, "input": tool_input}]}


def edit(path: str, old: str, new: str) -> dict[str, Any]:
    return call("Edit", file_path=f"{{workspace}}/{path}", old_string=old, new_string=new)


def read(path: str) -> dict[str, Any]:
    return call("Read", file_path=f"{{workspace}}/{path}")


FIX_APP = (read("src/app.py"), edit("src/app.py", "'helo'", "'hello'"))
FIXED_APP = "def greet():\n    return 'hello'\n"
ORIGINAL_APP = "def greet():\n    return 'helo'\n"

FIX_THEN_APPLY = """
version: 1
workflow: fix-and-apply
steps:
  - id: fix
    type: agent
    prompt: Fix the typo.
    available_tools: [ReadFile, Diff, WriteFile]
    policy: {allowed_paths: ["src/**"], timeout_seconds: 120}
  - id: apply
    type: apply_diff
    policy: {allowed_paths: ["src/**"]}
"""


# --- a change set the audit rejects is discarded ----------------------------------------------

VIOLATING_THEN_APPLY = """
version: 1
workflow: violation
steps:
  - id: fix
    type: agent
    prompt: Fix the typo.
    available_tools: [ReadFile, Diff, WriteFile]
    policy: {allowed_paths: ["src/**"], timeout_seconds: 120}
    on_error: %s
  - id: apply
    type: apply_diff
    approve: true
    policy: {allowed_paths: ["**"]}
"""
OUT_OF_SCOPE_WRITE = call("Write", file_path="{workspace}/docs/new.txt", content="x\n")


@pytest.fixture
def violating(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
) -> Callable[[str], AgentRun]:
    """With the hook off, an allowed edit and a write the audit must reject."""
    app = make_agent_app(disabled=frozenset({"hook"}))

    def run(on_error: str) -> AgentRun:
        return run_agent(
            VIOLATING_THEN_APPLY % on_error,
            {"fix": script(*FIX_APP, OUT_OF_SCOPE_WRITE)},
            app=app,
        )

    return run


def test_an_audit_violation_fails_the_step_with_exit_5_and_keeps_only_rejected_patch(
    violating: Callable[[str], AgentRun],
) -> None:
    ran = violating("fail")
    assert ran.exit_code == 5
    assert (ran.step("fix")["status"], ran.step("fix")["denied"]) == ("failed", True)
    rules = {v["rule"] for v in ran.json("fix", "audit.json")["violations"]}
    assert rules == {"audit.path"}
    rejected = ran.text("fix", "rejected.patch")
    assert "docs/new.txt" in rejected
    assert "+    return 'hello'" in rejected
    assert not ran.path("fix", "changes.patch").exists()


def test_apply_diff_applies_nothing_from_a_rejected_change_set(
    violating: Callable[[str], AgentRun],
    project: Path,
    tree_bytes: Callable[[Path], dict[str, bytes]],
) -> None:
    before = tree_bytes(project)
    ran = violating("continue")
    assert ran.step("apply")["status"] == "succeeded"
    assert ran.step("apply")["outputs"]["applied"] == 0
    assert tree_bytes(project) == before


# --- all-or-nothing ---------------------------------------------------------------------------

CONFLICTING = """
version: 1
workflow: conflict
steps:
  - id: one
    type: agent
    prompt: Fix the typo and the helper.
    available_tools: [ReadFile, Diff]
    policy: {allowed_paths: ["src/**"], timeout_seconds: 120}
  - id: two
    type: agent
    prompt: Shorten the greeting.
    available_tools: [ReadFile, Diff]
    policy: {allowed_paths: ["src/**"], timeout_seconds: 120}
  - id: apply
    type: apply_diff
    approve: true
    policy: {allowed_paths: ["src/**"]}
"""


def test_conflicting_change_sets_leave_the_workspace_byte_for_byte_unchanged(
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
    tree_bytes: Callable[[Path], dict[str, bytes]],
) -> None:
    before = tree_bytes(project)
    ran = run_agent(
        CONFLICTING,
        {
            # `one` changes util.py (applies cleanly) and app.py; `two` changes the same line
            # of app.py differently, so only part of the combined change set could apply.
            "one": script(read("src/util.py"), edit("src/util.py", "x * 2", "2 * x"), *FIX_APP),
            "two": script(read("src/app.py"), edit("src/app.py", "'helo'", "'hi'")),
        },
    )
    assert (ran.step("one")["status"], ran.step("two")["status"]) == ("succeeded", "succeeded")
    assert ran.step("apply")["status"] == "failed"
    assert ran.exit_code != 0
    assert tree_bytes(project) == before


# --- approval ---------------------------------------------------------------------------------


@pytest.fixture
def waiting(run_agent: Callable[..., AgentRun], script: Callable[..., dict[str, Any]]) -> AgentRun:
    """A non-interactive run with no approval given."""
    return run_agent(FIX_THEN_APPLY, {"fix": script(*FIX_APP)})


def test_without_approval_a_non_interactive_run_ends_awaiting_approval(
    waiting: AgentRun, project: Path
) -> None:
    assert waiting.exit_code == 0, waiting.output
    assert waiting.status == "awaiting_approval"
    assert waiting.step("apply")["status"] == "awaiting_approval"
    assert (project / "src/app.py").read_text() == ORIGINAL_APP


def test_resume_with_approve_applies_the_waiting_change_set(
    waiting: AgentRun, resume: Callable[..., AgentRun], project: Path
) -> None:
    resumed = resume(waiting.run_id, "--approve")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.step("apply")["status"] == "succeeded"
    assert resumed.step("fix")["attempts"] == 1
    assert resumed.json("apply", "approval.json")["via"] == "command line"
    assert (project / "src/app.py").read_text() == FIXED_APP


def test_resume_with_reject_keeps_the_rejected_patch_and_fails_the_step(
    waiting: AgentRun, resume: Callable[..., AgentRun], project: Path
) -> None:
    resumed = resume(waiting.run_id, "--reject")
    assert resumed.exit_code == 1
    assert resumed.step("apply")["status"] == "failed"
    assert "+    return 'hello'" in resumed.text("apply", "rejected.patch")
    assert (project / "src/app.py").read_text() == ORIGINAL_APP


def test_approve_on_the_command_line_applies_the_change_set(
    run_agent: Callable[..., AgentRun], script: Callable[..., dict[str, Any]], project: Path
) -> None:
    ran = run_agent(FIX_THEN_APPLY, {"fix": script(*FIX_APP)}, "--approve")
    assert ran.exit_code == 0, ran.output
    assert ran.step("apply")["outputs"]["approved_by"]
    assert "+    return 'hello'" in ran.text("apply", "applied.patch")
    assert (project / "src/app.py").read_text() == FIXED_APP


def test_approve_true_in_the_workflow_applies_without_a_flag(
    run_agent: Callable[..., AgentRun], script: Callable[..., dict[str, Any]], project: Path
) -> None:
    approved = FIX_THEN_APPLY.replace(
        "    type: apply_diff\n", "    type: apply_diff\n    approve: true\n"
    )
    ran = run_agent(approved, {"fix": script(*FIX_APP)})
    assert ran.exit_code == 0, ran.output
    assert ran.json("apply", "approval.json")["via"] == "workflow"
    assert (project / "src/app.py").read_text() == FIXED_APP


def test_in_a_git_repository_the_fix_lands_in_the_work_tree_only(
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
    git_project: Callable[..., str],
) -> None:
    head = git_project("rev-parse", "HEAD")
    approved = FIX_THEN_APPLY.replace(
        "    type: apply_diff\n", "    type: apply_diff\n    approve: true\n"
    )
    ran = run_agent(approved, {"fix": script(*FIX_APP)})
    assert ran.exit_code == 0, ran.output
    assert ran.json("fix", "policy.json")["isolation"]["workspace"] == "git-worktree"
    assert (project / "src/app.py").read_text() == FIXED_APP
    assert git_project("rev-parse", "HEAD") == head
    assert git_project("status", "--porcelain") == " M src/app.py\n"
    assert len(git_project("worktree", "list").splitlines()) == 1


# --- an approval integration (the first-party slack plugin) is asked --------------------------


@pytest.fixture
def webhook() -> Any:
    """A local Slack-like incoming webhook on 127.0.0.1 recording what it is sent."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[Any] = []

    class Hook(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(json.loads(body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/approvals", received
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_an_approval_integration_is_asked_and_the_run_waits_for_the_answer(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
    webhook: Any,
) -> None:
    import json

    url, received = webhook
    app = make_agent_app(
        plugins={
            "grants": {"slack": [{"permission": "network:http", "scope": ["127.0.0.1"]}]},
            "integrations": [{"type": "approval:slack", "webhook": url}],
        }
    )
    ran = run_agent(FIX_THEN_APPLY, {"fix": script(*FIX_APP)}, app=app)
    assert ran.exit_code == 0, ran.output
    assert ran.step("apply")["status"] == "awaiting_approval"
    assert (project / "src/app.py").read_text() == ORIGINAL_APP
    [message] = [json.dumps(m) for m in received]
    assert f"bcce workflow resume {ran.run_id} --approve" in message
    assert "src/app.py" in message
