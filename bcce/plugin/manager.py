"""The plugin manager: discovery, loading, unloading, hot reload, health, and registration.

Life of a plugin in a host::

    discover ─► prepare ─► register ─► (first use) start ─► call … ─► retire ─► close
                 │ signature verified (when signed, or required)
                 │ permissions = declared ∩ granted
                 │ configuration checked against the plugin's schema
                 └ runtime chosen: sandboxed worker, or in process when trusted

*Registration* needs no plugin code: step types go into the step registry, notification
integrations onto the event bus, storage backends and auth providers into their Selectors, all
from the manifest. The plugin's code starts on first use (or on :meth:`PluginManager.load`), in a
sandboxed worker, and restarts after a crash. :meth:`PluginManager.reload` prepares and starts a
new *generation* first, swaps it in only if it is healthy, and retires the old one, which closes
when the last run that leased it ends. A plugin that fails is reported (``plugin.failed``) and
left out; it never takes the host down.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bcce.core.log import get_logger
from bcce.errors import BcceError, ConfigError, PluginError
from bcce.plugin.discovery import DiscoveryReport, discover, plugin_defaults
from bcce.plugin.manifest import Manifest, load_manifest
from bcce.plugin.permissions import PermissionSet, effective, parse_permissions
from bcce.plugin.schema import SIGNATURE_FILE
from bcce.settings.layers import PluginDefaults
from bcce.settings.model import PluginsSettings

if TYPE_CHECKING:
    from bcce.events.bus import EventBus
    from bcce.plugin.host import LoadedPlugin, NotificationDispatcher
    from bcce.plugin.signing import VerifiedSignature
    from bcce.settings.provenance import Provenance
    from bcce.steps.approval import ApprovalGate
    from bcce.workflow.registry import StepRegistry

log = get_logger("plugins")

PluginState = Literal["registered", "running", "failed", "disabled", "unloaded"]


@dataclass
class PluginStatus:
    """What ``bcce plugin list`` shows for one plugin."""

    name: str
    version: str
    type: str
    state: PluginState
    source: str
    provides: tuple[str, ...]
    permissions: list[str | dict[str, object]] = field(default_factory=list)
    declared: list[str | dict[str, object]] = field(default_factory=list)
    isolation: dict[str, object] | None = None
    signature: str | None = None
    generation: int | None = None
    error: str | None = None
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "type": self.type,
            "state": self.state,
            "source": self.source,
            "provides": list(self.provides),
            "permissions": self.permissions,
            "declared": self.declared,
            "isolation": self.isolation,
            "signature": self.signature,
            "generation": self.generation,
            "error": self.error,
            "description": self.description,
        }


class PluginManager:
    """Discovers, loads, reloads and health-checks plugins, and registers what they provide.

    ``registry`` and ``bus`` are where step types and integrations go (:meth:`attach` sets them
    later). ``cwd``, ``environ`` and ``first_party`` change where discovery looks (tests).
    """

    def __init__(
        self,
        settings: PluginsSettings,
        *,
        report: DiscoveryReport | None = None,
        registry: StepRegistry | None = None,
        bus: EventBus | None = None,
        cwd: Path | None = None,
        environ: Mapping[str, str] | None = None,
        first_party: Path | None = None,
        provenance: Provenance | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.bus = bus
        self.cwd = cwd
        self.environ = environ
        self.first_party = first_party
        self.provenance = provenance
        self._report = report
        self._lock = threading.RLock()
        self._plugins: dict[str, LoadedPlugin] = {}
        self._failed: dict[str, BcceError] = {}
        self._unloaded: set[str] = set()
        self._generations: dict[str, int] = {}
        self._fingerprints: dict[str, tuple[tuple[str, int, int], ...]] = {}
        self._dispatchers: list[tuple[str, NotificationDispatcher]] = []
        self._gates: list[ApprovalGate] = []
        self._staging: Path | None = None
        self._monitor: threading.Thread | None = None
        self._stop_monitor = threading.Event()
        self._activated = False
        self._choice_owners: dict[tuple[str, str], str] = {}
        #: Configuration problems found while activating (reported, not raised).
        self.problems: list[BcceError] = []

    # -- discovery ---------------------------------------------------------------------------
    @property
    def report(self) -> DiscoveryReport:
        """What discovery found (searched once, then kept; see :meth:`discover`)."""
        if self._report is None:
            self._report = discover(
                self.settings, cwd=self.cwd, environ=self.environ, first_party=self.first_party
            )
        return self._report

    def discover(self, *, refresh: bool = False) -> DiscoveryReport:
        if refresh:
            self._report = None
        return self.report

    def settings_defaults(self) -> Sequence[PluginDefaults]:
        """The settings defaults the enabled plugins contribute (the plugin-defaults layer)."""
        return plugin_defaults(self.report)

    def manifest(self, name: str) -> Manifest:
        """The chosen manifest of ``name``, or a PluginError saying why there is none."""
        found = self.report.get(name)
        if found is not None:
            return found
        if any(m.name == name for m in self.report.disabled):
            raise PluginError(
                f"plugin {name!r} is disabled",
                key="plugins.disabled",
                hint=f"enable it with `bcce plugin enable {name}`",
            )
        problems = [p for p in self.report.problems if p.plugin == name]
        if problems:
            raise PluginError(
                f"plugin {name!r} cannot be used: {problems[0].message}",
                location=problems[0].file,
                key=problems[0].field,
                hint=problems[0].hint,
            )
        known = ", ".join(m.name for m in self.report.plugins) or "none"
        raise PluginError(
            f"no plugin named {name!r}",
            hint=f"plugins found: {known}; see `bcce plugin list`",
        )

    # -- registration ------------------------------------------------------------------------
    def attach(self, *, registry: StepRegistry | None = None, bus: EventBus | None = None) -> None:
        """Where registration goes: the step registry and the event bus."""
        if registry is not None:
            self.registry = registry
        if bus is not None:
            self.bus = bus

    def activate(self) -> None:
        """Prepare and register every enabled plugin; a failing one is reported and left out."""
        with self._lock:
            if self._activated:
                return
            self._activated = True
            self._warn_unknown_names()
            for manifest in self.report.plugins:
                if manifest.name in self._failed:  # refused already (a Selector clash)
                    continue
                try:
                    self._install(self._prepare(manifest))
                except BcceError as exc:
                    self._fail(manifest.name, exc, version=manifest.version)
            self._subscribe_integrations()

    def selector_choices(self) -> Mapping[str, Mapping[str, Any]]:
        """Storage backends and auth providers offered by plugins, by the setting choosing them."""
        from dependency_injector import providers

        from bcce.plugin.host import PluginAuthProvider, PluginStorageBackend

        choices: dict[str, dict[str, Any]] = {}
        for manifest in self.report.plugins:
            resolve = self._resolver(manifest.name)
            for provided in manifest.provides:
                if manifest.type in ("storage", "auth"):
                    key = "storage.backend" if manifest.type == "storage" else "auth.provider"
                    self._choice_owners[(key, provided)] = manifest.name
                if manifest.type == "storage":
                    backend = providers.Singleton(PluginStorageBackend, provided, resolve)
                    choices.setdefault("storage.backend", {})[provided] = backend
                elif manifest.type == "auth":
                    provider = providers.Singleton(PluginAuthProvider, provided, resolve)
                    choices.setdefault("auth.provider", {})[provided] = provider
        return choices

    def owner_of(self, key: str, choice: str) -> str:
        """The plugin offering ``choice`` for the Selector ``key``."""
        return self._choice_owners[(key, choice)]

    def reject(self, name: str, error: BcceError) -> None:
        """Refuse plugin ``name`` for a reason found outside the manager (a Selector clash)."""
        with self._lock:
            loaded = self._plugins.pop(name, None)
            if loaded is not None:
                self._unregister(loaded)
                loaded.retire()
            self._fail(name, error)

    def approval_gates(self) -> list[ApprovalGate]:
        """The ``approval:*`` integrations configured in ``plugins.integrations``."""
        self.activate()
        return list(self._gates)

    # -- lifecycle ---------------------------------------------------------------------------
    def get(self, name: str) -> LoadedPlugin:
        """The current generation of ``name`` (prepared and registered, not necessarily started)."""
        with self._lock:
            loaded = self._plugins.get(name)
            if loaded is not None:
                return loaded
            if name in self._failed:
                raise self._failed[name]
            if name in self._unloaded:
                raise PluginError(
                    f"plugin {name!r} was unloaded", hint=f"`bcce plugin reload {name}`"
                )
            loaded = self._prepare(self.manifest(name))
            self._install(loaded)
            return loaded

    def load(self, name: str) -> LoadedPlugin:
        """Prepare (if needed), start and health-check ``name``; raises when it cannot."""
        with self._lock:
            self._unloaded.discard(name)
            self._failed.pop(name, None)
            loaded = None
            try:
                loaded = self.get(name)
                self._start(loaded)
            except BcceError as exc:
                if loaded is not None:
                    self._plugins.pop(name, None)
                    self._unregister(loaded)
                    loaded.retire()
                self._fail(name, exc)
                raise
            return loaded

    def unload(self, name: str) -> None:
        """Unregister ``name`` and close it (after the runs that use it finish)."""
        with self._lock:
            loaded = self._plugins.pop(name, None)
            self._unloaded.add(name)
            if loaded is None:
                return
            self._unregister(loaded)
            self._fingerprints.pop(name, None)
        loaded.retire()
        self._publish("plugin.unloaded", loaded.describe())

    def reload(self, name: str) -> LoadedPlugin:
        """Load ``name`` again from its files: swapped in only once the new version is healthy.

        Runs in flight keep the generation they leased; new runs get the new one. If the new
        version fails, the old one stays and the failure is reported (and raised).
        """
        with self._lock:
            old = self._plugins.get(name)
            directory = self._directory(name, old)
            try:
                manifest = load_manifest(directory, source=self._source(name, old))
                problem = self._incompatible(manifest)
                if problem is not None:
                    raise problem
                fresh = self._prepare(manifest)
                self._start(fresh, publish=False)
            except BcceError as exc:
                self._publish(
                    "plugin.failed",
                    {"name": name, "error": exc.render(), "kept": old.version if old else None},
                )
                raise
            if old is not None:
                self._unregister(old)
            self._failed.pop(name, None)
            self._unloaded.discard(name)
            self._install(fresh)
            self._replace_report_entry(fresh.manifest)
        if old is not None:
            old.retire()
        self._publish(
            "plugin.loaded",
            {
                **fresh.describe(),
                "reloaded": True,
                "previous": old.version if old else None,
                "isolation": fresh.runtime.isolation(),
            },
        )
        return fresh

    def health(self, name: str | None = None, *, start: bool = True) -> dict[str, dict[str, Any]]:
        """Health of ``name`` (or of every plugin); ``start=False`` checks only running ones."""
        if name is not None:
            targets = [self.get(name)]
        else:
            self.activate()
            with self._lock:
                targets = list(self._plugins.values())
        reports: dict[str, dict[str, Any]] = {}
        for loaded in targets:
            if not start and not loaded.started:
                continue
            report = loaded.health()
            reports[loaded.name] = report
            self._publish("plugin.health", {**loaded.describe(), **report})
        if name is None:
            for failed, error in self._failed.items():
                reports[failed] = {"ok": False, "error": error.message}
        return reports

    def changed(self) -> list[str]:
        """Plugins whose files changed since they were prepared."""
        with self._lock:
            items = list(self._plugins.items())
        return [
            name
            for name, loaded in items
            if loaded.manifest.root is not None
            and self._fingerprints.get(name) != _fingerprint(loaded.manifest.root)
        ]

    def reload_changed(self) -> list[str]:
        """Reload every plugin whose files changed (what ``plugins.watch`` does periodically)."""
        reloaded = []
        for name in self.changed():
            try:
                self.reload(name)
                reloaded.append(name)
            except BcceError as exc:
                # The old version keeps serving; remember the new files so we do not retry
                # the same broken change every tick.
                log.warning("plugin {} changed but did not reload: {}", name, exc.message)
                with self._lock:
                    loaded = self._plugins.get(name)
                    if loaded is not None and loaded.manifest.root is not None:
                        self._fingerprints[name] = _fingerprint(loaded.manifest.root)
        return reloaded

    def start_monitoring(self, interval: float | None = None) -> None:
        """For long-running hosts: periodic health checks and, with ``plugins.watch``, reloads."""
        period = self.settings.health_interval_seconds if interval is None else interval
        if period <= 0 or self._monitor is not None:
            return
        self._stop_monitor.clear()

        def tick() -> None:
            while not self._stop_monitor.wait(period):
                try:
                    if self.settings.watch:
                        self.reload_changed()
                    self.health(start=False)
                except Exception:  # noqa: BLE001 - the monitor never dies of one bad tick
                    log.opt(exception=True).warning("plugin monitor tick failed")

        self._monitor = threading.Thread(target=tick, name="bcce-plugin-monitor", daemon=True)
        self._monitor.start()

    def stop_monitoring(self) -> None:
        self._stop_monitor.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5.0)
            self._monitor = None

    def integration_stats(self) -> list[dict[str, Any]]:
        """Each notification integration: events delivered, failed and dropped (queue full)."""
        return [
            {
                "type": d.name,
                "events": d.patterns,
                "delivered": d.delivered,
                "failures": d.failures,
                "dropped": d.dropped,
            }
            for d in dict.fromkeys(d for _, d in self._dispatchers)
        ]

    def flush(self, timeout: float | None = None) -> None:
        """Wait (bounded) until queued notifications are delivered."""
        bound = self.settings.timeout_seconds if timeout is None else timeout
        for dispatcher in dict.fromkeys(d for _, d in self._dispatchers):
            dispatcher.flush(bound)

    def close(self) -> None:
        """Stop monitoring, deliver queued notifications (bounded) and close every plugin."""
        self.stop_monitoring()
        for pattern, dispatcher in self._dispatchers:
            if self.bus is not None:
                with contextlib.suppress(ValueError):
                    self.bus.unsubscribe(pattern, dispatcher)
        for dispatcher in dict.fromkeys(d for _, d in self._dispatchers):
            dispatcher.close(self.settings.timeout_seconds)
        self._dispatchers.clear()
        with self._lock:
            plugins = list(self._plugins.values())
            self._plugins.clear()
        for loaded in plugins:
            loaded.retire()
        if self._staging is not None:
            _remove_staging(self._staging)
            self._staging = None

    def __enter__(self) -> PluginManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- status ------------------------------------------------------------------------------
    def statuses(self) -> list[PluginStatus]:
        """Every plugin discovery found, with its state."""
        self.activate()
        out: list[PluginStatus] = []
        for manifest in self.report.plugins:
            out.append(self.status(manifest.name))
        for manifest in self.report.disabled:
            out.append(self._status_of(manifest, "disabled"))
        return sorted(out, key=lambda s: s.name)

    def status(self, name: str) -> PluginStatus:
        with self._lock:
            loaded = self._plugins.get(name)
            if loaded is not None:
                state: PluginState = "running" if loaded.started else "registered"
                status = self._status_of(loaded.manifest, state)
                status.generation = loaded.generation
                status.permissions = loaded.permissions.to_list()
                status.isolation = loaded.runtime.isolation()
                status.signature = loaded.signature.key_id if loaded.signature else None
                return status
            manifest = self.manifest(name)
            if name in self._failed:
                status = self._status_of(manifest, "failed")
                status.error = self._failed[name].render()
                return status
            return self._status_of(manifest, "unloaded")

    @staticmethod
    def _status_of(manifest: Manifest, state: PluginState) -> PluginStatus:
        return PluginStatus(
            name=manifest.name,
            version=manifest.version,
            type=manifest.type,
            state=state,
            source=str(manifest.source) if manifest.source else str(manifest.root),
            provides=manifest.provides,
            declared=PermissionSet(manifest.permissions).to_list(),
            description=manifest.description,
        )

    # -- internals ---------------------------------------------------------------------------
    def _prepare(self, manifest: Manifest) -> LoadedPlugin:
        """Everything but starting: signature, permissions, configuration, runtime."""
        from bcce.plugin.host import InProcessRuntime, LoadedPlugin

        root = manifest.root
        assert root is not None, "discovered manifests have a directory"
        signature = self._verify(manifest)
        declared = PermissionSet(manifest.permissions)
        granted = self._grants(manifest.name)
        permissions = effective(declared, granted)
        config = self._config(manifest)
        generation = self._generations.get(manifest.name, 0) + 1
        self._generations[manifest.name] = generation
        runtime: Any
        if manifest.name in self.settings.in_process:
            if manifest.source is None or manifest.source.kind != "first-party":
                raise PluginError(
                    f"plugin {manifest.name!r} is not first-party, so it cannot run in process",
                    key="plugins.in_process",
                    hint="only plugins shipped with bcce may run inside the engine; "
                    "remove it from plugins.in_process",
                )
            runtime = InProcessRuntime(root, self._entry(manifest), name=manifest.name)
        else:
            runtime = self._worker(manifest, permissions, signature)
        loaded = LoadedPlugin(
            manifest=manifest,
            generation=generation,
            runtime=runtime,
            permissions=permissions,
            config=config,
            timeout=self.settings.timeout_seconds,
            signature=signature,
            on_event=self._publish,
        )
        self._fingerprints[manifest.name] = _fingerprint(root)
        return loaded

    def _worker(
        self, manifest: Manifest, permissions: PermissionSet, signature: VerifiedSignature | None
    ) -> Any:
        from bcce.plugin.worker import PluginWorker

        root = manifest.root
        assert root is not None
        if signature is not None:
            # Run the read-only copy that was verified after copying: a later change to the
            # source cannot reach the worker.
            root = self._stage(manifest, root)
        return PluginWorker(
            root,
            self._entry(manifest),
            permissions,
            timeout=self.settings.timeout_seconds,
            memory_mb=self.settings.memory_mb,
            strict=self.settings.strict,
        )

    @staticmethod
    def _entry(manifest: Manifest) -> str:
        """The entry point as ``module:attr`` (a ``.py`` path names its module's ``Plugin``)."""
        if manifest.entry_kind == "module":
            return manifest.entry_point
        module = manifest.entry_point.removesuffix(".py").replace("/", ".")
        return f"{module}:Plugin"

    def _stage(self, manifest: Manifest, root: Path) -> Path:
        from bcce.plugin.signing import stage_verified_copy

        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="bcce-plugins-"))
        generation = self._generations[manifest.name]
        target = self._staging / f"{manifest.name}-{manifest.version}-g{generation}"
        return stage_verified_copy(root, target, self.settings.trusted_keys)

    def _verify(self, manifest: Manifest) -> VerifiedSignature | None:
        """Check the signature when there is one or one is required; None when unsigned."""
        root = manifest.root
        assert root is not None
        signed = (root / SIGNATURE_FILE).exists()
        first_party = manifest.source is not None and manifest.source.kind == "first-party"
        if not signed:
            if self.settings.require_signature and not first_party:
                from bcce.plugin.signing import CODE_UNSIGNED, SignatureError

                raise SignatureError(
                    f"plugin {manifest.name!r} is not signed and plugins.require_signature is on",
                    reason="unsigned",
                    code=CODE_UNSIGNED,
                    location=str(root),
                    hint="sign it with `bcce plugin sign DIR --key KEY` and trust the key in "
                    "plugins.trusted_keys",
                )
            return None
        from bcce.plugin.signing import verify_plugin  # cryptography: only for signed plugins

        return verify_plugin(root, self.settings.trusted_keys)

    def _grants(self, name: str) -> PermissionSet:
        entries = self.settings.grants.get(name, [])
        try:
            return parse_permissions(entries, key=f"plugins.grants.{name}")
        except PluginError as exc:
            raise ConfigError(
                exc.message, key=exc.key, location=self._location(("plugins", "grants", name))
            ) from None

    def _config(self, manifest: Manifest) -> dict[str, Any]:
        config = dict(self.settings.config.get(manifest.name, {}))
        schema = manifest.config_schema
        if schema is None or (not config and not schema.get("required")):
            return config  # nothing to check: spare every start-up the jsonschema import
        from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

        from bcce.plugin.manifest import check_json_schema

        check_json_schema(schema, str(manifest.path), "configuration.schema")

        errors = sorted(
            Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path)
        )
        if errors:
            error = errors[0]
            path = ("plugins", "config", manifest.name, *error.absolute_path)
            raise ConfigError(
                f"invalid configuration for plugin {manifest.name!r}: {error.message}",
                key=".".join(str(p) for p in path),
                location=self._location(path[:3]),
                hint=f"the plugin's schema: {manifest.root}/bcce.plugin.json configuration",
            )
        return config

    def _location(self, path: tuple[Any, ...]) -> str | None:
        if self.provenance is None:
            return None
        origin = self.provenance.origin_of(tuple(str(p) for p in path))
        return origin.location if origin is not None else None

    def _start(self, loaded: LoadedPlugin, *, publish: bool = True) -> None:
        loaded.start()
        health = loaded.health()
        if not health.get("ok"):
            loaded.close()
            raise PluginError(
                f"plugin {loaded.name!r} {loaded.version} is unhealthy: "
                f"{health.get('error') or health}",
                hint="see the plugin's health() and its stderr (bcce --log-level debug)",
            )
        if publish:
            self._publish(
                "plugin.loaded", {**loaded.describe(), "isolation": loaded.runtime.isolation()}
            )

    def _install(self, loaded: LoadedPlugin) -> None:
        from bcce.plugin.host import PluginStepExecutor
        from bcce.workflow.registry import StepType

        if loaded.manifest.type == "step" and self.registry is not None:
            done: list[str] = []
            try:
                for step_type in loaded.manifest.provides:
                    self.registry.register(
                        StepType(
                            step_type,
                            _executor_factory(PluginStepExecutor, loaded, step_type),
                            provider=f"plugin {loaded.name} {loaded.version}",
                            description=loaded.manifest.description or "",
                            schema=loaded.manifest.step_schemas.get(step_type),
                            lease=loaded.lease,
                        ),
                        replace=self._owns(step_type, loaded.name),
                    )
                    done.append(step_type)
            except BcceError as exc:  # e.g. a type another plugin registered first
                for step_type in done:
                    self.registry.unregister(step_type)
                raise PluginError(
                    f"plugin {loaded.name!r} cannot register its step types: {exc.message}",
                    hint=exc.hint,
                ) from None
        self._plugins[loaded.name] = loaded
        self._publish(
            "plugin.registered",
            {**loaded.describe(), "provides": list(loaded.manifest.provides)},
        )

    def _owns(self, step_type: str, name: str) -> bool:
        """Whether the registered ``step_type`` (if any) is this plugin's own (a reload)."""
        if self.registry is None or step_type not in self.registry:
            return False
        return self.registry.get(step_type).provider.startswith(f"plugin {name} ")

    def _unregister(self, loaded: LoadedPlugin) -> None:
        if loaded.manifest.type == "step" and self.registry is not None:
            for step_type in loaded.manifest.provides:
                if self._owns(step_type, loaded.name):
                    self.registry.unregister(step_type)

    def _fail(self, name: str, error: BcceError, *, version: str | None = None) -> None:
        self._failed[name] = error
        log.warning("plugin {} failed: {}", name, error.render())
        manifest = self.report.get(name)
        if manifest is not None and manifest.type == "step" and self.registry is not None:
            for step_type in manifest.provides:
                reason = PluginError(
                    f"step type {step_type!r} comes from plugin {name!r}, which failed to load: "
                    f"{error.message}",
                    location=error.location,
                    key=error.key,
                    hint=error.hint or f"see `bcce plugin info {name}`",
                )
                self.registry.mark_unavailable(step_type, reason)
        self._publish("plugin.failed", {"name": name, "version": version, "error": error.render()})

    def _resolver(self, name: str) -> Callable[[], LoadedPlugin]:
        return lambda: self.get(name)

    def _subscribe_integrations(self) -> None:
        from bcce.plugin.host import NotificationDispatcher, PluginApprovalGate

        provided = {
            t: m.name for m in self.report.plugins if m.type == "integration" for t in m.provides
        }
        for index, integration in enumerate(self.settings.integrations):
            options = integration.model_dump()
            owner = provided.get(integration.type)
            if owner is None:
                # Reported (bcce plugin list), not fatal: a missing notifier must not stop
                # every command, and a missing approval gate leaves approvals pending.
                problem = ConfigError(
                    f"no enabled plugin provides integration type {integration.type!r}",
                    key=f"plugins.integrations[{index}].type",
                    location=self._location(("plugins", "integrations")),
                    hint=f"integration types available: {', '.join(sorted(provided)) or 'none'}",
                )
                self.problems.append(problem)
                log.warning("{}", problem.render())
                continue
            resolve = self._resolver(owner)
            if integration.type.startswith("approval:"):
                self._gates.append(PluginApprovalGate(integration.type, options, resolve))
                continue
            dispatcher = NotificationDispatcher(integration.type, options, resolve)
            for pattern in dispatcher.patterns:
                self._dispatchers.append((pattern, dispatcher))
                if self.bus is not None:
                    self.bus.subscribe(pattern, dispatcher)

    def _warn_unknown_names(self) -> None:
        known = {m.name for m in (*self.report.plugins, *self.report.disabled)}
        for key, names in (
            ("plugins.grants", self.settings.grants),
            ("plugins.config", self.settings.config),
            ("plugins.in_process", self.settings.in_process),
        ):
            for name in sorted(set(names) - known):
                log.warning("{} names {!r}, which no discovered plugin is called", key, name)

    def _directory(self, name: str, loaded: LoadedPlugin | None) -> Path:
        if loaded is not None and loaded.manifest.root is not None:
            return loaded.manifest.root
        manifest = self.discover(refresh=True).get(name)
        if manifest is None or manifest.root is None:
            self.manifest(name)  # raises the precise reason
            raise PluginError(f"no plugin named {name!r}")
        return manifest.root

    def _source(self, name: str, loaded: LoadedPlugin | None) -> Any:
        if loaded is not None:
            return loaded.manifest.source
        manifest = self.report.get(name)
        return manifest.source if manifest is not None else None

    @staticmethod
    def _incompatible(manifest: Manifest) -> BcceError | None:
        from bcce.plugin.discovery import incompatibility

        problem = incompatibility(manifest)
        if problem is None:
            return None
        return PluginError(
            problem.message, location=problem.file, key=problem.field, hint=problem.hint
        )

    def _replace_report_entry(self, manifest: Manifest) -> None:
        report = self.report
        report.plugins = [m for m in report.plugins if m.name != manifest.name] + [manifest]

    def _publish(self, event_type: str, payload: Mapping[str, Any]) -> None:
        if self.bus is None:
            return
        from bcce.events.bus import Event

        self.bus.publish(Event(event_type, dict(payload)))


def _executor_factory(
    cls: Callable[[LoadedPlugin, str], Any], loaded: LoadedPlugin, step_type: str
) -> Callable[[], Any]:
    return lambda: cls(loaded, step_type)


def _fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file's path, size and mtime: cheap change detection for hot reload."""
    entries: list[tuple[str, int, int]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            path = Path(folder) / name
            with contextlib.suppress(OSError):
                stat = path.stat()
                entries.append((str(path.relative_to(root)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def _remove_staging(root: Path) -> None:
    # Staged copies are read-only: make them writable again so they can be removed.
    for folder, dirs, _files in os.walk(root):
        for name in dirs:
            with contextlib.suppress(OSError):
                (Path(folder) / name).chmod(0o700)
    with contextlib.suppress(OSError):
        root.chmod(0o700)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def managed(manager: PluginManager) -> Iterator[PluginManager]:
    """The manager as a container Resource: closed when the application shuts down."""
    try:
        yield manager
    finally:
        manager.close()


__all__ = ["PluginManager", "PluginState", "PluginStatus", "managed"]
