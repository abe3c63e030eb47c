"""The PreToolUse hook layer: its rules, budgets, decision log, failing closed; the real CLI."""

from __future__ import annotations

import asyncio
import datetime
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bcce.policy.decision import Decision
from bcce.policy.hook import (
    MAX_LOGGED_CHARS,
    ToolPolicy,
    hook_output,
    make_hook_matchers,
    make_pre_tool_use_hook,
)
from bcce.policy.tools import ToolSet
from bcce.settings.model import StepPolicySettings
from bcce.testing.model_server import ScriptedModelServer

EVERYTHING = ToolSet(("Read", "Grep", "Glob", "Edit", "MultiEdit", "Write", "Bash"))
NOON = datetime.datetime(2025, 1, 2, 12, 0, tzinfo=datetime.UTC)


class FixedClock:
    def now(self) -> datetime.datetime:
        return NOON

    def monotonic(self) -> float:
        return 0.0


@dataclass
class Workspace:
    root: Path
    outside: Path


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    for directory in (root / "src" / "pkg", root / "docs", root / ".git"):
        directory.mkdir(parents=True)
    for index in range(5):
        (root / "src" / f"m{index}.py").write_text(f"x = {index}\n")
    (root / "docs" / "guide.md").write_text("# guide\n")
    (root / ".git" / "config").write_text("[core]\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("secret\n")
    (root / "src" / "link").symlink_to(outside)
    return Workspace(root, outside)


@dataclass
class Make:
    ws: Workspace
    records: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, tools: ToolSet = EVERYTHING, **options: Any) -> ToolPolicy:
        options.setdefault("allowed_paths", ["src/**"])
        options.setdefault("on_decision", self.records.append)
        options.setdefault("clock", FixedClock())
        return ToolPolicy(self.ws.root, tools, **options)


@pytest.fixture
def make(ws: Workspace) -> Make:
    return Make(ws)


def src(ws: Workspace, name: str = "m0.py") -> str:
    return str(ws.root / "src" / name)


# the tool set ----------------------------------------------------------------------------------


def test_a_tool_in_the_set_is_decided_by_its_rule(make: Make, ws: Workspace) -> None:
    decision = make().decide("Read", {"file_path": src(ws)})
    assert (decision.allowed, decision.rule, decision.layer) == (True, "path.allowed", "hook")


@pytest.mark.parametrize("tool", ["WebFetch", "Agent", "NotebookEdit", "mcp__github__create_pr"])
def test_a_tool_outside_the_set_is_denied(make: Make, tool: str) -> None:
    decision = make(ToolSet.for_prompt()).decide(tool, {})
    assert (decision.allowed, decision.rule) == (False, "tool.not_available")


def test_a_tool_in_the_set_without_a_rule_is_denied(make: Make) -> None:
    decision = make(ToolSet(("Read", "TodoWrite"))).decide("TodoWrite", {"todos": []})
    assert (decision.allowed, decision.rule) == (False, "tool.unsupported")


# malformed calls -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "tool_input"),
    [
        (None, {}),
        (42, {}),
        ("", {}),
        ("Read", None),
        ("Read", ["file_path"]),
        ("Read", "src/m0.py"),
        ("Read", {}),
        ("Read", {"file_path": 7}),
        ("Read", {"file_path": ["src/m0.py"]}),
        ("Edit", {"file_path": None, "old_string": "a", "new_string": "b"}),
        ("MultiEdit", {"file_path": "src/m0.py", "edits": "many"}),
        ("MultiEdit", {"file_path": "src/m0.py", "edits": []}),
        ("Grep", {"pattern": "x", "path": 3}),
        ("Grep", {"pattern": "x", "glob": {"a": 1}}),
        ("Glob", {}),
        ("Glob", {"pattern": "*.py", "path": False}),
        ("Bash", {}),
        ("Bash", {"command": ["ls"]}),
    ],
)
def test_a_malformed_call_is_denied(make: Make, tool: object, tool_input: object) -> None:
    decision = make(cmd_allowlist=["ls"]).decide(tool, tool_input)
    assert (decision.allowed, decision.rule) == (False, "tool.invalid_input")


def test_an_empty_path_is_denied(make: Make) -> None:
    assert make().decide("Read", {"file_path": ""}).rule == "path.invalid"


# path scope ------------------------------------------------------------------------------------


def test_a_relative_path_is_relative_to_the_workspace(make: Make) -> None:
    assert make().decide("Read", {"file_path": "src/m0.py"}).allowed


def test_reading_outside_the_allowed_paths_is_denied(make: Make, ws: Workspace) -> None:
    decision = make().decide("Read", {"file_path": str(ws.root / "docs" / "guide.md")})
    assert (decision.allowed, decision.rule) == (False, "path.not_allowed")


def test_reading_outside_the_workspace_is_denied(make: Make, ws: Workspace) -> None:
    decision = make(allowed_paths=["**"]).decide("Read", {"file_path": str(ws.outside)})
    assert decision.rule == "path.outside_workspace"


def test_a_dotdot_escape_is_denied(make: Make) -> None:
    decision = make(allowed_paths=["**"]).decide("Read", {"file_path": "src/../../outside.txt"})
    assert decision.rule == "path.outside_workspace"


def test_a_symlink_out_of_the_workspace_is_denied(make: Make, ws: Workspace) -> None:
    decision = make().decide("Read", {"file_path": src(ws, "link")})
    assert decision.rule == "path.symlink_escape"


@pytest.mark.parametrize("tool", ["Edit", "Write"])
def test_writing_outside_the_allowed_paths_is_denied(make: Make, ws: Workspace, tool: str) -> None:
    call = {"file_path": str(ws.root / "docs" / "new.md"), "content": "x"}
    assert make().decide(tool, call).rule == "path.not_allowed"


def test_writing_inside_the_allowed_paths_is_allowed(make: Make, ws: Workspace) -> None:
    decision = make().decide("Write", {"file_path": src(ws, "new.py"), "content": "x"})
    assert (decision.allowed, decision.rule) == (True, "path.allowed")


def test_writing_git_metadata_is_denied_even_when_everything_is_allowed(
    make: Make, ws: Workspace
) -> None:
    decision = make(allowed_paths=["**"]).decide(
        "Edit",
        {"file_path": str(ws.root / ".git" / "config"), "old_string": "a", "new_string": "b"},
    )
    assert decision.rule == "path.protected"


def test_a_multi_edit_path_is_checked_as_a_write(make: Make, ws: Workspace) -> None:
    call = {"file_path": str(ws.root / ".git" / "config"), "edits": [{"old_string": "a"}]}
    assert make(allowed_paths=["**"]).decide("MultiEdit", call).rule == "path.protected"


def test_a_notebook_path_is_checked_as_a_write(make: Make, ws: Workspace) -> None:
    policy = make(ToolSet(("NotebookEdit",)))
    call = {"notebook_path": str(ws.root / "docs" / "n.ipynb"), "new_source": "x"}
    assert policy.decide("NotebookEdit", call).rule == "path.not_allowed"


@pytest.mark.parametrize(
    ("tool", "tool_input"),
    [
        ("Read", {"file_path": "~/.ssh/id_rsa"}),
        ("Write", {"file_path": "~root/.bashrc", "content": "x"}),
        ("Grep", {"pattern": "SECRET", "path": "~"}),
        ("Grep", {"pattern": "SECRET", "glob": "~/**"}),
        ("Glob", {"pattern": "~/*.txt"}),
        ("Glob", {"pattern": "*.txt", "path": "~"}),
    ],
)
def test_a_home_directory_path_is_denied(make: Make, tool: str, tool_input: dict[str, Any]) -> None:
    # Claude Code expands a leading `~` to $HOME itself; checked against the bundled CLI.
    decision = make(allowed_paths=["**"]).decide(tool, tool_input)
    assert (decision.allowed, decision.rule) == (False, "path.home")


# searches --------------------------------------------------------------------------------------


def test_a_search_without_a_path_searches_the_workspace(make: Make) -> None:
    assert make(allowed_paths=["**"]).decide("Grep", {"pattern": "x"}).allowed


def test_a_search_of_a_directory_wider_than_the_scope_is_denied(make: Make) -> None:
    decision = make().decide("Grep", {"pattern": "x"})
    assert (decision.allowed, decision.rule) == (False, "path.not_allowed")
    assert "search inside an allowed directory (src)" in decision.reason


def test_a_search_inside_the_scope_is_allowed(make: Make) -> None:
    assert make().decide("Grep", {"pattern": "x", "path": "src", "glob": "**/*.py"}).allowed


def test_a_search_outside_the_workspace_is_denied(make: Make) -> None:
    decision = make(allowed_paths=["**"]).decide("Grep", {"pattern": "x", "path": "/etc"})
    assert decision.rule == "path.outside_workspace"


def test_a_search_filter_that_climbs_out_is_denied(make: Make) -> None:
    decision = make(allowed_paths=["**"]).decide("Grep", {"pattern": "x", "glob": "../**"})
    assert decision.rule == "path.glob_escape"


def test_a_glob_pattern_that_climbs_out_is_denied(make: Make) -> None:
    decision = make(allowed_paths=["**"]).decide("Glob", {"pattern": "src/../../**"})
    assert decision.rule == "path.glob_escape"


def test_a_glob_pattern_is_searched_from_its_literal_directories(make: Make) -> None:
    assert make().decide("Glob", {"pattern": "src/**/*.py"}).allowed


def test_a_glob_pattern_starting_with_a_wildcard_searches_the_whole_workspace(
    make: Make,
) -> None:
    assert make().decide("Glob", {"pattern": "**/*.py"}).rule == "path.not_allowed"


def test_an_absolute_glob_pattern_outside_the_workspace_is_denied(make: Make) -> None:
    decision = make(allowed_paths=["**"]).decide("Glob", {"pattern": "/etc/*"})
    assert decision.rule == "path.outside_workspace"


def test_an_absolute_glob_pattern_inside_the_scope_is_allowed(make: Make, ws: Workspace) -> None:
    assert make().decide("Glob", {"pattern": f"{ws.root}/src/*.py"}).allowed


def test_a_glob_path_outside_the_scope_is_denied(make: Make) -> None:
    assert make().decide("Glob", {"pattern": "*.md", "path": "docs"}).rule == "path.not_allowed"


def test_searches_do_not_count_toward_the_file_budget(make: Make) -> None:
    policy = make(max_files=0)
    assert policy.decide("Grep", {"pattern": "x", "path": "src"}).allowed
    assert policy.budget.usage().files == 0


# commands --------------------------------------------------------------------------------------


def test_an_allowlisted_command_is_allowed(make: Make) -> None:
    decision = make(cmd_allowlist=["pytest"]).decide("Bash", {"command": "pytest -q"})
    assert (decision.allowed, decision.rule) == (True, "cmd.allowlisted")


def test_a_command_not_in_the_allowlist_is_denied(make: Make) -> None:
    decision = make(cmd_allowlist=["pytest"]).decide("Bash", {"command": "curl http://x"})
    assert (decision.allowed, decision.rule) == (False, "cmd.not_allowlisted")


def test_every_sub_command_must_be_allowlisted(make: Make) -> None:
    decision = make(cmd_allowlist=["pytest"]).decide("Bash", {"command": "pytest && rm -rf src"})
    assert decision.rule == "cmd.not_allowlisted"


def test_without_an_allowlist_no_command_runs(make: Make) -> None:
    assert make().decide("Bash", {"command": "ls"}).rule == "cmd.no_allowlist"


def test_an_empty_allowlist_allows_no_command(make: Make) -> None:
    assert make(cmd_allowlist=[]).decide("Bash", {"command": "ls"}).rule == "cmd.not_allowlisted"


def test_a_background_command_is_denied(make: Make) -> None:
    call = {"command": "pytest", "run_in_background": True}
    assert make(cmd_allowlist=["pytest"]).decide("Bash", call).rule == "bash.background"


def test_a_command_asking_to_leave_the_sandbox_is_denied(make: Make) -> None:
    call = {"command": "pytest", "dangerouslyDisableSandbox": True}
    assert make(cmd_allowlist=["pytest"]).decide("Bash", call).rule == "bash.sandbox_override"


# budgets ---------------------------------------------------------------------------------------


def test_reading_more_distinct_files_than_the_budget_is_denied(make: Make, ws: Workspace) -> None:
    policy = make(max_files=2)
    assert policy.decide("Read", {"file_path": src(ws, "m0.py")}).allowed
    assert policy.decide("Read", {"file_path": src(ws, "m1.py")}).allowed
    decision = policy.decide("Read", {"file_path": src(ws, "m2.py")})
    assert (decision.allowed, decision.rule) == (False, "budget.max_files")


def test_the_same_file_spelt_differently_counts_once(make: Make, ws: Workspace) -> None:
    policy = make(max_files=1)
    for spelling in (src(ws), "src/m0.py", "src/pkg/../m0.py", f"{ws.root}/./src/m0.py"):
        assert policy.decide("Read", {"file_path": spelling}).allowed
    assert policy.budget.usage().files == 1


def test_written_files_count_toward_the_file_budget(make: Make, ws: Workspace) -> None:
    policy = make(max_files=1)
    assert policy.decide("Write", {"file_path": src(ws, "new.py"), "content": ""}).allowed
    assert policy.decide("Read", {"file_path": src(ws)}).rule == "budget.max_files"


def test_edits_beyond_the_budget_are_denied(make: Make, ws: Workspace) -> None:
    policy = make(max_edits=2)
    call = {"file_path": src(ws), "old_string": "x", "new_string": "y"}
    assert policy.decide("Edit", call).allowed
    assert policy.decide("Write", {"file_path": src(ws, "m1.py"), "content": ""}).allowed
    decision = policy.decide("Edit", call)
    assert (decision.allowed, decision.rule) == (False, "budget.max_edits")


def test_no_edit_budget_makes_the_step_read_only(make: Make, ws: Workspace) -> None:
    policy = make(max_edits=0)
    assert policy.decide("Write", {"file_path": src(ws), "content": ""}).rule == "budget.max_edits"
    assert policy.decide("Read", {"file_path": src(ws)}).allowed


def test_a_multi_edit_counts_each_of_its_edits(make: Make, ws: Workspace) -> None:
    policy = make(max_edits=3)
    edits = [{"old_string": "a", "new_string": "b"}] * 2
    assert policy.decide("MultiEdit", {"file_path": src(ws), "edits": edits}).allowed
    assert policy.budget.usage().edits == 2
    assert policy.decide("MultiEdit", {"file_path": src(ws), "edits": edits}).rule == (
        "budget.max_edits"
    )


def test_a_call_denied_by_its_path_consumes_no_budget(make: Make, ws: Workspace) -> None:
    policy = make(max_files=1, max_edits=1)
    policy.decide("Write", {"file_path": str(ws.root / "docs" / "x.md"), "content": ""})
    assert (policy.budget.usage().files, policy.budget.usage().edits) == (0, 0)


def test_a_call_denied_by_its_budget_consumes_nothing(make: Make, ws: Workspace) -> None:
    policy = make(max_files=5, max_edits=1)
    edits = [{"old_string": "a", "new_string": "b"}] * 2
    assert not policy.decide("MultiEdit", {"file_path": src(ws), "edits": edits}).allowed
    assert (policy.budget.usage().files, policy.budget.usage().edits) == (0, 0)


def test_concurrent_calls_never_overshoot_the_budgets(make: Make, ws: Workspace) -> None:
    policy = make(max_files=3, max_edits=4)
    assert policy.decide("Read", {"file_path": src(ws)}).allowed  # the edited file is counted
    reads = [("Read", {"file_path": src(ws, f"m{1 + index % 4}.py")}) for index in range(20)]
    edits = [("Edit", {"file_path": src(ws), "old_string": "x", "new_string": "y"})] * 20
    calls = reads + edits
    start = threading.Barrier(len(calls))

    def decide(call: tuple[str, dict[str, Any]]) -> Decision:
        start.wait()
        return policy.decide(*call)

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        decisions = list(pool.map(decide, calls))
    read_winners = {
        call[1]["file_path"] for call, d in zip(reads, decisions, strict=False) if d.allowed
    }
    assert len(read_winners) == 2
    assert sum(d.allowed for d in decisions[len(reads) :]) == 4
    assert (policy.budget.usage().files, policy.budget.usage().edits) == (3, 4)
    assert len(policy.decisions) == len(calls) + 1


# the decision log ------------------------------------------------------------------------------


def test_every_decision_is_logged_with_its_rule_and_counters(make: Make, ws: Workspace) -> None:
    policy = make(max_files=3)
    policy.decide("Read", {"file_path": src(ws)}, tool_use_id="toolu_1")
    policy.decide("WebFetch", {"url": "http://x"})
    first, second = make.records
    assert first == {
        "time": NOON.isoformat(),
        "layer": "hook",
        "tool": "Read",
        "tool_use_id": "toolu_1",
        "input": {"file_path": src(ws)},
        "allowed": True,
        "rule": "path.allowed",
        "reason": f"{src(ws)!r} is in scope",
        "counters": {"files": 1, "max_files": 3, "edits": 0, "max_edits": 20},
    }
    assert (second["tool"], second["allowed"], second["rule"]) == (
        "WebFetch",
        False,
        "tool.not_available",
    )
    assert policy.decisions == make.records


def test_file_contents_are_logged_only_as_sizes(make: Make, ws: Workspace) -> None:
    make().decide("Write", {"file_path": src(ws, "n.py"), "content": "API_KEY=hunter2"})
    assert make.records[0]["input"] == {"file_path": src(ws, "n.py"), "content_chars": 15}


def test_logged_inputs_and_reasons_are_redacted(make: Make) -> None:
    policy = make(cmd_allowlist=["ls"], redact=lambda text: text.replace("hunter2", "***"))
    policy.decide("Bash", {"command": "curl -u admin:hunter2 http://x"})
    (record,) = make.records
    assert record["input"]["command"] == "curl -u admin:*** http://x"
    assert "hunter2" not in repr(record)


def test_long_inputs_are_truncated_in_the_log(make: Make) -> None:
    make(cmd_allowlist=["echo"]).decide("Bash", {"command": "echo " + "a" * 5000})
    logged = make.records[0]["input"]["command"]
    assert logged.startswith("echo aaa")
    assert len(logged) < MAX_LOGGED_CHARS + 30


def test_unexpected_input_keys_are_logged_by_name(make: Make, ws: Workspace) -> None:
    make().decide("Read", {"file_path": src(ws), "offset": 3, "limit": 9})
    assert make.records[0]["input"]["other_keys"] == ["limit", "offset"]


def test_a_subagent_call_is_logged_with_its_agent(make: Make, ws: Workspace) -> None:
    make().decide("Read", {"file_path": src(ws)}, agent_id="agent-7")
    assert make.records[0]["agent_id"] == "agent-7"


def test_a_call_that_cannot_be_logged_is_denied(make: Make, ws: Workspace) -> None:
    def broken_sink(record: dict[str, Any]) -> None:
        raise OSError("disk full")

    decision = make(on_decision=broken_sink).decide("Read", {"file_path": src(ws)})
    assert (decision.allowed, decision.rule) == (False, "hook.error")


# failing closed --------------------------------------------------------------------------------


class Exploding:
    def check(self, *args: Any, **kwargs: Any) -> Decision:
        raise RuntimeError("checker bug")


def test_a_path_checker_error_denies(make: Make, ws: Workspace) -> None:
    decision = make(path_scope=Exploding()).decide("Read", {"file_path": src(ws)})
    assert (decision.allowed, decision.rule, decision.layer) == (False, "hook.error", "hook")
    assert make.records[0]["rule"] == "hook.error"


def test_a_command_checker_error_denies(make: Make) -> None:
    decision = make(commands=Exploding()).decide("Bash", {"command": "ls"})
    assert (decision.allowed, decision.rule) == (False, "hook.error")


def test_a_redactor_error_denies(make: Make, ws: Workspace) -> None:
    def broken(text: str) -> str:
        raise ValueError(text)

    assert make(redact=broken).decide("Read", {"file_path": src(ws)}).rule == "hook.error"


# the claude-agent-sdk callback -----------------------------------------------------------------


def run_hook(policy: ToolPolicy, input_data: object, tool_use_id: str | None = "toolu_1") -> Any:
    hook = make_pre_tool_use_hook(policy)
    return asyncio.run(hook(input_data, tool_use_id, {"signal": None}))  # type: ignore[arg-type]


def pre_tool_use(tool_name: str, tool_input: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """A PreToolUse input as the bundled Claude Code sends it."""
    return {
        "session_id": "s",
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/tmp",
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": tool_name,
        "tool_input": dict(tool_input),
        "tool_use_id": "toolu_1",
        **extra,
    }


def test_the_hook_answers_allow_in_the_sdk_shape(make: Make, ws: Workspace) -> None:
    output = run_hook(make(), pre_tool_use("Read", {"file_path": src(ws)}))
    assert output == {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "allow",
            "permissionDecisionReason": f"bcce policy [path.allowed]: {src(ws)!r} is in scope",
        }
    }


def test_the_hook_answers_deny_with_the_rule(make: Make) -> None:
    output = run_hook(make(), pre_tool_use("Bash", {"command": "ls"}))["hookSpecificOutput"]
    assert output["permissionDecision"] == "deny"
    assert output["permissionDecisionReason"].startswith("bcce policy [cmd.no_allowlist]: ")


def test_the_hook_logs_the_call_id_and_agent(make: Make, ws: Workspace) -> None:
    run_hook(make(), pre_tool_use("Read", {"file_path": src(ws)}, agent_id="a1"), "toolu_9")
    assert (make.records[0]["tool_use_id"], make.records[0]["agent_id"]) == ("toolu_9", "a1")


@pytest.mark.parametrize("input_data", [None, [], "Read", {"tool_name": "Read"}, {}])
def test_the_hook_denies_malformed_input(make: Make, input_data: object) -> None:
    output = run_hook(make(), input_data)
    assert output["hookSpecificOutput"]["permissionDecision"] == "deny"


def test_the_hook_denies_when_the_policy_itself_fails(make: Make, ws: Workspace) -> None:
    class BrokenPolicy(ToolPolicy):
        def decide(self, *args: Any, **kwargs: Any) -> Decision:
            raise RuntimeError("policy bug")

    policy = BrokenPolicy(ws.root, EVERYTHING)
    output = run_hook(policy, pre_tool_use("Read", {"file_path": src(ws)}))
    assert output == hook_output(Decision.deny("hook.error", "the policy hook failed; denied"))


def test_the_hook_matchers_block_when_the_hook_fails(make: Make) -> None:
    pytest.importorskip("claude_agent_sdk")
    (matcher,) = make_hook_matchers(make(), timeout=30)["PreToolUse"]
    assert (matcher.matcher, matcher.on_failure, matcher.timeout) == (None, "block", 30)
    assert len(matcher.hooks) == 1


def test_a_policy_is_built_from_step_settings(ws: Workspace) -> None:
    settings = StepPolicySettings(
        max_files=1, max_edits=0, allowed_paths=["docs/**"], cmd_allowlist=["ls"]
    )
    policy = ToolPolicy.from_step(settings, ws.root, EVERYTHING)
    assert policy.decide("Read", {"file_path": "docs/guide.md"}).allowed
    assert policy.decide("Read", {"file_path": "src/m0.py"}).rule == "path.not_allowed"
    assert policy.decide("Bash", {"command": "ls"}).allowed
    assert policy.decide("Write", {"file_path": "docs/x.md", "content": ""}).rule == (
        "budget.max_files"
    )


# the real Claude Code --------------------------------------------------------------------------

NOTES = "the deploy window is Tuesday"
E2E_SCRIPT: dict[str, Any] = {
    "turns": [
        {"tool_use": [{"name": "Read", "input": {"file_path": "{ws}/src/notes.txt"}}]},
        {
            "tool_use": [
                {"name": "Write", "input": {"file_path": "{ws}/escape.txt", "content": "x"}}
            ]
        },
        {
            "tool_use": [
                {
                    "name": "Bash",
                    "input": {
                        "command": "python3 -c \"open('{ws}/src/pwned.txt', 'w')\"",
                        "description": "write a file",
                    },
                }
            ]
        },
        {"text": "Done."},
    ]
}
LOOPBACK_GUARD = {
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


@dataclass
class RealRun:
    workspace: Path
    records: list[dict[str, Any]]
    server: ScriptedModelServer
    messages: list[Any]


def _text_of(tool_result: Mapping[str, Any]) -> str:
    content = tool_result.get("content")
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content)
    return str(content)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    """One run of the bundled Claude Code under the policy hook, against the scripted model."""
    sdk = pytest.importorskip("claude_agent_sdk")
    from bcce.agent.runtime import bundled_cli

    if bundled_cli() is None:
        pytest.skip("claude-agent-sdk has no bundled Claude Code CLI")
    base = tmp_path_factory.mktemp("hook-e2e")
    workspace, home = base / "ws", base / "home"
    (workspace / "src").mkdir(parents=True)
    home.mkdir()
    (workspace / "src" / "notes.txt").write_text(NOTES + "\n")
    tools = ToolSet.from_available(["ReadFile", "WriteFile", "Cmd"])
    records: list[dict[str, Any]] = []
    policy = ToolPolicy(
        workspace,
        tools,
        allowed_paths=["src/**"],
        cmd_allowlist=["pytest"],
        on_decision=records.append,
    )
    messages: list[Any] = []
    with ScriptedModelServer(E2E_SCRIPT, placeholders={"ws": str(workspace)}) as server:
        env = server.anthropic_env(home)
        env |= {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **LOOPBACK_GUARD}
        options = sdk.ClaudeAgentOptions(
            tools=list(tools.allowed),
            allowed_tools=list(tools.allowed),
            disallowed_tools=list(tools.disallowed),
            hooks=make_hook_matchers(policy),
            setting_sources=[],
            cwd=str(workspace),
            env=env,
            permission_mode="default",
        )

        async def collect() -> None:
            async for message in sdk.query(prompt="Read the notes.", options=options):
                messages.append(message)

        asyncio.run(collect())
    return RealRun(workspace, records, server, messages)


def _tool_result(run: RealRun, record: Mapping[str, Any]) -> dict[str, Any]:
    """What the model was told about the call that ``record`` decided."""
    final = run.server.turn_requests()[-1]
    return next(r for r in final.tool_results() if r["tool_use_id"] == record["tool_use_id"])


@pytest.mark.e2e
def test_real_claude_code_runs_an_allowed_read(real_run: RealRun) -> None:
    result = _tool_result(real_run, real_run.records[0])
    assert not result.get("is_error")
    assert NOTES in _text_of(result)
    assert real_run.records[0]["rule"] == "path.allowed"


@pytest.mark.e2e
def test_real_claude_code_is_denied_a_write_outside_the_allowed_paths(real_run: RealRun) -> None:
    assert not (real_run.workspace / "escape.txt").exists()
    record = real_run.records[1]
    assert (record["tool"], record["allowed"], record["rule"]) == (
        "Write",
        False,
        "path.not_allowed",
    )
    result = _tool_result(real_run, record)
    assert result.get("is_error")
    assert "[path.not_allowed]" in _text_of(result)


@pytest.mark.e2e
def test_real_claude_code_is_denied_a_command_not_in_the_allowlist(real_run: RealRun) -> None:
    assert not (real_run.workspace / "src" / "pwned.txt").exists()
    record = real_run.records[2]
    assert (record["tool"], record["allowed"], record["rule"]) == (
        "Bash",
        False,
        "cmd.not_allowlisted",
    )
    assert "[cmd.not_allowlisted]" in _text_of(_tool_result(real_run, record))


@pytest.mark.e2e
def test_real_claude_code_reports_the_hook_denials_in_its_result(real_run: RealRun) -> None:
    result = real_run.messages[-1]
    assert (type(result).__name__, result.subtype, result.result) == (
        "ResultMessage",
        "success",
        "Done.",
    )
    assert [d["tool_name"] for d in result.permission_denials] == ["Write", "Bash"]
    assert len(real_run.records) == 3
