"""OpenTelemetry spans for runs, steps and tool calls (the ``tracing`` subscriber).

Real workflows run in process with ``events.otel.exporter: memory``; tool-call spans, which
need an agent step, are driven here by the events the agent step publishes (the real Claude
Code drives them in tests/e2e/test_agent_tracing.py).
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from bcce.containers.application import Application
    from bcce.events.bus import Event
    from bcce.events.otel import TracingSubscriber
    from bcce.testing.otlp import OtlpReceiver

TRACED = """
version: 1
workflow: traced
steps:
  - id: build
    type: cmd
    command: echo build
  - id: grp
    type: composite
    steps:
      - id: flaky
        type: cmd
        command: 'test -f marker || { touch marker; exit 3; }'
        retry: {max_attempts: 2, backoff_seconds: 0.01, jitter: false}
      - id: par
        type: parallel
        steps:
          - {id: left, type: cmd, command: 'echo left'}
          - {id: right, type: cmd, command: 'echo right'}
  - id: broken
    type: cmd
    command: 'exit 4'
  - id: after
    type: cmd
    command: echo never
"""

SIMPLE = """
version: 1
workflow: simple
steps:
  - {id: hello, type: cmd, command: echo hello}
"""


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture
def make_app(
    bcce_make_app: Callable[..., Application], tmp_path: Path
) -> Callable[..., Application]:
    """``make_app(otel=..., events=..., **sections)``: tracing on, in memory by default."""
    from bcce.settings.layers import LayerOptions

    def make(
        otel: dict[str, Any] | None = None, events: dict[str, Any] | None = None, **sections: Any
    ) -> Application:
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
                "subscribers": ["tracing"],
                "otel": {"exporter": "memory", **(otel or {})},
                **(events or {}),
            },
            **sections,
        )

    return make


def run(app: Application, tmp_path: Path, text: str, run_id: str = "run-1") -> str:
    from bcce.workflow.runner import RunOptions

    path = tmp_path / f"{run_id}.yml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    result = app.workflow.runner().run(path, RunOptions(run_id=run_id, workspace=tmp_path))
    return str(result.state.status)


def tracer(app: Application) -> TracingSubscriber:
    subscriber: TracingSubscriber = app.events.tracing()
    return subscriber


def finished(app: Application) -> list[ReadableSpan]:
    spans = list(tracer(app).exporter.get_finished_spans())  # type: ignore[attr-defined]
    return sorted(spans, key=lambda s: (s.start_time or 0, s.name))


def parent_names(spans: list[ReadableSpan]) -> list[tuple[str, str | None]]:
    """``(span name, parent span name)`` for every span, in start order."""
    by_id = {s.context.span_id: s.name for s in spans if s.context is not None}
    return [(s.name, by_id.get(s.parent.span_id) if s.parent else None) for s in spans]


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


@pytest.fixture
def traced(make_app: Callable[..., Application], tmp_path: Path) -> list[ReadableSpan]:
    app = make_app()
    assert run(app, tmp_path, TRACED) == "failed"
    return finished(app)


# -- the tree of a real run -----------------------------------------------------------------
def test_a_run_is_one_trace_whose_root_is_the_run_span(traced: list[ReadableSpan]) -> None:
    [root] = [s for s in traced if s.parent is None]
    assert root.name == "workflow traced"
    assert root.attributes is not None
    assert root.attributes["bcce.run_id"] == "run-1"
    assert root.attributes["bcce.workflow"] == "traced"
    assert {s.context.trace_id for s in traced if s.context} == {root.context.trace_id}


def test_steps_nest_under_their_control_steps_and_the_run(traced: list[ReadableSpan]) -> None:
    assert sorted(parent_names(traced), key=str) == sorted(
        [
            ("workflow traced", None),
            ("step build", "workflow traced"),
            ("step grp", "workflow traced"),
            ("step flaky", "step grp"),
            ("step flaky", "step grp"),
            ("step par", "step grp"),
            ("step left", "step par"),
            ("step right", "step par"),
            ("step broken", "workflow traced"),
            ("step after", "workflow traced"),
        ],
        key=str,
    )


def test_each_attempt_of_a_retried_step_is_a_span_of_its_own(
    traced: list[ReadableSpan],
) -> None:
    from opentelemetry.trace import StatusCode

    first, second = named(traced, "step flaky")
    assert first.attributes is not None and second.attributes is not None
    assert (first.attributes["bcce.step.attempt"], second.attributes["bcce.step.attempt"]) == (
        1,
        2,
    )
    assert first.status.status_code == StatusCode.ERROR
    assert "3" in (first.status.description or "")
    assert first.attributes["bcce.step.retried"] is True
    assert second.status.status_code == StatusCode.OK
    assert second.attributes["bcce.step.attempts"] == 2
    assert first.end_time is not None and second.start_time is not None
    assert first.end_time <= second.start_time


def test_a_failed_step_and_its_run_have_error_status_with_the_reason(
    traced: list[ReadableSpan],
) -> None:
    from opentelemetry.trace import StatusCode

    [broken] = named(traced, "step broken")
    [root] = named(traced, "workflow traced")
    assert broken.status.status_code == StatusCode.ERROR
    assert "4" in (broken.status.description or "")
    assert broken.attributes is not None and broken.attributes["bcce.step.exit_code"] == 4
    assert root.status.status_code == StatusCode.ERROR
    assert root.status.description == "failed steps: broken"
    [build] = named(traced, "step build")
    assert build.status.status_code == StatusCode.OK


def test_a_skipped_step_is_a_span_without_duration(traced: list[ReadableSpan]) -> None:
    from opentelemetry.trace import StatusCode

    [after] = named(traced, "step after")
    assert after.attributes is not None
    assert after.attributes["bcce.step.status"] == "skipped"
    assert after.start_time == after.end_time
    assert after.status.status_code == StatusCode.UNSET


def test_step_spans_carry_their_id_type_and_attempt(traced: list[ReadableSpan]) -> None:
    [left] = named(traced, "step left")
    assert left.attributes is not None
    assert left.attributes["bcce.step.id"] == "left"
    assert left.attributes["bcce.step.type"] == "cmd"
    assert left.attributes["bcce.step.attempt"] == 1
    assert left.attributes["bcce.step.parent"] == "par"
    assert left.attributes["bcce.run_id"] == "run-1"


def test_spans_take_their_times_from_the_events(
    make_app: Callable[..., Application],
    tmp_path: Path,
    bcce_captured_events: Callable[..., list[Event]],
) -> None:
    app = make_app()
    events = bcce_captured_events(app)
    run(app, tmp_path, SIMPLE)
    spans = finished(app)

    def at(kind: str) -> int:
        [event] = [e for e in events if e.type == kind]
        return int(event.timestamp * 1_000_000_000)

    [root] = named(spans, "workflow simple")
    [hello] = named(spans, "step hello")
    assert (root.start_time, root.end_time) == (at("workflow.started"), at("workflow.completed"))
    assert (hello.start_time, hello.end_time) == (at("step.started"), at("step.completed"))


def test_the_resource_names_the_service_its_version_team_and_project(
    make_app: Callable[..., Application], tmp_path: Path
) -> None:
    from bcce import __version__

    app = make_app(otel={"service_name": "ci-bcce"}, core={"team": "infra", "project": "api"})
    run(app, tmp_path, SIMPLE)
    resource = finished(app)[0].resource.attributes
    assert resource["service.name"] == "ci-bcce"
    assert resource["service.version"] == __version__
    assert (resource["bcce.team"], resource["bcce.project"]) == ("infra", "api")


def test_xray_ids_begin_with_the_epoch_seconds_of_the_run(
    make_app: Callable[..., Application], tmp_path: Path
) -> None:
    app = make_app(otel={"xray_ids": True})
    before = int(time.time())
    run(app, tmp_path, SIMPLE)
    after = int(time.time())
    [root] = named(finished(app), "workflow simple")
    trace_id = f"{root.context.trace_id:032x}"
    assert before <= int(trace_id[:8], 16) <= after
    # X-Ray's form of the same id: 1-<8 hex digits of time>-<24 hex digits>.
    assert f"1-{trace_id[:8]}-{trace_id[8:]}".count("-") == 2


def test_without_xray_ids_trace_ids_do_not_start_with_the_time(
    make_app: Callable[..., Application], tmp_path: Path
) -> None:
    app = make_app()
    before = int(time.time())
    run(app, tmp_path, SIMPLE)
    [root] = named(finished(app), "workflow simple")
    assert abs(int(f"{root.context.trace_id:032x}"[:8], 16) - before) > 3600


def test_the_console_exporter_writes_each_span_as_one_json_line_on_stderr(
    make_app: Callable[..., Application], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(otel={"exporter": "console"})
    run(app, tmp_path, SIMPLE)
    captured = capsys.readouterr()
    spans = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
    assert {span["name"] for span in spans} == {"workflow simple", "step hello"}
    [step] = [span for span in spans if span["name"] == "step hello"]
    assert step["attributes"]["bcce.step.id"] == "hello"
    assert '"name"' not in captured.out


def _exported_spans(bodies: list[bytes]) -> tuple[list[str], dict[str, str]]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    names: list[str] = []
    resource: dict[str, str] = {}
    for body in bodies:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for spans in request.resource_spans:
            resource.update({a.key: a.value.string_value for a in spans.resource.attributes})
            names += [span.name for scope in spans.scope_spans for span in scope.spans]
    return names, resource


def test_the_otlp_exporter_posts_spans_to_the_configured_endpoint(
    bcce_otlp_receiver: OtlpReceiver, make_app: Callable[..., Application], tmp_path: Path
) -> None:
    app = make_app(otel={"exporter": "otlp", "endpoint": bcce_otlp_receiver.url})
    run(app, tmp_path, SIMPLE)
    tracer(app).flush()
    names, resource = _exported_spans(bcce_otlp_receiver.bodies("/v1/traces"))
    assert sorted(names) == ["step hello", "workflow simple"]
    assert resource["service.name"] == "bcce"


def test_without_an_endpoint_the_otlp_exporter_follows_the_otel_variables(
    bcce_otlp_receiver: OtlpReceiver,
    make_app: Callable[..., Application],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", bcce_otlp_receiver.url)
    app = make_app(otel={"exporter": "otlp"})
    run(app, tmp_path, SIMPLE)
    tracer(app).flush()
    names, _ = _exported_spans(bcce_otlp_receiver.bodies("/v1/traces"))
    assert sorted(names) == ["step hello", "workflow simple"]


def test_an_unreachable_collector_holds_shutdown_up_for_the_subscriber_bound_only(
    make_app: Callable[..., Application], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    app = make_app(
        otel={"exporter": "otlp", "endpoint": closed}, events={"subscriber_timeout_seconds": 1}
    )
    run(app, tmp_path, SIMPLE)
    started = time.monotonic()
    tracer(app).close()
    assert time.monotonic() - started < 5  # the OTLP default retries for 10 s


def test_tracing_leaves_the_global_tracer_provider_alone(
    make_app: Callable[..., Application], tmp_path: Path
) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    before = trace.get_tracer_provider()
    app = make_app()
    run(app, tmp_path, SIMPLE)
    assert trace.get_tracer_provider() is before
    assert not isinstance(before, TracerProvider)


# -- tool calls, costs, resumes: the subscriber on its own ------------------------------------
class Feed:
    """Publishes a run's events straight to a TracingSubscriber, one second apart."""

    def __init__(self, subscriber: TracingSubscriber, run_id: str = "run-9") -> None:
        self.subscriber = subscriber
        self.run_id = run_id
        self.clock = 1_700_000_000.0
        self.seq = 0

    def __call__(self, event_type: str, /, **payload: Any) -> None:
        from bcce.events.bus import Event

        self.clock += 1
        self.seq += 1
        event = Event(event_type, payload, run_id=self.run_id, timestamp=self.clock, seq=self.seq)
        self.subscriber.handle(event)

    def start_agent(self) -> None:
        self("workflow.started", workflow="fix", resumed=False)
        self("step.started", step="fix", type="agent", attempt=1, parent=None)

    def spans(self) -> dict[str, ReadableSpan]:
        exporter: Any = self.subscriber.exporter
        return {s.name: s for s in exporter.get_finished_spans()}


@pytest.fixture
def feed(bcce_settings: Any) -> Iterator[Feed]:
    from bcce.events.otel import TracingSubscriber
    from bcce.settings.layers import with_overrides

    settings = with_overrides(bcce_settings, {"events": {"otel": {"exporter": "memory"}}})
    subscriber = TracingSubscriber.from_settings(settings)
    yield Feed(subscriber)
    subscriber.close()


def test_an_allowed_tool_call_is_a_span_under_its_step_until_its_result(feed: Feed) -> None:
    from opentelemetry.trace import StatusCode

    feed.start_agent()
    feed(
        "policy.decision",
        step="fix",
        kind="tool",
        tool="Read",
        tool_use_id="t1",
        allowed=True,
        rule="path.allowed",
        layer="hook",
    )
    feed("agent.tool_result", step="fix", tool_use_id="t1", tool="Read", is_error=False)
    feed("step.completed", step="fix", type="agent", status="succeeded", attempts=1)
    feed("workflow.completed", workflow="fix", status="succeeded", failed_steps=[])
    spans = feed.spans()
    read, step = spans["tool Read"], spans["step fix"]
    assert read.parent is not None and read.parent.span_id == step.context.span_id
    assert read.attributes is not None
    assert read.attributes["bcce.tool.name"] == "Read"
    assert read.attributes["bcce.policy.allowed"] is True
    assert read.attributes["bcce.policy.rule"] == "path.allowed"
    assert read.end_time is not None and read.start_time is not None
    assert read.end_time - read.start_time == 1_000_000_000  # decision to result
    assert read.status.status_code == StatusCode.UNSET


def test_a_denied_tool_call_ends_at_once_with_error_status_and_the_rule(feed: Feed) -> None:
    from opentelemetry.trace import StatusCode

    feed.start_agent()
    feed(
        "policy.decision",
        step="fix",
        kind="tool",
        tool="Write",
        tool_use_id="t2",
        allowed=False,
        rule="path.outside",
        reason="/etc/passwd is outside src/**",
        layer="hook",
    )
    denied = feed.spans()["tool Write"]  # finished before the step ends
    assert denied.start_time == denied.end_time
    assert denied.status.status_code == StatusCode.ERROR
    assert denied.status.description == "denied by path.outside: /etc/passwd is outside src/**"
    assert denied.attributes is not None
    assert denied.attributes["bcce.policy.allowed"] is False
    assert denied.attributes["bcce.policy.rule"] == "path.outside"


def test_a_tool_result_with_an_error_marks_its_span(feed: Feed) -> None:
    from opentelemetry.trace import StatusCode

    feed.start_agent()
    feed(
        "policy.decision",
        step="fix",
        kind="tool",
        tool="Bash",
        tool_use_id="t3",
        allowed=True,
        rule="command.allowed",
    )
    feed("agent.tool_result", step="fix", tool_use_id="t3", tool="Bash", is_error=True)
    bash = feed.spans()["tool Bash"]
    assert bash.status.status_code == StatusCode.ERROR
    assert bash.attributes is not None and bash.attributes["bcce.tool.is_error"] is True


def test_a_span_left_open_ends_with_its_parent(feed: Feed) -> None:
    feed.start_agent()
    feed("policy.decision", step="fix", kind="tool", tool="Read", tool_use_id="t4", allowed=True)
    feed("step.timed_out", step="fix", type="agent", status="timed_out", error="too slow")
    spans = feed.spans()
    read, step = spans["tool Read"], spans["step fix"]
    assert read.end_time == step.end_time
    assert read.attributes is not None and read.attributes["bcce.ended_with_parent"] is True


def test_cost_recorded_adds_tokens_and_cost_to_the_step_and_run_spans(feed: Feed) -> None:
    feed.start_agent()
    feed(
        "cost.recorded",
        step="fix",
        workflow="fix",
        model="claude-x",
        total_cost_usd=0.25,
        input_tokens=1200,
        output_tokens=300,
    )
    feed("step.completed", step="fix", type="agent", status="succeeded")
    feed("workflow.completed", workflow="fix", status="succeeded")
    spans = feed.spans()
    for name in ("step fix", "workflow fix"):
        attributes = spans[name].attributes
        assert attributes is not None
        assert attributes["bcce.cost.usd"] == 0.25
        assert attributes["gen_ai.usage.input_tokens"] == 1200
        assert attributes["gen_ai.usage.output_tokens"] == 300
    step_attributes = spans["step fix"].attributes
    assert step_attributes is not None and step_attributes["gen_ai.request.model"] == "claude-x"


def test_a_resumed_runs_new_root_span_links_to_the_earlier_drive(feed: Feed) -> None:
    feed("workflow.started", workflow="fix", resumed=False)
    feed("workflow.completed", workflow="fix", status="awaiting_approval")
    feed("workflow.started", workflow="fix", resumed=True)
    feed("step.kept", step="fix", reason="succeeded in an earlier attempt")
    feed("workflow.completed", workflow="fix", status="succeeded")
    exporter: Any = feed.subscriber.exporter
    first, second = [s for s in exporter.get_finished_spans() if s.parent is None]
    assert second.attributes is not None and second.attributes["bcce.resumed"] is True
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    assert first.attributes is not None
    assert first.attributes["bcce.run_id"] == second.attributes["bcce.run_id"] == "run-9"


def test_closing_ends_the_spans_of_a_run_that_never_finished(feed: Feed) -> None:
    feed.start_agent()
    feed.subscriber.close()
    spans = feed.spans()
    assert set(spans) == {"workflow fix", "step fix"}
    assert all(s.attributes is not None and s.attributes["bcce.incomplete"] for s in spans.values())


def test_events_after_a_run_ends_leave_nothing_behind(feed: Feed) -> None:
    feed.start_agent()
    feed("step.completed", step="fix", type="agent", status="succeeded", attempts=1)
    feed("workflow.completed", workflow="fix", status="succeeded", failed_steps=[])
    feed("storage.archived", location="s3://b/fix", files=3, bytes=10, uploaded=3)

    assert feed.subscriber._runs == {}
    assert set(feed.spans()) == {"workflow fix", "step fix"}
