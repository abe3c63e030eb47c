from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from bcce.core.resources import data_dir
from bcce.plugin.discovery import (
    DiscoveryReport,
    discover,
    plugin_defaults,
    search_directories,
)
from bcce.plugin.schema import MANIFEST_FILE
from bcce.settings import LayerOptions, PluginDefaults, load_settings
from bcce.settings.model import PluginsSettings


def make_plugin(directory: Path, name: str = "acme", version: str = "1.0.0", **extra: Any) -> Path:
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "type": "step",
        "entryPoint": f"{name.replace('-', '_')}.plugin:Plugin",
        "provides": {"stepTypes": [f"{name}:run"]},
    }
    data.update(extra)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    return directory


def run(
    tmp_path: Path,
    settings: PluginsSettings | None = None,
    environ: dict[str, str] | None = None,
    **kwargs: Any,
) -> DiscoveryReport:
    kwargs.setdefault("first_party", tmp_path / "first-party")
    return discover(
        settings or PluginsSettings(),
        cwd=tmp_path / "project",
        environ=environ or {},
        bcce_version=kwargs.pop("bcce_version", "0.1.0"),
        **kwargs,
    )


def names(report: DiscoveryReport) -> list[str]:
    return [m.name for m in report.plugins]


# -- sources -------------------------------------------------------------------------------
def test_nothing_is_found_where_there_are_no_plugins(tmp_path: Path) -> None:
    report = run(tmp_path)
    assert (report.plugins, report.problems, report.shadowed, report.disabled) == ([], [], [], [])


def test_plugins_are_found_in_the_working_directory(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme")
    report = run(tmp_path)
    assert names(report) == ["acme"]
    assert report.plugins[0].source is not None
    assert report.plugins[0].source.kind == "cwd"
    assert report.plugins[0].source.directory == tmp_path / "project" / "plugins" / "acme"


def test_plugins_are_found_on_the_plugin_path(tmp_path: Path) -> None:
    make_plugin(tmp_path / "one" / "alpha", "alpha")
    make_plugin(tmp_path / "two" / "beta", "beta")
    environ = {"BCCE_PLUGIN_PATH": os.pathsep.join([str(tmp_path / "one"), str(tmp_path / "two")])}
    report = run(tmp_path, environ=environ)
    assert names(report) == ["alpha", "beta"]
    assert {m.source.kind for m in report.plugins if m.source} == {"env"}


def test_a_plugin_path_entry_may_be_a_plugin_directory_itself(tmp_path: Path) -> None:
    make_plugin(tmp_path / "alpha", "alpha")
    report = run(tmp_path, environ={"BCCE_PLUGIN_PATH": str(tmp_path / "alpha")})
    assert names(report) == ["alpha"]


def test_plugins_are_found_in_configured_paths(tmp_path: Path) -> None:
    make_plugin(tmp_path / "configured" / "gamma", "gamma")
    report = run(tmp_path, PluginsSettings(paths=[tmp_path / "configured"]))
    assert names(report) == ["gamma"]
    assert report.plugins[0].source is not None
    assert report.plugins[0].source.kind == "settings"


def test_relative_configured_paths_start_at_the_working_directory(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "extra" / "gamma", "gamma")
    report = run(tmp_path, PluginsSettings(paths=[Path("extra")]))
    assert names(report) == ["gamma"]


def test_first_party_plugins_are_found(tmp_path: Path) -> None:
    make_plugin(tmp_path / "first-party" / "http", "http")
    report = run(tmp_path)
    assert names(report) == ["http"]
    assert report.plugins[0].source is not None
    assert report.plugins[0].source.kind == "first-party"


def test_the_shipped_plugins_directory_is_the_first_party_source(tmp_path: Path) -> None:
    sources = search_directories(PluginsSettings(), tmp_path, {})
    assert sources[-1][0].kind == "first-party"
    assert sources[-1][0].directory == data_dir("plugins")


def test_sources_are_searched_in_the_documented_order(tmp_path: Path) -> None:
    settings = PluginsSettings(paths=[tmp_path / "conf"])
    environ = {"BCCE_PLUGIN_PATH": str(tmp_path / "env")}
    kinds = [s.kind for s, _ in search_directories(settings, tmp_path, environ)]
    assert kinds == ["cwd", "env", "settings", "first-party"]


def test_a_missing_configured_directory_is_reported(tmp_path: Path) -> None:
    report = run(tmp_path, PluginsSettings(paths=[tmp_path / "nowhere"]))
    assert [(p.kind, p.file) for p in report.problems] == [("missing", str(tmp_path / "nowhere"))]


def test_directories_without_a_manifest_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "project" / "plugins" / "notes").mkdir(parents=True)
    (tmp_path / "project" / "plugins" / "README.md").write_text("hi", "utf-8")
    report = run(tmp_path)
    assert (report.plugins, report.problems) == ([], [])


def test_a_directory_reached_twice_is_read_once(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme")
    report = run(tmp_path, PluginsSettings(paths=[tmp_path / "project" / "plugins"]))
    assert names(report) == ["acme"]
    assert report.shadowed == []


# -- entry points --------------------------------------------------------------------------
def make_distribution(site: Path, package: str, manifest: bool = True, **extra: Any) -> None:
    """A distribution installed in ``site`` whose package would fail loudly if imported."""
    root = site / package
    if manifest:
        make_plugin(root, package.replace("_", "-"), **extra)
    root.mkdir(parents=True, exist_ok=True)
    (root / "__init__.py").write_text("raise RuntimeError('plugin code ran in the host')\n")
    info = site / f"{package}-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0.0\n", "utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[bcce.plugins]\n{package.replace('_', '-')} = {package}\n", "utf-8"
    )


def test_installed_distributions_are_found_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(tmp_path / "site", "acme_ep")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    report = run(tmp_path)
    assert names(report) == ["acme-ep"]
    source = report.plugins[0].source
    assert source is not None
    assert (source.kind, source.distribution) == ("entry-point", "acme_ep 1.0.0")
    assert source.directory == tmp_path / "site" / "acme_ep"


def test_entry_point_packages_are_not_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(tmp_path / "site", "acme_ep")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    run(tmp_path)
    assert "acme_ep" not in sys.modules


def test_an_entry_point_package_without_a_manifest_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(tmp_path / "site", "bare_ep", manifest=False)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    report = run(tmp_path)
    assert report.plugins == []
    assert [p.message for p in report.problems] == [f"package 'bare_ep' has no {MANIFEST_FILE}"]
    assert report.problems[0].source.distribution == "bare_ep 1.0.0"


# -- duplicates ----------------------------------------------------------------------------
def test_the_highest_version_wins_and_the_others_are_shadowed(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme", version="1.0.0")
    make_plugin(tmp_path / "first-party" / "acme", version="1.10.0")
    make_plugin(tmp_path / "conf" / "acme", version="1.2.0")
    report = run(tmp_path, PluginsSettings(paths=[tmp_path / "conf"]))
    assert [m.version for m in report.plugins] == ["1.10.0"]
    assert sorted(s.manifest.version for s in report.shadowed) == ["1.0.0", "1.2.0"]
    assert {s.winner.version for s in report.shadowed} == {"1.10.0"}


def test_at_equal_versions_the_earlier_source_wins(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme")
    environ = {"BCCE_PLUGIN_PATH": str(tmp_path / "env")}
    make_plugin(tmp_path / "env" / "acme")
    report = run(tmp_path, environ=environ)
    assert report.plugins[0].source is not None
    assert report.plugins[0].source.kind == "cwd"
    assert report.shadowed[0].manifest.source is not None
    assert report.shadowed[0].manifest.source.kind == "env"


def test_a_pre_release_loses_to_its_release(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme", version="2.0.0-rc.1")
    make_plugin(tmp_path / "first-party" / "acme", version="2.0.0")
    assert [m.version for m in run(tmp_path).plugins] == ["2.0.0"]


def test_a_higher_but_incompatible_version_does_not_win(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme", version="3.0.0", bcceVersion=">=9")
    make_plugin(tmp_path / "first-party" / "acme", version="1.0.0", bcceVersion=">=0.1")
    report = run(tmp_path)
    assert [m.version for m in report.plugins] == ["1.0.0"]
    assert [(p.kind, p.plugin) for p in report.problems] == [("incompatible", "acme")]
    assert report.shadowed == []


# -- compatibility -------------------------------------------------------------------------
def test_an_incompatible_bcce_version_is_reported_not_loaded(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme", bcceVersion=">=2.0.0")
    report = run(tmp_path)
    assert report.plugins == []
    problem = report.problems[0]
    assert (problem.kind, problem.field) == ("incompatible", "bcceVersion")
    assert problem.message == "requires bcce >=2.0.0, this is bcce 0.1.0"
    assert problem.file == str(tmp_path / "project" / "plugins" / "acme" / MANIFEST_FILE)


def test_a_compatible_bcce_version_range_is_accepted(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme", bcceVersion=">=0.1,<1")
    assert names(run(tmp_path)) == ["acme"]


def test_a_development_build_of_bcce_satisfies_a_matching_range(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme", bcceVersion=">=0.1")
    assert names(run(tmp_path, bcce_version="0.2.0.dev3")) == ["acme"]


def test_an_unsupported_api_version_is_reported(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme", apiVersion="v2")
    report = run(tmp_path)
    assert report.plugins == []
    assert [(p.kind, p.field) for p in report.problems] == [("incompatible", "apiVersion")]


def test_the_supported_api_version_may_be_written_either_way(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "a", "a", apiVersion="v1")
    make_plugin(tmp_path / "project" / "plugins" / "b", "b", apiVersion="1")
    assert names(run(tmp_path, api_version="1")) == ["a", "b"]


# -- bad manifests -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ('{"name": ', None, "invalid JSON"),
        ('{"name": "a", "name": "b"}', "name", "duplicate key"),
        ('{"version": "1.0.0", "type": "auth", "entryPoint": "a:b"}', "name", "required"),
        (
            '{"name": 7, "version": "1.0.0", "type": "auth", "entryPoint": "a:b"}',
            "name",
            "expected",
        ),
        (
            '{"name": "a", "version": "1.0.0", "type": "magic", "entryPoint": "a:b"}',
            "type",
            "is not",
        ),
    ],
    ids=["invalid-json", "duplicate-key", "missing-field", "wrong-type", "unknown-type"],
)
def test_a_bad_manifest_is_reported_and_skipped(
    tmp_path: Path, text: str, field: str | None, message: str
) -> None:
    bad = tmp_path / "project" / "plugins" / "bad"
    bad.mkdir(parents=True)
    (bad / MANIFEST_FILE).write_text(text, "utf-8")
    make_plugin(tmp_path / "project" / "plugins" / "good", "good")
    report = run(tmp_path)
    assert names(report) == ["good"]
    [problem] = report.problems
    assert problem.kind == "invalid"
    assert problem.file.startswith(str(bad / MANIFEST_FILE))
    assert problem.field == field
    assert message in problem.message
    assert problem.source.kind == "cwd"


def test_an_unreadable_manifest_is_reported(tmp_path: Path) -> None:
    broken = tmp_path / "project" / "plugins" / "broken"
    broken.mkdir(parents=True)
    (broken / MANIFEST_FILE).write_bytes(b"\xff\xfe not utf-8")
    report = run(tmp_path)
    assert [p.kind for p in report.problems] == ["invalid"]


# -- enabled / disabled ---------------------------------------------------------------------
def test_a_disabled_plugin_is_reported_as_disabled(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme")
    make_plugin(tmp_path / "project" / "plugins" / "other", "other")
    report = run(tmp_path, PluginsSettings(disabled=["acme"]))
    assert names(report) == ["other"]
    assert [m.name for m in report.disabled] == ["acme"]


def test_disabling_an_unknown_plugin_changes_nothing(tmp_path: Path) -> None:
    make_plugin(tmp_path / "project" / "plugins" / "acme")
    assert names(run(tmp_path, PluginsSettings(disabled=["ghost"]))) == ["acme"]


# -- defaults ------------------------------------------------------------------------------
def test_plugin_defaults_come_from_chosen_plugins_only(tmp_path: Path) -> None:
    plugins = tmp_path / "project" / "plugins"
    acme = {"plugins": {"config": {"acme": {"root": "/srv/acme"}}}}
    make_plugin(plugins / "acme", defaults=acme)
    make_plugin(plugins / "off", "off", defaults={"plugins": {"config": {"off": {"x": 1}}}})
    make_plugin(plugins / "plain", "plain")
    report = run(tmp_path, PluginsSettings(disabled=["off"]))
    assert plugin_defaults(report) == [PluginDefaults("acme", acme)]


def test_plugin_defaults_join_the_settings_layers(tmp_path: Path) -> None:
    make_plugin(
        tmp_path / "project" / "plugins" / "acme",
        defaults={"plugins": {"config": {"acme": {"pool": 7}}}},
    )
    defaults = plugin_defaults(run(tmp_path))
    settings = load_settings(
        LayerOptions(environ={}, cwd=tmp_path / "project", plugin_defaults=defaults)
    )
    assert settings.plugins.config["acme"]["pool"] == 7


def test_a_first_party_name_cannot_be_taken_by_another_source(tmp_path: Path) -> None:
    make_plugin(tmp_path / "first-party" / "http", "http", version="1.0.0")
    make_plugin(tmp_path / "project" / "plugins" / "http", "http", version="9.0.0")
    report = run(tmp_path)
    [chosen] = report.plugins
    assert chosen.source is not None and chosen.source.kind == "first-party"
    assert [s.manifest.version for s in report.shadowed] == ["9.0.0"]
