"""The pytest plugin shipped in ``bcce.testing``: isolated settings, apps and the CLI runner."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from bcce.containers.application import Application
from bcce.settings import BcceSettings, LayerOptions, load_settings

PLUGIN_USER_TEST = """
def test_uses_bcce_fixtures(bcce_app, bcce_cli, tmp_path):
    assert bcce_app.settings().storage.backend == "local"
    assert bcce_app.settings().core.team is None
    result = bcce_cli(["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path) in result.stdout
"""


def test_layer_options_ignore_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, bcce_layer_options: LayerOptions
) -> None:
    monkeypatch.setenv("BCCE_CORE__TEAM", "leaked-from-the-shell")

    assert load_settings(bcce_layer_options).core.team is None


def test_layer_options_ignore_the_working_directory_and_user_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bcce_layer_options: LayerOptions
) -> None:
    elsewhere = tmp_path / "developer-checkout"
    (elsewhere / "xdg" / "bcce").mkdir(parents=True)
    (elsewhere / "bcce.yaml").write_text("core:\n  team: from-checkout\n")
    (elsewhere / "xdg" / "bcce" / "config.yaml").write_text("core:\n  project: from-user\n")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(elsewhere / "xdg"))

    core = load_settings(bcce_layer_options).core

    assert (core.team, core.project) == (None, None)


def test_layer_options_read_bcce_yaml_from_tmp_path(
    tmp_path: Path, bcce_layer_options: LayerOptions
) -> None:
    (tmp_path / "bcce.yaml").write_text("core:\n  team: from-test\n")

    assert load_settings(bcce_layer_options).core.team == "from-test"


def test_layer_options_environ_can_be_filled_by_the_test(
    bcce_layer_options: LayerOptions,
) -> None:
    assert bcce_layer_options.environ == {}
    bcce_layer_options.environ["BCCE_CORE__TEAM"] = "set-by-test"  # type: ignore[index]

    assert load_settings(bcce_layer_options).core.team == "set-by-test"


def test_bcce_settings_keep_runs_under_tmp_path(
    bcce_settings: BcceSettings, tmp_path: Path
) -> None:
    assert bcce_settings.storage.root == tmp_path / ".bcce_runs"


def test_a_configuration_layer_still_beats_the_tmp_storage_root(
    tmp_path: Path, bcce_make_app: Callable[..., Application]
) -> None:
    (tmp_path / "bcce.yaml").write_text("storage:\n  root: /srv/from-yaml\n")

    assert bcce_make_app().settings().storage.root == Path("/srv/from-yaml")


def test_make_app_accepts_loaded_settings(
    bcce_settings: BcceSettings, bcce_make_app: Callable[..., Application]
) -> None:
    app = bcce_make_app(bcce_settings, core={"team": "t"})

    assert app.settings().core.team == "t"
    assert app.settings().storage.root == bcce_settings.storage.root


def test_apps_are_shut_down_and_reset_when_the_test_ends(
    bcce_layer_options: LayerOptions, tmp_path: Path
) -> None:
    from bcce.testing.pytest_plugin import bcce_make_app

    factory = bcce_make_app.__wrapped__(bcce_layer_options, tmp_path)  # type: ignore[attr-defined]
    app = next(factory)()
    app.core.logging.init()
    bus = app.events.bus()

    with pytest.raises(StopIteration):
        next(factory)

    assert not app.core.logging.initialized
    assert app.events.bus() is not bus


def test_bcce_cli_uses_the_test_app_by_default(
    bcce_cli: Callable[..., Result], bcce_app: Application
) -> None:
    bcce_app.settings().core.team = "seen-by-the-cli"

    result = bcce_cli(["config", "show"])

    assert "team: seen-by-the-cli" in result.stdout


def test_bcce_cli_takes_another_app(
    bcce_cli: Callable[..., Result], bcce_make_app: Callable[..., Application]
) -> None:
    other = bcce_make_app(core={"team": "other"})

    result = bcce_cli(["config", "show"], app=other)

    assert "team: other" in result.stdout


def test_the_plugin_is_loaded_by_its_entry_point_in_any_project(tmp_path: Path) -> None:
    project = tmp_path / "user-project"
    project.mkdir()
    (project / "test_user.py").write_text(PLUGIN_USER_TEST)
    env: dict[str, Any] = {"PATH": "/usr/bin:/bin", "BCCE_STORAGE__BACKEND": "s3"}

    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        capture_output=True,
        text=True,
        cwd=project,
        env=env,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout[-3000:]
    assert "1 passed" in completed.stdout
