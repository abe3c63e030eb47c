"""Claude Code's own telemetry: off by default, on and tagged with the run when configured."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from pydantic import SecretStr

from bcce.agent.endpoint import ModelEndpoint, open_endpoint, resource_attributes, telemetry_env
from bcce.settings.model import AgentSettings, AwsSettings, OtelSettings

QUIET_ENV = {"DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
TAGS = {"bcce.run_id": "run-1", "bcce.step_id": "fix", "bcce.workflow": "ship"}


@pytest.fixture
def opened() -> Iterator[list[ModelEndpoint]]:
    endpoints: list[ModelEndpoint] = []
    yield endpoints
    for endpoint in endpoints:
        endpoint.close()


def anthropic(opened: list[ModelEndpoint], otel: OtelSettings | None) -> dict[str, str]:
    agent = AgentSettings(provider="anthropic", api_key=SecretStr("sk-ant-unit"))
    endpoint = open_endpoint(
        agent, AwsSettings(), model="m", step_id="fix", otel=otel, run_id="run-1", workflow="ship"
    )
    opened.append(endpoint)
    return endpoint.env


def test_claude_codes_telemetry_is_off_unless_configured(opened: list[ModelEndpoint]) -> None:
    env = anthropic(opened, OtelSettings(endpoint="http://127.0.0.1:4318"))
    assert env["DISABLE_TELEMETRY"] == "1"
    assert not any(name.startswith(("OTEL_", "CLAUDE_CODE_ENABLE_TELEMETRY")) for name in env)


def test_claude_code_telemetry_exports_by_otlp_tagged_with_run_step_and_workflow(
    opened: list[ModelEndpoint],
) -> None:
    otel = OtelSettings(claude_code=True, endpoint="http://collector:4318")
    env = anthropic(opened, otel)
    assert env["CLAUDE_CODE_ENABLE_TELEMETRY"] == "1"
    assert (env["OTEL_METRICS_EXPORTER"], env["OTEL_LOGS_EXPORTER"]) == ("otlp", "otlp")
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == (
        "bcce.run_id=run-1,bcce.step_id=fix,bcce.workflow=ship"
    )
    assert "DISABLE_TELEMETRY" not in env
    # Traffic to Anthropic stays off: the export does not need it.
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"


def test_resource_attribute_values_are_percent_encoded() -> None:
    text = resource_attributes({"bcce.workflow": "a,b=c d%é", "bcce.run_id": "r-1"})
    assert text == "bcce.workflow=a%2Cb%3Dc%20d%25%C3%A9,bcce.run_id=r-1"
    pairs = dict(pair.split("=", 1) for pair in text.split(","))
    assert unquote(pairs["bcce.workflow"]) == "a,b=c d%é"


def test_a_missing_value_is_left_out_of_the_resource_attributes() -> None:
    assert resource_attributes({"bcce.run_id": None, "bcce.step_id": "s"}) == "bcce.step_id=s"


def test_the_metric_interval_comes_from_settings() -> None:
    env = telemetry_env(
        QUIET_ENV, OtelSettings(claude_code=True, metric_interval_seconds=2.5), TAGS
    )
    assert env["OTEL_METRIC_EXPORT_INTERVAL"] == "2500"


def test_without_an_endpoint_bcces_own_otlp_endpoint_variable_is_passed_on() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer secret",
    }
    env = telemetry_env(QUIET_ENV, OtelSettings(claude_code=True), TAGS, environ=environ)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert "OTEL_EXPORTER_OTLP_HEADERS" not in env  # the agent's commands inherit env


def test_with_no_endpoint_anywhere_claude_code_keeps_its_default() -> None:
    env = telemetry_env(QUIET_ENV, OtelSettings(claude_code=True), TAGS, environ={})
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
