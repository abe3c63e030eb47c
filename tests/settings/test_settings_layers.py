"""Layer precedence and provenance: which layer a value comes from, and how we know."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bcce.core.resources import data_dir
from bcce.errors import ConfigError
from bcce.settings import LayerOptions, PluginDefaults, load_settings
from bcce.settings.layers import decode_value, user_config_file
from bcce.settings.provenance import Origin

#: Lowest first; each test case keeps the layers up to one of these and drops those above it.
LAYERS = [
    "default",
    "plugin",
    "environment-file",
    "user-file",
    "cwd-file",
    "config-option",
    "ssm",
    "env",
    "override",
]
SSM_PATH = "/bcce/test"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _root_yaml(value: str) -> str:
    # `root` is on line 2, its value at column 9: provenance must say so.
    return f"storage:\n  root: {value}\n"


def _stack_up_to(
    top: str, tmp_path: Path, options: LayerOptions, ssm: Any
) -> tuple[LayerOptions, dict[str, Any], dict[str, Path]]:
    """Layer options (and overrides) where every layer up to ``top`` sets ``storage.root``."""
    keep = LAYERS[: LAYERS.index(top) + 1]
    environ: dict[str, str] = {}
    files: dict[str, Path] = {}
    changes: dict[str, Any] = {"environ": environ}
    if "plugin" in keep:
        changes["plugin_defaults"] = [PluginDefaults("acme", {"storage": {"root": "from-plugin"}})]
    if "environment-file" in keep:
        files["environment-file"] = _write(
            tmp_path / "config" / "environments" / "ci.yaml", _root_yaml("from-environment-file")
        )
        changes["env_name"] = "ci"
    if "user-file" in keep:
        files["user-file"] = _write(tmp_path / "home" / "config.yaml", _root_yaml("from-user-file"))
        changes["user_config_file"] = files["user-file"]
    if "cwd-file" in keep:
        files["cwd-file"] = _write(tmp_path / "bcce.yaml", _root_yaml("from-cwd-file"))
    if "config-option" in keep:
        files["config-option"] = _write(tmp_path / "given.yaml", _root_yaml("from-config-option"))
        changes["config_files"] = [files["config-option"]]
    if "ssm" in keep:
        ssm.put_parameter(Name=f"{SSM_PATH}/storage/root", Value="from-ssm", Type="String")
        environ["BCCE_SSM__PATH"] = SSM_PATH
        environ["BCCE_SSM__ENDPOINT_URL"] = ssm.meta.endpoint_url
    if "env" in keep:
        environ["BCCE_STORAGE__ROOT"] = "from-env"
    overrides = {"storage": {"root": "from-override"}} if "override" in keep else {}
    return replace(options, **changes), overrides, files


def _expected_origin(top: str, files: dict[str, Path]) -> Origin:
    if top == "default":
        return Origin("default", f"{data_dir('config') / 'defaults.yaml'}:38:9")
    if top == "plugin":
        return Origin("plugin", "plugin acme")
    if top in files:
        return Origin("file", f"{files[top]}:2:9")
    if top == "ssm":
        return Origin("ssm", f"{SSM_PATH}/storage/root")
    if top == "env":
        return Origin("env", "BCCE_STORAGE__ROOT")
    return Origin("override", "explicit override")


@pytest.mark.parametrize("top", LAYERS)
def test_the_highest_layer_setting_a_value_wins_and_is_named_as_its_source(
    top: str, tmp_path: Path, bcce_layer_options: LayerOptions, ssm: Any
) -> None:
    options, overrides, files = _stack_up_to(top, tmp_path, bcce_layer_options, ssm)

    settings = load_settings(options, overrides)

    expected = ".bcce_runs" if top == "default" else f"from-{top}"
    assert settings.storage.root == Path(expected)
    origin = settings.provenance.origin_of(("storage", "root"))
    if top == "default":  # the line of `root:` in defaults.yaml may move; the file may not
        assert origin is not None
        assert origin.layer == "default"
        assert origin.detail.startswith(f"{data_dir('config') / 'defaults.yaml'}:")
    else:
        assert origin == _expected_origin(top, files)


def test_config_option_files_given_later_win_over_earlier_ones(
    tmp_path: Path, bcce_layer_options: LayerOptions
) -> None:
    first = _write(tmp_path / "first.yaml", _root_yaml("first"))
    second = _write(tmp_path / "second.yaml", _root_yaml("second"))

    settings = load_settings(replace(bcce_layer_options, config_files=[first, second]))

    assert settings.storage.root == Path("second")


def test_sources_list_the_loaded_layers_highest_first(
    tmp_path: Path, bcce_layer_options: LayerOptions, ssm: Any
) -> None:
    options, overrides, _ = _stack_up_to("override", tmp_path, bcce_layer_options, ssm)

    sources = load_settings(options, overrides).provenance.sources

    kinds = [source.split(":", 1)[0] for source in sources]
    assert kinds == ["env", "ssm", "file", "file", "file", "file", "plugin", "default"]
    assert str(tmp_path / "given.yaml") in sources[2]
    assert str(tmp_path / "config" / "environments" / "ci.yaml") in sources[5]


def test_a_value_no_layer_sets_keeps_the_default_layer_as_its_origin(
    bcce_layer_options: LayerOptions,
) -> None:
    settings = load_settings(bcce_layer_options)

    origin = settings.provenance.origin_of(("workflow", "max_parallel"))

    assert origin is not None
    assert origin.layer == "default"


def test_env_variables_nest_with_double_underscores(bcce_layer_options: LayerOptions) -> None:
    options = replace(bcce_layer_options, environ={"BCCE_POLICY__DEFAULT__MAX_FILES": "7"})

    settings = load_settings(options)

    assert settings.policy.default.max_files == 7
    assert settings.provenance.origin_of(("policy", "default", "max_files")) == Origin(
        "env", "BCCE_POLICY__DEFAULT__MAX_FILES"
    )


def test_env_values_written_as_json_become_lists(bcce_layer_options: LayerOptions) -> None:
    options = replace(bcce_layer_options, environ={"BCCE_PLUGINS__DISABLED": '["a", "b"]'})

    assert load_settings(options).plugins.disabled == ["a", "b"]


def test_bcce_variables_of_no_settings_section_are_left_to_whoever_reads_them(
    bcce_layer_options: LayerOptions,
) -> None:
    # A plugin's env:read variables (BCCE_LDAP_*) and the OIDC token are not settings.
    environ = {"BCCE_LDAP_PASSWORD": "s3cret", "BCCE_ID_TOKEN": "eyJ...", "BCCE_ENV_X": "1"}
    options = replace(bcce_layer_options, environ=environ)

    settings = load_settings(options)

    assert settings.provenance.origin_of(("ldap_password",)) is None


@pytest.mark.parametrize("name", ["BCCE_STORAGE_ROOT", "BCCE_NOPE__X", "BCCE_CORE_LOG_LEVEL"])
def test_a_bcce_variable_naming_a_section_or_nesting_keys_must_be_a_known_key(
    bcce_layer_options: LayerOptions, name: str
) -> None:
    options = replace(bcce_layer_options, environ={name: "x"})

    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(options)


def test_decode_value_keeps_text_that_only_looks_like_json() -> None:
    assert decode_value("[not json") == "[not json"
    assert decode_value("plain") == "plain"
    assert decode_value('{"a": 1}') == {"a": 1}


def test_bcce_env_selects_the_environment_file_without_being_a_setting(
    tmp_path: Path, bcce_layer_options: LayerOptions
) -> None:
    _write(tmp_path / "config" / "environments" / "qa.yaml", "core:\n  team: qa-team\n")
    options = replace(bcce_layer_options, environ={"BCCE_ENV": "qa"})

    assert load_settings(options).core.team == "qa-team"


def test_a_shipped_environment_is_found_when_the_project_has_none(
    bcce_layer_options: LayerOptions,
) -> None:
    settings = load_settings(replace(bcce_layer_options, env_name="prod"))

    assert settings.policy.strict is True
    origin = settings.provenance.origin_of(("policy", "strict"))
    assert origin is not None
    assert origin.detail.startswith(str(data_dir("config") / "environments" / "prod.yaml"))


def test_an_unknown_environment_is_an_error_listing_the_known_ones(
    bcce_layer_options: LayerOptions,
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(replace(bcce_layer_options, env_name="staging"))

    assert caught.value.key == "BCCE_ENV"
    assert "prod" in (caught.value.hint or "")


def test_an_environment_name_with_path_characters_is_refused(
    bcce_layer_options: LayerOptions,
) -> None:
    with pytest.raises(ConfigError, match="invalid environment name"):
        load_settings(replace(bcce_layer_options, env_name="../etc"))


def test_the_user_config_file_follows_xdg_config_home() -> None:
    environ = {"XDG_CONFIG_HOME": "/xdg", "HOME": "/home/u"}

    assert user_config_file(environ) == Path("/xdg/bcce/config.yaml")
    assert user_config_file({"HOME": "/home/u"}) == Path("/home/u/.config/bcce/config.yaml")


def test_an_empty_configuration_file_is_an_empty_layer(
    tmp_path: Path, bcce_layer_options: LayerOptions
) -> None:
    empty = _write(tmp_path / "empty.yaml", "# nothing here\n")

    settings = load_settings(replace(bcce_layer_options, config_files=[empty]))

    assert settings.storage.root == Path(".bcce_runs")


def test_a_missing_config_option_file_is_an_error_naming_it(
    tmp_path: Path, bcce_layer_options: LayerOptions
) -> None:
    missing = tmp_path / "missing.yaml"

    with pytest.raises(ConfigError) as caught:
        load_settings(replace(bcce_layer_options, config_files=[missing]))

    assert caught.value.location == str(missing)


def test_a_file_whose_top_level_is_not_a_mapping_is_an_error(
    tmp_path: Path, bcce_layer_options: LayerOptions
) -> None:
    listed = _write(tmp_path / "list.yaml", "- storage\n")

    with pytest.raises(ConfigError, match="must be a mapping") as caught:
        load_settings(replace(bcce_layer_options, config_files=[listed]))

    assert caught.value.location == f"{listed}:1:1"


def test_an_ssm_secure_string_is_decrypted_and_marked_secret(
    bcce_layer_options: LayerOptions, ssm: Any
) -> None:
    ssm.put_parameter(
        Name=f"{SSM_PATH}/agent/base_url", Value="https://s3cr3t", Type="SecureString"
    )
    options = replace(
        bcce_layer_options,
        environ={"BCCE_SSM__PATH": SSM_PATH, "BCCE_SSM__ENDPOINT_URL": ssm.meta.endpoint_url},
    )

    settings = load_settings(options)

    assert settings.agent.base_url == "https://s3cr3t"
    assert settings.provenance.is_secret(("agent", "base_url"))
    assert settings.provenance.origin_of(("agent", "base_url")) == Origin(
        "ssm", f"{SSM_PATH}/agent/base_url", secret=True
    )


def test_ssm_parameter_names_map_to_nested_keys_and_string_lists_to_lists(
    bcce_layer_options: LayerOptions, ssm: Any
) -> None:
    ssm.put_parameter(Name=f"{SSM_PATH}/policy/default/max-files", Value="3", Type="String")
    ssm.put_parameter(Name=f"{SSM_PATH}/plugins/disabled", Value="a,b", Type="StringList")
    options = replace(
        bcce_layer_options,
        environ={"BCCE_SSM__PATH": SSM_PATH, "BCCE_SSM__ENDPOINT_URL": ssm.meta.endpoint_url},
    )

    settings = load_settings(options)

    assert settings.policy.default.max_files == 3
    assert settings.plugins.disabled == ["a", "b"]


def test_a_secure_string_of_the_wrong_type_is_reported_without_its_value(
    bcce_layer_options: LayerOptions, ssm: Any
) -> None:
    name = f"{SSM_PATH}/workflow/max_parallel"
    ssm.put_parameter(Name=name, Value="hunter2", Type="SecureString")
    options = replace(
        bcce_layer_options,
        environ={"BCCE_SSM__PATH": SSM_PATH, "BCCE_SSM__ENDPOINT_URL": ssm.meta.endpoint_url},
    )

    with pytest.raises(ConfigError) as caught:
        load_settings(options)

    assert caught.value.key == "workflow.max_parallel"
    assert caught.value.location == f"ssm {name}"
    assert "hunter2" not in caught.value.render()
    assert "<hidden>" in caught.value.message


def test_an_ssm_path_must_be_absolute(bcce_layer_options: LayerOptions) -> None:
    options = replace(bcce_layer_options, environ={"BCCE_SSM__PATH": "bcce/prod"})

    with pytest.raises(ConfigError) as caught:
        load_settings(options)

    assert caught.value.key == "ssm.path"
    assert caught.value.location == "env BCCE_SSM__PATH"
