"""The root command: help, version, exit codes, error rendering and log output."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from dependency_injector import providers

import bcce
from bcce.cli.main import cli, run
from bcce.containers.application import Application
from bcce.errors import (
    AuthenticationFailed,
    AwsError,
    BcceError,
    ConfigError,
    ExitCode,
    NotAuthorised,
    PluginError,
    PolicyDenied,
    RunFailed,
    StorageError,
    UsageError,
    WorkflowError,
)


def _fail_while_running(app: Application, exc: BaseException) -> None:
    """Make every command fail with ``exc``: the first thing a command does is start logging."""

    def fail() -> None:
        raise exc

    app.core.logging.override(providers.Resource(fail))


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])

    assert result.exit_code == 0
    commands = result.stdout.split("Commands:")[1]
    assert re.search(r"\n  config +Show and validate the layered configuration\.\n", commands)
    assert re.search(
        r"\n  doctor +Check Python, configuration, AWS access and Claude Code\.\n", commands
    )


def test_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["--help"])

    text = " ".join(result.stdout.split())
    assert "Exit codes: 0 ok, 1 a run failed, 2 usage, 3 invalid configuration or workflow" in text
    assert "4 plugin error, 5 denied by policy, 6 not authorised, 130 interrupted." in text


def test_python_dash_m_bcce_version_prints_the_version(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bcce", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == f"bcce, version {bcce.__version__}\n"


def test_python_dash_m_bcce_exits_with_the_command_exit_code(tmp_path: Path) -> None:
    (tmp_path / "bcce.yaml").write_text("nope: 1\n")

    completed = subprocess.run(
        [sys.executable, "-m", "bcce", "config", "validate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )

    assert completed.returncode == ExitCode.INVALID
    assert "nope: unknown key" in completed.stderr


def test_the_version_option_of_the_click_group_agrees_with_the_fast_path() -> None:
    result = CliRunner().invoke(cli, ["--version"])

    assert result.stdout == f"bcce, version {bcce.__version__}\n"


def test_the_console_script_answers_version_without_importing_click(tmp_path: Path) -> None:
    code = (
        "import sys; from importlib.metadata import entry_points; "
        "(script,) = entry_points(group='console_scripts', name='bcce'); "
        "code = script.load()(['--version']); print('click' in sys.modules, code)"
    )

    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )

    assert completed.stdout == f"bcce, version {bcce.__version__}\nFalse 0\n", completed.stderr


def test_run_returns_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "validate"]) == 0
    assert run(["no-such-command"]) == ExitCode.USAGE

    assert "No such command 'no-such-command'" in capsys.readouterr().err


def test_an_unknown_option_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["config", "show", "--nope"])

    assert result.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (BcceError("failed"), 1),
        (UsageError("bad usage"), 2),
        (ConfigError("bad config"), 3),
        (WorkflowError("bad workflow"), 3),
        (RunFailed("run failed"), 1),
        (PluginError("bad plugin"), 4),
        (PolicyDenied("denied"), 5),
        (NotAuthorised("not allowed"), 6),
        (AuthenticationFailed("who are you"), 6),
        (StorageError("disk full"), 1),
        (AwsError("no aws"), 1),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BcceError) else str(value),
)
def test_each_error_exits_with_its_documented_code(
    error: BcceError, code: int, bcce_app: Application
) -> None:
    _fail_while_running(bcce_app, error)

    result = CliRunner().invoke(cli, ["config", "show"], obj=bcce_app)

    assert result.exit_code == code
    assert result.stderr == f"error: {error.render()}\n"


def test_an_error_prints_code_location_key_message_and_hint_without_a_traceback(
    bcce_app: Application,
) -> None:
    error = ConfigError("unknown key", location="a.yaml:3:5", key="storage.x", hint="remove it")
    _fail_while_running(bcce_app, error)

    result = CliRunner().invoke(cli, ["config", "show"], obj=bcce_app)

    assert (
        result.stderr == "error: [BCCE100] a.yaml:3:5: storage.x: unknown key\n  hint: remove it\n"
    )
    assert "Traceback" not in result.output


def test_an_interrupt_exits_130(bcce_app: Application) -> None:
    _fail_while_running(bcce_app, KeyboardInterrupt())

    result = CliRunner().invoke(cli, ["config", "show"], obj=bcce_app)

    assert result.exit_code == ExitCode.INTERRUPTED
    assert result.stderr == "interrupted\n"


def test_a_test_application_is_used_instead_of_building_one(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app(core={"team": "handed-in"})

    result = CliRunner().invoke(cli, ["config", "show", "--json"], obj=app)

    assert json.loads(result.stdout)["core"]["team"] == "handed-in"


def test_the_bcce_cli_fixture_runs_commands_against_the_test_application(
    bcce_cli: Callable[..., object], bcce_app: Application
) -> None:
    result = bcce_cli(["config", "show", "--json"])

    shown = json.loads(result.stdout)  # type: ignore[attr-defined]
    assert shown["storage"]["root"] == str(bcce_app.settings().storage.root)


def test_json_logs_are_one_object_per_line_with_run_id_and_component() -> None:
    result = CliRunner().invoke(
        cli, ["--log-format", "json", "--log-level", "debug", "doctor", "--check", "python"]
    )

    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines
    records = [json.loads(line)["record"] for line in lines]
    for record in records:
        assert "run_id" in record["extra"]
        assert "component" in record["extra"]
    assert {
        "component": "doctor",
        "message": "check python: ok (required: True)",
        "level": "DEBUG",
    } in [
        {"component": r["extra"]["component"], "message": r["message"], "level": r["level"]["name"]}
        for r in records
    ]


def test_json_logs_of_the_real_process_are_nothing_but_json(tmp_path: Path) -> None:
    # A second sink (loguru's default one) would interleave text lines; only a process shows it.
    args = ["--log-format", "json", "--log-level", "debug", "doctor", "--check", "python"]
    completed = subprocess.run(
        [sys.executable, "-m", "bcce", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    lines = completed.stderr.splitlines()
    assert lines
    for line in lines:
        assert json.loads(line)["record"]["extra"]["component"]


def test_text_logs_name_the_component() -> None:
    result = CliRunner().invoke(cli, ["--log-level", "debug", "doctor", "--check", "python"])

    assert result.exit_code == 0, result.output
    assert any(
        line.endswith(" DEBUG   doctor check python: ok (required: True)")
        for line in result.stderr.splitlines()
    )


def test_logs_are_off_at_the_default_level() -> None:
    result = CliRunner().invoke(cli, ["doctor", "--check", "python"])

    assert result.exit_code == 0
    assert result.stderr == ""
