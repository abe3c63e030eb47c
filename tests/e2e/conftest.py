"""Fixtures for end-to-end tests of agent steps on the real Claude Code.

Each test runs the bundled Claude Code CLI (from ``claude-agent-sdk``) against bcce's scripted
model server on 127.0.0.1; workflows run in process through the ``bcce`` command line.

    wire              the scripted server's wire format (``anthropic``; parametrize ``wire`` to
                      run a test in both ``anthropic`` and ``bedrock``)
    project           the user's workspace: a small project under ``tmp_path/project``
    git_project       make ``project`` a git repository; returns ``git(*args) -> stdout``
    runs_dir          where runs are kept (``tmp_path/runs``, outside the project)
    scripts_dir       the ``agent.script`` directory: ``<step_id>.json`` reply scripts
    make_agent_app    ``make_agent_app(disabled=..., **overrides)``: an isolated Application with
                      ``agent.provider: scripted``; ``disabled`` policy layers are switched off
                      for ``agent`` and ``prompt`` steps
    agent_app         ``make_agent_app()``
    bcce              run ``bcce ARGS`` in process (``app=`` another application)
    run_agent         write a workflow and one reply script per agent step, run it, return an
                      :class:`AgentRun` (the run id is unique unless given)
    resume            ``bcce workflow resume RUN_ID ARGS`` in process, return an :class:`AgentRun`
    tree_bytes        every file under a directory and its bytes (a byte-for-byte snapshot)
    cookie_processes  pids still carrying the process cookie of a run (by its directory)
    script            ``script(*turns)``: a reply script ending with a text turn

No test reads configuration from the developer's machine: settings come only from ``PATH`` and
the overrides, the working directory is ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import textwrap
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from click.testing import Result

    from bcce.containers.application import Application

PROJECT_FILES: Mapping[str, str] = {
    "src/app.py": "def greet():\n    return 'helo'\n",
    "src/util.py": "def double(x):\n    return x * 2\n",
    "docs/notes.txt": "release on Tuesday\n",
    "README.md": "# demo project\n",
}
"""The user's workspace in every test; agent policies usually allow ``src/**`` only."""

KILL_GRACE = 0.3


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="session", autouse=True)
def _claude_code_available() -> None:
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        pytest.skip("claude-agent-sdk is not installed")
    if not (Path(spec.origin).parent / "_bundled" / "claude").is_file():
        pytest.skip("claude-agent-sdk has no bundled Claude Code CLI")


@pytest.fixture
def wire() -> str:
    return "anthropic"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, text in PROJECT_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def git_project(project: Path) -> Callable[..., str]:
    """Make ``project`` a git repository with one commit; returns ``git(*args) -> stdout``."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(project.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "bcce tests",
        "GIT_AUTHOR_EMAIL": "tests@example.com",
        "GIT_COMMITTER_NAME": "bcce tests",
        "GIT_COMMITTER_EMAIL": "tests@example.com",
    }

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=project, env=env, capture_output=True, text=True, check=True
        )
        return done.stdout

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "start")
    return git


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def scripts_dir(tmp_path: Path) -> Path:
    path = tmp_path / "scripts"
    path.mkdir()
    return path


@pytest.fixture
def make_agent_app(
    tmp_path: Path, runs_dir: Path, scripts_dir: Path, wire: str
) -> Iterator[Callable[..., Application]]:
    """``make_agent_app(disabled=frozenset(), **overrides)``; overrides by settings section."""
    from bcce.application import create_application
    from bcce.settings.layers import LayerOptions
    from bcce.steps.agent import AgentExecutor, PromptExecutor
    from bcce.workflow.registry import StepType

    built: list[Application] = []

    def make(disabled: frozenset[str] = frozenset(), **overrides: Any) -> Application:
        sections = _merge(
            {
                "storage": {"root": str(runs_dir)},
                "workflow": {"state_dir": str(runs_dir), "kill_grace_seconds": KILL_GRACE},
                "agent": {
                    "provider": "scripted",
                    "script": str(scripts_dir),
                    "scripted_format": wire,
                    "max_turns": 20,
                },
            },
            overrides,
        )
        options = LayerOptions(
            environ={"PATH": os.environ["PATH"]},
            cwd=tmp_path,
            user_config_file=tmp_path / "none.yaml",
        )
        app = create_application(options=options, **sections)
        built.append(app)
        if disabled:
            registry = app.workflow.steps()
            registry.register(
                StepType("agent", lambda: AgentExecutor(disabled_layers=disabled), "test"),
                replace=True,
            )
            registry.register(
                StepType("prompt", lambda: PromptExecutor(disabled_layers=disabled), "test"),
                replace=True,
            )
        return app

    yield make
    for app in reversed(built):
        app.shutdown_resources()
        app.reset_singletons()


@pytest.fixture
def agent_app(make_agent_app: Callable[..., Application]) -> Application:
    return make_agent_app()


@pytest.fixture
def bcce(agent_app: Application) -> Callable[..., Result]:
    """``bcce(*args, app=None)``: ``CliRunner().invoke(cli, args, obj=app)``."""
    from click.testing import CliRunner

    from bcce.cli.main import cli

    def invoke(*args: str | Path, app: Application | None = None) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args], obj=app or agent_app)

    return invoke


@dataclass
class AgentRun:
    """A finished in-process run and what its run directory holds."""

    result: Result
    run_id: str
    directory: Path
    state: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return self.result.exit_code

    @property
    def output(self) -> str:
        return self.result.output

    @property
    def status(self) -> str:
        return str(self.state.get("status"))

    def step(self, step_id: str) -> dict[str, Any]:
        info: dict[str, Any] = self.state["steps"][step_id]
        return info

    def path(self, step_id: str, name: str) -> Path:
        return self.directory / step_id / name

    def text(self, step_id: str, name: str) -> str:
        return self.path(step_id, name).read_text(encoding="utf-8")

    def json(self, step_id: str, name: str) -> Any:
        return json.loads(self.text(step_id, name))

    def decisions(self, step_id: str) -> list[dict[str, Any]]:
        path = self.path(step_id, "decisions.jsonl")
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def denials(self, step_id: str) -> list[dict[str, Any]]:
        return [d for d in self.decisions(step_id) if not d["allowed"]]

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The payloads of the run's ``kind`` events, in order."""
        lines = (self.directory / "events.jsonl").read_text(encoding="utf-8").splitlines()
        return [e["payload"] for e in map(json.loads, lines) if e["type"] == kind]

    def tool_results(self, step_id: str) -> list[dict[str, Any]]:
        """Every tool_result block the agent got back, in order (from ``transcript.jsonl``)."""
        found: list[dict[str, Any]] = []
        for line in self.text(step_id, "transcript.jsonl").splitlines():
            content = json.loads(line).get("content")
            if isinstance(content, list):
                found += [b for b in content if isinstance(b, dict) and "tool_use_id" in b]
        return found


def unique_run_id() -> str:
    # Distinct ids keep runs (and the process cookies derived from them) apart even when
    # several test sessions share the machine.
    return f"e2e-{uuid.uuid4().hex[:12]}"


def _state(bcce: Callable[..., Result], run_id: str, app: Application | None) -> dict[str, Any]:
    result = bcce("workflow", "status", run_id, "--json", app=app)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
def run_agent(
    tmp_path: Path,
    project: Path,
    runs_dir: Path,
    scripts_dir: Path,
    bcce: Callable[..., Result],
) -> Callable[..., AgentRun]:
    """``run_agent(workflow, scripts, *args, run_id=None, app=None)``.

    ``workflow`` is dedented YAML; ``scripts`` maps agent step ids to reply scripts (mappings);
    the workspace is ``project``; the run id is unique unless given.
    """

    def run(
        workflow: str,
        scripts: Mapping[str, Mapping[str, Any]],
        *args: str | Path,
        run_id: str | None = None,
        app: Application | None = None,
    ) -> AgentRun:
        run_id = run_id or unique_run_id()
        for step_id, script in scripts.items():
            (scripts_dir / f"{step_id}.json").write_text(json.dumps(script), encoding="utf-8")
        path = tmp_path / "workflows" / f"{run_id}.yml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(textwrap.dedent(workflow).lstrip("\n"), encoding="utf-8")
        result = bcce(
            "workflow", "run", path, "--run-id", run_id, "--workspace", project, *args, app=app
        )
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return AgentRun(result, run_id, runs_dir / run_id, _state(bcce, run_id, app))

    return run


@pytest.fixture
def resume(runs_dir: Path, bcce: Callable[..., Result]) -> Callable[..., AgentRun]:
    """``resume(run_id, *args, app=None)``: ``bcce workflow resume RUN_ID ARGS``."""

    def go(run_id: str, *args: str, app: Application | None = None) -> AgentRun:
        result = bcce("workflow", "resume", run_id, *args, app=app)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return AgentRun(result, run_id, runs_dir / run_id, _state(bcce, run_id, app))

    return go


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() or path.is_symlink()
    }


@pytest.fixture
def tree_bytes() -> Callable[[Path], dict[str, bytes]]:
    return _tree_bytes


@pytest.fixture
def cookie_processes() -> Callable[[Path], set[int]]:
    """``cookie_processes(run_dir)``: live processes started by any step of that run."""
    from bcce.workflow.process import processes_with_cookie
    from bcce.workflow.runner import run_cookie

    def find(run_dir: Path) -> set[int]:
        return processes_with_cookie(run_cookie(run_dir), prefix=True)

    return find


@pytest.fixture
def script() -> Callable[..., dict[str, Any]]:
    """``script(*turns)``: a reply script of ``turns`` (mappings) and a closing text turn."""

    def make(*turns: Mapping[str, Any]) -> dict[str, Any]:
        return {"turns": [*turns, {"text": "Done."}]}

    return make
