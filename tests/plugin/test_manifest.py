from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bcce.errors import ExitCode, PluginError
from bcce.plugin.manifest import MAX_MANIFEST_BYTES, PluginSource, load_manifest
from bcce.plugin.schema import MANIFEST_FILE, is_valid_manifest, load_schema, manifest_validator


def manifest_data(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "acme-db",
        "version": "1.2.0",
        "type": "step",
        "entryPoint": "acme_db.plugin:DatabasePlugin",
        "provides": {"stepTypes": ["db:query", "db:migrate"]},
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def write(directory: Path, data: dict[str, Any] | str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MANIFEST_FILE
    path.write_text(data if isinstance(data, str) else json.dumps(data), "utf-8")
    return path


def error_of(path: Path) -> PluginError:
    with pytest.raises(PluginError) as caught:
        load_manifest(path)
    return caught.value


def test_schema_resource_is_a_valid_2020_12_schema() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    manifest_validator()  # check_schema raises on an invalid schema


def test_a_minimal_manifest_loads_with_defaults(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path / "p", manifest_data()))
    assert manifest.name == "acme-db"
    assert manifest.version == "1.2.0"
    assert manifest.type == "step"
    assert manifest.api_version == "1"
    assert str(manifest.bcce_version) == ""
    assert manifest.provides == ("db:query", "db:migrate")
    assert manifest.permissions == ()
    assert manifest.config_schema is None
    assert manifest.defaults == {}
    assert manifest.entry_kind == "module"
    assert manifest.root == tmp_path / "p"


def test_a_directory_path_reads_its_manifest(tmp_path: Path) -> None:
    write(tmp_path / "p", manifest_data())
    assert load_manifest(tmp_path / "p").name == "acme-db"


def test_the_seed_example_fields_load(tmp_path: Path) -> None:
    data = manifest_data(
        description="Custom plugin",
        author="My Organization <support@myorg.com>",
        bcceVersion=">=0.1",
        apiVersion="v1",
        permissions=["filesystem:read", "network:http", "env:read"],
    )
    manifest = load_manifest(write(tmp_path, data))
    assert manifest.api_version == "1"
    assert manifest.author == "My Organization <support@myorg.com>"
    assert manifest.bcce_version.contains("0.1.0")
    assert {p.kind for p in manifest.permissions} == {"filesystem:read", "network:http", "env:read"}


def test_scoped_permissions_load(tmp_path: Path) -> None:
    data = manifest_data(permissions=[{"permission": "filesystem:read", "scope": ["/data/**"]}])
    manifest = load_manifest(write(tmp_path, data))
    assert [(p.kind, p.scope) for p in manifest.permissions] == [("filesystem:read", ("/data/**",))]


def test_a_relative_filesystem_scope_is_refused_with_its_path(tmp_path: Path) -> None:
    data = manifest_data(permissions=[{"permission": "filesystem:read", "scope": "data"}])
    error = error_of(write(tmp_path, data))
    assert error.key == "permissions[0].scope"
    assert error.location == str(tmp_path / MANIFEST_FILE)


def test_a_relative_entry_point_file_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "plugin.py").write_text("", "utf-8")
    manifest = load_manifest(write(tmp_path, manifest_data(entryPoint="./src/plugin.py")))
    assert manifest.entry_kind == "path"


def test_a_missing_entry_point_file_is_refused(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(entryPoint="./plugin.py")))
    assert error.key == "entryPoint"
    assert "no such file" in error.message


def test_an_entry_point_leaving_the_plugin_directory_is_refused(tmp_path: Path) -> None:
    error = error_of(write(tmp_path / "p", manifest_data(entryPoint="../evil.py")))
    assert error.key == "entryPoint"


def test_an_entry_point_symlink_leaving_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "outside.py").write_text("", "utf-8")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "link.py").symlink_to(tmp_path / "outside.py")
    error = error_of(write(tmp_path / "p", manifest_data(entryPoint="link.py")))
    assert error.message == "the path leaves the plugin directory"


def test_storage_and_auth_plugins_provide_their_own_name_by_default(tmp_path: Path) -> None:
    data = manifest_data(name="azure-blob", type="storage", provides=None)
    assert load_manifest(write(tmp_path, data)).provides == ("azure-blob",)


def test_an_auth_plugin_may_name_its_provider(tmp_path: Path) -> None:
    data = manifest_data(name="ldap-auth", type="auth", provides={"authProvider": "ldap"})
    assert load_manifest(write(tmp_path, data)).provides == ("ldap",)


def test_a_step_plugin_without_step_types_is_refused(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(provides=None)))
    assert error.key == "provides"
    assert error.message == "required field is missing"


def test_a_plugin_providing_another_types_component_is_refused(tmp_path: Path) -> None:
    provides = {"stepTypes": ["db:query"], "authProvider": "x"}
    error = error_of(write(tmp_path, manifest_data(provides=provides)))
    assert error.key == "provides"
    assert "provides only stepTypes" in error.message


def test_invalid_json_names_file_line_and_column(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '{\n  "name": "x",\n  oops\n}'))
    assert error.location == f"{tmp_path / MANIFEST_FILE}:3:3"
    assert error.message.startswith("invalid JSON")
    assert error.exit_code == ExitCode.PLUGIN


def test_a_duplicate_key_is_refused_with_its_path(tmp_path: Path) -> None:
    text = (
        '{"name": "a", "version": "1.0.0", "type": "step", "entryPoint": "a:b",'
        ' "provides": {"stepTypes": ["x"], "stepTypes": ["y"]}}'
    )
    error = error_of(write(tmp_path, text))
    assert error.message == "duplicate key"
    assert error.key == "provides.stepTypes"


def test_nan_is_refused(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, '{"name": NaN}'))
    assert "NaN" in error.message


def test_an_oversized_manifest_is_refused(tmp_path: Path) -> None:
    data = manifest_data(description="x" * (MAX_MANIFEST_BYTES + 1))
    error = error_of(write(tmp_path, data))
    assert "larger than" in error.message


def test_a_missing_required_field_is_named(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(version=None)))
    assert error.key == "version"
    assert error.message == "required field is missing"


def test_a_field_of_the_wrong_type_is_named(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(provides={"stepTypes": "db:query"})))
    assert error.key == "provides.stepTypes"
    assert error.message == "expected array, got str"


def test_an_unknown_plugin_type_is_refused_with_the_allowed_types(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(type="executor")))
    assert error.key == "type"
    assert error.hint == "one of: step, integration, storage, auth"


def test_an_unknown_field_is_named(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(entrypoint="x:y")))
    assert error.key == "entrypoint"
    assert error.message == "unknown field"


def test_a_bad_permission_is_named_by_index(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(permissions=["env:read", "root:all"])))
    assert error.key == "permissions[1]"


def test_a_non_semver_version_is_refused(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(version="1.0")))
    assert error.key == "version"


def test_a_version_that_is_not_pep_440_is_refused(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(version="1.0.0-x.y.z")))
    assert error.key == "version"
    assert error.message == "not a PEP 440 version"


def test_a_bad_bcce_version_specifier_is_refused(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(bcceVersion="two or more")))
    assert error.key == "bcceVersion"


def test_a_configuration_schema_file_is_loaded_with_required_merged(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    schema = {"type": "object", "properties": {"apiKey": {"type": "string"}}}
    (tmp_path / "schemas" / "config.json").write_text(json.dumps(schema), "utf-8")
    configuration = {"schema": "./schemas/config.json", "required": ["apiKey"]}
    manifest = load_manifest(write(tmp_path, manifest_data(configuration=configuration)))
    assert manifest.config_schema is not None
    assert manifest.config_schema["required"] == ["apiKey"]
    assert manifest.config_schema["properties"] == schema["properties"]


def test_an_inline_configuration_schema_is_accepted(tmp_path: Path) -> None:
    configuration = {"schema": {"type": "object"}}
    manifest = load_manifest(write(tmp_path, manifest_data(configuration=configuration)))
    assert manifest.config_schema == {"type": "object"}


def test_an_invalid_configuration_schema_is_refused(tmp_path: Path) -> None:
    from bcce.plugin.manifest import check_schemas

    configuration = {"schema": {"type": "no-such-type"}}
    manifest = load_manifest(write(tmp_path, manifest_data(configuration=configuration)))
    with pytest.raises(PluginError) as caught:
        check_schemas(manifest)
    assert caught.value.key == "configuration.schema"


def test_defaults_set_the_plugins_own_configuration(tmp_path: Path) -> None:
    defaults = {"plugins": {"config": {"acme-db": {"pool": 4}}}}
    manifest = load_manifest(write(tmp_path, manifest_data(defaults=defaults)))
    assert manifest.defaults == defaults


def test_defaults_must_be_settings_sections(tmp_path: Path) -> None:
    error = error_of(write(tmp_path, manifest_data(defaults={"storage": "s3"})))
    assert error.key == "defaults.storage"


@pytest.mark.parametrize(
    ("defaults", "key"),
    [
        ({"storage": {"root": "/srv/runs"}}, "defaults.storage"),
        ({"policy": {"strict": False}}, "defaults.policy"),
        ({"plugins": {"strict": False}}, "defaults.plugins.strict"),
        ({"plugins": {"grants": {"acme-db": ["process:spawn"]}}}, "defaults.plugins.grants"),
        ({"plugins": {"config": {"http": {"x": 1}}}}, "defaults.plugins.config.http"),
    ],
)
def test_defaults_cannot_reach_beyond_the_plugins_own_configuration(
    tmp_path: Path, defaults: dict[str, Any], key: str
) -> None:
    error = error_of(write(tmp_path, manifest_data(defaults=defaults)))
    assert error.key == key
    assert "only its own configuration" in error.message


def test_the_source_is_recorded(tmp_path: Path) -> None:
    source = PluginSource("env", tmp_path)
    manifest = load_manifest(write(tmp_path, manifest_data()), source=source)
    assert manifest.source == source
    assert str(source) == f"BCCE_PLUGIN_PATH: {tmp_path}"


@pytest.mark.parametrize(
    "document",
    [
        manifest_data(),
        manifest_data(type="auth", provides=None),
        manifest_data(type="storage", provides={"authProvider": "x"}),
        manifest_data(permissions=[{"permission": "env:read", "scope": ["HOME"]}]),
        manifest_data(permissions=[{"permission": "env:read", "scope": []}]),
        manifest_data(provides={"stepTypes": ["a:b", "a:b"]}),
        manifest_data(entryPoint="../x.py"),
        manifest_data(apiVersion="v0"),
        manifest_data(defaults={"storage": {"root": "x"}}),
        [],
    ],
)
def test_the_fast_validity_check_agrees_with_jsonschema(document: Any) -> None:
    assert is_valid_manifest(document) == manifest_validator().is_valid(document)


def test_invalid_step_and_configuration_schemas_are_reported_where_checked(
    tmp_path: Path,
) -> None:
    from bcce.plugin.manifest import check_schemas, load_manifest

    data = {
        "name": "acme",
        "version": "1.0.0",
        "type": "step",
        "entryPoint": "acme.plugin:Plugin",
        "provides": {"stepTypes": ["acme:run"]},
        "stepSchemas": {"acme:run": {"type": "no-such-type"}},
    }
    (tmp_path / "bcce.plugin.json").write_text(json.dumps(data), "utf-8")
    manifest = load_manifest(tmp_path)  # cheap: schemas are kept, not yet checked
    with pytest.raises(PluginError) as caught:
        check_schemas(manifest)
    assert caught.value.key == "stepSchemas.acme:run"
    assert caught.value.location == str(tmp_path / "bcce.plugin.json")
