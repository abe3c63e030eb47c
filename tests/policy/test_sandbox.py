"""The OS sandbox: probing the tier, strict mode, bubblewrap command lines, Claude Code's sandbox
settings, and a real bubblewrap run that cannot write outside its writable paths."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bcce.errors import ExitCode, PolicyDenied
from bcce.policy.sandbox import (
    SandboxTier,
    bwrap_argv,
    claude_code_sandbox_settings,
    probe_sandbox,
    require_sandbox,
    wrap_command,
    writable_paths,
)

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None, reason="install bubblewrap (package `bubblewrap`) to run this"
)
NO_SANDBOX = SandboxTier("none", "bwrap is not installed (package `bubblewrap`)")
BUBBLEWRAP = SandboxTier("bubblewrap", "bwrap runs", "/usr/bin/bwrap", "/usr/bin/socat")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    for name in ("src", "docs", ".git"):
        (root / name).mkdir(parents=True)
    (root / "src" / "app.py").write_text("app\n")
    (root / "docs" / "guide.md").write_text("guide\n")
    (root / ".git" / "config").write_text("[core]\n")
    return root


def fake_bwrap(tmp_path: Path, script: str) -> str:
    path = tmp_path / "bin" / "bwrap"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return str(path)


def test_probe_without_bwrap_is_tier_none_naming_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    tier = probe_sandbox()
    assert tier.name == "none"
    assert "bubblewrap" in tier.reason


def test_probe_with_a_bwrap_that_fails_is_tier_none_with_its_message(tmp_path: Path) -> None:
    tier = probe_sandbox(
        bwrap=fake_bwrap(tmp_path, "echo 'setting up uid map: denied' >&2; exit 1")
    )
    assert tier.name == "none"
    assert "setting up uid map: denied" in tier.reason


def test_probe_with_a_working_bwrap_is_tier_bubblewrap(tmp_path: Path) -> None:
    tier = probe_sandbox(bwrap=fake_bwrap(tmp_path, "exit 0"))
    assert tier.name == "bubblewrap"


@needs_bwrap
def test_probe_finds_the_installed_bubblewrap_working() -> None:
    assert probe_sandbox().name == "bubblewrap"


def test_strict_policy_refuses_tier_none_with_exit_5() -> None:
    with pytest.raises(PolicyDenied) as caught:
        require_sandbox(NO_SANDBOX, strict=True)
    assert caught.value.exit_code == ExitCode.POLICY_DENIED
    assert caught.value.hint is not None
    assert "bubblewrap" in caught.value.hint


def test_non_strict_policy_accepts_tier_none() -> None:
    require_sandbox(NO_SANDBOX, strict=False)


def test_strict_policy_for_claude_code_needs_socat() -> None:
    tier = SandboxTier("bubblewrap", "bwrap runs", "/usr/bin/bwrap", None)
    with pytest.raises(PolicyDenied, match="socat"):
        require_sandbox(tier, strict=True, claude_code=True)


def test_strict_policy_accepts_bubblewrap_with_socat_for_claude_code() -> None:
    require_sandbox(BUBBLEWRAP, strict=True, claude_code=True)


def test_tier_record_names_the_tier_and_reason() -> None:
    assert BUBBLEWRAP.to_dict()["tier"] == "bubblewrap"
    assert BUBBLEWRAP.to_dict()["claude_code_ready"] is True


def test_argv_unshares_everything_and_drops_capabilities(workspace: Path) -> None:
    argv = bwrap_argv(workspace, [workspace / "src"])
    for flag in ("--unshare-all", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "--share-net" not in argv


def test_argv_keeps_the_network_only_for_host(workspace: Path) -> None:
    assert "--share-net" in bwrap_argv(workspace, [], network="host")


def test_argv_rejects_an_unknown_network_mode(workspace: Path) -> None:
    with pytest.raises(ValueError, match="network"):
        bwrap_argv(workspace, [], network="some")  # type: ignore[arg-type]


def test_argv_binds_the_writable_path_over_the_read_only_workspace(workspace: Path) -> None:
    argv = bwrap_argv(workspace, [workspace / "src"])
    read_only = argv.index("--ro-bind", argv.index("--tmpfs"))
    writable = argv.index("--bind")
    assert argv[read_only + 1] == str(workspace)
    assert argv[writable + 1] == str(workspace / "src")
    assert read_only < writable


def test_argv_keeps_git_read_only_even_when_the_whole_copy_is_writable(workspace: Path) -> None:
    argv = bwrap_argv(workspace, [workspace])
    protected = len(argv) - 1 - argv[::-1].index(str(workspace / ".git"))
    assert argv[protected - 2] == "--ro-bind"
    assert protected > argv.index("--bind")


def test_argv_refuses_a_writable_path_outside_the_workspace(
    workspace: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="outside the workspace"):
        bwrap_argv(workspace, [tmp_path])


def test_argv_changes_directory_to_the_workspace(workspace: Path) -> None:
    argv = bwrap_argv(workspace, [])
    assert argv[argv.index("--chdir") + 1] == str(workspace)


def test_wrapped_command_ends_with_the_program_after_a_separator(workspace: Path) -> None:
    argv = wrap_command(["pytest", "-q"], workspace, [])
    assert argv[-3:] == ["--", "pytest", "-q"]


def test_writable_paths_take_the_literal_directory_of_each_glob(workspace: Path) -> None:
    assert writable_paths(workspace, ["src/**", "docs/*.md"]) == [
        workspace / "docs",
        workspace / "src",
    ]


def test_writable_paths_keep_an_existing_literal_file(workspace: Path) -> None:
    assert writable_paths(workspace, ["docs/guide.md"]) == [workspace / "docs" / "guide.md"]


def test_writable_paths_leave_out_paths_that_do_not_exist(workspace: Path) -> None:
    assert writable_paths(workspace, ["build/**", "NEW.md"]) == []


def test_writable_paths_for_everything_is_the_workspace(workspace: Path) -> None:
    assert writable_paths(workspace, ["**", "src/**"]) == [workspace]


def test_writable_paths_never_follow_a_symlink_out(workspace: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (workspace / "out").symlink_to(tmp_path / "outside")
    assert writable_paths(workspace, ["out/**"]) == []


def test_claude_code_settings_fail_closed(tmp_path: Path) -> None:
    settings = claude_code_sandbox_settings()
    assert settings["enabled"] is True
    assert settings["failIfUnavailable"] is True
    assert settings["allowUnsandboxedCommands"] is False
    assert "enableWeakerNestedSandbox" not in settings


def test_claude_code_settings_deny_writes_to_absolute_paths(workspace: Path) -> None:
    settings = claude_code_sandbox_settings(deny_write=[workspace / "docs"], nested=True)
    assert settings["filesystem"] == {"denyWrite": [str(workspace / "docs")]}
    assert settings["enableWeakerNestedSandbox"] is True


# -- a real sandbox ---------------------------------------------------------------------------

WRITE = (
    "import sys\n"
    "try:\n open(sys.argv[1], 'w').write('x')\n print('wrote')\n"
    "except OSError as e:\n print('denied', e.errno)\n"
)


def run_inside(workspace: Path, writable: list[Path], target: Path) -> str:
    argv = wrap_command(["python3", "-c", WRITE, str(target)], workspace, writable)
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return completed.stdout.strip()


@needs_bwrap
def test_sandboxed_process_writes_inside_a_writable_path(workspace: Path) -> None:
    assert run_inside(workspace, [workspace / "src"], workspace / "src" / "new.py") == "wrote"
    assert (workspace / "src" / "new.py").read_text() == "x"


@needs_bwrap
def test_sandboxed_process_cannot_write_elsewhere_in_the_workspace(workspace: Path) -> None:
    target = workspace / "docs" / "guide.md"
    assert run_inside(workspace, [workspace / "src"], target).startswith("denied")
    assert target.read_text() == "guide\n"


@needs_bwrap
def test_sandboxed_process_cannot_write_git_config(workspace: Path) -> None:
    target = workspace / ".git" / "config"
    assert run_inside(workspace, [workspace], target).startswith("denied")
    assert target.read_text() == "[core]\n"


@needs_bwrap
def test_sandboxed_process_cannot_write_next_to_the_workspace(
    workspace: Path, tmp_path: Path
) -> None:
    target = tmp_path / "outside.txt"
    run_inside(workspace, [workspace], target)
    assert not target.exists()


@needs_bwrap
def test_sandboxed_process_cannot_write_to_the_host_filesystem(workspace: Path) -> None:
    parent = Path("/var/tmp")
    if not parent.is_dir():
        pytest.skip("no /var/tmp here")
    target = parent / f"bcce-sandbox-test-{secrets.token_hex(6)}"
    try:
        assert run_inside(workspace, [workspace], target).startswith("denied")
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    yield server.getsockname()[1]
    server.close()


CONNECT = (
    "import socket, sys\n"
    "try:\n"
    " socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
    " print('connected')\n"
    "except OSError: print('refused')\n"
)


@needs_bwrap
@pytest.mark.parametrize(("network", "expected"), [("none", "refused"), ("host", "connected")])
def test_sandbox_network_reaches_the_host_loopback_only_when_shared(
    workspace: Path, listener: int, network: str, expected: str
) -> None:
    argv = wrap_command(
        ["python3", "-c", CONNECT, str(listener)],
        workspace,
        [],
        network,  # type: ignore[arg-type]
    )
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    assert completed.stdout.strip() == expected


# -- Claude Code's own sandbox, with the settings bcce gives it --------------------------------


def bundled_claude() -> Path | None:
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "_bundled" / "claude"
    return binary if binary.is_file() else None


def bash_through_claude(tmp_path: Path, command: str) -> dict[str, Any]:
    """Have the real Claude Code run ``command`` with Bash in its sandbox; the tool result."""
    claude = bundled_claude()
    if claude is None:
        pytest.skip("claude-agent-sdk with its bundled Claude Code CLI is not installed")
    if shutil.which("bwrap") is None or shutil.which("socat") is None:
        pytest.skip("install bubblewrap and socat (packages `bubblewrap`, `socat`) to run this")
    from bcce.testing.model_server import ScriptedModelServer

    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    script = {
        "turns": [
            {"tool_use": [{"name": "Bash", "input": {"command": command, "description": "x"}}]},
            {"text": "done"},
        ]
    }
    settings = {"sandbox": claude_code_sandbox_settings()}
    with ScriptedModelServer(script) as server:
        env = server.anthropic_env(home) | {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        argv = [str(claude), "-p", "go", "--output-format", "stream-json", "--verbose"]
        argv += ["--setting-sources", "", "--allowedTools", "Bash"]
        argv += ["--settings", json.dumps(settings)]
        completed = subprocess.run(
            argv, cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert completed.returncode == 0, completed.stderr[-2000:]
        (result,) = server.turn_requests()[1].tool_results()
    return result


@pytest.mark.e2e
def test_claude_code_sandbox_stops_a_bash_write_outside_its_directory(tmp_path: Path) -> None:
    outside = Path("/var/tmp") / f"bcce-outside-{secrets.token_hex(6)}"
    try:
        result = bash_through_claude(tmp_path, f"python3 -c \"open('{outside}','w').write('x')\"")
        assert not outside.exists()
        assert result.get("is_error") is True
    finally:
        outside.unlink(missing_ok=True)


@pytest.mark.e2e
def test_claude_code_sandbox_lets_bash_write_in_its_directory(tmp_path: Path) -> None:
    result = bash_through_claude(tmp_path, "python3 -c \"open('made.txt','w').write('x')\"")
    assert not result.get("is_error")
    assert (tmp_path / "work" / "made.txt").read_text() == "x"
