"""``bcce plugin``: each command's output and exit code, its errors without a traceback.

Plugins are written to the test's working directory (``./plugins``, which discovery searches) or
to ``plugins.paths``; the first-party plugins are hidden so the results depend on the test alone.
Commands that start a plugin run it in the real sandboxed worker.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from bcce.containers.application import Application
from bcce.errors import ExitCode
from bcce.plugin import discovery
from bcce.plugin.schema import MANIFEST_FILE
from bcce.plugin.signing import SIGNATURE_FILE, key_id, sign_plugin, write_keypair
from bcce.settings.layers import LayerOptions, load_settings

Cli = Callable[..., Result]

PLUGIN_CODE = """
VERSION = "{version}"


class Plugin:
    def health(self):
        if {healthy}:
            return {{"ok": True, "version": VERSION}}
        return {{"ok": False, "error": "database unreachable"}}

    def execute(self, type, params, context):
        return {{"status": "succeeded", "outputs": {{"version": VERSION}}}}
"""

STEP_SCHEMA = {
    "type": "object",
    "properties": {
        "who": {"type": "string", "description": "whom to greet"},
        "times": {"type": "integer"},
    },
    "required": ["who"],
}


def write_plugin(
    parent: Path,
    name: str = "acme",
    version: str = "1.0.0",
    *,
    healthy: bool = True,
    code: str | None = None,
    **manifest: Any,
) -> Path:
    """A step plugin ``parent/name``: ``bcce.plugin.json`` and ``<package>/plugin.py``."""
    package = name.replace("-", "_")
    root = parent / name
    (root / package).mkdir(parents=True, exist_ok=True)
    (root / package / "__init__.py").write_text("", "utf-8")
    source = code if code is not None else PLUGIN_CODE.format(version=version, healthy=healthy)
    (root / package / "plugin.py").write_text(textwrap.dedent(source), "utf-8")
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "type": "step",
        "apiVersion": "v1",
        "entryPoint": f"{package}.plugin:Plugin",
        "provides": {"stepTypes": [f"{name}:run"]},
    }
    data.update(manifest)
    (root / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    return root


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``./plugins`` of the test's working directory; the first-party plugins are hidden."""
    monkeypatch.setattr(discovery, "data_dir", lambda _name: tmp_path / "no-first-party")
    directory = tmp_path / "plugins"
    directory.mkdir()
    return directory


def fails(result: Result, code: int, *texts: str) -> None:
    """The command failed with ``code``, printed ``texts`` on stderr and no traceback."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for text in texts:
        assert text in result.stderr


def row(output: str, first: str) -> list[str]:
    """The whitespace-separated cells of the line starting with ``first``."""
    return next(line.split() for line in output.splitlines() if line.startswith(first + " "))


def effective_disabled(tmp_path: Path) -> list[str]:
    """``plugins.disabled`` as a fresh ``bcce`` in ``tmp_path`` would see it."""
    return load_settings(LayerOptions(cwd=tmp_path)).plugins.disabled


# -- the root command ------------------------------------------------------------------------
def test_root_help_lists_plugin_without_importing_it(tmp_path: Path) -> None:
    code = (
        "import sys; from bcce.cli.main import run; code = run(['--help']); "
        "print('bcce.cli.plugin' in sys.modules, code)"
    )

    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )

    assert "plugin    List, inspect, validate, sign and manage plugins." in completed.stdout
    assert completed.stdout.endswith("False 0\n"), completed.stderr


# -- list ------------------------------------------------------------------------------------
def test_list_shows_each_plugin_with_version_type_state_source_and_provides(
    plugins: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins, "acme")
    write_plugin(plugins, "beta", "2.1.0")

    result = bcce_cli(["plugin", "list"])

    assert result.exit_code == 0, result.output
    assert row(result.stdout, "NAME") == ["NAME", "VERSION", "TYPE", "STATE", "SOURCE", "PROVIDES"]
    assert row(result.stdout, "acme") == [
        "acme",
        "1.0.0",
        "step",
        "registered",
        "./plugins:",
        str(plugins / "acme"),
        "acme:run",
    ]
    assert row(result.stdout, "beta")[:4] == ["beta", "2.1.0", "step", "registered"]


def test_list_says_when_there_are_no_plugins(plugins: Path, bcce_cli: Cli) -> None:
    result = bcce_cli(["plugin", "list"])

    assert result.exit_code == 0
    assert result.stdout.startswith("no plugins found")


def test_list_reports_problems_and_shadowed_duplicates_and_exits_0(
    plugins: Path, tmp_path: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    write_plugin(plugins, "acme", "1.0.0")
    write_plugin(tmp_path / "older", "acme", "0.9.0")
    write_plugin(plugins, "broken", "1.0.0-zzz")
    app = bcce_make_app(plugins={"paths": [str(tmp_path / "older")]})

    result = bcce_cli(["plugin", "list"], app=app)

    assert result.exit_code == 0, result.output
    manifest = plugins / "broken" / MANIFEST_FILE
    assert f"  invalid: {manifest}: version: not a PEP 440 version\n" in result.stdout
    assert f"    from ./plugins: {plugins / 'broken'}\n" in result.stdout
    assert "    hint: use MAJOR.MINOR.PATCH" in result.stdout
    assert (
        f"  acme 0.9.0 from plugins.paths: {tmp_path / 'older' / 'acme'}\n"
        f"    lost to 1.0.0 from ./plugins: {plugins / 'acme'}\n"
    ) in result.stdout


def test_list_json_has_plugins_problems_and_shadowed(
    plugins: Path, tmp_path: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    write_plugin(plugins, "acme", "1.0.0")
    write_plugin(tmp_path / "older", "acme", "0.9.0")
    write_plugin(plugins, "broken", "1.0.0-zzz")
    app = bcce_make_app(plugins={"paths": [str(tmp_path / "older")]})

    result = bcce_cli(["plugin", "list", "--json"], app=app)

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    (acme,) = data["plugins"]
    assert (acme["name"], acme["version"], acme["state"]) == ("acme", "1.0.0", "registered")
    assert acme["provides"] == ["acme:run"]
    (problem,) = data["problems"]
    assert problem["file"] == str(plugins / "broken" / MANIFEST_FILE)
    assert (problem["kind"], problem["field"]) == ("invalid", "version")
    assert problem["message"] == "not a PEP 440 version"
    assert data["shadowed"] == [
        {
            "name": "acme",
            "version": "0.9.0",
            "source": f"plugins.paths: {tmp_path / 'older' / 'acme'}",
            "winner": {"version": "1.0.0", "source": f"./plugins: {plugins / 'acme'}"},
        }
    ]


def test_list_shows_disabled_and_failed_plugins_with_the_reason(
    plugins: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    write_plugin(plugins, "off")
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}}}
    write_plugin(plugins, "picky", configuration={"schema": schema})
    app = bcce_make_app(plugins={"disabled": ["off"], "config": {"picky": {"greeting": 5}}})

    result = bcce_cli(["plugin", "list"], app=app)

    assert result.exit_code == 0, result.output
    assert row(result.stdout, "off")[3] == "disabled"
    assert row(result.stdout, "picky")[3] == "failed"
    failed = result.stdout.split("failed (1):\n")[1]
    assert failed.startswith("  picky: [BCCE100] ")
    assert "plugins.config.picky.greeting" in failed


# -- info ------------------------------------------------------------------------------------
def test_info_shows_manifest_permissions_isolation_signature_and_config(
    plugins: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    write_plugin(
        plugins,
        description="Acme deployment steps",
        author="Acme Ops",
        permissions=["network:https", {"permission": "filesystem:read", "scope": ["/data/**"]}],
        stepSchemas={"acme:run": STEP_SCHEMA},
    )
    app = bcce_make_app(
        plugins={
            "grants": {"acme": ["network:https"]},
            "config": {"acme": {"greeting": "hi", "token": "tok-s3cr3t-value"}},
        }
    )

    tier = app.plugins.manager().get("acme").runtime.isolation()["tier"]

    result = bcce_cli(["plugin", "info", "acme"], app=app)

    assert result.exit_code == 0, result.output
    lines = [line.split(":", 1) for line in result.stdout.splitlines()[1:]]
    shown = {label.strip(): value.strip() for label, value in lines}
    assert result.stdout.startswith("acme 1.0.0 (step plugin)\n")
    assert shown["description"] == "Acme deployment steps"
    assert shown["author"] == "Acme Ops"
    assert shown["state"] == "registered, generation 1"
    assert shown["entry point"] == "acme.plugin:Plugin"
    assert shown["directory"] == str(plugins / "acme")
    assert shown["declared"] == "filesystem:read [/data/**], network:https"
    assert shown["permissions"] == "network:https  (declared ∩ plugins.grants.acme)"
    assert shown["isolation"].startswith(f"tier {tier} (")
    assert shown["signature"] == "unsigned"
    assert shown["parameters"] == "acme:run: who (string, required), times (integer)"
    assert '"greeting": "hi"' in shown["config"]
    assert "tok-s3cr3t-value" not in result.output


def test_info_json_has_declared_and_effective_permissions_and_parameters(
    plugins: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    write_plugin(
        plugins, permissions=["network:https", "env:read"], stepSchemas={"acme:run": STEP_SCHEMA}
    )
    app = bcce_make_app(plugins={"grants": {"acme": ["env:read"]}})
    tier = app.plugins.manager().get("acme").runtime.isolation()["tier"]

    result = bcce_cli(["plugin", "info", "acme", "--json"], app=app)

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["declared"] == ["network:https", "env:read"]
    assert data["permissions"] == ["env:read"]
    assert data["signature"] == {"state": "unsigned", "key_id": None, "error": None}
    assert data["entry_point"] == "acme.plugin:Plugin"
    assert data["step_schemas"]["acme:run"][0] == {
        "name": "who",
        "type": "string",
        "required": True,
        "description": "whom to greet",
    }
    assert data["isolation"]["tier"] == tier


def test_info_of_a_disabled_plugin_shows_the_tier_it_would_run_at(
    plugins: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    write_plugin(plugins)
    app = bcce_make_app(plugins={"disabled": ["acme"]})

    result = bcce_cli(["plugin", "info", "acme", "--json"], app=app)

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["state"] == "disabled"
    assert data["isolation"]["tier"] in ("A", "B", "C")
    assert data["isolation"]["mechanism"]


def test_info_of_an_unknown_plugin_exits_4_naming_the_known_ones(
    plugins: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins, "acme")

    result = bcce_cli(["plugin", "info", "nope"])

    fails(result, ExitCode.PLUGIN, "[BCCE400] no plugin named 'nope'", "hint: plugins found: acme")


def test_info_of_a_plugin_with_a_bad_manifest_names_the_file_and_field(
    plugins: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins, "broken", "1.0.0-zzz")

    result = bcce_cli(["plugin", "info", "broken"])

    manifest = plugins / "broken" / MANIFEST_FILE
    fails(result, ExitCode.PLUGIN, f"{manifest}: version: plugin 'broken' cannot be used")


# -- validate --------------------------------------------------------------------------------
def test_validate_prints_an_ok_summary(tmp_path: Path, bcce_cli: Cli) -> None:
    root = write_plugin(tmp_path / "src")

    result = bcce_cli(["plugin", "validate", str(root)])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "ok: acme 1.0.0 (step plugin, provides acme:run)",
        "  entry point: acme.plugin:Plugin",
        "  signature:   unsigned",
    ]


def test_validate_a_bad_manifest_exits_4_with_file_and_field(tmp_path: Path, bcce_cli: Cli) -> None:
    root = write_plugin(tmp_path / "src", version="1.0.0-zzz")

    result = bcce_cli(["plugin", "validate", str(root)])

    fails(result, ExitCode.PLUGIN, f"{root / MANIFEST_FILE}: version: not a PEP 440 version")


def test_validate_an_incompatible_plugin_exits_4_naming_bcce_version(
    tmp_path: Path, bcce_cli: Cli
) -> None:
    root = write_plugin(tmp_path / "src", bcceVersion=">=999")

    result = bcce_cli(["plugin", "validate", str(root)])

    fails(result, ExitCode.PLUGIN, "bcceVersion: requires bcce >=999", "hint: install a version")


def test_validate_a_missing_entry_module_exits_4(tmp_path: Path, bcce_cli: Cli) -> None:
    root = write_plugin(tmp_path / "src", entryPoint="acme.missing:Plugin")

    result = bcce_cli(["plugin", "validate", str(root)])

    fails(
        result,
        ExitCode.PLUGIN,
        f"{root / MANIFEST_FILE}: entryPoint: the entry point's module 'acme.missing' is not",
        "hint: create acme/missing.py",
    )


def test_validate_json_reports_the_error_and_exits_4(tmp_path: Path, bcce_cli: Cli) -> None:
    root = write_plugin(tmp_path / "src", version="1.0.0-zzz")

    result = bcce_cli(["plugin", "validate", str(root), "--json"])

    assert result.exit_code == ExitCode.PLUGIN
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert (data["error"]["key"], data["error"]["location"]) == (
        "version",
        str(root / MANIFEST_FILE),
    )


def test_validate_verifies_a_signature_against_the_trusted_keys(
    tmp_path: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    root = write_plugin(tmp_path / "src")
    private, public = write_keypair(tmp_path / "keys", "ci")
    sign_plugin(root, private.read_bytes())
    trusted = bcce_make_app(plugins={"trusted_keys": [public.read_text()]})

    ok = bcce_cli(["plugin", "validate", str(root), "--json"], app=trusted)
    untrusted = bcce_cli(["plugin", "validate", str(root)])

    assert ok.exit_code == 0, ok.output
    identity = key_id(public.read_bytes())
    assert json.loads(ok.stdout)["signature"] == {
        "state": "verified",
        "key_id": identity,
        "error": None,
    }
    fails(untrusted, ExitCode.PLUGIN, f"[BCCE422] {root / SIGNATURE_FILE}", identity)


# -- new -------------------------------------------------------------------------------------
def test_new_creates_a_plugin_in_plugins_and_says_how_to_test_it(
    plugins: Path, bcce_cli: Cli
) -> None:
    result = bcce_cli(["plugin", "new", "greeter", "--type", "step"])

    assert result.exit_code == 0, result.output
    created = Path("plugins") / "greeter"
    assert result.stdout.startswith(f"created step plugin greeter in {created}\n")
    assert f"pytest {created}" in result.stdout
    assert (plugins / "greeter" / MANIFEST_FILE).is_file()
    assert bcce_cli(["plugin", "validate", str(created)]).exit_code == 0


def test_new_in_another_directory_says_to_add_it_to_plugins_paths(
    tmp_path: Path, bcce_cli: Cli
) -> None:
    result = bcce_cli(["plugin", "new", "vault", "--type", "auth", "--dir", "elsewhere"])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "vault" / MANIFEST_FILE).is_file()
    assert "add elsewhere to plugins.paths" in result.stdout


def test_new_refuses_an_existing_directory_and_a_bad_name(plugins: Path, bcce_cli: Cli) -> None:
    (plugins / "taken").mkdir()

    existing = bcce_cli(["plugin", "new", "taken", "--type", "step"])
    bad_name = bcce_cli(["plugin", "new", "Bad_Name", "--type", "step"])

    fails(existing, ExitCode.PLUGIN, "exists already")
    fails(bad_name, ExitCode.PLUGIN, "invalid plugin name 'Bad_Name'")


# -- enable and disable ----------------------------------------------------------------------
def test_disable_creates_bcce_yaml_and_a_fresh_bcce_sees_it(
    plugins: Path, tmp_path: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins)

    result = bcce_cli(["plugin", "disable", "acme"])

    assert result.exit_code == 0, result.output
    assert result.stdout == "disabled acme in bcce.yaml\n"
    assert result.stderr == ""
    assert effective_disabled(tmp_path) == ["acme"]


def test_disable_keeps_comments_and_order(plugins: Path, tmp_path: Path, bcce_cli: Cli) -> None:
    write_plugin(plugins)
    (tmp_path / "bcce.yaml").write_text(
        "# team settings\n"
        "core:\n"
        "  team: ops   # who to page\n"
        "plugins:\n"
        "  # never load these\n"
        "  disabled:\n"
        "    - old-one  # retired\n"
        "  strict: true\n"
        "workflow:\n"
        "  max_parallel: 2\n"
    )

    result = bcce_cli(["plugin", "disable", "acme"])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "bcce.yaml").read_text() == (
        "# team settings\n"
        "core:\n"
        "  team: ops   # who to page\n"
        "plugins:\n"
        "  # never load these\n"
        "  disabled:\n"
        "    - old-one  # retired\n"
        "    - acme\n"
        "  strict: true\n"
        "workflow:\n"
        "  max_parallel: 2\n"
    )


def test_a_file_of_only_comments_keeps_them(plugins: Path, tmp_path: Path, bcce_cli: Cli) -> None:
    (tmp_path / "bcce.yaml").write_text("# settings for this project\n# (none yet)\n")

    result = bcce_cli(["plugin", "disable", "acme"])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "bcce.yaml").read_text() == (
        "# settings for this project\n# (none yet)\nplugins:\n  disabled:\n    - acme\n"
    )


def test_a_symlinked_config_file_is_edited_through_the_link(
    plugins: Path, tmp_path: Path, bcce_cli: Cli
) -> None:
    dotfiles = tmp_path / "dotfiles" / "bcce.yaml"
    dotfiles.parent.mkdir()
    dotfiles.write_text("core:\n  team: ops\n")
    (tmp_path / "bcce.yaml").symlink_to(dotfiles)

    result = bcce_cli(["plugin", "disable", "acme"])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "bcce.yaml").is_symlink()
    assert dotfiles.read_text() == "core:\n  team: ops\nplugins:\n  disabled:\n    - acme\n"


def test_enable_removes_the_name_and_enabling_again_says_it_is_not_disabled(
    plugins: Path, tmp_path: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins)
    (tmp_path / "bcce.yaml").write_text("plugins:\n  disabled: [acme, other]\n")

    first = bcce_cli(["plugin", "enable", "acme"])
    text = (tmp_path / "bcce.yaml").read_text()
    second = bcce_cli(["plugin", "enable", "acme"])

    assert first.exit_code == 0, first.output
    assert first.stdout == "enabled acme in bcce.yaml\n"
    assert text == "plugins:\n  disabled: [other]\n"
    assert second.exit_code == 0
    assert second.stdout == "acme is not disabled in bcce.yaml\n"
    assert (tmp_path / "bcce.yaml").read_text() == text


def test_disabling_twice_leaves_the_file_alone(
    plugins: Path, tmp_path: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins)
    (tmp_path / "bcce.yaml").write_text("plugins:\n  disabled: [acme]   # keep\n")

    result = bcce_cli(["plugin", "disable", "acme"])

    assert result.exit_code == 0
    assert result.stdout == "acme is already disabled in bcce.yaml\n"
    assert (tmp_path / "bcce.yaml").read_text() == "plugins:\n  disabled: [acme]   # keep\n"


def test_disabling_a_name_no_plugin_has_warns_and_disables_it(
    plugins: Path, tmp_path: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins)

    result = bcce_cli(["plugin", "disable", "acmee"])

    assert result.exit_code == 0, result.output
    assert "warning: no plugin named 'acmee' was found (plugins found: acme)" in result.stderr
    assert effective_disabled(tmp_path) == ["acmee"]


def test_an_environment_variable_that_wins_is_named_in_a_warning(
    plugins: Path, tmp_path: Path, bcce_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_plugin(plugins)
    monkeypatch.setenv("BCCE_PLUGINS__DISABLED", "[]")

    result = bcce_cli(["plugin", "disable", "acme"])

    assert result.exit_code == 0, result.output
    assert (tmp_path / "bcce.yaml").read_text() == "plugins:\n  disabled:\n    - acme\n"
    assert (
        "warning: acme is not disabled: plugins.disabled is set by env: BCCE_PLUGINS__DISABLED, "
        "which takes precedence over bcce.yaml"
    ) in result.stderr


def test_a_file_list_replacing_a_lower_layers_list_is_warned_about(
    plugins: Path, tmp_path: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins)
    user_file = tmp_path / "xdg-config" / "bcce" / "config.yaml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("plugins:\n  disabled: [legacy]\n")

    result = bcce_cli(["plugin", "disable", "acme"])

    assert result.exit_code == 0, result.output
    assert "lists are not merged across configuration layers" in result.stderr
    assert "no longer disabled: legacy" in result.stderr
    assert effective_disabled(tmp_path) == ["acme"]


def test_disable_user_edits_the_user_config_file(
    plugins: Path, tmp_path: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins)
    user_file = tmp_path / "xdg-config" / "bcce" / "config.yaml"

    result = bcce_cli(["plugin", "disable", "acme", "--user"])

    assert result.exit_code == 0, result.output
    assert result.stdout == f"disabled acme in {user_file}\n"
    assert not (tmp_path / "bcce.yaml").exists()
    assert effective_disabled(tmp_path) == ["acme"]


def test_disable_config_edits_that_file_and_says_bcce_must_be_told_to_read_it(
    plugins: Path, tmp_path: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins)

    result = bcce_cli(["plugin", "disable", "acme", "--config", "team.yaml"])
    given = bcce_cli(
        ["--config", "team.yaml", "plugin", "disable", "acme", "--config", "team.yaml"]
    )

    assert result.exit_code == 0, result.output
    assert (tmp_path / "team.yaml").read_text() == "plugins:\n  disabled:\n    - acme\n"
    assert "pass it with `bcce --config team.yaml ...`" in result.stderr
    assert given.stdout == "acme is already disabled in team.yaml\n"
    assert given.stderr == ""


def test_config_and_user_exclude_each_other(plugins: Path, bcce_cli: Cli) -> None:
    result = bcce_cli(["plugin", "disable", "acme", "--user", "--config", "x.yaml"])

    assert result.exit_code == ExitCode.USAGE
    assert "--config and --user exclude each other" in result.stderr


def test_a_config_file_that_is_not_a_mapping_is_left_alone_and_exits_3(
    plugins: Path, tmp_path: Path, bcce_cli: Cli
) -> None:
    target = tmp_path / "team.yaml"
    target.write_text("- just\n- a list\n")

    result = bcce_cli(["plugin", "disable", "acme", "--config", str(target)])

    fails(result, ExitCode.INVALID, f"[BCCE100] {target}:1:1: the top level")
    assert target.read_text() == "- just\n- a list\n"


def test_a_disabled_list_that_is_not_a_list_exits_3_naming_the_key(
    plugins: Path, tmp_path: Path, bcce_cli: Cli
) -> None:
    target = tmp_path / "team.yaml"
    target.write_text("plugins:\n  disabled: acme\n")

    result = bcce_cli(["plugin", "disable", "acme", "--config", str(target)])

    fails(result, ExitCode.INVALID, f"{target}:2:13: plugins.disabled: plugins.disabled must be")


# -- reload ----------------------------------------------------------------------------------
def test_reload_prints_old_and_new_version_generation_tier_and_health(
    plugins: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    write_plugin(plugins, version="1.0.0")
    app = bcce_make_app()  # registers 1.0.0
    isolation = app.plugins.manager().get("acme").runtime.isolation()
    write_plugin(plugins, version="1.1.0")

    result = bcce_cli(["plugin", "reload", "acme"], app=app)

    assert result.exit_code == 0, result.output
    first, tier, health = result.stdout.splitlines()
    assert first == "reloaded acme: 1.0.0 -> 1.1.0 (generation 2)"
    assert tier == f"  isolation: tier {isolation['tier']} ({isolation['mechanism']})"
    assert health.startswith("  health:    ok (")


def test_reload_of_a_plugin_that_no_longer_loads_exits_4_with_the_reason(
    plugins: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    write_plugin(plugins)
    app = bcce_make_app()  # registers the working version
    write_plugin(plugins, code="raise RuntimeError('broken at import')\n")

    result = bcce_cli(["plugin", "reload", "acme"], app=app)

    fails(result, ExitCode.PLUGIN, "broken at import")
    assert result.stdout == ""


def test_reload_help_explains_automatic_reloads(bcce_cli: Cli) -> None:
    result = bcce_cli(["plugin", "reload", "--help"])

    assert "plugins.watch" in " ".join(result.stdout.split())


# -- health ----------------------------------------------------------------------------------
def test_health_prints_a_table_and_exits_0_when_all_are_healthy(
    plugins: Path, bcce_cli: Cli
) -> None:
    write_plugin(plugins, "acme")
    write_plugin(plugins, "beta")

    result = bcce_cli(["plugin", "health"])

    assert result.exit_code == 0, result.output
    assert row(result.stdout, "NAME") == ["NAME", "OK", "MS", "ERROR"]
    assert row(result.stdout, "acme")[:2] == ["acme", "yes"]
    assert row(result.stdout, "beta")[:2] == ["beta", "yes"]
    float(row(result.stdout, "acme")[2])


def test_an_unhealthy_plugin_exits_4_with_its_error(plugins: Path, bcce_cli: Cli) -> None:
    write_plugin(plugins, "acme")
    write_plugin(plugins, "sick", healthy=False)

    text = bcce_cli(["plugin", "health"])
    data = bcce_cli(["plugin", "health", "sick", "--json"])

    assert text.exit_code == ExitCode.PLUGIN
    assert row(text.stdout, "sick")[1:2] == ["no"]
    assert text.stdout.splitlines()[-1].endswith("database unreachable")
    assert "1 of 2 plugin(s) unhealthy" in text.stderr
    assert data.exit_code == ExitCode.PLUGIN
    report = json.loads(data.stdout)
    assert report["ok"] is False
    assert [(p["name"], p["ok"], p["error"]) for p in report["plugins"]] == [
        ("sick", False, "database unreachable")
    ]


def test_health_of_an_unknown_plugin_exits_4(plugins: Path, bcce_cli: Cli) -> None:
    result = bcce_cli(["plugin", "health", "nope"])

    fails(result, ExitCode.PLUGIN, "no plugin named 'nope'")


# -- keys, signing, verification -------------------------------------------------------------
def test_keygen_writes_a_key_pair_and_prints_what_to_trust(
    tmp_path: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    result = bcce_cli(["plugin", "keygen", "--out", str(tmp_path / "keys"), "--name", "ci"])

    assert result.exit_code == 0, result.output
    private, public = tmp_path / "keys" / "ci.key", tmp_path / "keys" / "ci.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert f"private key: {private}" in result.stdout
    assert f"public key:  {public}" in result.stdout
    assert f"key id:      {key_id(public.read_bytes())}" in result.stdout
    line = result.stdout.split('- "')[1].split('"')[0]
    assert line.startswith("ssh-ed25519 ")
    assert key_id(line) == key_id(public.read_bytes())  # the printed line is the same key


def test_keygen_never_overwrites_a_key(tmp_path: Path, bcce_cli: Cli) -> None:
    write_keypair(tmp_path / "keys", "ci")
    before = (tmp_path / "keys" / "ci.key").read_bytes()

    result = bcce_cli(["plugin", "keygen", "--out", str(tmp_path / "keys"), "--name", "ci"])

    fails(result, ExitCode.PLUGIN, "refusing to overwrite existing key file", "hint: choose")
    assert (tmp_path / "keys" / "ci.key").read_bytes() == before


def test_sign_then_verify_with_the_public_key(tmp_path: Path, bcce_cli: Cli) -> None:
    root = write_plugin(tmp_path / "src")
    private, public = write_keypair(tmp_path / "keys", "ci")

    signed = bcce_cli(["plugin", "sign", str(root), "--key", str(private)])
    verified = bcce_cli(["plugin", "verify", str(root), "--key", str(public)])

    identity = key_id(public.read_bytes())
    assert signed.exit_code == 0, signed.output
    assert signed.stdout == (
        f"signed acme 1.0.0 with key {identity}: 3 files listed in {root / SIGNATURE_FILE}\n"
    )
    assert verified.exit_code == 0, verified.output
    assert verified.stdout == (
        f"verified: {root} is signed by trusted key {identity} (3 files, none changed)\n"
    )


def test_verify_trusts_the_configured_keys(
    tmp_path: Path, bcce_make_app: Callable[..., Application], bcce_cli: Cli
) -> None:
    root = write_plugin(tmp_path / "src")
    private, public = write_keypair(tmp_path / "keys", "ci")
    sign_plugin(root, private.read_bytes())
    app = bcce_make_app(plugins={"trusted_keys": [public.read_text()]})

    trusted = bcce_cli(["plugin", "verify", str(root)], app=app)
    untrusted = bcce_cli(["plugin", "verify", str(root)])

    assert trusted.exit_code == 0, trusted.output
    fails(untrusted, ExitCode.PLUGIN, "signed by unknown key", "hint: add the signer's public key")


def test_verify_lists_every_changed_file_and_exits_4(tmp_path: Path, bcce_cli: Cli) -> None:
    root = write_plugin(tmp_path / "src")
    private, public = write_keypair(tmp_path / "keys", "ci")
    sign_plugin(root, private.read_bytes())
    (root / "acme" / "plugin.py").write_text("print('changed')\n")
    (root / "acme" / "__init__.py").rename(root / "acme" / "moved.py")
    for index in range(12):  # more than the error message shows
        (root / f"extra{index:02}.py").write_text(f"X = {index}\n")

    result = bcce_cli(["plugin", "verify", str(root), "--key", str(public)])

    fails(result, ExitCode.PLUGIN, "[BCCE424]", "files changed since the plugin was signed (14):")
    assert "  tampered acme/plugin.py\n" in result.stderr
    assert "  renamed acme/__init__.py -> acme/moved.py" in result.stderr
    for index in range(12):
        assert f"  added extra{index:02}.py\n" in result.stderr


def test_sign_with_an_unusable_key_exits_4(tmp_path: Path, bcce_cli: Cli) -> None:
    root = write_plugin(tmp_path / "src")
    key = tmp_path / "not-a-key.pem"
    key.write_text("hello\n")

    result = bcce_cli(["plugin", "sign", str(root), "--key", str(key)])

    fails(result, ExitCode.PLUGIN, "[BCCE426] unusable private key")
    assert not (root / SIGNATURE_FILE).exists()
