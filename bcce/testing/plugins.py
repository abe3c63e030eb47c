"""Testing a plugin through the real machinery: :class:`PluginHarness`.

A harness builds an isolated bcce application around one plugin directory, the way a host
would: discovery (which finds that plugin and the first-party ones only), the manifest's
permissions intersected with the grants, configuration checked against the plugin's schema,
registration, and the plugin's code in the sandboxed worker. Nothing is mocked, so a test that
passes here passes in ``bcce workflow run``::

    def test_greets(bcce_plugin_harness):
        harness = bcce_plugin_harness(Path(__file__).parents[1], config={"greeting": "Hi"})
        step = harness.run_step("acme:hello", {"who": "ops"})
        assert step.status == "succeeded", step.error
        assert step.outputs["message"] == "Hi, ops!"

The application reads nothing from the process: no ``BCCE_*`` variable, no ``./bcce.yaml``, no
user config file; its working directory, run state and storage are under the harness's own
directory. Events published on the application's bus after it is built are captured
(:attr:`PluginHarness.events`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import tempfile
import textwrap
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from bcce.errors import PluginError

if TYPE_CHECKING:
    import os

    from bcce.auth.provider import AuthenticationProvider
    from bcce.containers.application import Application
    from bcce.events.bus import Event
    from bcce.plugin.host import LoadedPlugin
    from bcce.plugin.manager import PluginManager
    from bcce.plugin.manifest import Manifest
    from bcce.storage.backend import StorageBackend
    from bcce.workflow.runner import RunResult

#: ``grants=`` value granting exactly what the manifest declares (the default).
ALL_DECLARED = "all-declared"

Grants = Literal["all-declared"] | Sequence[str | Mapping[str, Any]] | None


@dataclass(frozen=True)
class StepRun:
    """One step of a finished run: its status, outputs, error and artifacts directory.

    ``events`` are every event the harness captured during the run (not only this step's).
    """

    step_id: str
    status: str
    outputs: Mapping[str, Any]
    error: str | None
    artifacts: Path
    events: tuple[Event, ...]
    run: WorkflowRun

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class WorkflowRun:
    """A finished run: the runner's :class:`RunResult`, its directory and the events seen."""

    result: RunResult
    directory: Path
    events: tuple[Event, ...]

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def run_id(self) -> str:
        return self.result.state.run_id

    @property
    def status(self) -> str:
        return self.result.state.status

    @property
    def error(self) -> str | None:
        return self.result.state.error

    def step(self, step_id: str) -> StepRun:
        """The step ``step_id`` of this run."""
        try:
            info = self.result.state.steps[step_id]
        except KeyError:
            known = ", ".join(self.result.state.steps) or "none"
            raise KeyError(f"the run has no step {step_id!r} (steps: {known})") from None
        return StepRun(
            step_id=step_id,
            status=str(info.get("status")),
            outputs=dict(info.get("outputs") or {}),
            error=info.get("error"),
            artifacts=self.directory / step_id,
            events=self.events,
            run=self,
        )


class PluginHarness:
    """An isolated application around the plugin in ``plugin_dir``, for the plugin's tests.

    ``grants``: the permissions granted to the plugin (``plugins.grants.<name>``); the default,
    ``"all-declared"`` (or None), grants what the manifest declares. ``config``: the plugin's
    configuration (``plugins.config.<name>``). ``strict``: ``plugins.strict`` (refuse to run
    plugin code without an OS sandbox). ``integrations``: ``plugins.integrations``; for an
    integration plugin it defaults to one instance of each ``notification:*`` type it provides,
    hearing the default events. A storage plugin becomes ``storage.backend`` and an auth plugin
    ``auth.provider``. ``overrides``: further settings, by section, e.g.
    ``workflow={"max_parallel": 1}``. ``tmp_path``: the harness's directory (default: a new
    temporary one, removed by :meth:`close`).
    """

    def __init__(
        self,
        plugin_dir: str | os.PathLike[str],
        *,
        grants: Grants = ALL_DECLARED,
        config: Mapping[str, Any] | None = None,
        strict: bool = True,
        integrations: Sequence[Mapping[str, Any]] | None = None,
        tmp_path: str | os.PathLike[str] | None = None,
        **overrides: Any,
    ) -> None:
        from bcce.plugin.discovery import incompatibility
        from bcce.plugin.manifest import load_manifest

        self.plugin_dir = Path(plugin_dir).resolve()
        self.manifest: Manifest = load_manifest(self.plugin_dir)
        problem = incompatibility(self.manifest)
        if problem is not None:
            raise PluginError(
                problem.message, location=problem.file, key=problem.field, hint=problem.hint
            )
        self._own_dir = tmp_path is None
        if tmp_path is None:
            self.directory = Path(tempfile.mkdtemp(prefix="bcce-harness-"))
        else:
            self.directory = Path(tmp_path)
            self.directory.mkdir(parents=True, exist_ok=True)
        self._events: list[Event] = []
        self._events_lock = threading.Lock()
        self._runs = itertools.count(1)
        self._closed = False
        sections = _merge(self._sections(grants, config, strict, integrations), overrides)
        try:
            self.app: Application = self._build(sections)
        except BaseException:
            if self._own_dir:
                shutil.rmtree(self.directory, ignore_errors=True)
            raise
        try:
            self._check_found()
        except BaseException:
            self.close()
            raise

    # -- what the harness is about ---------------------------------------------------------
    @property
    def name(self) -> str:
        """The plugin's name."""
        return self.manifest.name

    @property
    def manager(self) -> PluginManager:
        """The application's plugin manager."""
        manager: PluginManager = self.app.plugins.manager()
        return manager

    @property
    def plugin(self) -> LoadedPlugin:
        """The plugin's current generation, started and health-checked (``manager.load``).

        Raises the error that keeps it from loading: a bad configuration, an unhealthy start...
        """
        from bcce.errors import BcceError

        try:
            current = self.manager.get(self.name)
        except BcceError:
            current = None
        if current is None or not current.started:
            return self.manager.load(self.name)
        return current

    @property
    def events(self) -> list[Event]:
        """Every event published on the application's bus since the harness was built."""
        with self._events_lock:
            return list(self._events)

    # -- driving the plugin ----------------------------------------------------------------
    def call(self, method: str, **params: Any) -> Any:
        """Call the plugin's ``method`` with ``params`` (JSON values), as the host does."""
        return self.plugin.call(method, params)

    def health(self) -> dict[str, Any]:
        """The plugin's health report (starting it if needed)."""
        return self.manager.health(self.name)[self.name]

    def reload(self) -> LoadedPlugin:
        """Load the plugin again from its files (hot reload); the new generation."""
        return self.manager.reload(self.name)

    def run_step(
        self,
        step_type: str,
        params: Mapping[str, Any] | None = None,
        *,
        step_id: str = "step",
        workspace: str | os.PathLike[str] | None = None,
        variables: Mapping[str, str] | None = None,
        **step_keys: Any,
    ) -> StepRun:
        """Run a one-step workflow: a ``step_type`` step with ``params`` as its keys.

        ``step_keys`` are further keys of the step, such as ``timeout_seconds``, ``retry`` or
        ``outputs``. Validation errors raise (:class:`~bcce.errors.WorkflowError`), as
        ``bcce workflow run`` would report them; a failed step is a result, not an error.
        """
        step = {"id": step_id, "type": step_type, **dict(params or {}), **step_keys}
        document = {"version": 1, "workflow": f"{self.name} harness", "steps": [step]}
        path = self._workflow_path()
        # JSON is YAML: no quoting rules to get wrong for the test's values.
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return self.run_workflow(path, workspace=workspace, variables=variables).step(step_id)

    def run_workflow(
        self,
        workflow: str | os.PathLike[str],
        *,
        workspace: str | os.PathLike[str] | None = None,
        variables: Mapping[str, str] | None = None,
        run_id: str | None = None,
    ) -> WorkflowRun:
        """Run a workflow with the application's runner and wait for queued notifications.

        ``workflow`` is a file path (a :class:`~pathlib.Path`) or the YAML text itself (a
        ``str``, dedented). ``workspace`` defaults to the harness's ``workspace`` directory.
        """
        from bcce.workflow.runner import RunOptions

        if isinstance(workflow, str):
            path = self._workflow_path()
            path.write_text(textwrap.dedent(workflow).lstrip("\n"), encoding="utf-8")
        else:
            path = Path(workflow)
        if workspace is None:
            workspace = self.directory / "workspace"
            Path(workspace).mkdir(exist_ok=True)
        first = len(self.events)
        result = self.app.workflow.runner().run(
            path,
            RunOptions(variables=dict(variables or {}), run_id=run_id, workspace=Path(workspace)),
        )
        self.flush()
        directory = self.app.workflow.state_store().run_dir(result.state.run_id)
        return WorkflowRun(result, directory, tuple(self.events[first:]))

    def flush(self, timeout: float | None = None) -> None:
        """Wait (bounded by ``timeout``, default the plugin call timeout) until queued
        notifications are delivered to integrations."""
        self.manager.flush(timeout)

    def storage(self) -> StorageBackend:
        """The storage backend the application chose: this (storage) plugin's."""
        self._require_type("storage")
        backend: StorageBackend = self.app.storage.backend()
        return backend

    def auth(self) -> AuthenticationProvider:
        """The authentication provider the application chose: this (auth) plugin's."""
        self._require_type("auth")
        provider: AuthenticationProvider = self.app.auth.authenticator()
        return provider

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        """Shut the application down (every plugin worker stops); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(ValueError):
            self.app.events.bus().unsubscribe("*", self._capture)
        self.app.shutdown_resources()
        self.app.reset_singletons()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PluginHarness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def _sections(
        self,
        grants: Grants,
        config: Mapping[str, Any] | None,
        strict: bool,
        integrations: Sequence[Mapping[str, Any]] | None,
    ) -> dict[str, Any]:
        manifest = self.manifest
        if grants is None or grants == ALL_DECLARED:
            granted = [permission.to_manifest() for permission in manifest.permissions]
        elif isinstance(grants, str):
            raise PluginError(
                f"grants={grants!r} is not a list of permissions",
                key="grants",
                hint=f'a list such as ["filesystem:read"], or "{ALL_DECLARED}"',
            )
        else:
            granted = [g if isinstance(g, str) else dict(g) for g in grants]
        if integrations is None:
            integrations = [
                {"type": provided}
                for provided in manifest.provides
                if manifest.type == "integration" and provided.startswith("notification:")
            ]
        plugins: dict[str, Any] = {
            "paths": [str(self.plugin_dir)],
            "strict": strict,
            "grants": {manifest.name: granted},
            "integrations": [dict(i) for i in integrations],
        }
        if config is not None:
            plugins["config"] = {manifest.name: dict(config)}
        sections: dict[str, Any] = {
            "plugins": plugins,
            "storage": {"root": str(self.directory / "storage")},
            "workflow": {"state_dir": str(self.directory / "runs")},
        }
        if manifest.type == "storage":
            sections["storage"]["backend"] = manifest.provides[0]
        elif manifest.type == "auth":
            sections["auth"] = {"provider": manifest.provides[0]}
        return sections

    def _build(self, sections: Mapping[str, Any]) -> Application:
        from bcce.application import create_application
        from bcce.settings.layers import LayerOptions

        cwd = self.directory / "cwd"
        cwd.mkdir(exist_ok=True)
        options = LayerOptions(
            environ={}, cwd=cwd, user_config_file=self.directory / "no-user-config.yaml"
        )
        app = create_application(options=options, **sections)
        app.events.bus().subscribe("*", self._capture)
        return app

    def _capture(self, event: Event) -> None:
        with self._events_lock:
            self._events.append(event)

    def _check_found(self) -> None:
        """The application's plugin of this name must be the one in ``plugin_dir``."""
        chosen = self.manager.manifest(self.name)  # raises why it is not there
        root = chosen.root.resolve() if chosen.root is not None else None
        if root != self.plugin_dir:
            raise PluginError(
                f"plugin {self.name!r} {self.manifest.version} in {self.plugin_dir} is shadowed "
                f"by {chosen.version} from {chosen.source}",
                hint="a plugin of the same name with a higher version is installed; "
                "rename the plugin or raise its version",
            )

    def _require_type(self, wanted: str) -> None:
        if self.manifest.type != wanted:
            raise PluginError(
                f"plugin {self.name!r} is a {self.manifest.type} plugin, not a {wanted} plugin",
                hint="storage() is for storage plugins, auth() for auth plugins",
            )

    def _workflow_path(self) -> Path:
        folder = self.directory / "workflows"
        folder.mkdir(exist_ok=True)
        return folder / f"workflow-{next(self._runs)}.yaml"


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, merging nested mappings (a settings section's keys add up)."""
    out = dict(base)
    for key, value in top.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = _merge(current, value)
        else:
            out[key] = value
    return out


__all__ = ["ALL_DECLARED", "Grants", "PluginHarness", "StepRun", "WorkflowRun"]
