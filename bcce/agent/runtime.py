"""Agent runtimes: the interface, and locating the Claude Code CLI.

The Claude Code runtime drives the real CLI through ``claude-agent-sdk``; finding the CLI must not
import the SDK (slow, and not needed for ``--help`` or ``doctor``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bcce.errors import BcceError

if TYPE_CHECKING:
    from bcce.agent.session import AgentRequest, AgentResult


@dataclass(frozen=True)
class CliInfo:
    """Where the agent CLI is and what it says its version is."""

    path: Path
    version: str
    source: str  # "configured", "bundled" or "PATH"


@runtime_checkable
class AgentRuntime(Protocol):
    name: str

    def locate(self) -> CliInfo:
        """Find the agent program and its version; raise :class:`BcceError` saying how to fix it."""
        ...

    def run(self, request: AgentRequest, launcher_dir: Path) -> AgentResult:
        """Run one agent session in ``workspace`` until it ends, times out or is stopped."""
        ...


def bundled_cli() -> Path | None:
    """The Claude Code binary bundled with ``claude-agent-sdk``, if the package is installed."""
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_bundled" / "claude"
        if candidate.is_file():
            return candidate
    return None


class ClaudeCodeRuntime:
    """Runs the real Claude Code (the workflow's agent steps use it; see docs/agent-steps.md)."""

    name = "claude-code"

    def __init__(
        self, cli_path: Path | str | None = None, *, version_timeout: float = 30.0
    ) -> None:
        self.cli_path = Path(cli_path) if cli_path else None
        self.version_timeout = version_timeout

    def _find(self) -> tuple[Path, str]:
        if self.cli_path is not None:
            if not (self.cli_path.is_file() and os.access(self.cli_path, os.X_OK)):
                raise BcceError(
                    f"agent.cli_path {self.cli_path} is not an executable file",
                    key="agent.cli_path",
                    hint="set agent.cli_path to the claude binary, or unset it for the bundled one",
                )
            return self.cli_path, "configured"
        bundled = bundled_cli()
        if bundled is not None:
            return bundled, "bundled"
        on_path = shutil.which("claude")
        if on_path:
            return Path(on_path), "PATH"
        raise BcceError(
            "Claude Code CLI not found",
            hint="pip install claude-agent-sdk (it bundles the CLI), or set agent.cli_path",
        )

    def run(self, request: AgentRequest, launcher_dir: Path) -> AgentResult:
        """Run the session with this runtime's Claude Code (the request's, if it names one)."""
        import dataclasses

        from bcce.agent.session import run_session

        if request.cli is None:
            request = dataclasses.replace(request, cli=self._find()[0])
        return run_session(request, launcher_dir)

    def locate(self) -> CliInfo:
        path, source = self._find()
        try:
            completed = subprocess.run(
                [str(path), "--version"],
                capture_output=True,
                text=True,
                timeout=self.version_timeout,
                env={**os.environ, "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1"},
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BcceError(
                f"Claude Code at {path} did not run: {exc}",
                hint="reinstall claude-agent-sdk or fix agent.cli_path",
            ) from exc
        if completed.returncode != 0:
            raise BcceError(
                f"Claude Code at {path} exited {completed.returncode}: "
                f"{(completed.stderr or completed.stdout).strip()[:200]}",
                hint="reinstall claude-agent-sdk or fix agent.cli_path",
            )
        return CliInfo(path=path, version=completed.stdout.strip().split()[0], source=source)
