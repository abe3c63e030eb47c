"""``bcce plugin new``: every template scaffolds a plugin whose own tests pass.

The scaffolded tests run in a separate pytest session (the plugin directory as its working
directory, this interpreter), as a plugin author would run them; they load the plugin through
the real machinery, in the sandboxed worker.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bcce import _version
from bcce.errors import ExitCode, PluginError
from bcce.plugin.manifest import load_manifest
from bcce.plugin.permissions import Permission
from bcce.plugin.scaffold import package_name, scaffold_plugin
from bcce.plugin.schema import MANIFEST_FILE

PROVIDES: dict[str, tuple[str, ...]] = {
    "step": ("acme-tools:hello",),
    "integration": ("notification:acme-tools",),
    "storage": ("acme-tools",),
    "auth": ("acme-tools",),
}


def run_plugin_tests(plugin: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=plugin,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("plugin_type", ["step", "integration", "storage", "auth"])
def test_a_scaffolded_plugin_passes_its_own_tests(plugin_type: str, tmp_path: Path) -> None:
    plugin = scaffold_plugin("acme-tools", plugin_type, tmp_path / "plugins")

    completed = run_plugin_tests(plugin)

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert " passed" in completed.stdout
    assert "failed" not in completed.stdout


@pytest.mark.parametrize("plugin_type", ["step", "integration", "storage", "auth"])
def test_the_manifest_describes_the_plugin(plugin_type: str, tmp_path: Path) -> None:
    plugin = scaffold_plugin("acme-tools", plugin_type, tmp_path)

    manifest = load_manifest(plugin)

    assert (manifest.name, manifest.version, manifest.type) == ("acme-tools", "0.1.0", plugin_type)
    assert manifest.api_version == "1"
    assert manifest.entry_point == "bcce_plugin_acme_tools.plugin:Plugin"
    assert manifest.bcce_version.contains(_version.__version__)
    assert manifest.provides == PROVIDES[plugin_type]
    assert (plugin / "bcce_plugin_acme_tools" / "plugin.py").is_file()
    assert (plugin / "tests" / "test_plugin.py").is_file()
    assert "acme-tools" in (plugin / "README.md").read_text()


def test_the_step_template_declares_a_schema_for_its_step(tmp_path: Path) -> None:
    manifest = load_manifest(scaffold_plugin("acme", "step", tmp_path))

    assert manifest.permissions == ()
    assert manifest.step_schemas["acme:hello"]["required"] == ["who"]


@pytest.mark.parametrize("plugin_type", ["integration", "storage"])
def test_templates_that_write_files_declare_filesystem_write(
    plugin_type: str, tmp_path: Path
) -> None:
    manifest = load_manifest(scaffold_plugin("acme", plugin_type, tmp_path))

    assert manifest.permissions == (Permission("filesystem:write"),)
    assert manifest.config_schema is not None
    assert manifest.config_schema["required"] in (["directory"], ["root"])


def test_the_manifest_asks_for_this_bcce_major_and_minor(tmp_path: Path) -> None:
    plugin = scaffold_plugin("acme", "auth", tmp_path)

    data = json.loads((plugin / MANIFEST_FILE).read_text())

    major, minor = _version.__version__.split(".")[:2]
    assert data["bcceVersion"] == f">={major}.{minor}"


def test_hyphens_become_underscores_in_the_package_name() -> None:
    assert package_name("acme-db-tools") == "bcce_plugin_acme_db_tools"


def test_the_longest_allowed_name_scaffolds(tmp_path: Path) -> None:
    name = "a" * 64

    assert load_manifest(scaffold_plugin(name, "step", tmp_path)).name == name


# -- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["", "Acme", "1acme", "-acme", "acme_db", "acme db", "acme/x", "../acme", "a" * 65]
)
def test_a_bad_name_is_refused_and_nothing_is_written(name: str, tmp_path: Path) -> None:
    with pytest.raises(PluginError) as caught:
        scaffold_plugin(name, "step", tmp_path / "plugins")

    assert caught.value.key == "name"
    assert caught.value.exit_code == ExitCode.PLUGIN
    assert caught.value.hint is not None
    assert not (tmp_path / "plugins").exists()


def test_a_bad_type_is_refused_naming_the_types(tmp_path: Path) -> None:
    with pytest.raises(PluginError) as caught:
        scaffold_plugin("acme", "workflow", tmp_path)

    assert caught.value.key == "type"
    assert caught.value.exit_code == ExitCode.PLUGIN
    assert "step, integration, storage, auth" in (caught.value.hint or "")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    existing = tmp_path / "acme"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")

    with pytest.raises(PluginError) as caught:
        scaffold_plugin("acme", "step", tmp_path)

    assert caught.value.exit_code == ExitCode.PLUGIN
    assert caught.value.location == str(existing)
    assert caught.value.hint is not None
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_a_failed_write_leaves_no_partial_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write_text = Path.write_text
    written: list[str] = []

    def write_text(self: Path, text: str, *args: Any, **kwargs: Any) -> int:
        if self.name == "test_plugin.py":  # the last file written
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(self.name)
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)

    with pytest.raises(PluginError, match="No space left"):
        scaffold_plugin("acme", "step", tmp_path)

    assert "plugin.py" in written  # it failed part way
    assert list(tmp_path.iterdir()) == []
