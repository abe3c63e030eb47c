"""Fixtures for the workflow engine's tests.

    make_workflow_app   build an isolated Application (overrides by section); shut down after
    workflow_app        one such Application: run state under ``tmp_path/runs``
    runs_dir            where that application keeps runs
    write_workflow      write dedented workflow YAML into ``tmp_path`` and return its path
    bcce                run ``bcce ARGS`` in process against ``workflow_app`` (Click's CliRunner)
    subprocess_env      the environment that points a ``bcce`` subprocess at the same run state
    spawn_bcce          start ``python -m bcce ARGS`` as a subprocess sharing the same run state
    run_state           a run's state as ``bcce workflow status --json`` reports it
    run_workflow        write a workflow, ``bcce workflow run`` it in process, return a :class:`Ran`
    wait_until          poll a predicate until it holds (or fail after a timeout)
    pid_gone            whether a process is gone (a zombie counts as gone)
    read_pids           the pids a step wrote to a file, one per line
    kill_leftovers      register pids to SIGKILL at teardown if a test left them running

Every application reads no configuration from the developer's machine: its environment is only
``PATH``, its working directory and user configuration file are under ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from click.testing import Result

    from bcce.containers.application import Application

#: Short SIGTERM-to-SIGKILL grace so timeout and cancel tests stay fast.
TEST_KILL_GRACE = 0.3


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def make_workflow_app(tmp_path: Path, runs_dir: Path) -> Iterator[Callable[..., Application]]:
    """``make_workflow_app(**overrides)``, overrides by section: ``core={"secrets": [...]}``."""
    from bcce.application import create_application
    from bcce.settings.layers import LayerOptions

    built: list[Application] = []

    def make(**overrides: Any) -> Application:
        sections = _merge(
            {
                "storage": {"root": str(runs_dir)},
                "workflow": {"state_dir": str(runs_dir), "kill_grace_seconds": TEST_KILL_GRACE},
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
        return app

    yield make
    for app in reversed(built):
        app.shutdown_resources()
        app.reset_singletons()


@pytest.fixture
def workflow_app(make_workflow_app: Callable[..., Application]) -> Application:
    return make_workflow_app()


@pytest.fixture
def write_workflow(tmp_path: Path) -> Callable[..., Path]:
    """``write_workflow(text, name="workflow.yml")``: the text is dedented first."""

    def write(text: str, name: str = "workflow.yml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def bcce(workflow_app: Application) -> Callable[..., Result]:
    """``bcce(*args, app=None)``: ``CliRunner().invoke(cli, args, obj=app)``."""
    from click.testing import CliRunner

    from bcce.cli.main import cli

    def invoke(*args: str | Path, app: Application | None = None) -> Result:
        return CliRunner().invoke(cli, [str(a) for a in args], obj=app or workflow_app)

    return invoke


@pytest.fixture
def subprocess_env(runs_dir: Path) -> dict[str, str]:
    """The environment that makes a ``bcce`` subprocess share ``workflow_app``'s run state."""
    return {
        **os.environ,
        "BCCE_STORAGE__ROOT": str(runs_dir),
        "BCCE_WORKFLOW__STATE_DIR": str(runs_dir),
        "BCCE_WORKFLOW__KILL_GRACE_SECONDS": str(TEST_KILL_GRACE),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def spawn_bcce(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``spawn_bcce(*args)``: ``python -m bcce ARGS`` in ``tmp_path``; killed if left running."""
    started: list[subprocess.Popen[str]] = []

    def spawn(*args: str | Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bcce", *(str(a) for a in args)],
            cwd=tmp_path,
            env=subprocess_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture
def run_state(bcce: Callable[..., Result]) -> Callable[[str], dict[str, Any]]:
    """A run's state through ``bcce workflow status RUN_ID --json`` (which must succeed)."""

    def read(run_id: str) -> dict[str, Any]:
        result = bcce("workflow", "status", run_id, "--json")
        assert result.exit_code == 0, result.output
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    return read


@dataclass
class Ran:
    """A finished in-process run: the CLI result and what the run directory holds."""

    result: Result
    run_id: str
    directory: Path
    state: dict[str, Any]

    @property
    def exit_code(self) -> int:
        return self.result.exit_code

    def step(self, step_id: str) -> dict[str, Any]:
        info: dict[str, Any] = self.state["steps"][step_id]
        return info

    def statuses(self) -> dict[str, str]:
        return {step_id: info.get("status") for step_id, info in self.state["steps"].items()}

    def artifact(self, step_id: str, name: str) -> str:
        return (self.directory / step_id / name).read_text(encoding="utf-8")

    def events(self, prefixes: tuple[str, ...] = ("workflow.", "step.")) -> list[dict[str, Any]]:
        """Events of the run whose type starts with one of ``prefixes``; the phase markers
        (``workflow.phase``) only when asked for by name."""
        lines = (self.directory / "events.jsonl").read_text(encoding="utf-8").splitlines()
        events = [json.loads(line) for line in lines]
        return [
            e
            for e in events
            if e["type"].startswith(prefixes)
            and (e["type"] != "workflow.phase" or "workflow.phase" in prefixes or "" in prefixes)
        ]

    def phases(self) -> list[str]:
        return [e["payload"]["phase"] for e in self.events(prefixes=("workflow.phase",))]


@pytest.fixture
def run_workflow(
    tmp_path: Path,
    runs_dir: Path,
    write_workflow: Callable[..., Path],
    bcce: Callable[..., Result],
    run_state: Callable[[str], dict[str, Any]],
) -> Callable[..., Ran]:
    """``run_workflow(text, *args, run_id="run-1", app=None)``: workspace ``tmp_path``."""

    def run(
        text: str, *args: str | Path, run_id: str = "run-1", app: Application | None = None
    ) -> Ran:
        path = write_workflow(text, name=f"{run_id}.yml")
        result = bcce(
            "workflow", "run", path, "--run-id", run_id, "--workspace", tmp_path, *args, app=app
        )
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        state = run_state(run_id) if (runs_dir / run_id / "run.json").is_file() else {}
        return Ran(result, run_id, runs_dir / run_id, state)

    return run


def _wait_until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """``wait_until(predicate, timeout=15.0, what="")``: poll until true, else fail the test."""
    return _wait_until


def _pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].split()[0] in ("Z", "X")


@pytest.fixture
def pid_gone() -> Callable[[int], bool]:
    return _pid_gone


@pytest.fixture
def read_pids() -> Callable[[Path], list[int]]:
    def read(path: Path) -> list[int]:
        return [int(line) for line in path.read_text().split() if line.strip()]

    return read


@pytest.fixture
def kill_leftovers() -> Iterator[Callable[[Sequence[int]], None]]:
    """Register pids a test started indirectly; any still alive are SIGKILLed at teardown."""
    pids: list[int] = []
    yield pids.extend
    for pid in pids:
        # Only a process still carrying a step's cookie is ours: a reused pid is left alone.
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"BCCE_PROCESS_COOKIE=" in environ and not _pid_gone(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
