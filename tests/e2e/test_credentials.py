"""The model credentials never reach the agent's commands.

Claude Code gets the key through a credential helper reading a private file, not through its
environment (which Bash inherits), and the sandbox denies the agent's commands reading that file.
The provider here is `anthropic`, pointed at the local scripted server, so a real key flows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcce.containers.application import Application
from bcce.testing.model_server import ScriptedModelServer

AgentRun = Any  # conftest.AgentRun: a finished run and its run directory

pytestmark = pytest.mark.e2e

API_KEY = "sk-ant-e2e-credential-check-4d1f9a"
WORKFLOW = """
version: 1
workflow: credentials
steps:
  - id: fix
    type: agent
    prompt: Look around.
    available_tools: [ReadFile, Bash]
    policy: {timeout_seconds: 120, allowed_paths: ["**"]}
"""


def test_the_agents_commands_see_neither_the_key_nor_its_file(
    make_agent_app: Callable[..., Application],
    run_agent: Callable[..., AgentRun],
) -> None:
    script = {
        "turns": [
            {"tool_use": [{"name": "Bash", "input": {"command": "env"}}]},
            {"tool_use": [{"name": "Bash", "input": {"command": "cat /tmp/bcce-credentials-*/*"}}]},
            {"text": "done"},
        ]
    }
    with ScriptedModelServer(script) as server:
        # The hook is off so that any command runs: the sandbox and the launcher alone decide.
        app = make_agent_app(
            disabled=frozenset({"hook"}),
            agent={"provider": "anthropic", "base_url": server.url, "api_key": API_KEY},
        )
        ran = run_agent(WORKFLOW, {}, app=app)
        sent_back = [json.dumps(r.body) for r in server.requests if r.turn and r.turn > 0]

    assert ran.exit_code == 0, ran.output
    assert ran.step("fix")["status"] == "succeeded"
    assert len(sent_back) == 2  # both commands ran and their output went to the model
    assert all(API_KEY not in body for body in sent_back)
    assert "ANTHROPIC_API_KEY" not in sent_back[0]
    # The credential file went with the step (other runs' directories may exist meanwhile).
    assert all(API_KEY not in _read(p) for p in Path("/tmp").glob("bcce-credentials-*/*"))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
