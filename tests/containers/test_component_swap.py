"""One component swapped four ways: by YAML file, env variable, SSM parameter and override(mock).

The component is the agent runtime: which Claude Code program bcce drives. Configuration swaps
the program (``agent.cli_path``); a test swaps the whole runtime for a mock. Each swap is seen
where the application uses the component: ``bcce doctor`` reports the program it found.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import Mock

from click.testing import CliRunner
from dependency_injector import providers

from bcce.agent.runtime import AgentRuntime, CliInfo
from bcce.cli.main import cli
from bcce.containers.application import Application
from bcce.settings import LayerOptions


def _claude_code_check(app: Application) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["doctor", "--json", "--check", "claude-code"], obj=app)
    assert result.exit_code == 0, result.output
    (check,) = json.loads(result.stdout)["checks"]
    return dict(check["details"])


def test_the_agent_program_is_swapped_by_a_yaml_file(
    tmp_path: Path,
    bcce_make_app: Callable[..., Application],
    fake_claude: Callable[..., Path],
) -> None:
    program = fake_claude("1.0.0-yaml")
    (tmp_path / "bcce.yaml").write_text(f"agent:\n  cli_path: {program}\n")

    app = bcce_make_app()

    assert _claude_code_check(app) == {
        "version": "1.0.0-yaml",
        "path": str(program),
        "source": "configured",
    }


def test_the_agent_program_is_swapped_by_an_env_variable(
    bcce_layer_options: LayerOptions,
    bcce_make_app: Callable[..., Application],
    fake_claude: Callable[..., Path],
) -> None:
    program = fake_claude("1.0.0-env")
    options = replace(bcce_layer_options, environ={"BCCE_AGENT__CLI_PATH": str(program)})

    app = bcce_make_app(options=options)

    assert _claude_code_check(app)["version"] == "1.0.0-env"


def test_the_agent_program_is_swapped_by_an_ssm_parameter(
    ssm: Any,
    bcce_layer_options: LayerOptions,
    bcce_make_app: Callable[..., Application],
    fake_claude: Callable[..., Path],
) -> None:
    program = fake_claude("1.0.0-ssm")
    ssm.put_parameter(Name="/bcce/swap/agent/cli_path", Value=str(program), Type="String")
    options = replace(
        bcce_layer_options,
        environ={"BCCE_SSM__PATH": "/bcce/swap", "BCCE_SSM__ENDPOINT_URL": ssm.meta.endpoint_url},
    )

    app = bcce_make_app(options=options)

    assert _claude_code_check(app)["version"] == "1.0.0-ssm"


def test_the_agent_runtime_is_swapped_by_provider_override(bcce_app: Application) -> None:
    runtime = Mock(spec=AgentRuntime)
    runtime.locate.return_value = CliInfo(Path("/mock/claude"), "9.9.9-mock", "mock")

    with bcce_app.agent.runtime.override(providers.Object(runtime)):
        details = _claude_code_check(bcce_app)

    assert details == {"version": "9.9.9-mock", "path": "/mock/claude", "source": "mock"}
    runtime.locate.assert_called_once_with()


def test_an_override_reaches_the_containers_that_depend_on_the_component(
    bcce_app: Application,
) -> None:
    backend = Mock(name="storage backend")

    with bcce_app.storage.backend.override(providers.Object(backend)):
        assert bcce_app.workflow.storage.backend() is backend

    assert bcce_app.workflow.storage.backend() is not backend


def test_the_storage_backend_writes_where_a_yaml_file_roots_it(
    tmp_path: Path, bcce_make_app: Callable[..., Application]
) -> None:
    (tmp_path / "bcce.yaml").write_text(f"storage:\n  root: {tmp_path / 'artifacts'}\n")
    app = bcce_make_app()

    app.storage.backend().store("run-1/step/output.txt", b"hello")

    assert (tmp_path / "artifacts" / "run-1" / "step" / "output.txt").read_bytes() == b"hello"
