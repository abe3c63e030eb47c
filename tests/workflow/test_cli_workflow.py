"""``bcce workflow``: validate, run (--dry-run, --json), status, list, diagram, --var."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from bcce.containers.application import Application
from bcce.workflow.state import RunState

Bcce = Callable[..., Result]
Write = Callable[..., Path]

GOOD = """
version: 1
workflow: good
steps:
  - {id: a, type: cmd, command: 'touch a.ran'}
  - {id: b, type: cmd, command: 'echo b', needs: [a]}
"""

PLANNED = """
version: 1
workflow: planned
steps:
  - {id: build, type: cmd, command: 'touch built', timeout_seconds: 30}
  - id: review
    type: agent
    prompt: review it
  - id: gate
    type: conditional
    condition: "steps.build.outcome == 'success'"
    needs: [build]
    then:
      - {id: ship, type: cmd, command: 'touch shipped', retry: {max_attempts: 2}}
    else:
      - {id: stop, type: cmd, command: 'true', if: always()}
"""


@pytest.fixture
def good(write_workflow: Write) -> Path:
    return write_workflow(GOOD, name="good.yml")


@pytest.fixture
def bad(write_workflow: Write) -> Path:
    return write_workflow(GOOD.replace("needs: [a]", "needs: [zz]"), name="bad.yml")


# --- validate -----------------------------------------------------------------------------------


def test_validate_reports_a_valid_file_with_its_step_count(bcce: Bcce, good: Path) -> None:
    result = bcce("workflow", "validate", good)

    assert result.exit_code == 0
    assert f"{good}: good (2 steps)" in result.stdout


def test_validate_checks_every_file_and_exits_3_if_any_is_invalid(
    bcce: Bcce, good: Path, bad: Path
) -> None:
    result = bcce("workflow", "validate", good, bad)

    assert result.exit_code == 3
    assert f"{good}: good (2 steps)" in result.stdout
    assert re.search(rf"\[BCCE200\] {re.escape(str(bad))}:5:\d+: ", result.stderr)
    assert "needs unknown step 'zz'" in result.stderr
    assert "hint: steps in this block: a, b" in result.stderr


def test_validate_json_reports_each_file(bcce: Bcce, good: Path, bad: Path) -> None:
    result = bcce("workflow", "validate", "--json", good, bad)

    report = json.loads(result.stdout)
    assert result.exit_code == 3
    assert report["valid"] is False
    first, second = report["files"]
    assert first == {"file": str(good), "valid": True, "workflow": "good", "steps": 2}
    assert second["valid"] is False
    assert second["error"]["code"] == "BCCE200"
    assert second["error"]["exit_code"] == 3
    assert second["error"]["location"].startswith(f"{bad}:5:")
    assert second["error"]["hint"] == "steps in this block: a, b"


def test_validate_json_of_valid_files_is_valid(bcce: Bcce, good: Path) -> None:
    result = bcce("workflow", "validate", "--json", good)

    assert result.exit_code == 0
    assert json.loads(result.stdout)["valid"] is True


def test_validate_uses_vars(bcce: Bcce, write_workflow: Write) -> None:
    path = write_workflow(
        "version: 1\nworkflow: v\nsteps:\n  - {id: a, type: cmd, command: 'echo ${WHO}'}\n"
    )

    assert bcce("workflow", "validate", path).exit_code == 3
    assert bcce("workflow", "validate", path, "--var", "WHO=me").exit_code == 0


def test_validate_reports_a_missing_file(bcce: Bcce, tmp_path: Path) -> None:
    result = bcce("workflow", "validate", tmp_path / "absent.yml")

    assert result.exit_code == 3
    assert "cannot read workflow" in result.stderr


# --- run --dry-run ------------------------------------------------------------------------------


def test_dry_run_shows_the_plan_and_runs_nothing(
    bcce: Bcce, write_workflow: Write, tmp_path: Path, runs_dir: Path
) -> None:
    path = write_workflow(PLANNED)

    result = bcce("workflow", "run", "--dry-run", path)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "plan for planned (5 steps) — nothing will run"
    assert lines[1] == "  build [cmd]  (timeout 30.0s)"
    assert lines[2].startswith("  review [agent] after build  (policy ")
    assert lines[3] == "  gate [conditional] after build"
    assert lines[4] == "    [then] ship [cmd]  (retry x2)"
    assert lines[5] == "    [else] stop [cmd]  (if always())"
    assert not (tmp_path / "built").exists()
    assert not runs_dir.exists()


def test_dry_run_json_describes_every_step_with_its_effective_policy(
    bcce: Bcce, write_workflow: Write, tmp_path: Path
) -> None:
    path = write_workflow(PLANNED)

    result = bcce("workflow", "run", "--dry-run", "--json", path)

    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True and plan["workflow"] == "planned"
    rows = {row["id"]: row for row in plan["steps"]}
    assert [row["id"] for row in plan["steps"]] == ["build", "review", "gate", "ship", "stop"]
    assert rows["review"]["policy_source"] == "policy.default"
    assert rows["review"]["policy"]["timeout_seconds"] == 900
    assert (rows["ship"]["branch"], rows["ship"]["depth"]) == ("then", 1)
    assert rows["ship"]["retry"]["max_attempts"] == 2
    assert rows["gate"]["waits_for"] == ["build"]
    assert not (tmp_path / "built").exists()


def test_dry_run_of_an_invalid_workflow_exits_3(bcce: Bcce, bad: Path) -> None:
    result = bcce("workflow", "run", "--dry-run", bad)

    assert result.exit_code == 3
    assert "needs unknown step 'zz'" in result.stderr


# --- run ----------------------------------------------------------------------------------------


def test_run_prints_a_line_per_transition_and_a_summary(bcce: Bcce, good: Path) -> None:
    result = bcce("workflow", "run", good, "--run-id", "r1")

    assert result.exit_code == 0
    out = result.stdout
    assert out.splitlines()[0] == "run r1: good"
    assert re.search(r"\] . a running", out) and re.search(r"\] . b done  \d+\.\d\ds", out)
    assert re.search(r"run r1 succeeded in \d+\.\d\ds \(2 succeeded\)", out)
    assert "details: bcce workflow status r1" in out


def test_run_json_prints_the_final_state_and_exit_code(bcce: Bcce, good: Path) -> None:
    result = bcce("workflow", "run", good, "--run-id", "r1", "--json")

    data = json.loads(result.stdout)
    assert result.exit_code == 0
    assert (data["run_id"], data["status"], data["exit_code"]) == ("r1", "succeeded", 0)
    assert data["steps"]["b"]["outputs"]["stdout"] == "b"
    assert data["order"] == ["a", "b"]


def test_run_json_of_a_failing_run_exits_1(bcce: Bcce, write_workflow: Write) -> None:
    path = write_workflow(
        "version: 1\nworkflow: f\nsteps:\n  - {id: a, type: cmd, command: 'false'}\n"
    )

    result = bcce("workflow", "run", path, "--json")

    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert (data["status"], data["exit_code"]) == ("failed", 1)


def test_run_exits_5_when_policy_denies_a_command_before_it_runs(
    bcce: Bcce, write_workflow: Write, tmp_path: Path
) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: deny
        steps:
          - {id: a, type: cmd, command: 'touch pwned', policy: {cmd_allowlist: [echo]}}
        """
    )

    result = bcce("workflow", "run", path)

    assert result.exit_code == 5
    assert not (tmp_path / "pwned").exists()
    assert "`touch` is not in the command allowlist" in result.stdout


def test_run_of_a_missing_file_exits_3(bcce: Bcce, tmp_path: Path) -> None:
    result = bcce("workflow", "run", tmp_path / "absent.yml")

    assert result.exit_code == 3
    assert "Traceback" not in result.output


def test_run_passes_vars_to_substitution(bcce: Bcce, write_workflow: Write) -> None:
    path = write_workflow(
        "version: 1\nworkflow: v\nsteps:\n  - {id: a, type: cmd, command: 'echo ${WHO}'}\n"
    )

    result = bcce("workflow", "run", path, "--var", "WHO=a=b", "--json")

    assert json.loads(result.stdout)["steps"]["a"]["outputs"]["stdout"] == "a=b"


@pytest.mark.parametrize("bad_var", ["nope", "1X=2", "=x", "A B=1"])
@pytest.mark.parametrize("command", ["run", "validate", "diagram"])
def test_a_malformed_var_is_a_usage_error(
    bcce: Bcce, good: Path, tmp_path: Path, bad_var: str, command: str
) -> None:
    result = bcce("workflow", command, good, "--var", bad_var)

    assert result.exit_code == 2
    assert f"Invalid value for --var: '{bad_var}' is not NAME=VALUE" in result.stderr
    assert not (tmp_path / "a.ran").exists()


# --- status -------------------------------------------------------------------------------------


def test_status_shows_the_run_and_its_steps(bcce: Bcce, good: Path) -> None:
    bcce("workflow", "run", good, "--run-id", "r1")

    result = bcce("workflow", "status", "r1")

    lines = result.stdout.splitlines()
    assert result.exit_code == 0
    assert lines[0] == "run r1  succeeded  workflow good"
    assert re.match(r"  a +succeeded +\d+\.\d\ds", lines[2])
    assert re.match(r"  b +succeeded", lines[3])


def test_status_json_is_the_run_state(bcce: Bcce, good: Path) -> None:
    bcce("workflow", "run", good, "--run-id", "r1")

    data = json.loads(bcce("workflow", "status", "r1", "--json").stdout)

    assert data["run_id"] == "r1"
    assert data["status"] == "succeeded"
    assert data["workflow"]["name"] == "good"
    assert data["workflow"]["path"] == str(good.resolve())
    assert set(data["steps"]) == {"a", "b"}


def _abandoned_run(app: Application, run_id: str) -> None:
    """A run recorded as running whose driver is gone (its lock released, as on a crash)."""
    store = app.workflow.state_store()
    recorder = store.create(
        RunState(run_id=run_id, workflow={"name": "ghost"}, order=["a"], steps={"a": {}})
    )
    recorder.record("run", None, status="running")
    recorder.snapshot()
    recorder.release()


def test_status_shows_interrupted_for_a_run_without_a_driver(
    bcce: Bcce, workflow_app: Application
) -> None:
    _abandoned_run(workflow_app, "ghost-1")

    text = bcce("workflow", "status", "ghost-1").stdout
    data = json.loads(bcce("workflow", "status", "ghost-1", "--json").stdout)

    assert text.splitlines()[0] == "run ghost-1  interrupted  workflow ghost"
    assert data["status"] == "interrupted"


def test_status_of_an_unknown_run_is_a_usage_error(bcce: Bcce) -> None:
    result = bcce("workflow", "status", "nope")

    assert result.exit_code == 2
    assert "no run nope" in result.stderr


def test_status_of_an_invalid_run_id_is_a_usage_error(bcce: Bcce) -> None:
    result = bcce("workflow", "status", "../../etc")

    assert result.exit_code == 2
    assert "invalid run id" in result.stderr


# --- list ---------------------------------------------------------------------------------------


def test_list_shows_runs_newest_first(bcce: Bcce, good: Path) -> None:
    for run_id in ("zz-first", "mm-second", "aa-third"):
        assert bcce("workflow", "run", good, "--run-id", run_id).exit_code == 0

    result = bcce("workflow", "list")

    ids = [line.split()[0] for line in result.stdout.splitlines()]
    assert ids == ["aa-third", "mm-second", "zz-first"]


def test_list_json_has_one_row_per_run(bcce: Bcce, good: Path, workflow_app: Application) -> None:
    bcce("workflow", "run", good, "--run-id", "zz-first")
    _abandoned_run(workflow_app, "aa-ghost")

    rows = json.loads(bcce("workflow", "list", "--json").stdout)

    assert [(r["run_id"], r["status"], r["workflow"]) for r in rows] == [
        ("aa-ghost", "interrupted", "ghost"),
        ("zz-first", "succeeded", "good"),
    ]
    assert rows[1]["finished_at"] is not None


def test_list_limit_keeps_the_newest(bcce: Bcce, good: Path) -> None:
    for run_id in ("r-1", "r-2", "r-3"):
        bcce("workflow", "run", good, "--run-id", run_id)

    rows = json.loads(bcce("workflow", "list", "--json", "--limit", "2").stdout)

    assert [r["run_id"] for r in rows] == ["r-3", "r-2"]


def test_list_without_runs_says_so(bcce: Bcce) -> None:
    result = bcce("workflow", "list")

    assert (result.exit_code, result.stdout) == (0, "no runs\n")
    assert json.loads(bcce("workflow", "list", "--json").stdout) == []


# --- diagram ------------------------------------------------------------------------------------


def test_diagram_prints_mermaid_by_default(bcce: Bcce, good: Path) -> None:
    result = bcce("workflow", "diagram", good)

    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "flowchart TD",
        '  a["a<br/>cmd"]',
        '  b["b<br/>cmd"]',
        "  a --> b",
    ]


def test_diagram_prints_graphviz_dot(bcce: Bcce, good: Path) -> None:
    result = bcce("workflow", "diagram", good, "--format", "dot")

    assert result.exit_code == 0
    assert result.stdout.startswith('digraph "good" {')
    assert '  "a" -> "b";' in result.stdout.splitlines()


def test_diagram_rejects_an_unknown_format(bcce: Bcce, good: Path) -> None:
    result = bcce("workflow", "diagram", good, "--format", "png")

    assert result.exit_code == 2


def test_diagram_of_an_invalid_workflow_exits_3(bcce: Bcce, bad: Path) -> None:
    result = bcce("workflow", "diagram", bad)

    assert result.exit_code == 3


def test_every_read_command_output_is_json_parseable(bcce: Bcce, good: Path) -> None:
    bcce("workflow", "run", good, "--run-id", "r1")
    outputs: list[Any] = [
        bcce("workflow", *args, "--json").stdout
        for args in (("validate", good), ("status", "r1"), ("list",), ("run", "--dry-run", good))
    ]

    assert all(json.loads(text) for text in outputs)
