"""The ``otel`` metrics collector: bcce's metrics as OpenTelemetry instruments.

A real cmd workflow runs with ``events.metrics: otel`` and the metrics subscriber, and the
in-memory reader shows what was recorded; the console and OTLP exporters are checked too.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from bcce.containers.application import Application
    from bcce.events.otel import OtelMetricsCollector
    from bcce.testing.otlp import OtlpReceiver

WORKFLOW = """
version: 1
workflow: measured
steps:
  - {id: build, type: cmd, command: echo build}
  - id: flaky
    type: cmd
    command: 'test -f marker || { touch marker; exit 3; }'
    retry: {max_attempts: 2, backoff_seconds: 0.01, jitter: false}
  - {id: broken, type: cmd, command: 'exit 4'}
"""


@pytest.fixture
def make_app(
    bcce_make_app: Callable[..., Application], tmp_path: Path
) -> Callable[..., Application]:
    """``make_app(otel=..., **sections)``: metrics on the otel collector, in memory by default."""
    from bcce.settings.layers import LayerOptions

    def make(otel: dict[str, Any] | None = None, **sections: Any) -> Application:
        options = LayerOptions(
            environ={"PATH": os.environ["PATH"]},
            cwd=tmp_path,
            user_config_file=tmp_path / "none.yaml",
        )
        runs = str(tmp_path / "runs")
        return bcce_make_app(
            options=options,
            storage={"root": runs},
            workflow={"state_dir": runs},
            events={
                "subscribers": ["metrics"],
                "metrics": "otel",
                "otel": {"exporter": "memory", **(otel or {})},
            },
            **sections,
        )

    return make


def run(app: Application, tmp_path: Path) -> str:
    from bcce.workflow.runner import RunOptions

    path = tmp_path / "workflow.yml"
    path.write_text(textwrap.dedent(WORKFLOW).lstrip("\n"), encoding="utf-8")
    result = app.workflow.runner().run(path, RunOptions(run_id="run-1", workspace=tmp_path))
    return str(result.state.status)


def collector(app: Application) -> OtelMetricsCollector:
    found: OtelMetricsCollector = app.events.metrics()
    return found


def metrics(app: Application) -> dict[str, Any]:
    """Every metric the in-memory reader holds, by name."""
    reader: Any = collector(app).reader
    data = reader.get_metrics_data()
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def points(metric: Any) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(p.attributes.items())): p for p in metric.data.data_points}


@pytest.fixture
def measured(make_app: Callable[..., Application], tmp_path: Path) -> dict[str, Any]:
    app = make_app()
    assert run(app, tmp_path) == "failed"
    return metrics(app)


def dims(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


def test_step_durations_are_a_histogram_in_seconds_by_workflow_step_type_and_status(
    measured: dict[str, Any],
) -> None:
    from opentelemetry.sdk.metrics.export import Histogram

    duration = measured["step.execution.duration"]
    assert isinstance(duration.data, Histogram)
    assert duration.unit == "s"
    found = points(duration)
    assert set(found) == {
        dims(workflow="measured", step="build", type="cmd", status="succeeded"),
        dims(workflow="measured", step="flaky", type="cmd", status="succeeded"),
        dims(workflow="measured", step="broken", type="cmd", status="failed"),
    }
    build = found[dims(workflow="measured", step="build", type="cmd", status="succeeded")]
    assert build.count == 1
    assert 0 < build.sum < 30
    assert 1 in build.explicit_bounds  # buckets for seconds, not OpenTelemetry's milliseconds


def test_step_outcomes_and_retries_are_counters(measured: dict[str, Any]) -> None:
    from opentelemetry.sdk.metrics.export import Sum

    completed = measured["step.execution.completed"]
    assert isinstance(completed.data, Sum) and completed.data.is_monotonic
    assert completed.unit == "1"
    assert {k: p.value for k, p in points(completed).items()} == {
        dims(workflow="measured", step="build", type="cmd", status="succeeded"): 1,
        dims(workflow="measured", step="flaky", type="cmd", status="succeeded"): 1,
    }
    assert {k: p.value for k, p in points(measured["step.execution.failed"]).items()} == {
        dims(workflow="measured", step="broken", type="cmd", status="failed"): 1
    }
    assert {k: p.value for k, p in points(measured["step.execution.retried"]).items()} == {
        dims(workflow="measured", step="flaky", type="cmd"): 1
    }


def test_the_runs_outcome_and_duration_are_recorded(measured: dict[str, Any]) -> None:
    [failed] = points(measured["workflow.execution.failed"]).items()
    assert failed[0] == dims(workflow="measured", status="failed")
    assert failed[1].value == 1
    [duration] = points(measured["workflow.execution.duration"]).values()
    assert duration.count == 1
    assert "workflow.execution.completed" not in measured


def test_tokens_and_cost_are_counters_in_tokens_and_dollars(bcce_settings: Any) -> None:
    from bcce.events.otel import OtelMetricsCollector
    from bcce.settings.layers import with_overrides

    settings = with_overrides(bcce_settings, {"events": {"otel": {"exporter": "memory"}}})
    metrics_collector = OtelMetricsCollector.from_settings(settings)
    usage = {"model": "claude-x", "team": "infra", "project": "api", "workflow": "fix"}
    metrics_collector.record("agent.tokens.input", 1200, usage)
    metrics_collector.record("agent.tokens.input", 800, usage)
    metrics_collector.record("agent.cost", 0.25, usage)
    reader: Any = metrics_collector.reader
    found = {
        m.name: m
        for r in reader.get_metrics_data().resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
    }
    metrics_collector.close()
    assert found["agent.tokens.input"].unit == "{token}"
    assert [p.value for p in found["agent.tokens.input"].data.data_points] == [2000]
    assert found["agent.cost"].unit == "USD"
    assert [p.value for p in found["agent.cost"].data.data_points] == [0.25]


def test_the_metrics_resource_names_the_service_team_and_project(
    make_app: Callable[..., Application], tmp_path: Path
) -> None:
    from bcce import __version__

    app = make_app(core={"team": "infra", "project": "api"})
    run(app, tmp_path)
    reader: Any = collector(app).reader
    [resource_metrics] = reader.get_metrics_data().resource_metrics
    attributes = resource_metrics.resource.attributes
    assert (attributes["service.name"], attributes["service.version"]) == ("bcce", __version__)
    assert (attributes["bcce.team"], attributes["bcce.project"]) == ("infra", "api")


def test_a_bad_measurement_is_dropped_without_raising(bcce_settings: Any) -> None:
    from bcce.events.otel import OtelMetricsCollector
    from bcce.settings.layers import with_overrides

    settings = with_overrides(bcce_settings, {"events": {"otel": {"exporter": "memory"}}})
    metrics_collector = OtelMetricsCollector.from_settings(settings)
    metrics_collector.record("step.execution.completed", -1, {"step": "a"})
    metrics_collector.record("not a valid name!", 1)
    metrics_collector.close()
    metrics_collector.record("step.execution.completed", 1)  # after close: ignored


def test_flush_exports_to_the_console_as_json_on_stderr(
    make_app: Callable[..., Application], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(otel={"exporter": "console"})
    run(app, tmp_path)
    collector(app).flush()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line[:1] == "{"]
    names = {
        metric["name"]
        for line in lines
        for resource in line["resource_metrics"]
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
    }
    assert {"step.execution.duration", "workflow.execution.failed"} <= names


def test_the_console_exporter_exports_every_metric_interval(
    make_app: Callable[..., Application], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    app = make_app(otel={"exporter": "console", "metric_interval_seconds": 0.2})
    run(app, tmp_path)
    seen = ""
    deadline = time.monotonic() + 10
    while "workflow.execution.failed" not in seen and time.monotonic() < deadline:
        seen += capfd.readouterr().err
        time.sleep(0.05)  # polling the captured output, bounded by the deadline
    assert "workflow.execution.failed" in seen


def test_the_otlp_exporter_posts_metrics_to_the_configured_endpoint(
    bcce_otlp_receiver: OtlpReceiver, make_app: Callable[..., Application], tmp_path: Path
) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    app = make_app(otel={"exporter": "otlp", "endpoint": bcce_otlp_receiver.url + "/"})
    run(app, tmp_path)
    collector(app).flush()
    names: set[str] = set()
    for path, body in list(bcce_otlp_receiver.requests):
        assert path == "/v1/metrics"
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        names |= {
            m.name for r in request.resource_metrics for s in r.scope_metrics for m in s.metrics
        }
    assert {"step.execution.duration", "step.execution.failed"} <= names


def test_otel_metrics_leave_the_global_meter_provider_alone(
    make_app: Callable[..., Application], tmp_path: Path
) -> None:
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.sdk.metrics import MeterProvider

    before = otel_metrics.get_meter_provider()
    app = make_app()
    run(app, tmp_path)
    assert otel_metrics.get_meter_provider() is before
    assert not isinstance(before, MeterProvider)
