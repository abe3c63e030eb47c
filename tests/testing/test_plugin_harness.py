"""The plugin-author harness (``bcce.testing.plugins``) and its fixtures in bcce's pytest plugin.

Plugins here are real: written to tmp_path, discovered by the harness's application and run in
the sandboxed worker.
"""

from __future__ import annotations

import json
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcce.containers.application import Application
from bcce.errors import ConfigError, PluginError, WorkflowError
from bcce.events.bus import Event
from bcce.plugin.schema import MANIFEST_FILE
from bcce.testing.plugins import PluginHarness

PLUGIN_CODE = """
import subprocess
import sys

from bcce.plugin.api import step_result


class Plugin:
    def configure(self, config):
        self.greeting = config.get("greeting", "hello")

    def execute(self, type, params, context):
        if params.get("spawn"):
            done = subprocess.run(
                [sys.executable, "-c", "print('from a child')"], capture_output=True, text=True
            )
            return step_result(outputs={"child": done.stdout.strip()})
        message = f"{self.greeting}, {params['who']}"
        return step_result(outputs={"message": message}, artifacts={"note.txt": message})
"""


def write_plugin(
    directory: Path,
    name: str = "acme",
    *,
    version: str = "1.0.0",
    permissions: list[Any] | None = None,
    **manifest: Any,
) -> Path:
    """A step plugin providing ``<name>:greet``, in ``directory/name``."""
    root = directory / name
    package = root / "acme_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", "utf-8")
    (package / "plugin.py").write_text(textwrap.dedent(PLUGIN_CODE), "utf-8")
    data = {
        "name": name,
        "version": version,
        "type": "step",
        "apiVersion": "v1",
        "entryPoint": "acme_pkg.plugin:Plugin",
        "permissions": permissions if permissions is not None else ["process:spawn"],
        "provides": {"stepTypes": [f"{name}:greet"]},
        "configuration": {
            "schema": {
                "type": "object",
                "properties": {"greeting": {"type": "string"}},
                "additionalProperties": False,
            }
        },
        **manifest,
    }
    (root / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    return root


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    return write_plugin(tmp_path / "src")


@pytest.fixture
def harness(bcce_plugin_harness: Callable[..., PluginHarness], plugin_dir: Path) -> PluginHarness:
    return bcce_plugin_harness(plugin_dir)


# -- running steps -----------------------------------------------------------------------------
def test_run_step_returns_the_step_outputs_and_its_artifacts(harness: PluginHarness) -> None:
    step = harness.run_step("acme:greet", {"who": "ops"})

    assert step.status == "succeeded", step.error
    assert step.outputs == {"message": "hello, ops"}
    assert (step.artifacts / "note.txt").read_text() == "hello, ops"


def test_the_events_of_a_run_are_captured_in_order(harness: PluginHarness) -> None:
    step = harness.run_step("acme:greet", {"who": "ops"})

    types = [event.type for event in step.events if event.run_id is not None]
    assert types[0] == "workflow.started"
    # The harness keeps artifacts apart from the run state: the run is archived once complete.
    assert types[-2:] == ["workflow.completed", "storage.archived"]
    assert types.index("step.started") < types.index("plugin.call") < types.index("step.completed")
    assert harness.events[-len(step.events) :] == list(step.events)


def test_the_step_runs_in_the_sandboxed_worker(harness: PluginHarness) -> None:
    step = harness.run_step("acme:greet", {"who": "ops"})

    (call,) = [event.payload for event in step.events if event.type == "plugin.call"]
    assert call["plugin"] == "acme"
    assert call["tier"] in {"A", "B"}  # an OS sandbox: strict mode (the default) refuses C


def test_the_configuration_reaches_the_plugin(
    bcce_plugin_harness: Callable[..., PluginHarness], plugin_dir: Path
) -> None:
    harness = bcce_plugin_harness(plugin_dir, config={"greeting": "hi"})

    assert harness.run_step("acme:greet", {"who": "ops"}).outputs["message"] == "hi, ops"


def test_run_workflow_takes_yaml_text(harness: PluginHarness) -> None:
    run = harness.run_workflow(
        """
        version: 1
        workflow: two steps
        steps:
          - id: greet
            type: acme:greet
            who: ops
          - id: show
            type: cmd
            needs: greet
            command: echo "${{ steps.greet.outputs.message }}"
        """
    )

    assert run.ok, run.error
    assert run.step("show").outputs["stdout"] == "hello, ops"


def test_an_invalid_workflow_raises_as_the_command_line_reports_it(
    harness: PluginHarness,
) -> None:
    with pytest.raises(WorkflowError, match="unknown step type"):
        harness.run_step("acme:nope", {"who": "ops"})


# -- permissions -------------------------------------------------------------------------------
def test_grants_default_to_the_declared_permissions(harness: PluginHarness) -> None:
    assert harness.plugin.permissions.to_list() == ["process:spawn"]

    step = harness.run_step("acme:greet", {"spawn": True})

    assert step.status == "succeeded", step.error
    assert step.outputs["child"] == "from a child"


def test_a_permission_not_granted_fails_the_step_naming_it(
    bcce_plugin_harness: Callable[..., PluginHarness], plugin_dir: Path
) -> None:
    harness = bcce_plugin_harness(plugin_dir, grants=[])

    step = harness.run_step("acme:greet", {"spawn": True})

    assert step.status == "failed"
    assert step.error is not None
    assert "permission denied" in step.error
    assert "process:spawn" in step.error
    assert not step.run.ok


def test_grants_must_be_a_list(
    bcce_plugin_harness: Callable[..., PluginHarness], plugin_dir: Path
) -> None:
    with pytest.raises(PluginError, match="not a list of permissions"):
        bcce_plugin_harness(plugin_dir, grants="process:spawn")


def test_strict_mode_is_on_by_default(harness: PluginHarness) -> None:
    assert harness.manager.settings.strict is True


# -- what the harness finds and refuses ---------------------------------------------------------
def test_only_the_plugin_and_the_first_party_plugins_are_found(
    harness: PluginHarness, tmp_path: Path
) -> None:
    write_plugin(tmp_path / "src", "neighbour")  # next to the plugin, not on any search path

    sources = {m.name: m.source.kind for m in harness.manager.report.plugins if m.source}

    assert sources.pop("acme") == "settings"
    assert set(sources.values()) <= {"first-party"}


def test_a_plugin_shadowed_by_a_higher_version_is_refused(
    bcce_plugin_harness: Callable[..., PluginHarness], tmp_path: Path
) -> None:
    low = write_plugin(tmp_path / "src", "http", version="0.0.1")  # first-party http is newer

    with pytest.raises(PluginError, match="shadowed"):
        bcce_plugin_harness(low)


def test_a_bad_manifest_is_reported_with_its_field(
    bcce_plugin_harness: Callable[..., PluginHarness], tmp_path: Path
) -> None:
    bad = write_plugin(tmp_path / "src", version="one")

    with pytest.raises(PluginError) as caught:
        bcce_plugin_harness(bad)

    assert caught.value.key == "version"


def test_a_configuration_the_schema_rejects_is_raised_on_load(
    bcce_plugin_harness: Callable[..., PluginHarness], plugin_dir: Path
) -> None:
    harness = bcce_plugin_harness(plugin_dir, config={"greeting": 42})

    with pytest.raises(ConfigError, match="invalid configuration"):
        harness.plugin  # noqa: B018 - loading is the behaviour under test


def test_storage_is_only_for_storage_plugins(harness: PluginHarness) -> None:
    with pytest.raises(PluginError, match="not a storage plugin"):
        harness.storage()


# -- calling the plugin directly ----------------------------------------------------------------
def test_call_invokes_a_plugin_method_in_the_worker(harness: PluginHarness) -> None:
    reply = harness.call(
        "execute", type="acme:greet", params={"who": "direct"}, context={"run_id": "r"}
    )

    assert reply["outputs"] == {"message": "hello, direct"}


# -- fixtures and teardown ----------------------------------------------------------------------
def test_harnesses_are_closed_when_the_test_ends(plugin_dir: Path, tmp_path: Path) -> None:
    from bcce.testing.pytest_plugin import bcce_plugin_harness

    factory = bcce_plugin_harness.__wrapped__(tmp_path)  # type: ignore[attr-defined]
    harness = next(factory)(plugin_dir)
    loaded = harness.plugin
    assert loaded.started

    with pytest.raises(StopIteration):
        next(factory)

    assert loaded.closed
    assert not loaded.started


def test_captured_events_receive_the_apps_events_until_the_test_ends(
    bcce_app: Application,
) -> None:
    from bcce.testing.pytest_plugin import bcce_captured_events

    factory = bcce_captured_events.__wrapped__()  # type: ignore[attr-defined]
    seen = next(factory)(bcce_app, "demo.*")
    bus = bcce_app.events.bus()
    bus.publish(Event("demo.one"))
    bus.publish(Event("other.two"))

    with pytest.raises(StopIteration):
        next(factory)
    bus.publish(Event("demo.three"))

    assert [event.type for event in seen] == ["demo.one"]


def test_the_scripted_model_answers_on_loopback_until_the_test_ends() -> None:
    from bcce.testing.pytest_plugin import bcce_scripted_model

    factory = bcce_scripted_model.__wrapped__()  # type: ignore[attr-defined]
    server = next(factory)({"turns": [{"text": "ok"}]})
    request = urllib.request.Request(server.url + "/", method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    assert server.url.startswith("http://127.0.0.1:")

    with pytest.raises(StopIteration):
        next(factory)

    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url
