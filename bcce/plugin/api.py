"""What a plugin implements: plain classes whose methods the host calls with JSON values.

A plugin's entry point names a class (instantiated with no arguments) or an object. The host
calls its public methods by name, with keyword arguments, and every argument and return value is
JSON (bytes travel as base64 text, see :func:`encode_bytes`). The same contract holds whether the
plugin runs in a sandboxed worker process (the default) or in the engine (a first-party plugin
trusted by ``plugins.in_process``), so a plugin never knows which.

Every plugin type may define:

- ``configure(config)``: called once after start with the plugin's configuration
  (``plugins.config.<name>``, already checked against the plugin's schema), before any other
  method, ``health()`` included;
- ``health()``: returns ``{"ok": bool, ...}``; called on load and by health checks;
- ``cleanup()``: called when the plugin is unloaded or reloaded.

And, by type:

=============  ===========================================================================
step           ``execute(type, params, context) -> dict`` (build it with :func:`step_result`)
integration    ``handle_event(type, event, options)`` for ``notification:*`` integrations;
               ``request_approval(type, request, options) -> dict`` for ``approval:*``
               (build it with :func:`approval`)
storage        ``store(key, data)``, ``retrieve(key) -> data``, ``delete(key)``,
               ``list(prefix) -> [key]``, ``exists(key) -> bool``, ``archive_run(run_id) -> str``;
               ``data`` is base64 text
auth           ``authenticate() -> {"user": str, "groups": [str], "attributes": {str: str}}``
=============  ===========================================================================

A step's ``params`` are the keys the workflow wrote on the step besides the engine's own (``id``,
``name``, ``description``, ``type``, ``needs``, ``if``, ``retry``, ``timeout_seconds``,
``outputs``, ``on_error``), with expressions already rendered. Its ``context`` holds
``run_id``, ``step_id``, ``attempt``, ``workflow``, ``workspace`` (a path the plugin may use only
with a ``filesystem`` grant), ``timeout_seconds`` (what is left of the call's time: the step's
own time limit when it has one, else ``plugins.timeout_seconds``), ``permissions`` (the
permissions the plugin holds, declared and granted, as the manifest-style list of
``PermissionSet.to_list()``, so it can check a grant before it acts) and ``env`` (the step's
environment variables, passed only with an ``env:read`` grant naming them).

This module imports nothing outside the standard library: it is imported inside the sandbox.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

API_VERSION = "1"

StepStatus = Literal["succeeded", "failed"]
VerdictName = Literal["approved", "rejected", "pending"]

#: Step keys that belong to the engine; every other key of a plugin step is a parameter.
ENGINE_KEYS = frozenset(
    {
        "id",
        "name",
        "type",
        "needs",
        "if",
        "retry",
        "timeout_seconds",
        "outputs",
        "on_error",
        "description",
    }
)


def encode_bytes(data: bytes) -> str:
    """Bytes as the base64 text that crosses the JSON protocol."""
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    """The bytes sent as base64 text (strictly: anything else is an error)."""
    return base64.b64decode(text.encode("ascii"), validate=True)


def binary(data: bytes) -> dict[str, str]:
    """A binary artifact value for :func:`step_result` (text artifacts are plain strings)."""
    return {"base64": encode_bytes(data)}


def step_result(
    status: StepStatus = "succeeded",
    *,
    outputs: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, str | Mapping[str, str]] | None = None,
    error: str | None = None,
    exit_code: int | None = None,
) -> dict[str, Any]:
    """What ``execute`` returns.

    ``outputs`` become ``steps.<id>.outputs``; ``artifacts`` are files saved with the step's
    artifacts (a string is UTF-8 text, :func:`binary` wraps bytes); ``error`` says why a failed
    step failed.
    """
    result: dict[str, Any] = {"status": status, "outputs": dict(outputs or {})}
    if artifacts:
        result["artifacts"] = dict(artifacts)
    if error is not None:
        result["error"] = error
    if exit_code is not None:
        result["exit_code"] = exit_code
    return result


def approval(verdict: VerdictName, *, by: str = "", reason: str = "") -> dict[str, str]:
    """What ``request_approval`` returns: ``pending`` when the answer comes later."""
    return {"verdict": verdict, "by": by, "reason": reason}


def identity(
    user: str, groups: list[str] | None = None, attributes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What ``authenticate`` returns."""
    return {"user": user, "groups": list(groups or []), "attributes": dict(attributes or {})}


__all__ = [
    "API_VERSION",
    "ENGINE_KEYS",
    "approval",
    "binary",
    "decode_bytes",
    "encode_bytes",
    "identity",
    "step_result",
]
