"""The tool set layer: workflow tool names map to Claude Code tools; all others are disallowed."""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
from pathlib import Path

import pytest

from bcce.agent.runtime import bundled_cli
from bcce.errors import ConfigError
from bcce.policy.tools import KNOWN_TOOLS, MCP_TOOLS, TOOL_MAP, ToolSet
from bcce.testing.model_server import ScriptedModelServer

QUIET = ("--setting-sources", "")


def test_read_file_maps_to_read() -> None:
    assert ToolSet.from_available(["ReadFile"]).allowed == ("Read",)


def test_search_maps_to_grep_and_glob() -> None:
    assert ToolSet.from_available(["Search"]).allowed == ("Grep", "Glob")


@pytest.mark.parametrize("name", ["Diff", "Apply"])
def test_diff_and_apply_map_to_the_in_place_edit_tools(name: str) -> None:
    assert ToolSet.from_available([name]).allowed == ("Edit", "MultiEdit")


def test_write_file_maps_to_write() -> None:
    assert ToolSet.from_available(["WriteFile"]).allowed == ("Write",)


@pytest.mark.parametrize("name", ["Cmd", "Bash"])
def test_cmd_and_bash_map_to_bash(name: str) -> None:
    assert ToolSet.from_available([name]).allowed == ("Bash",)


def test_tools_keep_their_order_without_duplicates() -> None:
    tools = ToolSet.from_available(["ReadFile", "Diff", "Apply", "Cmd", "Bash", "ReadFile"])
    assert tools.allowed == ("Read", "Edit", "MultiEdit", "Bash")
    assert tools.sources == ("ReadFile", "Diff", "Apply", "Cmd", "Bash")


def test_every_tool_name_the_workflow_schema_accepts_is_mapped() -> None:
    schema_file = importlib.resources.files("bcce.workflow") / "schema" / "workflow-v1.json"
    schema = json.loads(schema_file.read_text())
    assert set(schema["$defs"]["tool"]["enum"]) == set(TOOL_MAP)


def test_no_tools_offers_nothing() -> None:
    assert ToolSet.from_available([]).allowed == ()


def test_an_unknown_tool_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        ToolSet.from_available(["ReadFile", "Shell"])
    assert caught.value.key == "available_tools[1]"


def test_a_string_is_not_a_list_of_tools() -> None:
    with pytest.raises(ConfigError):
        ToolSet.from_available("ReadFile")


def test_disallowed_names_every_other_known_tool() -> None:
    tools = ToolSet.from_available(["ReadFile", "Search"])
    assert set(tools.disallowed) == (set(KNOWN_TOOLS) - {"Read", "Grep", "Glob"}) | {MCP_TOOLS}


def test_disallowed_never_names_an_allowed_tool() -> None:
    tools = ToolSet.from_available(list(TOOL_MAP))
    assert not set(tools.disallowed) & set(tools.allowed)


@pytest.mark.parametrize(
    "tool",
    ["WebFetch", "WebSearch", "Task", "Agent", "NotebookEdit", "TodoWrite", "Skill", MCP_TOOLS],
)
def test_web_agent_notebook_and_mcp_tools_are_always_disallowed(tool: str) -> None:
    assert tool in ToolSet.from_available(list(TOOL_MAP)).disallowed


def test_a_prompt_step_reads_and_searches_by_default() -> None:
    assert ToolSet.for_prompt().allowed == ("Read", "Grep", "Glob")


@pytest.mark.parametrize("name", ["Diff", "Apply", "WriteFile"])
def test_a_prompt_step_may_not_name_an_edit_tool(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ToolSet.for_prompt(["ReadFile", name])
    assert caught.value.key == "available_tools[1]"


def test_a_prompt_step_may_run_commands_when_it_names_them() -> None:
    assert ToolSet.for_prompt(["ReadFile", "Cmd"]).allowed == ("Read", "Bash")


def test_read_and_search_tools_are_read_only() -> None:
    assert ToolSet.for_prompt().read_only
    assert not ToolSet.from_available(["ReadFile", "Cmd"]).read_only


@pytest.mark.e2e
def test_known_tools_cover_every_tool_the_bundled_claude_code_offers(tmp_path: Path) -> None:
    claude = bundled_cli()
    if claude is None:
        pytest.skip("claude-agent-sdk has no bundled Claude Code CLI")
    home = tmp_path / "home"
    home.mkdir()
    with ScriptedModelServer({"turns": [{"text": "ok"}]}) as server:
        env = server.anthropic_env(home) | {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        completed = subprocess.run(
            # no --tools: Claude Code offers its whole default set
            [str(claude), "-p", "hi", "--output-format", "stream-json", "--verbose", *QUIET],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert completed.returncode == 0, completed.stderr[-2000:]
    messages = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    init = next(m for m in messages if m.get("subtype") == "init")
    assert set(init["tools"]) <= set(KNOWN_TOOLS)
    assert {"Read", "Edit", "Write", "Bash"} <= set(init["tools"])
