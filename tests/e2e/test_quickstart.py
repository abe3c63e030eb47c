"""The quickstart, as `make demo` runs it: the bcce command line, the real Claude Code, offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"


def isolated_environ(home: Path) -> dict[str, str]:
    """This process's environment without any bcce or AWS configuration of the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BCCE_", "AWS_"))}
    env["XDG_CONFIG_HOME"] = str(home / "xdg-config")
    env["AWS_CONFIG_FILE"] = str(home / "no-aws" / "config")
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "no-aws" / "credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env


@pytest.fixture(scope="module", params=["anthropic", "bedrock"])
def quickstart(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """Run the quickstart once per wire format on a copy of its project (module-scoped: the
    tests only read what it left); the project and the command's output."""
    tmp_path = tmp_path_factory.mktemp(f"quickstart-{request.param}")
    project = tmp_path / "project"
    shutil.copytree(QUICKSTART / "project", project)
    runs = tmp_path / "runs"
    env = {
        **isolated_environ(tmp_path),
        "BCCE_AGENT__PROVIDER": "scripted",
        "BCCE_AGENT__SCRIPT": str(QUICKSTART / "scripts"),
        "BCCE_AGENT__SCRIPTED_FORMAT": request.param,
        "BCCE_WORKFLOW__STATE_DIR": str(runs),
        "BCCE_STORAGE__ROOT": str(runs),
    }
    argv = [sys.executable, "-m", "bcce", "workflow", "run", str(QUICKSTART / "workflow.yml")]
    completed = subprocess.run(
        [*argv, "--workspace", str(project), "--approve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return project, completed.stdout


def test_quickstart_shows_both_denials(quickstart: tuple[Path, str]) -> None:
    _, output = quickstart
    assert "denied Write [hook: path.outside_workspace]" in output
    assert "denied Bash [hook: cmd.not_allowlisted]" in output


def test_quickstart_fixes_the_project_and_its_tests_pass(quickstart: tuple[Path, str]) -> None:
    project, _ = quickstart
    assert "return sum(values) / len(values)" in (project / "calculator.py").read_text()
    tests = subprocess.run(
        [sys.executable, "-m", "unittest"],
        cwd=project,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert tests.returncode == 0, tests.stderr


def test_quickstart_leaves_no_note_outside_the_project(quickstart: tuple[Path, str]) -> None:
    project, _ = quickstart
    assert list(project.parent.rglob("AGENT_NOTES.txt")) == []
