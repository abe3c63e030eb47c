"""The sandboxed plugin worker process: ``python -m bcce.plugin._worker_main``.

Imports the plugin's entry point (only here, never in the engine) and answers JSON-lines requests
on stdin: ``{"id", "method", "params"}`` -> ``{"id", "result"}`` or ``{"id", "error"}``. With
``--confine PLAN`` (isolation tier B) it first confines itself with
:func:`bcce.plugin.confine.apply_confinement`; a failure there ends the worker.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import socket
import sys
from typing import IO, Any

from bcce.plugin.confine import ConfinementPlan, apply_confinement
from bcce.plugin.permissions import (
    NETWORK_KINDS,
    PermissionSet,
    explain_denial,
    parse_permissions,
)

_SPAWN_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork"}
)
_IP_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6})


def _install_guards(permissions: PermissionSet) -> None:
    """Clear denials for spawn, IP sockets and out-of-scope connects; the OS sandbox is the
    boundary.

    A connect is checked by host only, against every network kind held (``network:http``,
    ``network:https``, ``network:ldap``): the hook sees an address and a port, not the protocol
    that will be spoken, and the permission names hosts, not ports. So any port of a granted
    host passes (LDAP's 389 and 636, and whatever port a URL names); which kind a connection
    needs is the plugin's own check, made from its URL's scheme before it connects.
    """

    resolved: set[str] = set()
    resolving: list[bool] = []
    held = [kind for kind in NETWORK_KINDS if kind in permissions]

    def allowed(host: str) -> bool:
        return any(permissions.allows(kind, host) for kind in held)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in _SPAWN_EVENTS and "process:spawn" not in permissions:
            raise PermissionError(explain_denial("process:spawn"))
        if event == "socket.__new__" and not held and args[1] in _IP_FAMILIES:
            raise PermissionError(explain_denial(NETWORK_KINDS))
        if event == "socket.getaddrinfo" and not resolving and allowed(str(args[0])):
            # connect() sees only addresses: remember those of the hosts in scope.
            resolving.append(True)
            try:
                resolved.update(str(info[4][0]) for info in socket.getaddrinfo(args[0], args[1]))
            except OSError:
                pass
            finally:
                resolving.clear()
        if event == "socket.connect" and isinstance(args[1], tuple):
            host = str(args[1][0])
            if host not in resolved and not allowed(host):
                raise PermissionError(explain_denial(held or NETWORK_KINDS, host))

    sys.addaudithook(hook)


def _load(plugin_dir: str, entry_point: str) -> Any:
    module_name, _, attr = entry_point.partition(":")
    sys.path.insert(0, plugin_dir)
    target: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        target = getattr(target, part)
    return target() if inspect.isclass(target) else target


def _public_methods(plugin: Any) -> list[str]:
    return sorted(
        name for name in dir(plugin) if not name.startswith("_") and callable(getattr(plugin, name))
    )


def _handle(plugin: Any, entry_point: str, method: str, params: dict[str, Any]) -> Any:
    if method == "describe":
        return {"entry_point": entry_point, "methods": _public_methods(plugin), "pid": os.getpid()}
    if method == "shutdown":
        return {"ok": True}
    if method == "health":
        check = getattr(plugin, "health", None)
        return check() if callable(check) else {"ok": True}
    if method == "call":
        name = params.get("method")
        if not isinstance(name, str) or name.startswith("_") or name not in _public_methods(plugin):
            raise AttributeError(f"plugin has no public method {name!r}")
        kwargs = params.get("params") or {}
        return getattr(plugin, name)(**kwargs)
    raise ValueError(f"unknown protocol method {method!r}")


def _serve(plugin: Any, entry_point: str, requests: IO[bytes], replies: IO[str]) -> None:
    for line in requests:
        try:
            request = json.loads(line)
            request_id, method = request.get("id"), request.get("method")
        except (ValueError, AttributeError) as exc:
            request_id, method = None, None
            reply: dict[str, Any] = {
                "id": None,
                "error": {"type": "ProtocolError", "message": str(exc)},
            }
        else:
            try:
                result = _handle(plugin, entry_point, str(method), request.get("params") or {})
                json.dumps(result)  # fail here, as the call's error, if not serialisable
                reply = {"id": request_id, "result": result}
            except Exception as exc:  # noqa: BLE001 - every plugin failure goes back to the host
                reply = {
                    "id": request_id,
                    "error": {"type": type(exc).__name__, "message": str(exc)},
                }
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
        if method == "shutdown":
            return


def main(argv: list[str] | None = None) -> int:
    """Run the worker: load the plugin, then serve requests until ``shutdown`` or end of input."""
    parser = argparse.ArgumentParser(prog="bcce-plugin-worker")
    parser.add_argument("--plugin-dir", required=True)
    parser.add_argument("--entry-point", required=True)
    parser.add_argument("--permissions", default="[]")
    parser.add_argument("--confine", help="a ConfinementPlan as JSON: confine before loading")
    args = parser.parse_args(argv)
    # The protocol gets private copies of fds 0 and 1; the plugin's prints go to stderr.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if args.confine is not None:
        apply_confinement(ConfinementPlan.from_json(args.confine))
    _install_guards(parse_permissions(json.loads(args.permissions)))
    plugin = _load(args.plugin_dir, args.entry_point)
    _serve(plugin, args.entry_point, requests, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
