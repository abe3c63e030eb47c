"""Tracing an agent step on the real Claude Code, and Claude Code's own telemetry tagged by bcce.

The run's spans come from the in-memory exporter (``events.otel.exporter: memory``); Claude
Code's OpenTelemetry export goes to a loopback OTLP/HTTP receiver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from bcce.testing.otlp import OtlpReceiver

pytestmark = pytest.mark.e2e

AgentRun = Any  # conftest.AgentRun: a finished run and its run directory

WORKFLOW = """
version: 1
workflow: traced-agent
steps:
  - id: fix
    type: agent
    prompt: Fix the typo in src/app.py.
    available_tools: [ReadFile, Diff, WriteFile]
    policy: {allowed_paths: ["src/**"], timeout_seconds: 120}
  - id: check
    type: cmd
    command: echo checked
"""


def call(name: str, **tool_input: Any) -> dict[str, Any]:
    """One scripted turn making one tool call."""
    return {"tool_use": [{"name": name, "input": tool_input}]}


READ_APP = call("Read", file_path="{workspace}/src/app.py")
WRITE_DOCS = call("Write", file_path="{workspace}/docs/new.txt", content="x")  # denied
FIX_APP = call(
    "Edit", file_path="{workspace}/src/app.py", old_string="'helo'", new_string="'hello'"
)


@pytest.fixture
def traced_run(
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
) -> tuple[AgentRun, list[ReadableSpan]]:
    app = make_agent_app(events={"subscribers": ["tracing"], "otel": {"exporter": "memory"}})
    ran = run_agent(WORKFLOW, {"fix": script(READ_APP, WRITE_DOCS, FIX_APP)}, app=app)
    assert ran.exit_code == 0, ran.output
    spans = list(app.events.tracing().exporter.get_finished_spans())
    return ran, sorted(spans, key=lambda s: s.start_time or 0)


def _parent(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    [found] = [s for s in spans if s.context.span_id == span.parent.span_id]
    return found


def test_an_agent_run_is_traced_as_run_then_step_then_tool_calls(
    traced_run: tuple[AgentRun, list[ReadableSpan]],
) -> None:
    ran, spans = traced_run
    tree = [
        (s.name, parent.name if (parent := _parent(s, spans)) else None)
        for s in spans
        if not s.name.startswith("step check")
    ]
    assert tree == [
        ("workflow traced-agent", None),
        ("step fix", "workflow traced-agent"),
        ("tool Read", "step fix"),
        ("tool Write", "step fix"),
        ("tool Edit", "step fix"),
    ]
    [root] = [s for s in spans if s.parent is None]
    assert root.attributes is not None and root.attributes["bcce.run_id"] == ran.run_id
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}


def test_the_denied_tool_call_is_marked_with_error_status_and_its_rule(
    traced_run: tuple[AgentRun, list[ReadableSpan]],
) -> None:
    from opentelemetry.trace import StatusCode

    ran, spans = traced_run
    [write] = [s for s in spans if s.name == "tool Write"]
    assert write.status.status_code == StatusCode.ERROR
    assert (write.status.description or "").startswith("denied by path.not_allowed")
    assert write.attributes is not None
    assert write.attributes["bcce.policy.allowed"] is False
    assert write.attributes["bcce.policy.rule"] == "path.not_allowed"
    assert write.start_time == write.end_time
    [denied] = ran.denials("fix")
    assert write.attributes["bcce.tool.use_id"] == denied["tool_use_id"]


def test_allowed_tool_calls_last_from_the_decision_to_the_result(
    traced_run: tuple[AgentRun, list[ReadableSpan]],
) -> None:
    from opentelemetry.trace import StatusCode

    ran, spans = traced_run
    allowed = [s for s in spans if s.name in ("tool Read", "tool Edit")]
    ids = {d["tool_use_id"] for d in ran.decisions("fix") if d["allowed"]}
    assert {s.attributes["bcce.tool.use_id"] for s in allowed if s.attributes} == ids
    for span in allowed:
        assert span.attributes is not None
        assert span.attributes["bcce.policy.allowed"] is True
        assert span.attributes["bcce.tool.is_error"] is False  # ended by its result
        assert span.status.status_code == StatusCode.UNSET
        assert span.end_time is not None and span.start_time is not None
        assert span.end_time > span.start_time


def test_the_agent_step_span_carries_its_tokens_and_cost(
    traced_run: tuple[AgentRun, list[ReadableSpan]],
) -> None:
    ran, spans = traced_run
    [step] = [s for s in spans if s.name == "step fix"]
    usage = ran.json("fix", "usage.json")
    assert step.attributes is not None
    assert step.attributes["bcce.step.type"] == "agent"
    assert step.attributes["bcce.cost.usd"] == usage["total_cost_usd"]
    assert step.attributes["gen_ai.usage.input_tokens"] == usage["usage"]["input_tokens"]


# -- Claude Code's own telemetry -----------------------------------------------------------
def test_claude_codes_telemetry_carries_the_run_step_and_workflow(
    bcce_otlp_receiver: OtlpReceiver,
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
) -> None:
    app = make_agent_app(
        events={
            "otel": {
                "claude_code": True,
                "endpoint": bcce_otlp_receiver.url,
                "metric_interval_seconds": 0.5,
            }
        }
    )
    ran = run_agent(
        WORKFLOW.replace("traced-agent", "tagged=1, agent"), {"fix": script(READ_APP)}, app=app
    )
    assert ran.exit_code == 0, ran.output
    # Claude Code exports at exit: the step is over, so everything has arrived.
    exported = bcce_otlp_receiver.resources()
    assert set(exported) == {"/v1/metrics", "/v1/logs"}
    for resources in exported.values():
        for resource in resources:
            assert resource["service.name"] == "claude-code"
            assert resource["bcce.run_id"] == ran.run_id
            assert resource["bcce.step_id"] == "fix"
            assert resource["bcce.workflow"] == "tagged=1, agent"  # percent-encoded on the way


def test_without_claude_code_telemetry_nothing_is_exported(
    bcce_otlp_receiver: OtlpReceiver,
    make_agent_app: Callable[..., Any],
    run_agent: Callable[..., AgentRun],
    script: Callable[..., dict[str, Any]],
) -> None:
    app = make_agent_app(events={"otel": {"endpoint": bcce_otlp_receiver.url}})
    ran = run_agent(WORKFLOW, {"fix": script(READ_APP)}, app=app)
    assert ran.exit_code == 0, ran.output
    assert bcce_otlp_receiver.requests == []
