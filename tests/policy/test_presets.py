"""Policy presets: shipped in config/policies/, usable by name in workflows and `policy check`."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcce.errors import ConfigError, WorkflowError
from bcce.policy.presets import expand_policy, load_policy, preset_names
from bcce.workflow.loader import load_workflow


def test_the_three_presets_ship() -> None:
    assert {"read-only-review", "test-fixer", "refactor"} <= set(preset_names())


def test_read_only_review_allows_no_edits_and_no_commands() -> None:
    policy = load_policy("read-only-review")

    assert policy.max_edits == 0
    assert policy.cmd_allowlist == []


def test_the_test_fixer_may_not_edit_tests() -> None:
    assert not any(p.startswith("tests") for p in load_policy("test-fixer").allowed_paths)


def test_a_preset_name_expands_to_its_keys() -> None:
    expanded = expand_policy("refactor")

    assert expanded["preset"] == "refactor"
    assert expanded["max_edits"] == load_policy("refactor").max_edits


def test_keys_next_to_a_preset_refine_it() -> None:
    expanded = expand_policy({"preset": "test-fixer", "max_edits": 2})

    assert expanded["max_edits"] == 2
    assert expanded["allowed_paths"] == load_policy("test-fixer").allowed_paths


def test_an_unknown_preset_is_an_error_naming_the_presets() -> None:
    with pytest.raises(ConfigError) as caught:
        expand_policy("no-such-preset")

    assert "test-fixer" in (caught.value.hint or "")


def _workflow(tmp_path: Path, policy: str) -> Path:
    path = tmp_path / "wf.yml"
    path.write_text(
        "version: 1\nworkflow: p\nsteps:\n"
        f"  - id: fix\n    type: agent\n    prompt: go\n    policy: {policy}\n"
    )
    return path


def test_a_workflow_step_names_a_preset(tmp_path: Path) -> None:
    workflow = load_workflow(_workflow(tmp_path, "{preset: test-fixer, max_edits: 1}"))

    policy = workflow.step("fix").raw["policy"]
    assert policy["max_edits"] == 1
    assert policy["cmd_allowlist"] == load_policy("test-fixer").cmd_allowlist


def test_an_unknown_preset_in_a_workflow_is_located(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError) as caught:
        load_workflow(_workflow(tmp_path, "nope"))

    assert caught.value.location == f"{tmp_path / 'wf.yml'}:7:13"
    assert "unknown policy preset 'nope'" in caught.value.message
