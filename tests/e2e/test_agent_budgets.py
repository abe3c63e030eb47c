"""Cost records and budgets on the real Claude Code, against the scripted model server.

Claude Code prices the token usage the scripted server reports (the script's ``usage``) at the
model's list price: Sonnet 4.5 costs $3 per million input and $15 per million output tokens, so
a turn reporting 1,000,000 input tokens costs about $3. The allowance logic is covered in detail
with a fake runtime by tests/workflow/test_budgets.py; these are the headline cases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcce.events.cost import CostLedger, CostRecord
from bcce.policy.spend import usd

pytestmark = pytest.mark.e2e

AgentRun = Any  # conftest.AgentRun: a finished run and its run directory


def turn(text: str, input_tokens: int = 100, output_tokens: int = 20) -> dict[str, Any]:
    return {"text": text, "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}


ONE_STEP = """
version: 1
workflow: {name}
steps:
  - id: fix
    type: agent
    prompt: Fix it.
    policy: {{allowed_paths: ["src/**"], timeout_seconds: 120}}
"""


@pytest.fixture
def agent_app(make_agent_app: Callable[..., Any]) -> Any:
    return make_agent_app(core={"team": "platform", "project": "billing"})


def ledger(runs_dir: Path) -> list[CostRecord]:
    return CostLedger(runs_dir / "costs.jsonl").records()


@pytest.fixture
def two_runs(run_agent: Callable[..., AgentRun]) -> list[AgentRun]:
    """Two runs of one agent step each, with different token usage."""
    first = run_agent(ONE_STEP.format(name="first"), {"fix": {"turns": [turn("Done.", 5_000)]}})
    second = run_agent(
        ONE_STEP.format(name="second"),
        {"fix": {"turns": [turn("Looking.", 2_000, 300), turn("Done.", 3_000, 40)]}},
    )
    for ran in (first, second):
        assert ran.exit_code == 0, ran.output
    return [first, second]


def test_ledger_records_match_the_usage_json_of_each_agent_step(
    two_runs: list[AgentRun], runs_dir: Path
) -> None:
    records = {r.run_id: r for r in ledger(runs_dir)}
    assert len(records) == 2
    for ran in two_runs:
        usage = ran.json("fix", "usage.json")
        record = records[ran.run_id]
        assert (record.step, record.attempt, record.team, record.project) == (
            "fix",
            1,
            "platform",
            "billing",
        )
        assert record.workflow == ran.state["workflow"]["name"]
        assert record.model == usage["model"]
        assert record.total_cost_usd == usage["total_cost_usd"] > 0
        assert record.input_tokens == usage["usage"]["input_tokens"]
        assert record.output_tokens == usage["usage"]["output_tokens"]
        [(model, breakdown)] = usage["model_usage"].items()
        assert record.model_usage[model]["input_tokens"] == breakdown["inputTokens"]
        assert record.model_usage[model]["cost_usd"] == breakdown["costUSD"]
        assert ran.step("fix")["spent_usd"] == usage["total_cost_usd"]


def test_cost_report_totals_equal_the_sum_of_recorded_usage(
    two_runs: list[AgentRun], bcce: Callable[..., Any]
) -> None:
    usages = [ran.json("fix", "usage.json") for ran in two_runs]

    result = bcce("cost", "report", "--by", "workflow", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["total"]["cost_usd"] == pytest.approx(sum(u["total_cost_usd"] for u in usages))
    assert report["total"]["input_tokens"] == sum(u["usage"]["input_tokens"] for u in usages)
    assert report["total"]["output_tokens"] == sum(u["usage"]["output_tokens"] for u in usages)
    assert report["total"]["runs"] == 2
    by_workflow = {row["workflow"]: row["cost_usd"] for row in report["rows"]}
    assert by_workflow == {
        "first": pytest.approx(usages[0]["total_cost_usd"]),
        "second": pytest.approx(usages[1]["total_cost_usd"]),
    }


STOPPED = """
version: 1
workflow: stopped
steps:
  - id: fix
    type: agent
    prompt: Fix the typo in src/app.py.
    max_budget_usd: 1
    available_tools: [ReadFile, Diff]
    policy: {allowed_paths: ["src/**"], timeout_seconds: 120}
  - id: apply
    type: apply_diff
    approve: true
    policy: {allowed_paths: ["src/**"]}
"""


def test_a_session_costing_more_than_its_step_budget_is_stopped_and_fails(
    run_agent: Callable[..., AgentRun], project: Path
) -> None:
    edit = {
        "tool_use": [
            {
                "name": "Edit",
                "input": {
                    "file_path": "{workspace}/src/app.py",
                    "old_string": "'helo'",
                    "new_string": "'hello'",
                },
            }
        ],
        "usage": {"input_tokens": 1_000_000, "output_tokens": 20},  # about $3
    }
    scripted = {"turns": [edit, turn("Fixed."), turn("Really fixed.")]}

    ran = run_agent(STOPPED, {"fix": scripted})

    assert ran.exit_code == 5, ran.output
    usage = ran.json("fix", "usage.json")
    # Claude Code itself stopped at the allowance bcce gave it, after the first turn.
    assert (usage["subtype"], usage["num_turns"]) == ("error_max_budget_usd", 1)
    step = ran.step("fix")
    assert (step["status"], step["denied"]) == ("failed", True)
    assert "budget exceeded" in step["error"]
    spent = usd(usage["total_cost_usd"])
    assert f"the step budget (max_budget_usd of step fix) is $1.00 and {spent}" in step["error"]
    assert ran.events("budget.exceeded") == [
        {"step": "fix", "scope": "step", "limit_usd": 1.0, "spent_usd": usage["total_cost_usd"]}
    ]
    assert not ran.path("fix", "changes.patch").exists()
    assert ran.step("apply")["status"] == "skipped"
    assert "'helo'" in (project / "src" / "app.py").read_text()


RESUMABLE = """
version: 1
workflow: resumable
max_budget_usd: 1
steps:
  - id: first
    type: agent
    prompt: Look around.
    policy: {{timeout_seconds: 120}}
  - id: gate
    type: cmd
    command: test -f {marker}
  - id: second
    type: prompt
    prompt: Summarise.
    policy: {{timeout_seconds: 120}}
"""


def test_a_resumed_run_caps_the_next_step_by_what_it_spent_before(
    run_agent: Callable[..., AgentRun],
    resume: Callable[..., AgentRun],
    tmp_path: Path,
    runs_dir: Path,
) -> None:
    marker = tmp_path / "gate-open"
    about_60_cents = turn("Done.", 200_000)
    failed = run_agent(
        RESUMABLE.format(marker=marker),
        {"first": {"turns": [about_60_cents]}, "second": {"turns": [about_60_cents]}},
    )
    assert failed.exit_code == 1, failed.output
    spent_before = failed.json("first", "usage.json")["total_cost_usd"]
    marker.touch()

    resumed = resume(failed.run_id)

    # Alone, the second session (about $0.60) fits a $1 run budget; after the first one's
    # spend it gets only what is left, and Claude Code stops it there.
    assert resumed.exit_code == 5, resumed.output
    assert resumed.json("second", "usage.json")["subtype"] == "error_max_budget_usd"
    error = resumed.step("second")["error"]
    assert "the run budget (workflow max_budget_usd) is $1.00" in error
    assert resumed.step("first")["spent_usd"] == spent_before
    [event] = resumed.events("budget.exceeded")
    assert (event["step"], event["scope"]) == ("second", "run")
    assert event["spent_usd"] == pytest.approx(
        spent_before + resumed.json("second", "usage.json")["total_cost_usd"], abs=1e-6
    )
    assert [r.step for r in ledger(runs_dir)] == ["first", "second"]
