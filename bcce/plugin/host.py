"""The engine's side of a loaded plugin: one generation of it, and the adapters that make it a
step executor, a storage backend, an auth provider, an event subscriber or an approval gate.

A :class:`LoadedPlugin` is one *generation* of a plugin: the manifest it was prepared from, the
permissions it holds and the runtime that runs its code (a sandboxed :class:`PluginWorker`, or an
:class:`InProcessRuntime` for a trusted first-party plugin). The runtime starts on first use and
restarts after a crash. A reload makes a new generation; the old one is *retired* and closes once
the last run that leased it has finished, so a run in flight keeps the version it started with.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import json
import queue
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from bcce.auth.provider import Identity
from bcce.core.log import get_logger
from bcce.errors import AuthenticationFailed, PluginError, StorageError
from bcce.plugin.api import ENGINE_KEYS, decode_bytes, encode_bytes
from bcce.steps.approval import Approval, ApprovalRequest, Verdict
from bcce.steps.base import StepContext, StepResult
from bcce.storage.backend import StorageBackend, validate_key

if TYPE_CHECKING:
    from bcce.events.bus import Event
    from bcce.plugin.manifest import Manifest
    from bcce.plugin.permissions import PermissionSet
    from bcce.plugin.signing import VerifiedSignature

log = get_logger("plugins")

#: The artifacts one plugin step may return, in total.
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024


class PluginRuntime(Protocol):
    """What runs a plugin's code: a sandboxed worker, or the engine itself."""

    @property
    def running(self) -> bool: ...
    def start(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...
    def health(self) -> Any: ...
    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Any: ...
    def close(self) -> None: ...
    def isolation(self) -> dict[str, object]: ...


_module_ids = itertools.count(1)


class InProcessRuntime:
    """A first-party plugin trusted by ``plugins.in_process``: imported into the engine.

    Each instance imports the plugin under a fresh package name, so a reload imports the changed
    files instead of reusing ``sys.modules``. Values still make a JSON round trip, so the plugin
    sees exactly what a sandboxed worker would.
    """

    def __init__(self, plugin_dir: Path, entry_point: str, *, name: str) -> None:
        self.plugin_dir = plugin_dir
        self.entry_point = entry_point
        self.name = name
        self._package = f"_bcce_plugin_{name.replace('-', '_')}_{next(_module_ids)}"
        self._plugin: Any = None

    @property
    def running(self) -> bool:
        return self._plugin is not None

    def start(self) -> None:
        if self._plugin is not None:
            return
        package = types.ModuleType(self._package)
        package.__path__ = [str(self.plugin_dir)]
        sys.modules[self._package] = package
        module_name, _, attr = self.entry_point.partition(":")
        try:
            target: Any = importlib.import_module(f"{self._package}.{module_name}")
            for part in attr.split("."):
                target = getattr(target, part)
            self._plugin = target() if isinstance(target, type) else target
        except Exception as exc:
            self._forget_modules()
            raise PluginError(
                f"plugin {self.name!r} failed to import: {type(exc).__name__}: {exc}",
                hint="plugins running in process use relative imports between their modules",
            ) from exc

    def describe(self) -> dict[str, Any]:
        return {"entry_point": self.entry_point, "methods": _public_methods(self._plugin)}

    def health(self) -> Any:
        check = getattr(self._plugin, "health", None)
        return self._json(check() if callable(check) else {"ok": True})

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Any:
        if self._plugin is None:
            raise PluginError(f"plugin {self.name!r} is not running")
        if method.startswith("_") or method not in _public_methods(self._plugin):
            raise PluginError(f"plugin {self.name!r} failed in {method!r}: no such method")
        arguments = json.loads(json.dumps(params or {}))
        try:
            result = getattr(self._plugin, method)(**arguments)
        except Exception as exc:
            raise PluginError(
                f"plugin {self.name!r} failed in {method!r}: {type(exc).__name__}: {exc}"
            ) from exc
        return self._json(result)

    def close(self) -> None:
        self._plugin = None
        self._forget_modules()

    def isolation(self) -> dict[str, object]:
        return {
            "tier": "in-process",
            "mechanism": "none",
            "reason": "a first-party plugin trusted by plugins.in_process",
        }

    def _json(self, value: Any) -> Any:
        try:
            return json.loads(json.dumps(value))
        except (TypeError, ValueError) as exc:
            raise PluginError(f"plugin {self.name!r} returned a non-JSON value: {exc}") from None

    def _forget_modules(self) -> None:
        prefix = f"{self._package}."
        for module in [m for m in sys.modules if m == self._package or m.startswith(prefix)]:
            del sys.modules[module]


def _public_methods(plugin: Any) -> list[str]:
    return sorted(
        name for name in dir(plugin) if not name.startswith("_") and callable(getattr(plugin, name))
    )


@dataclass(eq=False)
class LoadedPlugin:
    """One generation of a plugin, and the runtime that runs its code."""

    manifest: Manifest
    generation: int
    runtime: PluginRuntime
    permissions: PermissionSet
    config: Mapping[str, Any]
    timeout: float
    signature: VerifiedSignature | None = None
    on_event: Callable[[str, Mapping[str, Any]], None] | None = None
    on_close: Callable[[], None] | None = None
    calls: int = 0
    failures: int = 0
    restarts: int = 0
    started_at: float | None = None
    _leases: int = 0
    _retired: bool = False
    _closed: bool = False
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def started(self) -> bool:
        return self.runtime.running

    def start(self) -> None:
        """Start the runtime (if it is not running), then configure the plugin."""
        with self._lock:
            if self._closed:
                raise PluginError(f"plugin {self.name!r} {self.version} was unloaded")
            if self.runtime.running:
                return
            restart = self.started_at is not None
            self.runtime.start()
            methods = self.runtime.describe().get("methods", [])
            if "configure" in methods:
                self.runtime.call("configure", {"config": dict(self.config)})
            self.started_at = time.time()
            if restart:
                self.restarts += 1
            if self.on_event is not None:
                event = "plugin.restarted" if restart else "plugin.started"
                self.on_event(event, {**self.describe(), "isolation": self.runtime.isolation()})

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Any:
        """Call the plugin's ``method``; start (or restart after a crash) it first if needed."""
        self.start()
        self.calls += 1
        try:
            return self.runtime.call(
                method,
                params,
                timeout=self.timeout if timeout is None else timeout,
                should_stop=should_stop,
            )
        except PluginError:
            self.failures += 1
            raise

    def health(self) -> dict[str, Any]:
        """The plugin's own health check (starting it if needed), as ``{"ok": ..., ...}``."""
        started = time.monotonic()
        try:
            self.start()
            answer = self.runtime.health()
        except PluginError as exc:
            return {"ok": False, "error": exc.message, "ms": _ms(started)}
        report = dict(answer) if isinstance(answer, Mapping) else {"ok": bool(answer)}
        report.setdefault("ok", True)
        report["ms"] = _ms(started)
        return report

    @contextlib.contextmanager
    def lease(self) -> Iterator[LoadedPlugin]:
        """Keep this generation alive while a run uses it, even if a reload retires it."""
        with self._lock:
            if self._closed:
                raise PluginError(
                    f"plugin {self.name!r} {self.version} was unloaded",
                    hint="run the workflow again to use the plugin's current version",
                )
            self._leases += 1
        try:
            yield self
        finally:
            with self._lock:
                self._leases -= 1
                close = self._retired and self._leases == 0
            if close:
                self.close()

    def retire(self) -> None:
        """No new work: close now, or when the last lease ends."""
        with self._lock:
            self._retired = True
            close = self._leases == 0
        if close:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.runtime.running:
            with contextlib.suppress(PluginError):
                if "cleanup" in self.runtime.describe().get("methods", []):
                    self.runtime.call("cleanup", timeout=min(self.timeout, 10.0))
        self.runtime.close()
        if self.on_close is not None:
            self.on_close()

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "generation": self.generation,
            "type": self.manifest.type,
        }


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 2)


# -- step executors ------------------------------------------------------------------------
class PluginStepExecutor:
    """Runs one step of a plugin step type through the plugin's ``execute``."""

    def __init__(self, plugin: LoadedPlugin, step_type: str) -> None:
        self.plugin = plugin
        self.step_type = step_type

    def execute(self, context: StepContext) -> StepResult:
        params = context.render({k: v for k, v in context.step.raw.items() if k not in ENGINE_KEYS})
        remaining = None if context.deadline is None else context.deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return StepResult("timed_out", error="exceeded its timeout before it started")
        # The step's own time bound governs its call; plugins.timeout_seconds when it has none.
        timeout = self.plugin.timeout if remaining is None else remaining
        isolation = self.plugin.runtime.isolation()
        context.publish(
            "plugin.call",
            {
                "step": context.step.id,
                "plugin": self.plugin.name,
                "version": self.plugin.version,
                "type": self.step_type,
                "tier": isolation.get("tier"),
                "mechanism": isolation.get("mechanism"),
            },
        )
        request = {
            "type": self.step_type,
            "params": params,
            "context": {
                "run_id": context.run_id,
                "step_id": context.step.id,
                "attempt": context.attempt,
                "workflow": context.workflow.name,
                "workspace": str(context.workspace),
                "timeout_seconds": round(timeout, 3),
                "permissions": self.plugin.permissions.to_list(),
                "env": self._granted_env(context.env),
            },
        }
        try:
            reply = self.plugin.call(
                "execute", request, timeout=timeout, should_stop=context.should_stop
            )
        except PluginError as exc:
            if context.should_stop():
                return StepResult("cancelled", error=exc.message)
            if context.deadline is not None and time.monotonic() >= context.deadline:
                return StepResult("timed_out", error=exc.message)
            return StepResult("failed", error=exc.message)
        return self._result(reply, context)

    def _granted_env(self, env: Mapping[str, str]) -> dict[str, str]:
        grant = self.plugin.permissions.get("env:read")
        if grant is None:
            return {}
        return {k: v for k, v in env.items() if grant.scope is None or k in grant.scope}

    def _result(self, reply: Any, context: StepContext) -> StepResult:
        where = f"plugin {self.plugin.name!r} ({self.step_type})"
        if not isinstance(reply, Mapping) or reply.get("status") not in ("succeeded", "failed"):
            return StepResult(
                "failed",
                error=f"{where} returned no step result; build it with bcce.plugin.api.step_result",
            )
        outputs = reply.get("outputs") or {}
        if not isinstance(outputs, Mapping):
            return StepResult("failed", error=f"{where} returned outputs that are not an object")
        try:
            self._save_artifacts(reply.get("artifacts") or {}, context.artifacts)
        except PluginError as exc:
            return StepResult("failed", dict(outputs), error=f"{where}: {exc.message}")
        exit_code = reply.get("exit_code")
        return StepResult(
            reply["status"],
            outputs=dict(outputs),
            exit_code=exit_code if isinstance(exit_code, int) else None,
            error=str(reply["error"]) if reply.get("error") is not None else None,
        )

    @staticmethod
    def _save_artifacts(artifacts: Any, directory: Path) -> None:
        if not isinstance(artifacts, Mapping):
            raise PluginError("artifacts must be an object of name: content")
        total = 0
        for name, value in artifacts.items():
            relative = PurePosixPath(str(name))
            if (
                not name
                or relative.is_absolute()
                or ".." in relative.parts
                or "\\" in name
                or "\x00" in name
            ):
                raise PluginError(f"artifact name {name!r} is not a relative path")
            if isinstance(value, str):
                data = value.encode("utf-8")
            elif isinstance(value, Mapping) and isinstance(value.get("base64"), str):
                try:
                    data = decode_bytes(value["base64"])
                except ValueError:
                    raise PluginError(f"artifact {name!r} is not valid base64") from None
            else:
                raise PluginError(f"artifact {name!r} is neither text nor {{'base64': ...}}")
            total += len(data)
            if total > MAX_ARTIFACT_BYTES:
                raise PluginError(f"artifacts exceed {MAX_ARTIFACT_BYTES // 2**20} MiB")
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


# -- storage and auth ----------------------------------------------------------------------
Resolve = Callable[[], LoadedPlugin]


class PluginStorageBackend(StorageBackend):
    """A storage backend provided by a plugin; each call goes to the plugin's current version."""

    def __init__(self, name: str, resolve: Resolve) -> None:
        self.name = name
        self._resolve = resolve

    def _call(self, method: str, **params: Any) -> Any:
        try:
            return self._resolve().call(method, params)
        except PluginError as exc:
            raise StorageError(exc.message, hint=exc.hint) from exc

    def store(self, key: str, data: bytes) -> None:
        validate_key(key)
        self._call("store", key=key, data=encode_bytes(data))

    def retrieve(self, key: str) -> bytes:
        validate_key(key)
        text = self._call("retrieve", key=key)
        if not isinstance(text, str):
            raise StorageError(f"storage plugin {self.name!r} returned no data for {key!r}")
        return decode_bytes(text)

    def delete(self, key: str) -> None:
        validate_key(key)
        self._call("delete", key=key)

    def list(self, prefix: str = "") -> list[str]:
        keys = self._call("list", prefix=prefix)
        return [str(k) for k in keys] if isinstance(keys, list) else []

    def exists(self, key: str) -> bool:
        validate_key(key)
        return bool(self._call("exists", key=key))

    def archive_run(self, run_id: str) -> str:
        return str(self._call("archive_run", run_id=run_id))


class PluginAuthProvider:
    """An authentication provider provided by a plugin.

    Who is running bcce does not change within a process: the first successful identity is
    kept, so the runner and the audit trail do not each log in (an LDAP bind, say). A failure
    is not kept: the next call asks the plugin again. No lock: starting the plugin publishes
    events whose audit record asks for the identity again, from this same call.
    """

    def __init__(self, name: str, resolve: Resolve) -> None:
        self.name = name
        self._resolve = resolve
        self._identity: Identity | None = None

    def authenticate(self) -> Identity:
        if self._identity is None:
            self._identity = self._authenticate()
        return self._identity

    def _authenticate(self) -> Identity:
        try:
            answer = self._resolve().call("authenticate")
        except PluginError as exc:
            raise AuthenticationFailed(exc.message, hint=exc.hint) from exc
        if not isinstance(answer, Mapping) or not isinstance(answer.get("user"), str):
            raise AuthenticationFailed(
                f"auth plugin {self.name!r} did not return an identity",
                hint="return bcce.plugin.api.identity(user, groups)",
            )
        groups = answer.get("groups") or []
        attributes = answer.get("attributes") or {}
        return Identity(
            user=answer["user"],
            groups=tuple(str(g) for g in groups),
            provider=self.name,
            attributes={str(k): str(v) for k, v in dict(attributes).items()},
        )


# -- integrations --------------------------------------------------------------------------
class PluginApprovalGate:
    """An ``approval:*`` integration: asks the plugin, which may answer later (pending)."""

    def __init__(self, integration_type: str, options: Mapping[str, Any], resolve: Resolve):
        self.name = integration_type
        self.options = dict(options)
        self._resolve = resolve

    def request(self, request: ApprovalRequest) -> Approval:
        payload = {
            "run_id": request.run_id,
            "step_id": request.step_id,
            "workflow": request.workflow,
            "files": list(request.files),
            "diff": request.diff,
            "requested_by": request.requested_by,
        }
        try:
            answer = self._resolve().call(
                "request_approval",
                {"type": self.name, "request": payload, "options": self.options},
            )
        except PluginError as exc:
            log.warning("approval integration {} failed: {}", self.name, exc.message)
            return Approval(Verdict.PENDING, by="", via=self.name, reason=exc.message)
        verdict = answer.get("verdict") if isinstance(answer, Mapping) else None
        if verdict not in {v.value for v in Verdict}:
            return Approval(Verdict.PENDING, by="", via=self.name, reason="no verdict returned")
        return Approval(
            Verdict(verdict),
            by=str(answer.get("by") or ""),
            via=self.name,
            reason=str(answer.get("reason") or ""),
        )


class NotificationDispatcher:
    """A ``notification:*`` integration on the event bus, delivering from its own thread.

    The bus only enqueues (a slow or failing webhook never holds up a run); :meth:`flush` waits,
    at most a bound, for what is queued. Failures are logged and counted.
    """

    def __init__(
        self,
        integration_type: str,
        options: Mapping[str, Any],
        resolve: Resolve,
        *,
        max_queue: int = 10_000,
    ) -> None:
        self.name = integration_type
        self.options = {k: v for k, v in options.items() if k != "type"}
        self.patterns = [str(p) for p in options["events"]]
        self._resolve = resolve
        self._queue: queue.Queue[Event | None] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.delivered = 0
        self.failures = 0
        self.dropped = 0

    def __call__(self, event: Event) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._deliver, name=f"bcce-{self.name}", daemon=True
                )
                self._thread.start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def _deliver(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                self._resolve().call(
                    "handle_event",
                    {"type": self.name, "event": event.to_dict(), "options": self.options},
                )
                self.delivered += 1
            except PluginError as exc:
                self.failures += 1
                log.warning("integration {} failed on {}: {}", self.name, event.type, exc.message)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event is delivered, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float) -> None:
        self.flush(timeout)
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join(timeout=1.0)
                self._thread = None


__all__ = [
    "InProcessRuntime",
    "LoadedPlugin",
    "NotificationDispatcher",
    "PluginApprovalGate",
    "PluginAuthProvider",
    "PluginRuntime",
    "PluginStepExecutor",
    "PluginStorageBackend",
]
