"""Policy in depth on the real Claude Code: each layer stops what it covers.

Most tests switch the other layers off (``make_agent_app(disabled=...)``) so that the layer under
test is the only thing between the scripted agent and the violation; a few run the full stack to
show which layer acts when all are on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcce.steps.agent import LAYERS

pytestmark = pytest.mark.e2e

AgentRun = Any  # conftest.AgentRun: a finished run and its run directory
BOTH_WIRES = pytest.mark.parametrize("wire", ["anthropic", "bedrock"])


def only(layer: str) -> frozenset[str]:
    """The layers to disable so that ``layer`` acts alone."""
    return LAYERS - {layer}


def workflow(
    *,
    policy: dict[str, Any],
    tools: list[str] | None = None,
    step_type: str = "agent",
    step_id: str = "fix",
) -> str:
    """One agent (or prompt) step; JSON values are YAML flow values."""
    lines = [
        "version: 1",
        "workflow: layers",
        "steps:",
        f"  - id: {step_id}",
        f"    type: {step_type}",
        "    prompt: Do the task.",
        f"    policy: {json.dumps({'timeout_seconds': 120, **policy})}",
    ]
    if tools is not None:
        lines.append(f"    available_tools: {json.dumps(tools)}")
    return "\n".join(lines) + "\n"


def call(name: str, **tool_input: Any) -> dict[str, Any]:
    """One scripted turn making one tool call."""
    return {"tool_use": [{"name": name, "input": tool_input}]}


def python_write(path: Path | str) -> dict[str, Any]:
    """A Bash call writing ``path`` through an interpreter (which the hook cannot see into)."""
    return call("Bash", command=f"python3 -c \"open('{path}','w').write('x')\"")


READ_APP = call("Read", file_path="{workspace}/src/app.py")
FIX_APP = call(
    "Edit", file_path="{workspace}/src/app.py", old_string="'helo'", new_string="'hello'"
)
EDIT_TOOLS = ["ReadFile", "Diff", "WriteFile"]
ALL_TOOLS = ["ReadFile", "Search", "Diff", "WriteFile", "Bash"]


def found_anywhere(root: Path, name: str) -> list[Path]:
    return sorted(root.rglob(name))


# --- layer 1: the tool set --------------------------------------------------------------------


def test_tool_set_alone_stops_tools_not_in_available_tools(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
) -> None:
    app = make_agent_app(disabled=only("tools"))
    ran = run_agent(
        workflow(policy={"cmd_allowlist": ["python3 -c"]}, tools=["ReadFile", "Diff"]),
        {
            "fix": script(
                python_write(project / "leak.txt"),
                call("Write", file_path="{workspace}/src/new.py", content="x = 1\n"),
            )
        },
        app=app,
    )
    denied = [(d["layer"], d["tool"], d["rule"]) for d in ran.denials("fix")]
    assert denied == [("tools", "Bash", "tool.not_offered"), ("tools", "Write", "tool.not_offered")]
    assert not (project / "leak.txt").exists()
    assert "new.py" not in ran.text("fix", "changes.patch")


# --- layer 2: the PreToolUse hook -------------------------------------------------------------


@BOTH_WIRES
def test_hook_alone_denies_a_write_outside_the_workspace(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    app = make_agent_app(disabled=only("hook"))
    ran = run_agent(
        workflow(policy={"allowed_paths": ["src/**"]}, tools=EDIT_TOOLS),
        {"fix": script(call("Write", file_path="{workspace}/../escape.txt", content="x"))},
        app=app,
    )
    [denied] = ran.denials("fix")
    assert (denied["layer"], denied["tool"], denied["rule"]) == (
        "hook",
        "Write",
        "path.outside_workspace",
    )
    assert found_anywhere(tmp_path, "escape.txt") == []


def test_hook_alone_denies_a_write_outside_allowed_paths(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    app = make_agent_app(disabled=only("hook"))
    ran = run_agent(
        workflow(policy={"allowed_paths": ["src/**"]}, tools=EDIT_TOOLS),
        {"fix": script(call("Write", file_path="{workspace}/docs/new.txt", content="x"))},
        app=app,
    )
    [denied] = ran.denials("fix")
    assert (denied["layer"], denied["rule"]) == ("hook", "path.not_allowed")
    assert "new.txt" not in ran.text("fix", "changes.patch")
    assert found_anywhere(tmp_path, "new.txt") == []


def test_hook_alone_denies_a_command_not_in_the_allowlist(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
) -> None:
    app = make_agent_app(disabled=only("hook"))
    ran = run_agent(
        workflow(policy={"cmd_allowlist": ["python3 -m unittest"]}, tools=ALL_TOOLS),
        {"fix": script(call("Bash", command=f"touch {project}/touched.txt"))},
        app=app,
    )
    [denied] = ran.denials("fix")
    assert (denied["layer"], denied["tool"], denied["rule"]) == (
        "hook",
        "Bash",
        "cmd.not_allowlisted",
    )
    assert not (project / "touched.txt").exists()


def test_hook_denies_the_edit_that_exceeds_max_edits(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
) -> None:
    app = make_agent_app(disabled=only("hook"))
    second = call(
        "Edit", file_path="{workspace}/src/app.py", old_string="greet", new_string="welcome"
    )
    ran = run_agent(
        workflow(policy={"max_edits": 1}, tools=EDIT_TOOLS),
        {"fix": script(READ_APP, FIX_APP, second)},
        app=app,
    )
    [denied] = ran.denials("fix")
    assert (denied["tool"], denied["rule"]) == ("Edit", "budget.max_edits")
    patch = ran.text("fix", "changes.patch")
    assert "+    return 'hello'" in patch
    assert "welcome" not in patch


def test_hook_denies_the_read_that_exceeds_max_files(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
) -> None:
    app = make_agent_app(disabled=only("hook"))
    ran = run_agent(
        workflow(policy={"max_files": 1}, tools=EDIT_TOOLS),
        {"fix": script(READ_APP, call("Read", file_path="{workspace}/src/util.py"))},
        app=app,
    )
    [denied] = ran.denials("fix")
    assert (denied["tool"], denied["rule"]) == ("Read", "budget.max_files")
    assert denied["input"]["file_path"].endswith("src/util.py")
    _, refused = ran.tool_results("fix")
    assert refused["is_error"]
    assert "double" not in str(refused["content"])


def test_an_error_inside_the_hook_denies_the_call(
    monkeypatch: pytest.MonkeyPatch,
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
) -> None:
    from bcce.policy.hook import ToolPolicy

    def broken(self: Any, raw: str, *, for_write: bool) -> Any:
        raise RuntimeError("path checker bug")

    monkeypatch.setattr(ToolPolicy, "_check_path", broken)
    app = make_agent_app(disabled=only("hook"))
    ran = run_agent(
        workflow(policy={}, tools=EDIT_TOOLS),
        {"fix": script(call("Write", file_path="{workspace}/src/new.py", content="x = 1\n"))},
        app=app,
    )
    [denied] = ran.denials("fix")
    assert (denied["layer"], denied["tool"], denied["rule"]) == ("hook", "Write", "hook.error")
    assert "new.py" not in ran.text("fix", "changes.patch")


def test_hook_alone_denies_a_prompt_steps_edit(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
    tree_bytes: Callable[[Path], dict[str, bytes]],
) -> None:
    before = tree_bytes(project)
    app = make_agent_app(disabled=only("hook"))
    ran = run_agent(
        workflow(policy={}, step_type="prompt", step_id="ask"),
        {"ask": script(READ_APP, FIX_APP)},
        app=app,
    )
    [denied] = ran.denials("ask")
    assert (denied["layer"], denied["tool"], denied["rule"]) == ("hook", "Edit", "budget.max_edits")
    assert ran.step("ask")["outputs"]["changed_files"] == 0
    assert tree_bytes(project) == before


def test_a_command_that_overruns_its_bash_timeout_ends_with_the_call(
    run_agent: Callable[..., AgentRun], script: Callable[..., dict[str, Any]]
) -> None:
    # The hook denies `run_in_background` because a detached command outlives its decision;
    # Claude Code also detaches on its own a command that overruns the call's `timeout`.
    overrun = call("Bash", command="touch src/started && sleep 6", timeout=1000)
    ran = run_agent(
        workflow(policy={"cmd_allowlist": ["touch", "sleep"]}, tools=ALL_TOOLS),
        {"fix": script(overrun)},
    )
    [decision] = ran.decisions("fix")
    assert decision["allowed"]
    results = " ".join(str(r["content"]) for r in ran.tool_results("fix"))
    assert "moved to the background" not in results
    # Killed at the end of the session instead, the command leaves the empty mount points of
    # Claude Code's sandbox (.claude/settings.json, .mcp.json, .bashrc ...) in the copy.
    changed = {f["path"] for f in ran.json("fix", "audit.json")["files"]}
    assert changed == {"src/started"}


# --- layer 3: the OS sandbox ------------------------------------------------------------------


@BOTH_WIRES
def test_bash_write_outside_the_copy_passes_the_hook_and_is_stopped_by_the_sandbox(
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
) -> None:
    ran = run_agent(
        workflow(policy={"cmd_allowlist": ["python3 -c"]}, tools=ALL_TOOLS),
        {"fix": script(python_write(project / "leak.txt"))},
    )
    [decision] = ran.decisions("fix")
    assert (decision["tool"], decision["allowed"]) == ("Bash", True)
    [result] = ran.tool_results("fix")
    assert result["is_error"]
    assert "Read-only file system" in str(result["content"])
    assert not (project / "leak.txt").exists()
    assert ran.json("fix", "policy.json")["isolation"]["sandbox"] == "claude-code-bubblewrap"


def test_sandbox_alone_stops_a_bash_write_outside_the_copy(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
) -> None:
    app = make_agent_app(disabled=only("sandbox"))
    ran = run_agent(
        workflow(policy={"cmd_allowlist": ["python3 -c"]}, tools=ALL_TOOLS),
        {"fix": script(python_write(project / "leak.txt"))},
        app=app,
    )
    [result] = ran.tool_results("fix")
    assert result["is_error"]
    assert not (project / "leak.txt").exists()


def test_sandbox_alone_stops_a_bash_write_outside_allowed_paths_in_the_copy(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
) -> None:
    app = make_agent_app(disabled=only("sandbox"))
    ran = run_agent(
        workflow(
            policy={"allowed_paths": ["src/**"], "cmd_allowlist": ["python3 -c"]}, tools=ALL_TOOLS
        ),
        {"fix": script(python_write("docs/leak.txt"), python_write("src/made.py"))},
        app=app,
    )
    blocked, allowed = ran.tool_results("fix")
    assert blocked["is_error"]
    assert not allowed["is_error"]
    patch = ran.text("fix", "changes.patch")
    assert "src/made.py" in patch
    assert "docs/leak.txt" not in patch


# --- layer 4: the post-run audit --------------------------------------------------------------


@pytest.fixture
def audited_outside_write(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
) -> AgentRun:
    """Sandbox off: an allowed edit, then a Bash write into the user's workspace."""
    app = make_agent_app(disabled=frozenset({"sandbox"}))
    return run_agent(
        workflow(
            policy={"allowed_paths": ["src/**"], "cmd_allowlist": ["python3 -c"]}, tools=ALL_TOOLS
        ),
        {"fix": script(READ_APP, FIX_APP, python_write(project / "leak.txt"))},
        app=app,
    )


def test_without_the_sandbox_the_audit_catches_a_bash_write_outside_the_copy(
    audited_outside_write: AgentRun,
) -> None:
    ran = audited_outside_write
    assert ran.step("fix")["status"] == "failed"
    assert ran.step("fix")["denied"] is True
    rules = {v["rule"] for v in ran.json("fix", "audit.json")["violations"]}
    assert rules & {"audit.outside", "audit.path"}
    audit_denials = [e for e in ran.events("policy.denied") if e["layer"] == "audit"]
    assert audit_denials


def test_an_audit_violation_ends_the_run_with_exit_code_5(audited_outside_write: AgentRun) -> None:
    assert audited_outside_write.exit_code == 5
    assert audited_outside_write.status == "failed"


def test_an_audit_violation_discards_the_change_set(audited_outside_write: AgentRun) -> None:
    ran = audited_outside_write
    assert not ran.path("fix", "changes.patch").exists()
    assert "+    return 'hello'" in ran.text("fix", "rejected.patch")


# --- layer 5: the timeout ---------------------------------------------------------------------

TIMEOUT_POLICY = {"timeout_seconds": 3, "cmd_allowlist": ["touch", "sleep"]}
# Claude Code itself refuses a command that starts with `sleep`, so something runs first; the
# marker file shows (in audit.json) that the command really started before the timeout.
SLOW = call("Bash", command="touch src/started && sleep 60")


def test_timeout_stops_the_step_kills_its_processes_and_discards_its_changes(
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    cookie_processes: Callable[[Path], set[int]],
    project: Path,
) -> None:
    ran = run_agent(
        workflow(policy=TIMEOUT_POLICY, tools=ALL_TOOLS), {"fix": script(READ_APP, FIX_APP, SLOW)}
    )
    changed = {f["path"] for f in ran.json("fix", "audit.json")["files"]}
    assert "src/started" in changed, "the slow command never started"
    assert cookie_processes(ran.directory) == set()
    assert not ran.path("fix", "changes.patch").exists()
    assert (project / "src/app.py").read_text() == "def greet():\n    return 'helo'\n"
    # Claude Code's sandbox leaves empty mount points (.claude/settings.json, .mcp.json ...)
    # in the copy when its command is killed; they must not turn a timeout into a violation.
    assert ran.step("fix")["status"] == "timed_out", ran.step("fix")["error"]
    assert ran.exit_code == 1


def test_timeout_alone_stops_the_step_and_its_processes(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    cookie_processes: Callable[[Path], set[int]],
) -> None:
    app = make_agent_app(disabled=only("timeout"))
    ran = run_agent(
        workflow(policy=TIMEOUT_POLICY, tools=ALL_TOOLS), {"fix": script(SLOW)}, app=app
    )
    assert ran.step("fix")["status"] == "timed_out", ran.step("fix")["error"]
    assert {f["path"] for f in ran.json("fix", "audit.json")["files"]} == {"src/started"}
    assert cookie_processes(ran.directory) == set()


# --- layer 3: the isolated copy ---------------------------------------------------------------


def test_an_agent_step_in_a_git_repository_leaves_its_git_directory_alone(
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
    project: Path,
    git_project: Callable[..., str],
) -> None:
    info = project / ".git" / "info"
    before = sorted(p.name for p in info.iterdir())
    ran = run_agent(workflow(policy={}, tools=EDIT_TOOLS), {"fix": script(READ_APP)})
    assert sorted(p.name for p in info.iterdir()) == before
    assert ran.step("fix")["status"] == "succeeded", ran.step("fix")["error"]


# --- isolation tier and policy.strict ---------------------------------------------------------


@pytest.fixture
def no_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    from bcce.policy import sandbox

    tier = sandbox.SandboxTier("none", "test: bubblewrap unavailable")
    monkeypatch.setattr(sandbox, "probe_sandbox", lambda **_: tier)


@pytest.mark.usefixtures("no_sandbox")
def test_strict_policy_refuses_an_agent_step_without_a_sandbox(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
) -> None:
    app = make_agent_app(policy={"strict": True})
    ran = run_agent(workflow(policy={}, tools=EDIT_TOOLS), {"fix": script(READ_APP)}, app=app)
    assert ran.exit_code == 5
    assert ran.step("fix")["denied"] is True
    assert "policy.strict" in ran.step("fix")["error"]
    assert not ran.path("fix", "transcript.jsonl").exists()
    assert not (ran.directory / "workspaces").exists()


@pytest.mark.usefixtures("no_sandbox")
def test_without_strict_a_step_runs_without_a_sandbox_and_records_the_tier(
    run_agent: Callable[..., AgentRun], script: Callable[..., dict[str, Any]]
) -> None:
    ran = run_agent(workflow(policy={}, tools=EDIT_TOOLS), {"fix": script(READ_APP)})
    assert ran.step("fix")["status"] == "succeeded"
    isolation = ran.json("fix", "policy.json")["isolation"]
    assert (isolation["sandbox"], isolation["tier"]["tier"]) == ("none", "none")
    [event] = ran.events("policy.isolation")
    assert (event["tier"], event["sandboxed"], event["strict"]) == ("none", False, False)
