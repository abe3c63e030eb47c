"""Model endpoints keep credentials out of Claude Code's environment (its commands inherit it)."""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from bcce.agent.endpoint import open_endpoint
from bcce.errors import ConfigError
from bcce.settings.model import AgentSettings, AwsSettings


def _helper_output(command: str) -> str:
    return subprocess.run(shlex.split(command), capture_output=True, text=True, check=True).stdout


def test_the_anthropic_key_is_given_through_a_helper_not_the_environment() -> None:
    agent = AgentSettings(provider="anthropic", api_key=SecretStr("sk-ant-unit-test-key"))

    endpoint = open_endpoint(agent, AwsSettings(), model="m", step_id="s")
    try:
        assert "sk-ant-unit-test-key" not in json.dumps(endpoint.env)
        assert _helper_output(endpoint.settings["apiKeyHelper"]) == "sk-ant-unit-test-key"
        assert endpoint.secret_dir is not None
        assert stat.S_IMODE(endpoint.secret_dir.stat().st_mode) == 0o700
        assert endpoint.secrets == ["sk-ant-unit-test-key"]
    finally:
        endpoint.close()
    assert not endpoint.secret_dir.exists()


def test_bedrock_credentials_are_exported_through_a_helper_not_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNITTEST00000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "unit-test-token")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    endpoint = open_endpoint(
        AgentSettings(provider="bedrock"), AwsSettings(region="us-east-1"), model="m", step_id="s"
    )
    try:
        assert "unit-test-secret" not in json.dumps(endpoint.env)
        assert "AWS_ACCESS_KEY_ID" not in endpoint.env
        exported = json.loads(_helper_output(endpoint.settings["awsCredentialExport"]))
        assert exported["Credentials"] == {
            "AccessKeyId": "AKIAUNITTEST00000001",
            "SecretAccessKey": "unit-test-secret",
            "SessionToken": "unit-test-token",
        }
        assert set(endpoint.secrets) == {"unit-test-secret", "unit-test-token"}
    finally:
        endpoint.close()
    assert endpoint.secret_dir is not None and not endpoint.secret_dir.exists()


def test_the_anthropic_provider_without_a_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as caught:
        open_endpoint(AgentSettings(provider="anthropic"), AwsSettings(), model="m", step_id="s")

    assert caught.value.key == "agent.api_key"
