"""``bcce config show`` and ``config validate`` run against a test application."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bcce.cli.main import cli
from bcce.containers.application import Application
from bcce.core.resources import data_dir
from bcce.settings import LayerOptions, PluginDefaults
from bcce.settings.render import MASK

SSM_PATH = "/bcce/show"
SECRET_URL = "https://token-s3cr3t@gateway.example"
SECRET_KEY = "sk-ant-api-s3cr3t"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def layered_app(
    tmp_path: Path,
    bcce_layer_options: LayerOptions,
    bcce_make_app: Callable[..., Application],
    ssm: Any,
) -> Application:
    """An application where each layer sets a different key."""
    _write(tmp_path / "config" / "environments" / "ci.yaml", "core:\n  team: from-env-file\n")
    user_file = _write(tmp_path / "user.yaml", "workflow:\n  shell: /bin/user-sh\n")
    _write(tmp_path / "bcce.yaml", "agent:\n  model: model-from-cwd\n")
    given = _write(tmp_path / "given.yaml", "aws:\n  read_timeout: 30.5\n")
    ssm.put_parameter(Name=f"{SSM_PATH}/policy/default/max_files", Value="7", Type="String")
    ssm.put_parameter(Name=f"{SSM_PATH}/agent/base_url", Value=SECRET_URL, Type="SecureString")
    ssm.put_parameter(Name=f"{SSM_PATH}/agent/api_key", Value=SECRET_KEY, Type="SecureString")
    options = replace(
        bcce_layer_options,
        environ={
            "BCCE_SSM__PATH": SSM_PATH,
            "BCCE_SSM__ENDPOINT_URL": ssm.meta.endpoint_url,
            "BCCE_WORKFLOW__MAX_PARALLEL": "9",
        },
        env_name="ci",
        user_config_file=user_file,
        config_files=[given],
        plugin_defaults=[PluginDefaults("acme", {"core": {"project": "from-plugin"}})],
    )
    return bcce_make_app(options=options, policy={"strict": True})


def _source_lines(output: str) -> dict[str, tuple[str, str]]:
    """``key = value  # layer: detail`` lines as ``{key: (value, "layer: detail")}``."""
    rows = {}
    for line in output.splitlines():
        match = re.match(r"^(\S+) = (.*?)\s+# (.*)$", line)
        assert match, f"unexpected line {line!r}"
        rows[match[1]] = (match[2], match[3])
    return rows


def test_config_show_sources_names_the_layer_of_each_value(
    layered_app: Application, tmp_path: Path
) -> None:
    tmp = tmp_path

    result = CliRunner().invoke(cli, ["config", "show", "--sources"], obj=layered_app)

    assert result.exit_code == 0, result.output
    rows = _source_lines(result.stdout)
    assert rows["policy.strict"] == ("true", "override: explicit override")
    assert rows["workflow.max_parallel"] == ("9", "env: BCCE_WORKFLOW__MAX_PARALLEL")
    assert rows["policy.default.max_files"] == ("7", f"ssm: {SSM_PATH}/policy/default/max_files")
    assert rows["aws.read_timeout"] == ("30.5", f"file: {tmp}/given.yaml:2:17")
    assert rows["agent.model"] == ("model-from-cwd", f"file: {tmp}/bcce.yaml:2:10")
    assert rows["workflow.shell"] == ("/bin/user-sh", f"file: {tmp}/user.yaml:2:10")
    assert rows["core.team"] == ("from-env-file", f"file: {tmp}/config/environments/ci.yaml:2:9")
    assert rows["core.project"] == ("from-plugin", "plugin: plugin acme")
    defaults = str(data_dir("config") / "defaults.yaml")
    assert rows["core.log_format"][1].startswith(f"default: {defaults}:")


def test_config_show_sources_json_names_the_layer_of_each_value(
    layered_app: Application, tmp_path: Path
) -> None:
    tmp = tmp_path

    result = CliRunner().invoke(cli, ["config", "show", "--sources", "--json"], obj=layered_app)

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    values = data["values"]
    assert values["policy.strict"] == {
        "value": True,
        "layer": "override",
        "source": "explicit override",
    }
    assert values["workflow.max_parallel"]["source"] == "BCCE_WORKFLOW__MAX_PARALLEL"
    assert values["policy.default.max_files"] == {
        "value": 7,
        "layer": "ssm",
        "source": f"{SSM_PATH}/policy/default/max_files",
    }
    assert values["aws.read_timeout"]["source"] == f"{tmp}/given.yaml:2:17"
    assert values["core.team"]["source"] == f"{tmp}/config/environments/ci.yaml:2:9"
    assert values["core.project"]["layer"] == "plugin"
    assert values["core.log_format"]["layer"] == "default"
    assert [layer.split(":")[0] for layer in data["layers"]] == [
        "env",
        "ssm",
        "file",
        "file",
        "file",
        "file",
        "plugin",  # acme
        "plugin",  # bcce.testing: storage.root under tmp_path
        "default",
    ]


def test_the_app_sees_the_decrypted_ssm_secure_strings(layered_app: Application) -> None:
    agent = layered_app.settings().agent

    assert agent.base_url == SECRET_URL
    assert agent.api_key is not None
    assert agent.api_key.get_secret_value() == SECRET_KEY


@pytest.mark.parametrize(
    "args",
    [
        ["config", "show"],
        ["config", "show", "--json"],
        ["config", "show", "--sources"],
        ["config", "show", "--sources", "--json"],
    ],
    ids=" ".join,
)
def test_ssm_secure_strings_are_masked_in_config_show(
    args: list[str], layered_app: Application
) -> None:
    result = CliRunner().invoke(cli, args, obj=layered_app)

    assert result.exit_code == 0, result.output
    assert SECRET_URL not in result.output
    assert SECRET_KEY not in result.output
    assert "s3cr3t" not in result.output
    assert MASK in result.stdout


def test_config_show_json_masks_secure_strings_in_place(layered_app: Application) -> None:
    result = CliRunner().invoke(cli, ["config", "show", "--json"], obj=layered_app)

    agent = json.loads(result.stdout)["agent"]
    assert agent["base_url"] == MASK
    assert agent["api_key"] == MASK


def test_config_show_prints_the_test_apps_effective_settings_as_yaml(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app(core={"team": "platform"}, storage={"root": "/srv/runs"})

    result = CliRunner().invoke(cli, ["config", "show"], obj=app)

    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["core"]["team"] == "platform"
    assert shown["storage"]["root"] == "/srv/runs"
    assert set(shown) == set(app.settings().SECTIONS)


def test_config_show_json_is_the_effective_settings(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app(workflow={"max_parallel": 2})

    result = CliRunner().invoke(cli, ["config", "show", "--json"], obj=app)

    assert json.loads(result.stdout)["workflow"]["max_parallel"] == 2


def test_a_secret_typed_setting_is_masked_whatever_its_layer(
    bcce_make_app: Callable[..., Application],
) -> None:
    app = bcce_make_app(core={"secrets": ["literal-secret"]}, agent={"api_key": "sk-override"})

    result = CliRunner().invoke(cli, ["config", "show", "--sources"], obj=app)

    assert "literal-secret" not in result.output
    assert "sk-override" not in result.output
    assert f'core.secrets = ["{MASK}"]' in result.stdout


def test_config_validate_lists_the_layers(bcce_cli: Callable[..., Any]) -> None:
    result = bcce_cli(["config", "validate"])

    assert result.exit_code == 0, result.output
    assert re.match(r"configuration is valid \(\d+ layers\)", result.stdout)
    assert f"  default: {data_dir('config') / 'defaults.yaml'}" in result.stdout


def test_config_validate_json(bcce_cli: Callable[..., Any]) -> None:
    result = bcce_cli(["config", "validate", "--json"])

    data = json.loads(result.stdout)
    assert data["valid"] is True
    assert data["layers"][-1].startswith(f"default: {data_dir('config') / 'defaults.yaml'}")
