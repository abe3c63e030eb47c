"""What apply_diff will apply cannot be changed by a later agent step, even without a sandbox."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bcce.containers.application import Application

pytestmark = pytest.mark.e2e

AgentRun = Any  # conftest.AgentRun: a finished run and its run directory

WORKFLOW = """
version: 1
workflow: integrity
steps:
  - id: first
    type: agent
    prompt: Fix the greeting.
    available_tools: [ReadFile, Diff, Bash]
    policy: {timeout_seconds: 120, allowed_paths: ["src/**"]}
  - id: second
    type: agent
    prompt: Look around.
    available_tools: [ReadFile, Bash]
    policy: {timeout_seconds: 120, allowed_paths: ["src/**"]}
"""


def test_a_later_step_rewriting_an_earlier_change_set_fails_the_audit(
    make_agent_app: Callable[..., Application],
    run_agent: Callable[..., AgentRun],
) -> None:
    first = {
        "turns": [
            {"tool_use": [{"name": "Read", "input": {"file_path": "{workspace}/src/app.py"}}]},
            {
                "tool_use": [
                    {
                        "name": "Edit",
                        "input": {
                            "file_path": "{workspace}/src/app.py",
                            "old_string": "'helo'",
                            "new_string": "'hello'",
                        },
                    }
                ]
            },
            {"text": "fixed"},
        ]
    }
    tamper = "python3 -c \"open('{workspace}/../../first/changes.patch','a').write('#')\""
    second = {
        "turns": [
            {"tool_use": [{"name": "Bash", "input": {"command": tamper}}]},
            {"text": "done"},
        ]
    }
    # No sandbox and no hook: only the audit stands between the agent and the run directory.
    app = make_agent_app(disabled=frozenset({"hook", "sandbox"}))

    ran = run_agent(WORKFLOW, {"first": first, "second": second}, app=app)

    assert ran.step("first")["status"] == "succeeded"
    assert ran.step("second")["status"] == "failed"
    assert ran.exit_code == 5
    assert "first/changes.patch" in ran.step("second")["error"]
    assert ran.path("first", "changes.patch").read_text().endswith("#")  # the attempt happened
