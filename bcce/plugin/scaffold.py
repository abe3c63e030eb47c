"""``bcce plugin new NAME --type TYPE``: a new plugin directory that works and tests itself.

:func:`scaffold_plugin` writes ``<directory>/<name>/``::

    bcce.plugin.json              the manifest (built here, then checked by the manifest loader)
    README.md                     what the plugin does, how to configure, test and ship it
    pytest.ini                    the directory is the root of its own tests
    bcce_plugin_<name>/__init__.py
    bcce_plugin_<name>/plugin.py  a small, documented implementation of the type
    tests/test_plugin.py          tests through the real machinery (``bcce_plugin_harness``)

The file templates live in ``bcce/plugin/templates/<type>/`` and ``templates/common/`` and are
:class:`string.Template` texts (``$name``; a literal dollar is ``$$``). Everything is written to a
hidden sibling directory first and renamed into place, so a failure leaves no partial plugin.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import re
import secrets
import shutil
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, get_args

from packaging.version import Version

from bcce._version import __version__
from bcce.errors import PluginError
from bcce.plugin.manifest import PluginType, load_manifest
from bcce.plugin.schema import MANIFEST_FILE

PLUGIN_TYPES: Final[tuple[str, ...]] = get_args(PluginType)
NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9-]*")
MAX_NAME_LENGTH: Final = 64
PACKAGE_PREFIX: Final = "bcce_plugin_"
INITIAL_VERSION: Final = "0.1.0"

_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "step": "The {name}:hello step: greets someone and saves the greeting as an artifact.",
    "integration": "The notification:{name} integration: appends each event it hears to a "
    "JSON-lines file.",
    "storage": "The {name} storage backend: artifacts as files under a configured directory.",
    "auth": "The {name} auth provider: the identity (user, groups) set in its configuration.",
}


def scaffold_plugin(name: str, plugin_type: str, directory: Path) -> Path:
    """Create the plugin ``name`` of ``plugin_type`` in ``directory``; return its directory.

    Raises :class:`~bcce.errors.PluginError` for a bad name or type, or when
    ``directory/name`` exists already.
    """
    _check_name(name)
    _check_type(plugin_type)
    directory = Path(directory)
    target = directory / name
    if target.exists() or target.is_symlink():
        raise PluginError(
            f"{target} exists already",
            location=str(target),
            hint="choose another name or directory, or remove the existing one",
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".{name}.new-{secrets.token_hex(4)}"
        staging.mkdir()
    except OSError as exc:
        raise PluginError(
            f"cannot create the plugin directory: {exc.strerror or exc}", location=str(directory)
        ) from None
    try:
        _write_files(staging, name, plugin_type)
        load_manifest(staging)  # a template bug shows here, not in the author's first run
        staging.rename(target)
    except OSError as exc:
        raise PluginError(
            f"cannot write the plugin: {exc.strerror or exc}",
            location=str(target),
            hint="check the directory's permissions and free space",
        ) from None
    finally:
        with contextlib.suppress(OSError):
            if staging.exists():
                shutil.rmtree(staging)
    return target


def package_name(name: str) -> str:
    """The Python package of the plugin ``name``: ``my-plugin`` -> ``bcce_plugin_my_plugin``."""
    return PACKAGE_PREFIX + name.replace("-", "_")


def build_manifest(name: str, plugin_type: str) -> dict[str, Any]:
    """The ``bcce.plugin.json`` content of a new plugin."""
    release = Version(__version__)
    manifest: dict[str, Any] = {
        "$schema": "https://bcce.dev/schemas/bcce.plugin.schema.json",
        "name": name,
        "version": INITIAL_VERSION,
        "description": _DESCRIPTIONS[plugin_type].format(name=name),
        "type": plugin_type,
        "apiVersion": "v1",
        "bcceVersion": f">={release.major}.{release.minor}",
        "entryPoint": f"{package_name(name)}.plugin:Plugin",
        "permissions": [],
    }
    if plugin_type == "step":
        step_type = f"{name}:hello"
        manifest["provides"] = {"stepTypes": [step_type]}
        manifest["configuration"] = {
            "schema": _object({"greeting": _text("the word of greeting", default="Hello")})
        }
        manifest["stepSchemas"] = {
            step_type: {**_object({"who": _text("who to greet")}), "required": ["who"]}
        }
    elif plugin_type == "integration":
        manifest["permissions"] = ["filesystem:write"]
        manifest["provides"] = {"integrationTypes": [f"notification:{name}"]}
        manifest["configuration"] = {
            "schema": _object({"directory": _absolute_path("where events.jsonl is written")}),
            "required": ["directory"],
        }
    elif plugin_type == "storage":
        manifest["permissions"] = ["filesystem:write"]
        manifest["provides"] = {"storageBackend": name}
        manifest["configuration"] = {
            "schema": _object({"root": _absolute_path("the directory holding the artifacts")}),
            "required": ["root"],
        }
    else:
        manifest["provides"] = {"authProvider": name}
        manifest["configuration"] = {
            "schema": _object(
                {
                    "user": _text("the user name"),
                    "groups": {"type": "array", "items": {"type": "string", "minLength": 1}},
                    "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
                }
            ),
            "required": ["user"],
        }
    return manifest


# -- internals -----------------------------------------------------------------------------
def _check_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        raise PluginError(
            f"invalid plugin name {name!r}",
            key="name",
            hint=f"a lowercase letter, then lowercase letters, digits and hyphens; at most "
            f"{MAX_NAME_LENGTH} characters (e.g. acme-deploy)",
        )


def _check_type(plugin_type: str) -> None:
    if plugin_type not in PLUGIN_TYPES:
        raise PluginError(
            f"unknown plugin type {plugin_type!r}",
            key="type",
            hint=f"one of: {', '.join(PLUGIN_TYPES)}",
        )


def _write_files(root: Path, name: str, plugin_type: str) -> None:
    package = package_name(name)
    manifest = build_manifest(name, plugin_type)
    values = {
        "name": name,
        "type": plugin_type,
        "package": package,
        "description": manifest["description"],
        "step_type": f"{name}:hello",
        "integration_type": f"notification:{name}",
    }
    values["usage"] = _render(plugin_type, "usage.md", values).rstrip("\n")
    files = {
        MANIFEST_FILE: json.dumps(manifest, indent=2) + "\n",
        "README.md": _render("common", "README.md", values),
        "pytest.ini": _render("common", "pytest.ini", values),
        f"{package}/__init__.py": _render("common", "package_init.py", values),
        f"{package}/plugin.py": _render(plugin_type, "plugin.py", values),
        "tests/test_plugin.py": _render(plugin_type, "test_plugin.py", values),
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _render(group: str, name: str, values: Mapping[str, str]) -> str:
    resource = importlib.resources.files("bcce.plugin").joinpath("templates", group, f"{name}.tmpl")
    return string.Template(resource.read_text(encoding="utf-8")).substitute(values)


def _object(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "additionalProperties": False}


def _text(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "description": description, **extra}


def _absolute_path(description: str) -> dict[str, Any]:
    return {"type": "string", "pattern": "^/", "description": f"{description} (absolute path)"}


__all__ = [
    "INITIAL_VERSION",
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "PLUGIN_TYPES",
    "build_manifest",
    "package_name",
    "scaffold_plugin",
]
