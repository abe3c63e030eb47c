"""Agent and prompt steps on the real Claude Code, against the scripted model server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

AgentRun = Any  # conftest.AgentRun: a finished run and its run directory

BOTH_WIRES = pytest.mark.parametrize("wire", ["anthropic", "bedrock"])

EDIT_WORKFLOW = """
version: 1
workflow: edit
steps:
  - id: fix
    type: agent
    prompt: Fix the typo in src/app.py.
    available_tools: [ReadFile, Diff]
    policy: {allowed_paths: ["src/**"], timeout_seconds: 120}
  - id: before
    type: cmd
    command: cat src/app.py
  - id: apply
    type: apply_diff
    approve: true
    policy: {allowed_paths: ["src/**"]}
"""


def call(name: str, **tool_input: Any) -> dict[str, Any]:
    """One scripted turn making one tool call."""
    return {"tool_use": [{"name": name, "input": tool_input}]}


READ_APP = call("Read", file_path="{workspace}/src/app.py")
FIX_APP = call(
    "Edit", file_path="{workspace}/src/app.py", old_string="'helo'", new_string="'hello'"
)


@pytest.fixture
def agent_app(make_agent_app: Callable[..., Any]) -> Any:
    return make_agent_app(core={"team": "platform", "project": "billing"})


@pytest.fixture
def edit_run(run_agent: Callable[..., AgentRun], script: Callable[..., dict[str, Any]]) -> AgentRun:
    return run_agent(EDIT_WORKFLOW, {"fix": script(READ_APP, FIX_APP)})


@BOTH_WIRES
def test_allowed_edit_reaches_the_workspace_only_through_apply_diff(
    edit_run: AgentRun, project: Path
) -> None:
    assert edit_run.exit_code == 0, edit_run.output
    assert edit_run.step("fix")["status"] == "succeeded"
    patch = edit_run.text("fix", "changes.patch")
    assert "-    return 'helo'" in patch
    assert "+    return 'hello'" in patch
    # The cmd step between the agent and apply_diff still saw the original file.
    assert "'helo'" in edit_run.text("before", "output.txt")
    assert (project / "src/app.py").read_text() == "def greet():\n    return 'hello'\n"


@BOTH_WIRES
def test_agent_step_keeps_policy_transcript_decisions_patch_and_usage(edit_run: AgentRun) -> None:
    names = ("policy.json", "transcript.jsonl", "transcript.md", "decisions.jsonl")
    for name in (*names, "changes.patch", "usage.json"):
        assert edit_run.path("fix", name).is_file(), name
    policy = edit_run.json("fix", "policy.json")
    assert policy["policy"]["allowed_paths"] == ["src/**"]
    assert policy["tools"] == ["Read", "Edit", "MultiEdit"]
    assert "Bash" in policy["disallowed_tools"]
    assert "**Assistant → Edit**" in edit_run.text("fix", "transcript.md")
    allowed = [(d["tool"], d["rule"]) for d in edit_run.decisions("fix") if d["allowed"]]
    assert allowed == [("Read", "path.allowed"), ("Edit", "path.allowed")]


@BOTH_WIRES
def test_usage_json_and_the_cost_event_carry_tokens_cost_and_turns(edit_run: AgentRun) -> None:
    usage = edit_run.json("fix", "usage.json")
    assert usage["usage"]["input_tokens"] > 0
    assert usage["usage"]["output_tokens"] > 0
    assert usage["total_cost_usd"] > 0
    assert usage["num_turns"] == 3
    [event] = edit_run.events("cost.recorded")
    assert (event["workflow"], event["step"]) == ("edit", "fix")
    assert (event["team"], event["project"]) == ("platform", "billing")
    assert event["total_cost_usd"] == usage["total_cost_usd"]
    assert event["input_tokens"] == usage["usage"]["input_tokens"]


def test_agent_steps_result_text_is_its_output(
    run_agent: Callable[..., AgentRun], script: Callable[..., dict[str, Any]]
) -> None:
    ran = run_agent(
        EDIT_WORKFLOW,
        {"fix": {"turns": [READ_APP, FIX_APP, {"text": "Fixed the greeting."}]}},
    )
    assert ran.step("fix")["outputs"]["result"] == "Fixed the greeting."


PROMPT_WORKFLOW = """
version: 1
workflow: ask
steps:
  - id: ask
    type: prompt
    prompt: When is the release?
    policy: {timeout_seconds: 120}
  - id: say
    type: cmd
    command: echo "answer=${{ steps.ask.outputs.result }}"
"""


def test_prompt_steps_answer_is_its_output(
    run_agent: Callable[..., AgentRun], script: Callable[..., dict[str, Any]]
) -> None:
    ran = run_agent(
        PROMPT_WORKFLOW,
        {
            "ask": {
                "turns": [
                    call("Read", file_path="{workspace}/docs/notes.txt"),
                    {"text": "The release is on Tuesday."},
                ]
            }
        },
    )
    assert ran.exit_code == 0, ran.output
    assert ran.step("ask")["outputs"]["result"] == "The release is on Tuesday."
    assert "answer=The release is on Tuesday." in ran.text("say", "output.txt")


def test_prompt_step_is_offered_read_and_search_tools_only(
    run_agent: Callable[..., AgentRun], script: Callable[..., dict[str, Any]]
) -> None:
    ran = run_agent(PROMPT_WORKFLOW, {"ask": script()})
    tools = ran.json("ask", "policy.json")["tools"]
    assert sorted(tools) == ["Glob", "Grep", "Read"]
    init = json.loads(ran.text("ask", "transcript.jsonl").splitlines()[0])
    offered = init["data"]["tools"]
    assert "Edit" not in offered
    assert "Write" not in offered
    assert "Bash" not in offered


def test_prompt_steps_edit_attempt_is_denied(
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
    tree_bytes: Callable[[Path], dict[str, bytes]],
) -> None:
    before = tree_bytes(project)
    ran = run_agent(
        PROMPT_WORKFLOW,
        {
            "ask": script(
                call("Read", file_path="{workspace}/docs/notes.txt"),
                call(
                    "Edit",
                    file_path="{workspace}/docs/notes.txt",
                    old_string="Tuesday",
                    new_string="Friday",
                ),
            )
        },
    )
    [denied] = ran.denials("ask")
    assert (denied["tool"], denied["rule"]) == ("Edit", "tool.not_offered")
    assert ran.step("ask")["outputs"]["changed_files"] == 0
    assert tree_bytes(project) == before


def _wait_for(predicate: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def test_a_run_that_ends_leaves_another_runs_agent_with_the_same_run_id_running(
    tmp_path: Path,
    run_agent: Callable[..., AgentRun],
    cookie_processes: Callable[[Path], set[int]],
) -> None:
    # Run ids are only unique per state directory (and --run-id chooses them): two projects,
    # or two CI jobs on one machine, can run "nightly" at once.
    from bcce.workflow.process import kill_cookie
    from bcce.workflow.runner import run_cookie

    shared = f"shared-{uuid.uuid4().hex[:8]}"
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "project", other / "project")
    (other / "scripts").mkdir()
    slow = call("Bash", command="touch src/started && sleep 30")
    (other / "scripts" / "fix.json").write_text(json.dumps({"turns": [slow, {"text": "ok"}]}))
    (other / "wf.yml").write_text(
        "version: 1\nworkflow: other\nsteps:\n  - id: fix\n    type: agent\n"
        "    prompt: Wait.\n    available_tools: [Bash]\n"
        '    policy: {timeout_seconds: 120, cmd_allowlist: ["touch", "sleep"]}\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCCE_")}
    env |= {
        "BCCE_AGENT__PROVIDER": "scripted",
        "BCCE_AGENT__SCRIPT": str(other / "scripts"),
        "BCCE_WORKFLOW__STATE_DIR": str(other / "runs"),
        "BCCE_STORAGE__ROOT": str(other / "runs"),
    }
    argv = [sys.executable, "-m", "bcce", "workflow", "run", str(other / "wf.yml")]
    argv += ["--run-id", shared, "--workspace", str(other / "project")]
    first = subprocess.Popen(
        argv, cwd=other, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        copies = other / "runs" / shared / "workspaces"
        _wait_for(lambda: list(copies.glob("*/src/started")), "the other run's agent command")
        ours = run_agent(
            "version: 1\nworkflow: quick\nsteps:\n  - id: hi\n    type: cmd\n    command: 'true'\n",
            {},
            run_id=shared,
        )
        assert ours.exit_code == 0, ours.output
        assert cookie_processes(other / "runs" / shared), "ending our run stopped the other's agent"
    finally:
        first.kill()
        first.wait(timeout=30)
        kill_cookie(run_cookie(other / "runs" / shared))
