"""The plugin manager in a running host: registration, lifecycle, hot reload, failures, signing.

Plugins here are real: written to tmp_path, discovered, and run in the sandboxed worker.
"""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcce.containers.application import Application
from bcce.errors import BcceError, ConfigError, PluginError
from bcce.events.bus import Event
from bcce.plugin.host import InProcessRuntime, LoadedPlugin
from bcce.plugin.manager import PluginManager
from bcce.plugin.schema import MANIFEST_FILE
from bcce.plugin.signing import sign_plugin, write_keypair
from bcce.settings.model import PluginsSettings
from bcce.workflow.registry import StepRegistry
from bcce.workflow.runner import RunOptions, RunResult

STEP_PLUGIN = """
import os
import time

from bcce.plugin.api import step_result

VERSION = "{version}"


class Plugin:
    def configure(self, config):
        self.greeting = config.get("greeting", "hello")

    def health(self):
        return {{"ok": True, "version": VERSION}}

    def execute(self, type, params, context):
        mode = params.get("mode", "ok")
        if mode == "crash":
            os._exit(3)
        if mode == "hang":
            time.sleep(3600)
        if mode == "memory":
            hoard = []
            while True:
                hoard.append(bytearray(64 * 1024 * 1024))
        if mode == "wait":
            # Block until the test says go: the run is in flight meanwhile.
            flag = params["flag"]
            while not os.path.exists(flag):
                time.sleep(0.01)
        return step_result(
            outputs={{
                "version": VERSION,
                "greeting": f"{{self.greeting}}, {{params.get('who', 'world')}}",
                "pid": os.getpid(),
            }},
            artifacts={{"note.txt": f"from {{VERSION}}"}},
        )
"""


def write_plugin(
    directory: Path,
    name: str = "acme",
    version: str = "1.0.0",
    *,
    code: str | None = None,
    plugin_type: str = "step",
    provides: dict[str, Any] | None = None,
    **manifest: Any,
) -> Path:
    """A plugin directory: manifest plus ``<pkg>/plugin.py``."""
    package = name.replace("-", "_")
    root = directory / name
    (root / package).mkdir(parents=True, exist_ok=True)
    (root / package / "__init__.py").write_text("", "utf-8")
    (root / package / "plugin.py").write_text(
        textwrap.dedent(code if code is not None else STEP_PLUGIN.format(version=version)),
        "utf-8",
    )
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "type": plugin_type,
        "apiVersion": "v1",
        "entryPoint": f"{package}.plugin:Plugin",
        "provides": provides if provides is not None else {"stepTypes": [f"{name}:run"]},
    }
    data.update(manifest)
    (root / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    return root


def workflow(tmp_path: Path, steps: list[dict[str, Any]], name: str = "wf.yaml") -> Path:
    path = tmp_path / name
    document = {"version": 1, "workflow": "plugin test", "steps": steps}
    path.write_text(json.dumps(document), "utf-8")
    return path


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "plugins-src"
    directory.mkdir()
    return directory


@pytest.fixture
def make(
    bcce_make_app: Callable[..., Application], plugins_dir: Path
) -> Callable[..., Application]:
    def build(**plugins: Any) -> Application:
        plugins.setdefault("paths", [str(plugins_dir)])
        return bcce_make_app(plugins=plugins)

    return build


def run(app: Application, path: Path, tmp_path: Path, run_id: str = "r1") -> RunResult:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    return app.workflow.runner().run(path, RunOptions(run_id=run_id, workspace=workspace))


def events_of(app: Application) -> list[Event]:
    seen: list[Event] = []
    app.events.bus().subscribe("plugin.*", seen.append)
    return seen


# -- registration and a real step --------------------------------------------------------------
def test_a_plugin_step_type_is_registered_and_runs_sandboxed(
    make: Callable[..., Application], plugins_dir: Path, tmp_path: Path
) -> None:
    write_plugin(plugins_dir)
    app = make(config={"acme": {"greeting": "hi"}})
    registered = app.workflow.steps().get("acme:run")
    assert registered.provider == "plugin acme 1.0.0"
    result = run(app, workflow(tmp_path, [{"id": "s", "type": "acme:run", "who": "ops"}]), tmp_path)
    assert result.ok, result.state.steps
    step = result.state.steps["s"]
    assert step["outputs"]["greeting"] == "hi, ops"
    assert step["outputs"]["version"] == "1.0.0"
    run_dir = app.settings().workflow.state_dir
    note = Path(app.workflow.state_store().root) / "r1" / "s" / "note.txt"
    assert note.read_text("utf-8") == "from 1.0.0", run_dir
    calls = [
        json.loads(line)
        for line in (Path(app.workflow.state_store().root) / "r1" / "events.jsonl")
        .read_text("utf-8")
        .splitlines()
    ]
    call = next(e for e in calls if e["type"] == "plugin.call")
    assert call["payload"]["tier"] in ("A", "B")  # the isolation tier is in the run's record
    loaded = app.plugins.manager().get("acme")
    assert loaded.runtime.isolation()["tier"] == call["payload"]["tier"]


def test_a_step_of_an_unknown_key_fails_validation_at_its_location(
    make: Callable[..., Application], plugins_dir: Path, tmp_path: Path
) -> None:
    schema = {
        "type": "object",
        "properties": {"who": {"type": "string"}, "mode": {"type": "string"}},
        "additionalProperties": False,
    }
    write_plugin(plugins_dir, stepSchemas={"acme:run": schema})
    app = make()
    path = workflow(tmp_path, [{"id": "s", "type": "acme:run", "whom": "ops"}])
    with pytest.raises(BcceError) as caught:
        app.workflow.runner().load(path, {})
    assert caught.value.key == "steps[0].whom"
    assert caught.value.location is not None and caught.value.location.startswith(str(path))
    # An expression is accepted at validation: its value is known only at run time.
    ok = workflow(tmp_path, [{"id": "s", "type": "acme:run", "who": "${{ run.id }}"}], "ok.yaml")
    app.workflow.runner().load(ok, {})


def test_plugin_configuration_is_checked_against_its_schema(
    make: Callable[..., Application], plugins_dir: Path, tmp_path: Path
) -> None:
    write_plugin(
        plugins_dir,
        configuration={
            "schema": {"type": "object", "properties": {"greeting": {"type": "string"}}}
        },
    )
    app = make(config={"acme": {"greeting": 5}})
    manager = app.plugins.manager()
    status = manager.status("acme")
    assert status.state == "failed"
    assert status.error is not None and "plugins.config.acme.greeting" in status.error
    # A workflow using its step type is refused, naming the plugin and the reason.
    path = workflow(tmp_path, [{"id": "s", "type": "acme:run"}])
    with pytest.raises(PluginError) as caught:
        app.workflow.runner().load(path, {})
    assert "plugin 'acme', which failed to load" in caught.value.message
    assert caught.value.exit_code == 4
    with pytest.raises(ConfigError):
        manager.load("acme")


def test_one_failing_plugin_does_not_stop_the_others(
    make: Callable[..., Application], plugins_dir: Path, tmp_path: Path
) -> None:
    write_plugin(plugins_dir, "good")
    write_plugin(plugins_dir, "bad", code="raise RuntimeError('broken at import')\n")
    app = make()
    manager = app.plugins.manager()
    with pytest.raises(PluginError, match="broken at import"):
        manager.load("bad")
    assert manager.status("bad").state == "failed"
    result = run(app, workflow(tmp_path, [{"id": "s", "type": "good:run"}]), tmp_path)
    assert result.ok


# -- lifecycle -----------------------------------------------------------------------------
def test_load_unload_publish_events_and_unregister(
    make: Callable[..., Application], plugins_dir: Path
) -> None:
    write_plugin(plugins_dir)
    app = make()
    seen = events_of(app)
    manager = app.plugins.manager()
    loaded = manager.load("acme")
    assert loaded.started
    assert manager.status("acme").state == "running"
    manager.unload("acme")
    assert "acme:run" not in app.workflow.steps()
    assert not loaded.runtime.running  # the worker was shut down
    assert [e.type for e in seen if e.type in ("plugin.loaded", "plugin.unloaded")] == [
        "plugin.loaded",
        "plugin.unloaded",
    ]
    loaded_event = next(e for e in seen if e.type == "plugin.loaded")
    assert loaded_event.payload["isolation"]["tier"] in ("A", "B")


def test_reload_picks_up_a_changed_plugin_while_the_host_runs(
    make: Callable[..., Application], plugins_dir: Path, tmp_path: Path
) -> None:
    root = write_plugin(plugins_dir)
    app = make()
    manager = app.plugins.manager()
    first = run(app, workflow(tmp_path, [{"id": "s", "type": "acme:run"}]), tmp_path, "r1")
    assert first.state.steps["s"]["outputs"]["version"] == "1.0.0"
    write_plugin(plugins_dir, version="1.1.0")
    assert manager.changed() == ["acme"]
    assert manager.reload_changed() == ["acme"]
    second = run(app, workflow(tmp_path, [{"id": "s", "type": "acme:run"}]), tmp_path, "r2")
    assert second.state.steps["s"]["outputs"]["version"] == "1.1.0"
    assert manager.get("acme").generation == 2
    assert app.workflow.steps().get("acme:run").provider == "plugin acme 1.1.0"
    assert root.is_dir()


def test_a_run_in_flight_keeps_the_version_it_started_with(
    make: Callable[..., Application], plugins_dir: Path, tmp_path: Path
) -> None:
    write_plugin(plugins_dir, permissions=["filesystem:read"])
    # The plugin watches for a flag file: it may read tmp_path, nothing else.
    app = make(grants={"acme": [{"permission": "filesystem:read", "scope": [f"{tmp_path}/**"]}]})
    manager = app.plugins.manager()
    flag = tmp_path / "go"
    steps = [
        {"id": "before", "type": "acme:run"},
        {"id": "wait", "type": "acme:run", "mode": "wait", "flag": str(flag)},
        {"id": "after", "type": "acme:run"},
    ]
    path = workflow(tmp_path, steps)
    started = threading.Event()
    app.events.bus().subscribe(
        "step.started", lambda e: started.set() if e.payload.get("step") == "wait" else None
    )
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(run(app, path, tmp_path, "old")))
    thread.start()
    try:
        assert started.wait(60)
        write_plugin(plugins_dir, version="2.0.0", permissions=["filesystem:read"])
        fresh = manager.reload("acme")
        assert fresh.version == "2.0.0"
        path_new = workflow(tmp_path, [{"id": "s", "type": "acme:run"}], "n.yaml")
        new_run = run(app, path_new, tmp_path, "new")
        assert new_run.state.steps["s"]["outputs"]["version"] == "2.0.0"
    finally:
        flag.write_text("go", "utf-8")
        thread.join(60)
    old = results[0]
    assert old.ok, old.state.steps
    assert {old.state.steps[s]["outputs"]["version"] for s in ("before", "wait", "after")} == {
        "1.0.0"
    }


def test_a_reload_that_fails_keeps_the_old_version_serving(
    make: Callable[..., Application], plugins_dir: Path, tmp_path: Path
) -> None:
    write_plugin(plugins_dir)
    app = make()
    manager = app.plugins.manager()
    manager.load("acme")
    write_plugin(plugins_dir, version="1.1.0", code="raise ImportError('half-written')\n")
    seen = events_of(app)
    with pytest.raises(PluginError, match="half-written"):
        manager.reload("acme")
    assert [e.payload["kept"] for e in seen if e.type == "plugin.failed"] == ["1.0.0"]
    result = run(app, workflow(tmp_path, [{"id": "s", "type": "acme:run"}]), tmp_path)
    assert result.state.steps["s"]["outputs"]["version"] == "1.0.0"


def test_health_on_demand_and_periodically(
    make: Callable[..., Application], plugins_dir: Path
) -> None:
    write_plugin(plugins_dir)
    app = make()
    manager = app.plugins.manager()
    report = manager.health("acme")
    assert report["acme"]["ok"] is True
    assert report["acme"]["version"] == "1.0.0"
    beat = threading.Event()
    app.events.bus().subscribe("plugin.health", lambda e: beat.set())
    manager.start_monitoring(interval=0.05)
    try:
        assert beat.wait(30)
    finally:
        manager.stop_monitoring()


def test_the_monitor_reloads_a_changed_plugin(
    make: Callable[..., Application], plugins_dir: Path
) -> None:
    write_plugin(plugins_dir)
    app = make()
    manager = app.plugins.manager()
    manager.load("acme")
    reloaded = threading.Event()
    app.events.bus().subscribe(
        "plugin.loaded", lambda e: reloaded.set() if e.payload.get("reloaded") else None
    )
    manager.start_monitoring(interval=0.05)
    try:
        write_plugin(plugins_dir, version="1.0.1")
        assert reloaded.wait(30)
    finally:
        manager.stop_monitoring()
    assert manager.get("acme").version == "1.0.1"


# -- failures: the host survives and reports ------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("crash", "exited with status 3"),
        ("hang", "did not answer"),
        ("memory", "memory"),
    ],
)
def test_a_misbehaving_plugin_fails_its_step_and_the_host_goes_on(
    make: Callable[..., Application],
    plugins_dir: Path,
    tmp_path: Path,
    mode: str,
    expected: str,
) -> None:
    write_plugin(plugins_dir)
    app = make(timeout_seconds=2.0, memory_mb=256)
    steps = [
        {"id": "bad", "type": "acme:run", "mode": mode, "on_error": "continue"},
        {"id": "good", "type": "acme:run", "needs": ["bad"]},
    ]
    result = run(app, workflow(tmp_path, steps), tmp_path)
    bad = result.state.steps["bad"]
    assert bad["status"] in ("failed", "timed_out")
    assert expected in bad["error"].lower()
    assert result.state.steps["good"]["status"] == "succeeded"
    # A dead or killed worker is replaced by a fresh one on the next call; a plugin that ran
    # out of memory got a MemoryError inside its own limit and its worker lives on.
    assert app.plugins.manager().get("acme").restarts == (0 if mode == "memory" else 1)


# -- in process ---------------------------------------------------------------------------
def test_only_first_party_plugins_may_run_in_process(tmp_path: Path) -> None:
    first_party = tmp_path / "first-party"
    write_plugin(first_party, "shipped")
    write_plugin(tmp_path / "third", "outside")
    settings = PluginsSettings(
        paths=[tmp_path / "third"], in_process=["shipped", "outside"], strict=True
    )
    registry = StepRegistry()
    with PluginManager(
        settings, registry=registry, cwd=tmp_path, environ={}, first_party=first_party
    ) as manager:
        manager.activate()
        shipped = manager.get("shipped")
        assert isinstance(shipped.runtime, InProcessRuntime)
        reply = shipped.call("execute", {"type": "shipped:run", "params": {}, "context": {}})
        assert reply["outputs"]["version"] == "1.0.0"
        status = manager.status("outside")
        assert status.state == "failed"
        assert status.error is not None and "not first-party" in status.error


# -- signatures ----------------------------------------------------------------------------
@pytest.fixture
def keys(tmp_path: Path) -> tuple[bytes, str]:
    private, public = write_keypair(tmp_path / "keys", "release")
    return private.read_bytes(), public.read_text("utf-8")


def test_require_signature_rejects_an_unsigned_plugin(
    make: Callable[..., Application], plugins_dir: Path, keys: tuple[bytes, str]
) -> None:
    write_plugin(plugins_dir)
    app = make(require_signature=True, trusted_keys=[keys[1]])
    with pytest.raises(PluginError) as caught:
        app.plugins.manager().load("acme")
    assert caught.value.exit_code == 4
    assert "not signed" in caught.value.message


def test_a_signed_plugin_runs_from_its_verified_copy(
    make: Callable[..., Application],
    plugins_dir: Path,
    keys: tuple[bytes, str],
    tmp_path: Path,
) -> None:
    root = write_plugin(plugins_dir)
    sign_plugin(root, keys[0])
    app = make(require_signature=True, trusted_keys=[keys[1]])
    loaded: LoadedPlugin = app.plugins.manager().load("acme")
    assert loaded.signature is not None
    worker_dir = Path(loaded.runtime.plugin_dir)  # type: ignore[attr-defined]
    assert worker_dir != root.resolve()  # the staged, read-only copy
    assert (worker_dir / MANIFEST_FILE).read_bytes() == (root / MANIFEST_FILE).read_bytes()
    result = run(app, workflow(tmp_path, [{"id": "s", "type": "acme:run"}]), tmp_path)
    assert result.ok


def test_a_plugin_tampered_after_signing_is_rejected(
    make: Callable[..., Application], plugins_dir: Path, keys: tuple[bytes, str]
) -> None:
    root = write_plugin(plugins_dir)
    sign_plugin(root, keys[0])
    manifest = json.loads((root / MANIFEST_FILE).read_text("utf-8"))
    manifest["permissions"] = ["process:spawn"]  # escalation
    (root / MANIFEST_FILE).write_text(json.dumps(manifest), "utf-8")
    app = make(trusted_keys=[keys[1]])
    with pytest.raises(PluginError) as caught:
        app.plugins.manager().load("acme")
    assert caught.value.exit_code == 4
    assert MANIFEST_FILE in caught.value.message


# -- plugin defaults -----------------------------------------------------------------------
def test_plugin_defaults_join_the_settings_of_the_application(
    make: Callable[..., Application], plugins_dir: Path
) -> None:
    write_plugin(plugins_dir, defaults={"plugins": {"config": {"acme": {"greeting": "hey"}}}})
    app = make()
    settings = app.settings()
    assert settings.plugins.config["acme"]["greeting"] == "hey"
    origin = settings.provenance.origin_of(("plugins", "config", "acme", "greeting"))
    assert origin is not None and origin.layer == "plugin"
    # A configured value (a higher layer) wins over the plugin's default.
    app = make(config={"acme": {"greeting": "yo"}})
    assert app.settings().plugins.config["acme"]["greeting"] == "yo"
