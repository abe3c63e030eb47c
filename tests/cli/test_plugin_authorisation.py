"""``bcce plugin enable``, ``disable`` and ``reload`` need ``auth.authorization.plugins``:
refused (exit 6, nothing changed) and allowed, each decision in the audit trail.

The fake auth provider replaces ``app.auth.authenticator``; the first-party plugins are hidden.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from dependency_injector import providers

from bcce.auth.provider import Identity
from bcce.cli.main import cli
from bcce.containers.application import Application
from bcce.errors import ExitCode
from bcce.events.audit import search
from bcce.events.bus import Event
from bcce.plugin import discovery
from bcce.plugin.schema import MANIFEST_FILE
from bcce.testing.auth import StaticAuthProvider

OLGA = Identity("olga", ("platform",), "fake-sso")
ANA = Identity("ana", ("dev",), "fake-sso")

PLUGIN_CODE = """
class Plugin:
    def health(self):
        return {"ok": True}

    def execute(self, type, params, context):
        return {"status": "succeeded", "outputs": {}}
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A step plugin ``acme`` in ``./plugins``; the first-party plugins are hidden."""
    monkeypatch.setattr(discovery, "data_dir", lambda _name: tmp_path / "no-first-party")
    root = tmp_path / "plugins" / "acme"
    (root / "acme").mkdir(parents=True)
    (root / "acme" / "__init__.py").write_text("")
    (root / "acme" / "plugin.py").write_text(PLUGIN_CODE)
    manifest = {
        "name": "acme",
        "version": "1.0.0",
        "type": "step",
        "apiVersion": "v1",
        "entryPoint": "acme.plugin:Plugin",
        "provides": {"stepTypes": ["acme:run"]},
    }
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    return "acme"


AppAs = Callable[..., Application]


@pytest.fixture
def app_as(bcce_make_app: Callable[..., Application], tmp_path: Path) -> AppAs:
    """``app_as(identity, **authorization)``: ``identity`` runs bcce; only the group
    ``platform`` may manage plugins unless ``authorization`` says otherwise."""

    def make(identity: Identity, **authorization: Any) -> Application:
        rules = {"enabled": True, "plugins": {"groups": ["platform"]}, **authorization}
        app = bcce_make_app(
            auth={"authorization": rules}, workflow={"state_dir": str(tmp_path / "runs")}
        )
        app.auth.authenticator.override(providers.Object(StaticAuthProvider(identity)))
        return app

    return make


def bcce(app: Application, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), obj=app)


def refused(result: Result, operation: str) -> None:
    assert result.exit_code == ExitCode.NOT_AUTHORISED, result.output
    assert "Traceback" not in result.output
    assert "ana (fake-sso; groups: dev) may not manage plugin acme" in result.stderr
    assert "refused by rule 'no rule allows it'" in result.stderr
    assert "hint: an administrator can allow it in auth.authorization.plugins" in result.stderr
    assert result.stdout == "", operation


def test_disable_is_refused_outside_the_plugins_groups_and_writes_nothing(
    app_as: AppAs, plugin: str, tmp_path: Path
) -> None:
    result = bcce(app_as(ANA), "plugin", "disable", plugin)

    refused(result, "disable")
    assert not (tmp_path / "bcce.yaml").exists()


def test_enable_is_refused_outside_the_plugins_groups_and_changes_nothing(
    app_as: AppAs, plugin: str, tmp_path: Path
) -> None:
    config = tmp_path / "bcce.yaml"
    config.write_text("plugins:\n  disabled: [acme]\n")

    result = bcce(app_as(ANA), "plugin", "enable", plugin)

    refused(result, "enable")
    assert config.read_text() == "plugins:\n  disabled: [acme]\n"


def test_reload_is_refused_outside_the_plugins_groups_and_reloads_nothing(
    app_as: AppAs, plugin: str, bcce_captured_events: Callable[..., list[Event]]
) -> None:
    app = app_as(ANA)
    events = bcce_captured_events(app, "plugin.*")

    result = bcce(app, "plugin", "reload", plugin)

    refused(result, "reload")
    assert events == []


def test_the_plugins_groups_may_disable_and_enable_a_plugin(
    app_as: AppAs, plugin: str, tmp_path: Path
) -> None:
    disabled = bcce(app_as(OLGA), "plugin", "disable", plugin)
    enabled = bcce(app_as(OLGA), "plugin", "enable", plugin)

    assert (disabled.exit_code, disabled.stdout) == (0, "disabled acme in bcce.yaml\n")
    assert (enabled.exit_code, enabled.stdout) == (0, "enabled acme in bcce.yaml\n")


def test_the_plugins_groups_may_reload_a_plugin(
    app_as: AppAs, plugin: str, bcce_captured_events: Callable[..., list[Event]]
) -> None:
    app = app_as(OLGA)
    events = bcce_captured_events(app, "plugin.loaded")

    result = bcce(app, "plugin", "reload", plugin)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("reloaded acme: 1.0.0 -> 1.0.0 (generation 2)")
    assert [e.payload["reloaded"] for e in events] == [True]


def test_a_listed_user_may_manage_plugins(app_as: AppAs, plugin: str) -> None:
    result = bcce(app_as(ANA, plugins={"users": ["ana"]}), "plugin", "disable", plugin)

    assert result.exit_code == 0, result.output


def test_each_plugin_decision_reaches_the_audit_trail_with_the_identity(
    app_as: AppAs, plugin: str, tmp_path: Path
) -> None:
    bcce(app_as(ANA), "plugin", "disable", plugin)
    bcce(app_as(OLGA), "plugin", "disable", plugin)

    records = search(tmp_path / "runs" / "audit.jsonl", types=["auth.decision"])

    assert [
        (
            r["actor"]["user"],
            r["payload"]["user"],
            r["payload"]["groups"],
            r["payload"]["action"],
            r["payload"]["subject"],
            r["payload"]["operation"],
            r["payload"]["allowed"],
            r["payload"]["rule"],
        )
        for r in records
    ] == [
        ("ana", "ana", ["dev"], "plugin.manage", "acme", "disable", False, "no rule allows it"),
        (
            "olga",
            "olga",
            ["platform"],
            "plugin.manage",
            "acme",
            "disable",
            True,
            "auth.authorization.plugins",
        ),
    ]


def test_with_authorisation_disabled_anyone_may_manage_plugins_and_it_is_audited(
    app_as: AppAs, plugin: str, tmp_path: Path
) -> None:
    result = bcce(app_as(ANA, enabled=False), "plugin", "disable", plugin)

    assert result.exit_code == 0, result.output
    [record] = search(tmp_path / "runs" / "audit.jsonl", types=["auth.decision"])
    assert (record["payload"]["user"], record["payload"]["rule"]) == (
        "ana",
        "authorization disabled",
    )
