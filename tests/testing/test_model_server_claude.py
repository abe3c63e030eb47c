"""The real bundled Claude Code CLI against the scripted model server, in both wire formats."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bcce.testing.model_server import ScriptedModelServer

pytestmark = pytest.mark.e2e

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
NOTES = "the deploy window is Tuesday"
READ_SCRIPT: dict[str, Any] = {
    "turns": [
        {
            "text": "I'll read the notes.",
            "tool_use": [{"name": "Read", "input": {"file_path": "{workspace}/notes.txt"}}],
        },
        {"text": "The notes name Tuesday."},
    ]
}
SUBAGENT_SCRIPT: dict[str, Any] = {
    "turns": [
        {
            "tool_use": [
                {
                    "name": "Agent",
                    "input": {
                        "description": "Read notes",
                        "prompt": "SUBAGENT-NOTES: read notes.txt and summarise it",
                        "subagent_type": "general-purpose",
                        "run_in_background": False,
                    },
                }
            ]
        },
        {"text": "Main done."},
    ],
    "subagent": {
        "marker": "SUBAGENT-NOTES",
        "turns": [
            {"tool_use": [{"name": "Read", "input": {"file_path": "{workspace}/notes.txt"}}]},
            {"text": "Subagent read the notes."},
        ],
    },
}
# Any traffic that ignored the base URL would go to a dead loopback proxy, never off the machine.
LOOPBACK_GUARD = {
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


@pytest.fixture(scope="module")
def claude() -> Path:
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        pytest.skip("claude-agent-sdk is not installed")
    binary = Path(spec.origin).parent / "_bundled" / "claude"
    if not binary.is_file():
        pytest.skip("claude-agent-sdk has no bundled Claude Code CLI")
    return binary


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text(NOTES + "\n")
    return work


def run_claude(
    claude: Path, server: ScriptedModelServer, wire: str, workspace: Path, tools: str
) -> list[dict[str, Any]]:
    home = workspace.parent / "home"
    home.mkdir()
    env = server.anthropic_env(home) if wire == "anthropic" else server.bedrock_env(home, MODEL)
    env |= {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **LOOPBACK_GUARD}
    completed = subprocess.run(
        [
            str(claude),
            "-p",
            "Read notes.txt and tell me what it says.",
            "--output-format",
            "stream-json",
            "--verbose",
            "--setting-sources",
            "",
            "--allowedTools",
            tools,
        ],
        cwd=workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]


def result_of(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return next(m for m in messages if m["type"] == "result")


def result_text(tool_result: dict[str, Any]) -> str:
    content = tool_result.get("content")
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content)
    return str(content)


@pytest.mark.parametrize("wire", ["anthropic", "bedrock"])
def test_claude_reads_a_file_and_answers_from_the_script(
    claude: Path, workspace: Path, wire: str
) -> None:
    with ScriptedModelServer(READ_SCRIPT, placeholders={"workspace": str(workspace)}) as server:
        messages = run_claude(claude, server, wire, workspace, "Read")
    result = result_of(messages)
    assert (result["subtype"], result["is_error"]) == ("success", False)
    assert result["result"] == "The notes name Tuesday."
    assert result["num_turns"] == 2


@pytest.mark.parametrize("wire", ["anthropic", "bedrock"])
def test_read_tool_result_reaches_the_next_request(
    claude: Path, workspace: Path, wire: str
) -> None:
    with ScriptedModelServer(READ_SCRIPT, placeholders={"workspace": str(workspace)}) as server:
        run_claude(claude, server, wire, workspace, "Read")
    turns = server.turn_requests()
    assert [request.turn for request in turns] == [0, 1]
    assert turns[0].tool_results() == []
    (tool_result,) = turns[1].tool_results()
    assert tool_result["tool_use_id"] == "toolu_bcce_000_00"
    assert not tool_result.get("is_error")
    assert NOTES in result_text(tool_result)


def test_bedrock_requests_use_the_bedrock_endpoints(claude: Path, workspace: Path) -> None:
    with ScriptedModelServer(READ_SCRIPT, placeholders={"workspace": str(workspace)}) as server:
        run_claude(claude, server, "bedrock", workspace, "Read")
    turns = server.turn_requests()
    assert {request.path for request in turns} == {f"/model/{MODEL}/invoke-with-response-stream"}
    assert all(request.body["anthropic_version"] == "bedrock-2023-05-31" for request in turns)


def test_subagent_conversation_is_told_apart_by_its_marker(claude: Path, workspace: Path) -> None:
    with ScriptedModelServer(SUBAGENT_SCRIPT, placeholders={"workspace": str(workspace)}) as server:
        messages = run_claude(claude, server, "anthropic", workspace, "Read,Agent")
    assert result_of(messages)["result"] == "Main done."
    assert [r.turn for r in server.turn_requests("subagent")] == [0, 1]
    assert [r.turn for r in server.turn_requests("main")] == [0, 1]
    (subagent_read,) = server.turn_requests("subagent")[1].tool_results()
    assert NOTES in result_text(subagent_read)
    assert any(m.get("parent_tool_use_id") == "toolu_bcce_000_00" for m in messages)
