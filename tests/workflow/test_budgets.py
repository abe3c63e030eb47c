"""Spend budgets of agent and prompt steps, with a fake agent runtime standing in for Claude Code.

The fake runtime plays one scripted session per step attempt: it reports the cost it is told to,
and like the real CLI it stops a session that goes past its ``max_budget_usd`` with the result
subtype ``error_max_budget_usd`` (unless told to ignore the budget). The real Claude Code is
exercised by tests/e2e/test_agent_budgets.py.
"""

from __future__ import annotations

import datetime
import json
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from dependency_injector import providers

from bcce.agent.session import AgentRequest, AgentResult
from bcce.events.cost import CostLedger, CostRecord

if TYPE_CHECKING:
    from click.testing import Result

    from bcce.containers.application import Application

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


@dataclass
class Session:
    """One fake session: what it costs, and how it ends."""

    cost: float
    error: bool = False  # ends with an error result (a failure worth a retry)
    ignore_budget: bool = False  # goes past max_budget_usd without being stopped
    interrupt: bool = False  # the user presses Ctrl-C while it runs
    edit: bool = True  # changes src/app.py in the step's workspace


@dataclass
class FakeRuntime:
    """Plays ``sessions[step_id]`` in order, one per attempt; remembers each request."""

    sessions: dict[str, list[Session]] = field(default_factory=dict)
    requests: list[tuple[str, AgentRequest]] = field(default_factory=list)
    name: str = "fake"

    def locate(self) -> Any:  # pragma: no cover - not used by runs
        raise NotImplementedError

    def allowances(self, step_id: str) -> list[float | None]:
        return [r.max_budget_usd for s, r in self.requests if s == step_id]

    def run(self, request: AgentRequest, launcher_dir: Path) -> AgentResult:
        step_id = request.cookie.split(":")[-2]
        self.requests.append((step_id, request))
        session = self.sessions[step_id].pop(0)
        if session.interrupt:
            raise KeyboardInterrupt
        if session.edit:
            (request.workspace / "src" / "app.py").write_text("changed = True\n")
        stopped = (
            request.max_budget_usd is not None
            and session.cost > request.max_budget_usd
            and not session.ignore_budget
        )
        tokens = int(session.cost * 1_000_000 / 3)  # $3 per million input tokens
        return AgentResult(
            text="done",
            is_error=stopped or session.error,
            subtype="error_max_budget_usd" if stopped else "success",
            num_turns=1,
            total_cost_usd=session.cost,
            # Like the real CLI, a budget stop reports zeros here and the counts per model.
            usage={"input_tokens": 0 if stopped else tokens, "output_tokens": 0},
            model_usage={
                MODEL: {"inputTokens": tokens, "outputTokens": 0, "costUSD": session.cost}
            },
        )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("changed = False\n")
    return root


@pytest.fixture
def fake() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def budget_app(
    make_workflow_app: Callable[..., Application], tmp_path: Path, fake: FakeRuntime
) -> Callable[..., Application]:
    """``budget_app(**overrides)``: agent steps run on ``fake`` (scripted endpoint, no CLI)."""
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)

    def make(**overrides: Any) -> Application:
        app = make_workflow_app(
            agent={"provider": "scripted", "script": str(scripts)},
            core={"team": "platform", "project": "billing"},
            **overrides,
        )
        app.agent.runtime.override(providers.Object(fake))
        return app

    return make


@pytest.fixture
def app(budget_app: Callable[..., Application]) -> Iterator[Application]:
    yield budget_app()


@dataclass
class Run:
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

    def events(self, kind: str) -> list[dict[str, Any]]:
        lines = (self.directory / "events.jsonl").read_text().splitlines()
        return [e["payload"] for e in map(json.loads, lines) if e["type"] == kind]


@pytest.fixture
def run(
    tmp_path: Path,
    project: Path,
    runs_dir: Path,
    app: Application,
    bcce: Callable[..., Result],
) -> Callable[..., Run]:
    """``run(workflow, run_id=..., app=None)``; one script file per agent step is written."""

    def go(text: str, *, run_id: str = "run-1", application: Application | None = None) -> Run:
        text = textwrap.dedent(text).lstrip("\n")
        for line in text.splitlines():
            if line.strip().startswith("- id:"):
                step_id = line.split(":", 1)[1].strip()
                (tmp_path / "scripts" / f"{step_id}.json").write_text('{"turns":[{"text":"x"}]}')
        path = tmp_path / f"{run_id}.yml"
        path.write_text(text)
        target = application or app
        result = bcce(
            "workflow", "run", path, "--run-id", run_id, "--workspace", project, app=target
        )
        return _finished(result, run_id, runs_dir, bcce, target)

    return go


@pytest.fixture
def resume(runs_dir: Path, app: Application, bcce: Callable[..., Result]) -> Callable[..., Run]:
    def go(run_id: str = "run-1") -> Run:
        result = bcce("workflow", "resume", run_id, app=app)
        return _finished(result, run_id, runs_dir, bcce, app)

    return go


def _finished(
    result: Result, run_id: str, runs_dir: Path, bcce: Callable[..., Result], app: Application
) -> Run:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    status = bcce("workflow", "status", run_id, "--json", app=app)
    assert status.exit_code == 0, status.output
    return Run(result, run_id, runs_dir / run_id, json.loads(status.stdout))


def agent(step_id: str, *extra: str) -> str:
    lines = [f"  - id: {step_id}", "    type: agent", "    prompt: Fix it."]
    return "\n".join([*lines, *(f"    {line}" for line in extra)]) + "\n"


def workflow(*steps: str, budget: float | None = None) -> str:
    head = "version: 1\nworkflow: budgets\n"
    if budget is not None:
        head += f"max_budget_usd: {budget}\n"
    return head + "steps:\n" + "".join(steps)


GATE = "  - id: gate\n    type: cmd\n    command: test -f {marker}\n"


def ledger(runs_dir: Path) -> list[CostRecord]:
    return CostLedger(runs_dir / "costs.jsonl").records()


# -- the allowance ----------------------------------------------------------------------------


def test_without_budgets_claude_code_gets_no_budget(
    run: Callable[..., Run], fake: FakeRuntime
) -> None:
    fake.sessions = {"fix": [Session(0.5)]}

    ran = run(workflow(agent("fix")))

    assert ran.exit_code == 0, ran.result.output
    assert fake.allowances("fix") == [None]


def test_the_steps_max_budget_usd_is_passed_to_claude_code(
    run: Callable[..., Run], fake: FakeRuntime
) -> None:
    fake.sessions = {"fix": [Session(0.5)]}

    ran = run(workflow(agent("fix", "max_budget_usd: 2")))

    assert ran.exit_code == 0, ran.result.output
    assert fake.allowances("fix") == [2.0]


def test_the_allowance_is_what_is_left_of_the_run_budget_when_that_is_smallest(
    run: Callable[..., Run], fake: FakeRuntime
) -> None:
    fake.sessions = {"a": [Session(0.75)], "b": [Session(0.1)]}

    ran = run(workflow(agent("a"), agent("b", "max_budget_usd: 2"), budget=1.0))

    assert ran.exit_code == 0, ran.result.output
    assert fake.allowances("a") == [1.0]
    assert fake.allowances("b") == [pytest.approx(0.25)]


def test_policy_budgets_apply_where_the_workflow_sets_none(
    budget_app: Callable[..., Application], run: Callable[..., Run], fake: FakeRuntime
) -> None:
    app = budget_app(policy={"budgets": {"step_usd": 0.5, "run_usd": 0.75}})
    fake.sessions = {"a": [Session(0.5)], "b": [Session(0.1)]}

    ran = run(workflow(agent("a"), agent("b")), application=app)

    assert ran.exit_code == 0, ran.result.output
    assert fake.allowances("a") == [0.5]  # step_usd, below the run's 0.75
    assert fake.allowances("b") == [pytest.approx(0.25)]  # what is left of run_usd


def test_the_steps_own_budget_wins_over_policy_step_usd(
    budget_app: Callable[..., Application], run: Callable[..., Run], fake: FakeRuntime
) -> None:
    app = budget_app(policy={"budgets": {"step_usd": 0.5}})
    fake.sessions = {"a": [Session(0.1)]}

    run(workflow(agent("a", "max_budget_usd: 3")), application=app)

    assert fake.allowances("a") == [3.0]


# -- refusing and stopping -------------------------------------------------------------------


def test_a_spent_run_budget_refuses_the_next_agent_step_without_starting_it(
    run: Callable[..., Run], fake: FakeRuntime
) -> None:
    fake.sessions = {"a": [Session(1.0)], "b": [Session(0.1)]}

    ran = run(workflow(agent("a"), agent("b"), budget=1.0))

    assert ran.exit_code == 5
    assert [s for s, _ in fake.requests] == ["a"]
    step = ran.step("b")
    assert (step["status"], step["denied"]) == ("failed", True)
    assert "the run budget (workflow max_budget_usd) is $1.00 and $1.00 is spent" in step["error"]
    assert "not started" in step["error"]
    assert ran.events("budget.exceeded") == [
        {"step": "b", "scope": "run", "limit_usd": 1.0, "spent_usd": 1.0}
    ]


def test_a_session_stopped_at_its_allowance_fails_the_step_and_discards_its_changes(
    run: Callable[..., Run], fake: FakeRuntime, runs_dir: Path
) -> None:
    fake.sessions = {"fix": [Session(3.0)]}

    ran = run(workflow(agent("fix", "max_budget_usd: 1")))

    assert ran.exit_code == 5
    step = ran.step("fix")
    assert (step["status"], step["denied"]) == ("failed", True)
    assert "budget exceeded" in step["error"]
    assert (
        "the step budget (max_budget_usd of step fix) is $1.00 and $3.00 is spent"
        in (step["error"])
    )
    assert not (ran.directory / "fix" / "changes.patch").exists()
    assert "changed = True" in (ran.directory / "fix" / "rejected.patch").read_text()
    assert ran.events("budget.exceeded") == [
        {"step": "fix", "scope": "step", "limit_usd": 1.0, "spent_usd": 3.0}
    ]


def test_bcce_fails_a_session_that_went_past_its_allowance_unstopped(
    run: Callable[..., Run], fake: FakeRuntime
) -> None:
    fake.sessions = {"fix": [Session(1.5, ignore_budget=True)]}

    ran = run(workflow(agent("fix", "max_budget_usd: 1")))

    assert ran.exit_code == 5
    assert "budget exceeded" in ran.step("fix")["error"]
    assert not (ran.directory / "fix" / "changes.patch").exists()


def test_a_session_within_its_allowance_keeps_its_changes(
    run: Callable[..., Run], fake: FakeRuntime
) -> None:
    fake.sessions = {"fix": [Session(0.99)]}

    ran = run(workflow(agent("fix", "max_budget_usd: 1")))

    assert ran.exit_code == 0, ran.result.output
    assert "changed = True" in (ran.directory / "fix" / "changes.patch").read_text()
    assert ran.events("budget.exceeded") == []


def test_a_budget_failure_is_not_retried(run: Callable[..., Run], fake: FakeRuntime) -> None:
    fake.sessions = {"fix": [Session(3.0), Session(0.1), Session(0.1)]}

    ran = run(
        workflow(agent("fix", "max_budget_usd: 1", "retry: {max_attempts: 3, backoff_seconds: 0}"))
    )

    assert ran.exit_code == 5
    assert len(fake.allowances("fix")) == 1
    assert ran.step("fix")["attempts"] == 1


def test_every_attempt_of_a_retried_step_counts_against_its_budget(
    run: Callable[..., Run], fake: FakeRuntime, runs_dir: Path
) -> None:
    fake.sessions = {"fix": [Session(0.25, error=True), Session(0.25, error=True), Session(0.1)]}

    ran = run(
        workflow(agent("fix", "max_budget_usd: 1", "retry: {max_attempts: 3, backoff_seconds: 0}"))
    )

    assert ran.exit_code == 0, ran.result.output
    assert fake.allowances("fix") == [1.0, 0.75, 0.5]
    assert ran.step("fix")["spent_usd"] == pytest.approx(0.6)
    assert [(r.step, r.attempt) for r in ledger(runs_dir)] == [("fix", 1), ("fix", 2), ("fix", 3)]


# -- across runs and resumes ------------------------------------------------------------------


def test_a_team_daily_budget_spans_runs(
    budget_app: Callable[..., Application], run: Callable[..., Run], fake: FakeRuntime
) -> None:
    app = budget_app(policy={"budgets": {"team_daily_usd": {"platform": 1.0}}})
    fake.sessions = {"a": [Session(0.75)], "b": [Session(0.1)]}
    run(workflow(agent("a")), run_id="run-1", application=app)

    second = run(workflow(agent("b")), run_id="run-2", application=app)

    assert fake.allowances("b") == [pytest.approx(0.25)]
    assert second.exit_code == 0


def test_a_spent_team_budget_refuses_the_steps_of_another_run(
    budget_app: Callable[..., Application], run: Callable[..., Run], fake: FakeRuntime
) -> None:
    app = budget_app(policy={"budgets": {"team_daily_usd": {"platform": 1.0}}})
    fake.sessions = {"a": [Session(1.0)], "b": [Session(0.1)]}
    run(workflow(agent("a")), run_id="run-1", application=app)

    second = run(workflow(agent("b")), run_id="run-2", application=app)

    assert second.exit_code == 5
    assert fake.allowances("b") == []
    assert "the daily budget of team platform" in second.step("b")["error"]
    [event] = second.events("budget.exceeded")
    assert event == {
        "step": "b",
        "scope": "team",
        "limit_usd": 1.0,
        "spent_usd": 1.0,
        "team": "platform",
    }


def test_yesterdays_spend_does_not_count_against_the_team_budget(
    budget_app: Callable[..., Application],
    run: Callable[..., Run],
    fake: FakeRuntime,
    runs_dir: Path,
) -> None:
    app = budget_app(policy={"budgets": {"team_daily_usd": {"platform": 1.0}}})
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    CostLedger(runs_dir / "costs.jsonl").append(
        CostRecord(yesterday.isoformat(), "old", "a", 1, "w", "platform", None, MODEL, 5.0)
    )
    fake.sessions = {"a": [Session(0.1)]}

    ran = run(workflow(agent("a")), application=app)

    assert ran.exit_code == 0, ran.result.output
    assert fake.allowances("a") == [1.0]


def test_another_teams_spend_does_not_count(
    budget_app: Callable[..., Application],
    run: Callable[..., Run],
    fake: FakeRuntime,
    runs_dir: Path,
) -> None:
    app = budget_app(policy={"budgets": {"team_daily_usd": {"platform": 1.0}}})
    now = datetime.datetime.now(datetime.UTC).isoformat()
    CostLedger(runs_dir / "costs.jsonl").append(
        CostRecord(now, "old", "a", 1, "w", "data", None, MODEL, 5.0)
    )
    fake.sessions = {"a": [Session(0.1)]}

    run(workflow(agent("a")), application=app)

    assert fake.allowances("a") == [1.0]


def test_a_resumed_run_counts_what_it_spent_before_it_failed(
    run: Callable[..., Run],
    resume: Callable[..., Run],
    fake: FakeRuntime,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "gate-open"
    fake.sessions = {"a": [Session(0.75)], "b": [Session(0.1)]}
    first = run(workflow(agent("a"), GATE.format(marker=marker), agent("b"), budget=1.0))
    assert first.exit_code == 1
    marker.touch()

    resumed = resume()

    assert resumed.exit_code == 0, resumed.result.output
    assert fake.allowances("b") == [pytest.approx(0.25)]
    assert resumed.step("a")["spent_usd"] == 0.75


def test_a_resumed_run_refuses_a_step_once_its_earlier_spend_used_the_budget_up(
    run: Callable[..., Run],
    resume: Callable[..., Run],
    fake: FakeRuntime,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "gate-open"
    fake.sessions = {"a": [Session(1.0)], "b": [Session(0.1)]}
    run(workflow(agent("a"), GATE.format(marker=marker), agent("b"), budget=1.0))
    marker.touch()

    resumed = resume()

    assert resumed.exit_code == 5
    assert fake.allowances("b") == []
    assert "$1.00 is spent" in resumed.step("b")["error"]


def test_an_interrupted_run_keeps_the_spend_journaled_before_the_interruption(
    run: Callable[..., Run],
    resume: Callable[..., Run],
    fake: FakeRuntime,
) -> None:
    fake.sessions = {"a": [Session(0.75)], "b": [Session(0.0, interrupt=True), Session(0.1)]}
    first = run(workflow(agent("a"), agent("b"), budget=1.0))
    assert first.exit_code == 130
    assert first.step("a")["spent_usd"] == 0.75

    resumed = resume()

    assert resumed.exit_code == 0, resumed.result.output
    assert fake.allowances("b") == [pytest.approx(0.25), pytest.approx(0.25)]


# -- the record ------------------------------------------------------------------------------


def test_each_attempt_is_recorded_in_the_ledger_with_team_project_and_tokens(
    run: Callable[..., Run], fake: FakeRuntime, runs_dir: Path
) -> None:
    fake.sessions = {"fix": [Session(0.3)]}

    run(workflow(agent("fix")))

    [record] = ledger(runs_dir)
    assert (record.run_id, record.step, record.attempt) == ("run-1", "fix", 1)
    assert (record.workflow, record.team, record.project) == ("budgets", "platform", "billing")
    assert record.total_cost_usd == 0.3
    assert record.input_tokens == 100_000
    assert record.model_usage[MODEL]["cost_usd"] == 0.3


def test_the_cost_event_carries_the_attempt_and_every_token_count(
    run: Callable[..., Run], fake: FakeRuntime
) -> None:
    fake.sessions = {"fix": [Session(0.3)]}

    ran = run(workflow(agent("fix")))

    [event] = ran.events("cost.recorded")
    assert event["attempt"] == 1
    assert event["input_tokens"] == 100_000
    assert {"output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"} <= set(event)
    assert (event["team"], event["project"], event["total_cost_usd"]) == (
        "platform",
        "billing",
        0.3,
    )
