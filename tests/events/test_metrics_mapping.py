"""Events in, metric records out: the metrics subscriber's mapping, with a recording collector."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bcce.containers.application import Application
from bcce.events.bus import Event, InProcessEventBus
from bcce.events.metrics import (
    CATALOGUE,
    LogMetricsCollector,
    MetricsCollector,
    MetricsSubscriber,
    Unit,
    metric_spec,
)
from bcce.workflow.runner import RunOptions

Record = tuple[str, float, dict[str, str], Unit | None, float | None]

STEP = {"workflow": "build", "step": "compile", "type": "cmd"}


@dataclass
class RecordingCollector:
    """Keeps every call, in order."""

    remote: bool = False
    records: list[Record] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def record(
        self,
        name: str,
        value: float,
        dimensions: Mapping[str, str] | None = None,
        *,
        unit: Unit | None = None,
        timestamp: float | None = None,
    ) -> None:
        self.records.append((name, value, dict(dimensions or {}), unit, timestamp))
        self.calls.append(f"record {name}")

    def flush(self) -> None:
        self.calls.append("flush")

    def close(self) -> None:
        self.calls.append("close")


@pytest.fixture
def collector() -> RecordingCollector:
    return RecordingCollector()


@pytest.fixture
def subscriber(collector: RecordingCollector) -> MetricsSubscriber:
    return MetricsSubscriber(collector)


def event(
    event_type: str, *, run_id: str | None = "r1", at: float = 1000.0, **payload: Any
) -> Event:
    return Event(event_type, payload, run_id=run_id, timestamp=at)


def started(subscriber: MetricsSubscriber, run_id: str = "r1", workflow: str = "build") -> None:
    subscriber.handle(event("workflow.started", run_id=run_id, workflow=workflow, steps=1))


# -- steps ---------------------------------------------------------------------------------------


def test_a_completed_step_records_its_duration_and_a_completion(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    started(subscriber)
    subscriber.handle(event("step.started", step="compile", type="cmd", attempt=1))
    subscriber.handle(
        event(
            "step.completed",
            at=1002.5,
            step="compile",
            type="cmd",
            status="succeeded",
            duration_seconds=1.25,
        )
    )

    dims = {**STEP, "status": "succeeded"}
    assert collector.records == [
        ("step.execution.duration", 1.25, dims, "seconds", 1002.5),
        ("step.execution.completed", 1, dims, "count", 1002.5),
    ]


@pytest.mark.parametrize(
    ("kind", "status"), [("step.failed", "failed"), ("step.timed_out", "timed_out")]
)
def test_a_failed_or_timed_out_step_counts_as_a_failure(
    subscriber: MetricsSubscriber, collector: RecordingCollector, kind: str, status: str
) -> None:
    started(subscriber)
    subscriber.handle(
        event(kind, step="compile", type="cmd", status=status, duration_seconds=2.0, exit_code=1)
    )

    dims = {**STEP, "status": status}
    assert collector.records == [
        ("step.execution.duration", 2.0, dims, "seconds", 1000.0),
        ("step.execution.failed", 1, dims, "count", 1000.0),
    ]


def test_a_step_cancelled_before_it_ran_is_counted_without_a_duration(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    started(subscriber)
    subscriber.handle(event("step.cancelled", step="compile", type="cmd", reason="stopping"))

    assert collector.records == [
        ("step.execution.cancelled", 1, {**STEP, "status": "cancelled"}, "count", 1000.0)
    ]


def test_a_step_awaiting_approval_records_only_its_duration(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    started(subscriber)
    subscriber.handle(
        event(
            "step.awaiting_approval",
            step="apply",
            type="apply_diff",
            status="awaiting_approval",
            duration_seconds=0.5,
        )
    )

    assert collector.records == [
        (
            "step.execution.duration",
            0.5,
            {
                "workflow": "build",
                "step": "apply",
                "type": "apply_diff",
                "status": "awaiting_approval",
            },
            "seconds",
            1000.0,
        )
    ]


def test_a_retry_is_counted_with_the_type_its_step_started_with(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    started(subscriber)
    subscriber.handle(event("step.started", step="compile", type="cmd", attempt=1))
    subscriber.handle(event("step.retrying", step="compile", attempt=1, delay_seconds=0.1))

    assert collector.records == [("step.execution.retried", 1, STEP, "count", 1000.0)]


def test_skipped_and_kept_steps_are_not_measured(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    started(subscriber)
    subscriber.handle(event("step.skipped", step="compile", type="cmd", reason="if false"))
    subscriber.handle(event("step.kept", step="compile", reason="succeeded earlier"))

    assert collector.records == []
    assert not any(_matches(subscriber, kind) for kind in ("step.skipped", "step.kept"))


# -- runs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "counter"),
    [
        ("workflow.completed", "succeeded", "workflow.execution.completed"),
        ("workflow.completed", "awaiting_approval", "workflow.execution.completed"),
        ("workflow.failed", "failed", "workflow.execution.failed"),
        ("workflow.cancelled", "cancelled", "workflow.execution.cancelled"),
    ],
)
def test_a_run_outcome_records_its_duration_and_count_then_flushes(
    subscriber: MetricsSubscriber,
    collector: RecordingCollector,
    kind: str,
    status: str,
    counter: str,
) -> None:
    started(subscriber)
    subscriber.handle(
        event(kind, at=1010.0, workflow="build", status=status, duration_seconds=10.0)
    )

    dims = {"workflow": "build", "status": status}
    assert collector.records == [
        ("workflow.execution.duration", 10.0, dims, "seconds", 1010.0),
        (counter, 1, dims, "count", 1010.0),
    ]
    assert collector.calls[-1] == "flush"


def test_a_cancellation_from_another_process_is_counted_with_what_is_known(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    # `bcce workflow cancel` finalising an orphaned run: no workflow name, no duration.
    subscriber.handle(event("workflow.cancelled", processes_killed=0))

    assert collector.records == [
        ("workflow.execution.cancelled", 1, {"status": "cancelled"}, "count", 1000.0)
    ]


def test_each_run_keeps_its_own_workflow_name(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    started(subscriber, "r1", "build")
    started(subscriber, "r2", "deploy")
    subscriber.handle(event("step.retrying", run_id="r2", step="push"))
    subscriber.handle(event("step.retrying", run_id="r1", step="compile"))

    assert [r[2]["workflow"] for r in collector.records] == ["deploy", "build"]


def test_a_runs_workflow_name_is_forgotten_when_it_ends(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    started(subscriber)
    subscriber.handle(event("workflow.completed", workflow="build", status="succeeded"))
    collector.records.clear()

    subscriber.handle(event("step.retrying", step="compile"))

    assert collector.records == [
        ("step.execution.retried", 1, {"step": "compile"}, "count", 1000.0)
    ]


def test_the_map_of_run_names_is_bounded_forgetting_the_oldest(
    collector: RecordingCollector,
) -> None:
    subscriber = MetricsSubscriber(collector, max_runs=2)
    for run_id in ("r1", "r2", "r3"):
        started(subscriber, run_id, f"wf-{run_id}")

    for run_id in ("r1", "r2", "r3"):
        subscriber.handle(event("step.retrying", run_id=run_id, step="s"))

    assert [r[2].get("workflow") for r in collector.records] == [None, "wf-r2", "wf-r3"]


# -- policy, plugins, cost, budgets --------------------------------------------------------------


def test_policy_denials_count_denied_events_only(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    started(subscriber)
    denied: dict[str, Any] = {"rule": "cmd_allowlist", "layer": "hook"}
    # Every denial, of a tool call or of a command, is one policy.denied beside its decision.
    subscriber.handle(event("policy.decision", step="agent", kind="tool", allowed=False, **denied))
    subscriber.handle(event("policy.denied", step="agent", tool="Bash", **denied))
    subscriber.handle(event("policy.decision", step="agent", kind="tool", allowed=True, **denied))
    subscriber.handle(event("policy.decision", step="cmd", kind="command", allowed=False, **denied))
    subscriber.handle(event("policy.denied", step="cmd", kind="command", **denied))
    subscriber.handle(event("policy.decision", step="cmd", kind="command", allowed=True, **denied))

    assert collector.records == [
        ("policy.denials", 1, {"workflow": "build", "step": "agent", **denied}, "count", 1000.0),
        ("policy.denials", 1, {"workflow": "build", "step": "cmd", **denied}, "count", 1000.0),
    ]


def test_plugin_calls_are_counted_by_plugin_and_step_type(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    subscriber.handle(
        event("plugin.call", step="q", plugin="db", version="1.0", type="db:query", tier="bwrap")
    )

    assert collector.records == [
        ("plugin.calls", 1, {"plugin": "db", "type": "db:query"}, "count", 1000.0)
    ]


def test_recorded_cost_gives_input_and_output_tokens_and_dollars(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    subscriber.handle(
        event(
            "cost.recorded",
            workflow="build",
            step="agent",
            team="platform",
            project="bcce",
            model="claude-sonnet",
            total_cost_usd=0.0123,
            input_tokens=1200,
            output_tokens=340,
        )
    )

    dims = {"model": "claude-sonnet", "team": "platform", "project": "bcce", "workflow": "build"}
    assert collector.records == [
        ("agent.tokens.input", 1200, dims, "tokens", 1000.0),
        ("agent.tokens.output", 340, dims, "tokens", 1000.0),
        ("agent.cost", 0.0123, dims, "usd", 1000.0),
    ]


def test_unknown_usage_and_unset_attribution_are_left_out(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    subscriber.handle(
        event(
            "cost.recorded",
            workflow="build",
            step="agent",
            team=None,
            project=None,
            model="m",
            total_cost_usd=None,
            input_tokens=10,
            output_tokens=None,
        )
    )

    assert collector.records == [
        ("agent.tokens.input", 10, {"model": "m", "workflow": "build"}, "tokens", 1000.0)
    ]


def test_an_exceeded_budget_is_counted_by_scope(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    subscriber.handle(
        event("budget.exceeded", step="agent", scope="run", limit_usd=1.0, spent_usd=1.2)
    )

    assert collector.records == [("budget.exceeded", 1, {"scope": "run"}, "count", 1000.0)]


# -- the subscriber as a component ---------------------------------------------------------------


def test_the_subscriber_is_inline_for_a_local_collector_and_queued_for_a_remote_one() -> None:
    assert MetricsSubscriber(RecordingCollector(remote=False)).mode == "inline"
    assert MetricsSubscriber(RecordingCollector(remote=True)).mode == "queued"


def test_flush_and_close_reach_the_collector(
    subscriber: MetricsSubscriber, collector: RecordingCollector
) -> None:
    subscriber.flush()
    subscriber.close()

    assert collector.calls == ["flush", "close"]


MAPPED = [
    "workflow.started",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "step.started",
    "step.completed",
    "step.failed",
    "step.timed_out",
    "step.cancelled",
    "step.awaiting_approval",
    "step.retrying",
    "policy.denied",
    "plugin.call",
    "cost.recorded",
    "budget.exceeded",
]


@pytest.mark.parametrize("kind", MAPPED)
def test_the_bus_delivers_every_mapped_event_to_the_subscriber(
    subscriber: MetricsSubscriber, kind: str
) -> None:
    bus = InProcessEventBus()
    seen: list[str] = []
    bus.subscribe(subscriber.patterns, lambda e: seen.append(e.type), name=subscriber.name)

    bus.publish(event(kind))

    assert seen == [kind]


def test_the_catalogue_has_the_names_the_design_promises() -> None:
    assert set(CATALOGUE) == {
        "step.execution.duration",
        "step.execution.completed",
        "step.execution.failed",
        "step.execution.cancelled",
        "step.execution.retried",
        "workflow.execution.duration",
        "workflow.execution.completed",
        "workflow.execution.failed",
        "workflow.execution.cancelled",
        "policy.denials",
        "plugin.calls",
        "agent.tokens.input",
        "agent.tokens.output",
        "agent.cost",
        "budget.exceeded",
    }
    assert {n for n, s in CATALOGUE.items() if s.kind == "histogram"} == {
        "step.execution.duration",
        "workflow.execution.duration",
    }


def test_a_name_outside_the_catalogue_gets_a_kind_from_its_unit() -> None:
    assert metric_spec("x.wait", "seconds", {"b": "1", "a": "2"}).kind == "histogram"
    assert metric_spec("x.wait", "seconds", {"b": "1", "a": "2"}).dimensions == ("a", "b")
    assert metric_spec("x.hits").kind == "counter"


def test_the_log_collector_keeps_running_totals() -> None:
    collector = LogMetricsCollector()
    collector.record("step.execution.completed", 1, {"step": "a"})
    collector.record("step.execution.completed", 1, {"step": "b"}, unit="count", timestamp=1.0)

    assert collector.totals == {"step.execution.completed": 2.0}
    assert isinstance(collector, MetricsCollector)
    assert collector.remote is False


# -- through the application ---------------------------------------------------------------------

WORKFLOW = """
version: 1
workflow: mapped
steps:
  - {id: ok, type: cmd, command: 'true'}
  - {id: broken, type: cmd, command: 'exit 3', on_error: continue}
"""


def test_a_run_with_the_metrics_subscriber_fills_the_configured_collector(
    bcce_make_app: Callable[..., Application], tmp_path: Path
) -> None:
    app = bcce_make_app(events={"subscribers": ["metrics"]})
    path = tmp_path / "wf.yml"
    path.write_text(WORKFLOW)

    result = app.workflow.runner().run(path, RunOptions(run_id="r", workspace=tmp_path))

    assert result.exit_code == 0
    totals = app.events.metrics().totals
    assert totals["step.execution.completed"] == 1
    assert totals["step.execution.failed"] == 1
    assert totals["workflow.execution.completed"] == 1


IMPORTS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from bcce.application import create_application
    from bcce.settings.layers import LayerOptions
    from bcce.workflow.runner import RunOptions

    here = Path.cwd()
    (here / "wf.yml").write_text({workflow!r})
    options = LayerOptions(environ={{}}, cwd=here, user_config_file=here / "none.yaml")
    app = create_application(options=options, events={events!r})
    result = app.workflow.runner().run(here / "wf.yml", RunOptions(workspace=here))
    app.shutdown_resources()
    assert result.exit_code == 0, result
    heavy = ("prometheus_client", "boto3", "botocore")
    print(" ".join(sorted(name for name in heavy if name in sys.modules)))
    """
)


def imported_by_a_run(tmp_path: Path, events: dict[str, Any]) -> set[str]:
    """Which of prometheus_client, boto3, botocore a fresh process running a workflow imports."""
    script = IMPORTS.format(workflow=WORKFLOW, events=events)
    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return set(completed.stdout.split())


def test_a_run_with_the_log_collector_imports_neither_prometheus_nor_boto3(
    tmp_path: Path,
) -> None:
    assert imported_by_a_run(tmp_path, {"subscribers": ["metrics"], "metrics": "log"}) == set()


def test_importing_bcce_and_its_metrics_imports_neither_prometheus_nor_boto3(
    tmp_path: Path,
) -> None:
    script = (
        "import sys, bcce, bcce.cli.main, bcce.events.metrics, bcce.containers.events\n"
        "print(' '.join(m for m in ('prometheus_client', 'boto3', 'botocore') if m in sys.modules))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split() == []


def test_the_import_check_sees_the_prometheus_client_when_it_is_chosen(tmp_path: Path) -> None:
    # Guards the test above against passing because nothing could be seen.
    chosen = {"subscribers": ["metrics"], "metrics": "prometheus"}
    assert "prometheus_client" in imported_by_a_run(tmp_path, chosen)


def _matches(subscriber: MetricsSubscriber, kind: str) -> bool:
    bus = InProcessEventBus()
    seen: list[Event] = []
    bus.subscribe(subscriber.patterns, seen.append)
    bus.publish(event(kind))
    return bool(seen)
