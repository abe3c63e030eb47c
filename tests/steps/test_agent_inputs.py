"""What an agent step is given: `inputs.paths` globs inside the workspace, within the limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcce.errors import WorkflowError
from bcce.steps.agent import input_files
from bcce.workflow.loader import load_workflow


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "a.py").write_text("a")
    (root / "src" / "pkg" / "b.py").write_text("b")
    (root / "README.md").write_text("readme")
    (tmp_path / "secret.txt").write_text("outside")
    return root


def test_globs_match_with_double_star_semantics(workspace: Path) -> None:
    names = [name for name, _ in input_files(workspace, ["src/**/*.py"])]

    assert names == ["src/a.py", "src/pkg/b.py"]


def test_a_plain_path_is_a_glob_matching_itself(workspace: Path) -> None:
    assert [name for name, _ in input_files(workspace, ["README.md"])] == ["README.md"]


def test_a_file_matched_twice_is_given_once(workspace: Path) -> None:
    names = [name for name, _ in input_files(workspace, ["src/a.py", "src/*.py"])]

    assert names == ["src/a.py"]


def test_patterns_cannot_reach_outside_the_workspace(workspace: Path) -> None:
    (workspace / "link.txt").symlink_to(workspace.parent / "secret.txt")

    names = [name for name, _ in input_files(workspace, ["../secret.txt", "*.txt"])]

    assert names == []


def _workflow(tmp_path: Path, tools: str) -> Path:
    path = tmp_path / "wf.yml"
    path.write_text(
        "version: 1\nworkflow: p\nsteps:\n"
        f"  - id: review\n    type: prompt\n    prompt: Review.\n    available_tools: {tools}\n"
    )
    return path


def test_a_prompt_step_naming_an_edit_tool_fails_validation_where_it_is_named(
    tmp_path: Path,
) -> None:
    with pytest.raises(WorkflowError) as caught:
        load_workflow(_workflow(tmp_path, "[ReadFile, WriteFile]"))

    assert caught.value.location == f"{tmp_path / 'wf.yml'}:7:22"
    assert "read-only" in caught.value.message


def test_a_prompt_step_with_read_tools_validates(tmp_path: Path) -> None:
    assert load_workflow(_workflow(tmp_path, "[ReadFile, Search]")).step("review").type == "prompt"
