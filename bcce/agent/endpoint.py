"""Where an agent step's model calls go: Bedrock, the Anthropic API, or the scripted server.

The result is the environment Claude Code needs for the chosen provider, plus the secrets in it
(so they are redacted) and anything to stop when the step ends (the scripted server).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bcce.errors import AwsError, ConfigError

if TYPE_CHECKING:
    from bcce.settings.model import AgentSettings, AwsSettings, OtelSettings

#: Keep Claude Code from talking to anything but the model endpoint.
QUIET = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    # A Bash call must end with its call: no command may outlive the decision that allowed it.
    "CLAUDE_CODE_DISABLE_BACKGROUND_TASKS": "1",
}


@dataclass
class ModelEndpoint:
    """How Claude Code reaches the model for one step.

    Credentials never go into ``env`` (the agent's shell commands inherit it): they sit in a
    private directory (``secret_dir``) that Claude Code reads through a credential helper in
    ``settings``, and that the agent's sandboxed commands cannot read (``denyRead``).
    """

    provider: str
    model: str
    env: dict[str, str]
    secrets: list[str] = field(default_factory=list)
    url: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    secret_dir: Path | None = None
    stop: Callable[[], None] = lambda: None

    def close(self) -> None:
        self.stop()
        if self.secret_dir is not None:
            shutil.rmtree(self.secret_dir, ignore_errors=True)


def _secret_file(name: str, content: str) -> tuple[Path, Path]:
    """A file only this user can read, in a fresh private directory: (directory, file)."""
    directory = Path(tempfile.mkdtemp(prefix="bcce-credentials-"))
    directory.chmod(0o700)
    path = directory / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(content)
    return directory, path


def open_endpoint(
    agent: AgentSettings,
    aws: AwsSettings,
    *,
    model: str,
    step_id: str,
    placeholders: Mapping[str, str] | None = None,
    otel: OtelSettings | None = None,
    run_id: str | None = None,
    workflow: str | None = None,
) -> ModelEndpoint:
    """Prepare the provider ``agent.provider`` for one agent step.

    With ``otel.claude_code`` on, Claude Code's own OpenTelemetry export is switched on and
    tagged with ``run_id``, ``step_id`` and ``workflow`` (see :func:`telemetry_env`).
    """
    if agent.provider == "bedrock":
        endpoint = _bedrock(agent, aws, model)
    elif agent.provider == "anthropic":
        endpoint = _anthropic(agent, model)
    else:
        endpoint = _scripted(agent, model, step_id, placeholders or {})
    if otel is not None and otel.claude_code:
        endpoint.env = telemetry_env(
            endpoint.env,
            otel,
            {"bcce.run_id": run_id, "bcce.step_id": step_id, "bcce.workflow": workflow},
        )
    return endpoint


def resource_attributes(attributes: Mapping[str, str | None]) -> str:
    """``OTEL_RESOURCE_ATTRIBUTES`` text: ``key=value`` pairs, values percent-encoded.

    Everything but letters, digits and ``-._~`` is encoded: always valid for the spec's
    baggage-octet rule, and ``,`` or ``=`` in a value (a workflow name) cannot split a pair.
    """
    from urllib.parse import quote

    return ",".join(
        f"{key}={quote(value, safe='')}" for key, value in attributes.items() if value is not None
    )


def telemetry_env(
    env: Mapping[str, str],
    otel: OtelSettings,
    attributes: Mapping[str, str | None],
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``env`` with Claude Code's OpenTelemetry export on, tagged with ``attributes``.

    Metrics and logs (events) go by OTLP/HTTP to ``otel.endpoint``, else to bcce's own
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (Claude Code gets no other variable of ours). Headers are
    never passed: the agent's commands inherit this environment. The other quiet switches stay:
    they stop traffic to Anthropic, not the export (checked with the real CLI).
    """
    out = {k: v for k, v in env.items() if k != "DISABLE_TELEMETRY"}
    out.update(
        CLAUDE_CODE_ENABLE_TELEMETRY="1",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_METRIC_EXPORT_INTERVAL=str(int(otel.metric_interval_seconds * 1000)),
        OTEL_RESOURCE_ATTRIBUTES=resource_attributes(attributes),
    )
    endpoint = otel.endpoint or (os.environ if environ is None else environ).get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if endpoint:
        out["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    return out


def _bedrock(agent: AgentSettings, aws: AwsSettings, model: str) -> ModelEndpoint:
    from bcce.aws.session import create_session

    session = create_session(aws)
    region = session.region_name
    if not region:
        raise ConfigError(
            "agent steps on Bedrock need an AWS region",
            key="aws.region",
            hint="set aws.region (BCCE_AWS__REGION) or AWS_REGION",
        )
    env = {**QUIET, "CLAUDE_CODE_USE_BEDROCK": "1", "AWS_REGION": region, "ANTHROPIC_MODEL": model}
    secrets: list[str] = []
    if agent.base_url:
        env["ANTHROPIC_BEDROCK_BASE_URL"] = agent.base_url
    if agent.base_url and agent.bedrock_skip_auth:
        env["CLAUDE_CODE_SKIP_BEDROCK_AUTH"] = "1"
    else:
        # Claude Code runs with a private HOME, so it gets the credentials themselves (from
        # the profile/SSO session; short-lived where the source is) rather than config files.
        credentials = session.get_credentials()
        if credentials is None:
            raise AwsError(
                "no AWS credentials for Bedrock",
                hint="sign in (`aws sso login --profile <profile>`) and set aws.profile",
            )
        frozen = credentials.get_frozen_credentials()
        if not frozen.access_key or not frozen.secret_key:
            raise AwsError("the AWS credentials are incomplete", hint="refresh your sign-in")
        exported = {"AccessKeyId": frozen.access_key, "SecretAccessKey": frozen.secret_key}
        secrets.append(frozen.secret_key)
        if frozen.token:
            exported["SessionToken"] = frozen.token
            secrets.append(frozen.token)
        # Claude Code's awsCredentialExport reads them; the agent's commands cannot.
        directory, path = _secret_file(
            "aws-credentials.json", json.dumps({"Credentials": exported})
        )
        return ModelEndpoint(
            "bedrock",
            model,
            env,
            secrets,
            agent.base_url,
            settings={"awsCredentialExport": f"cat {shlex.quote(str(path))}"},
            secret_dir=directory,
        )
    return ModelEndpoint("bedrock", model, env, secrets, agent.base_url)


def _anthropic(agent: AgentSettings, model: str) -> ModelEndpoint:
    if agent.api_key is None:
        raise ConfigError(
            "the anthropic provider needs an API key",
            key="agent.api_key",
            hint="set BCCE_AGENT__API_KEY, or keep it in SSM Parameter Store as a SecureString",
        )
    key = agent.api_key.get_secret_value()
    env = {**QUIET, "CLAUDE_CODE_USE_BEDROCK": "0", "ANTHROPIC_MODEL": model}
    if agent.base_url:
        env["ANTHROPIC_BASE_URL"] = agent.base_url
    # Claude Code's apiKeyHelper reads the key; the agent's commands cannot.
    directory, path = _secret_file("api-key", key)
    return ModelEndpoint(
        "anthropic",
        model,
        env,
        [key],
        agent.base_url,
        settings={"apiKeyHelper": f"cat {shlex.quote(str(path))}"},
        secret_dir=directory,
    )


def _scripted(
    agent: AgentSettings, model: str, step_id: str, placeholders: Mapping[str, str]
) -> ModelEndpoint:
    from bcce.testing.model_server import ScriptedModelServer

    script = script_for(agent.script, step_id)
    server = ScriptedModelServer(script, placeholders=placeholders).start()
    env: dict[str, Any]
    if agent.scripted_format == "bedrock":
        env = {
            **QUIET,
            "CLAUDE_CODE_USE_BEDROCK": "1",
            "CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1",
            "AWS_REGION": "us-east-1",
            "ANTHROPIC_BEDROCK_BASE_URL": server.url,
            "ANTHROPIC_MODEL": model,
        }
    else:
        env = {
            **QUIET,
            "CLAUDE_CODE_USE_BEDROCK": "0",
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": "scripted",
            "ANTHROPIC_MODEL": model,
        }
    return ModelEndpoint("scripted", model, env, [], server.url, stop=server.stop)


def script_for(configured: Path | None, step_id: str) -> Path:
    """The reply script for ``step_id``: the configured file, or ``<dir>/<step_id>.yaml``."""
    if configured is None:
        raise ConfigError(
            "the scripted provider needs a reply script",
            key="agent.script",
            hint="set agent.script to a script file or a directory of <step_id>.yaml files",
        )
    if configured.is_dir():
        for suffix in (".yaml", ".yml", ".json"):
            candidate = configured / f"{step_id}{suffix}"
            if candidate.is_file():
                return candidate
        raise ConfigError(
            f"no reply script for step {step_id!r} in {configured}",
            key="agent.script",
            hint=f"add {configured / (step_id + '.yaml')}",
        )
    if not configured.is_file():
        raise ConfigError(f"reply script {configured} not found", key="agent.script")
    return configured
