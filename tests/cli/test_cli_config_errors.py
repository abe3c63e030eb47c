"""Bad configuration through the real command line: exit 3, where and what, no traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bcce.cli.main import cli
from bcce.errors import ExitCode
from bcce.testing.aws import MotoServer


def _bcce(*args: str) -> Result:
    """Run bcce as a user would: the command line builds its own application."""
    return CliRunner().invoke(cli, list(args))


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "given.yaml"
    path.write_text(text)
    return path


def _assert_invalid(result: Result) -> None:
    assert result.exit_code == ExitCode.INVALID, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: [BCCE100] ")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening, held for the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_malformed_yaml_names_the_file_line_and_column(tmp_path: Path) -> None:
    path = _config(tmp_path, "storage:\n  root: [unclosed\n")

    result = _bcce("--config", str(path), "config", "validate")

    _assert_invalid(result)
    assert f"{path}:3:1: invalid YAML" in result.stderr
    assert "hint: " in result.stderr


def test_an_unknown_key_names_its_file_line_and_the_allowed_keys(tmp_path: Path) -> None:
    path = _config(tmp_path, "storage:\n  backend: local\n  rooot: runs\n")

    result = _bcce("--config", str(path), "config", "validate")

    _assert_invalid(result)
    assert f"{path}:3:10: storage.rooot: unknown key" in result.stderr
    assert "hint: allowed keys here: archive_on_completion, backend, root, s3" in result.stderr


def test_an_unknown_section_lists_the_sections(tmp_path: Path) -> None:
    path = _config(tmp_path, "storrage:\n  root: runs\n")

    result = _bcce("--config", str(path), "config", "validate")

    _assert_invalid(result)
    assert "storrage: unknown key" in result.stderr
    assert "agent, auth, aws, core" in result.stderr


def test_a_wrong_type_names_the_key_and_the_expected_type(tmp_path: Path) -> None:
    path = _config(tmp_path, "workflow:\n  max_parallel: lots\n")

    result = _bcce("--config", str(path), "config", "validate")

    _assert_invalid(result)
    assert f"{path}:2:17: workflow.max_parallel:" in result.stderr
    assert "valid integer" in result.stderr
    assert "'lots'" in result.stderr


def test_a_wrong_type_from_an_env_variable_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BCCE_WORKFLOW__MAX_PARALLEL", "lots")

    result = _bcce("config", "validate")

    _assert_invalid(result)
    assert "env BCCE_WORKFLOW__MAX_PARALLEL: workflow.max_parallel:" in result.stderr


def test_a_value_outside_a_fixed_set_lists_the_allowed_values(tmp_path: Path) -> None:
    path = _config(tmp_path, "agent:\n  provider: openai\n")

    result = _bcce("--config", str(path), "config", "validate")

    _assert_invalid(result)
    assert "agent.provider" in result.stderr
    assert "'bedrock', 'anthropic' or 'scripted'" in result.stderr


def test_an_unknown_selector_choice_lists_the_allowed_values(tmp_path: Path) -> None:
    path = _config(tmp_path, "auth:\n  provider: kerberos\n")

    result = _bcce("--config", str(path), "config", "validate")

    _assert_invalid(result)
    assert f"{path}:2:13: auth.provider: unknown choice 'kerberos'" in result.stderr
    assert "hint: allowed values: cognito-oidc, identity-center, ldap, local" in result.stderr


@pytest.mark.parametrize(
    "key", ["storage.backend", "events.metrics", "agent.runtime", "workflow.state_store"]
)
def test_every_selector_refuses_an_unknown_choice(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    section, name = key.split(".")
    monkeypatch.setenv(f"BCCE_{section.upper()}__{name.upper()}", "nonexistent")

    result = _bcce("config", "validate")

    _assert_invalid(result)
    assert f"{key}: unknown choice 'nonexistent'" in result.stderr
    assert "allowed values: " in result.stderr


def test_an_unreachable_ssm_endpoint_names_the_setting_that_enabled_it(
    aws_env: MotoServer, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BCCE_SSM__PATH", "/bcce/prod")
    monkeypatch.setenv("BCCE_SSM__ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")

    result = _bcce("config", "validate")

    _assert_invalid(result)
    assert "env BCCE_SSM__PATH: ssm.path: cannot read SSM Parameter Store path /bcce/prod" in (
        result.stderr
    )
    assert "unset ssm.path" in result.stderr


def test_a_missing_config_file_names_it(tmp_path: Path) -> None:
    result = _bcce("--config", str(tmp_path / "absent.yaml"), "config", "show")

    _assert_invalid(result)
    assert f"{tmp_path / 'absent.yaml'}: configuration file not found" in result.stderr


def test_a_bcce_yaml_in_the_working_directory_is_a_layer(tmp_path: Path) -> None:
    (tmp_path / "bcce.yaml").write_text("core:\n  team: [not, a, string]\n")

    result = _bcce("config", "show")

    _assert_invalid(result)
    assert f"{tmp_path / 'bcce.yaml'}:2:9: core.team:" in result.stderr


def test_the_user_config_file_is_a_layer(tmp_path: Path) -> None:
    user = tmp_path / "xdg-config" / "bcce" / "config.yaml"
    user.parent.mkdir(parents=True)
    user.write_text("nope: 1\n")

    result = _bcce("config", "show")

    _assert_invalid(result)
    assert f"{user}:1:7: nope: unknown key" in result.stderr


def test_the_env_option_names_an_unknown_environment() -> None:
    result = _bcce("--env", "staging", "config", "show")

    _assert_invalid(result)
    assert "BCCE_ENV: no configuration for environment 'staging'" in result.stderr


def test_with_log_level_debug_the_traceback_is_shown(tmp_path: Path) -> None:
    path = _config(tmp_path, "auth:\n  provider: kerberos\n")

    result = _bcce("--log-level", "debug", "--config", str(path), "config", "validate")

    assert result.exit_code == ExitCode.INVALID
    assert "Traceback (most recent call last)" in result.stderr
    assert "unknown choice 'kerberos'" in result.stderr.splitlines()[-2]


def test_doctor_reports_invalid_configuration_as_a_failed_check_and_exits_3(
    tmp_path: Path,
) -> None:
    path = _config(tmp_path, "storage:\n  rooot: runs\n")

    result = _bcce("--config", str(path), "doctor")

    assert result.exit_code == ExitCode.INVALID, result.output
    assert "Traceback" not in result.output
    assert f"Configuration: {path}:2:10: storage.rooot: unknown key" in result.stdout
    assert "fix: allowed keys here: archive_on_completion, backend, root, s3" in result.stdout
