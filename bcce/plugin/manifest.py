"""Reading a ``bcce.plugin.json`` manifest into a :class:`Manifest`, or a precise error.

The file is parsed as strict JSON (size cap, duplicate keys and NaN/Infinity rejected), checked
against the manifest schema (:mod:`bcce.plugin.schema`), and then against what a schema cannot
say: the version is PEP 440, ``bcceVersion`` is a PEP 440 specifier set, relative paths stay
inside the plugin directory. Every error is a :class:`~bcce.errors.PluginError` whose
``location`` is the file (with line and column for syntax errors) and whose ``key`` is the path
of the bad field, e.g. ``permissions[1].scope``. No plugin code is imported here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from bcce.errors import PluginError
from bcce.plugin.permissions import Permission, parse_permissions
from bcce.plugin.schema import MANIFEST_FILE, is_valid_manifest, manifest_validator

PluginType = Literal["step", "integration", "storage", "auth"]
SourceKind = Literal["cwd", "env", "settings", "first-party", "entry-point", "path"]
JsonPath = tuple[str | int, ...]

#: Manifests are small; a bigger file is a mistake or an attack.
MAX_MANIFEST_BYTES = 256 * 1024
DEFAULT_API_VERSION = "1"

_PROVIDES_KEY: dict[str, str] = {
    "step": "stepTypes",
    "integration": "integrationTypes",
    "storage": "storageBackend",
    "auth": "authProvider",
}


@dataclass(frozen=True, slots=True)
class PluginSource:
    """Where a plugin was found: which discovery source, its directory, its distribution."""

    kind: SourceKind
    directory: Path
    distribution: str | None = None

    def __str__(self) -> str:
        label = {
            "cwd": "./plugins",
            "env": "BCCE_PLUGIN_PATH",
            "settings": "plugins.paths",
            "first-party": "first-party",
            "entry-point": "entry point",
            "path": "path",
        }[self.kind]
        suffix = f" of {self.distribution}" if self.distribution else ""
        return f"{label}{suffix}: {self.directory}"


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated plugin manifest."""

    name: str
    version: str
    type: PluginType
    api_version: str
    bcce_version: SpecifierSet
    entry_point: str
    permissions: tuple[Permission, ...]
    provides: tuple[str, ...]
    config_schema: Mapping[str, Any] | None = field(default=None, hash=False)
    step_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)
    description: str | None = None
    author: str | None = None
    source: PluginSource | None = None
    path: Path | None = None

    @property
    def release(self) -> Version:
        """The version as a comparable PEP 440 version."""
        return Version(self.version)

    @property
    def root(self) -> Path | None:
        """The plugin directory (where relative paths in the manifest start)."""
        return self.path.parent if self.path is not None else None

    @property
    def entry_kind(self) -> Literal["module", "path"]:
        """``module`` for ``package.module:attr``, ``path`` for a file in the plugin directory."""
        is_file = self.entry_point.endswith(".py") and ":" not in self.entry_point
        return "path" if is_file else "module"


def load_manifest(path: Path, *, source: PluginSource | None = None) -> Manifest:
    """Read and validate the manifest at ``path`` (a file, or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    data = _read_strict_json(path)
    _check_schema(data, path)
    return _build(data, path, source or PluginSource("path", path.parent))


def json_key(path: Sequence[str | int]) -> str:
    """A JSON path as a user writes it: ``permissions[1].scope`` ('' for the document)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# -- strict JSON ---------------------------------------------------------------------------
def _read_strict_json(path: Path, *, what: str = "manifest") -> Any:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise PluginError(
            f"cannot read the {what}: {exc.strerror or exc}", location=str(path)
        ) from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise PluginError(
            f"the {what} is larger than {MAX_MANIFEST_BYTES // 1024} KiB",
            location=str(path),
            hint="a manifest holds metadata only; keep large data in other files",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PluginError(
            f"the {what} is not UTF-8 (byte {exc.start})", location=str(path)
        ) from None
    return parse_strict_json(text, str(path))


def parse_strict_json(text: str, source: str) -> Any:
    """Parse JSON, rejecting duplicate keys and NaN/Infinity; errors name the key's path."""
    duplicates: dict[int, str] = {}

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.setdefault(id(out), key)
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise PluginError(
            f"invalid JSON: {exc.msg}", location=f"{source}:{exc.lineno}:{exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise PluginError(f"invalid JSON: {exc}", location=source) from None
    if duplicates:
        where = _find_duplicate(data, duplicates)
        raise PluginError(
            "duplicate key",
            location=source,
            key=json_key(where),
            hint="each key may appear once in an object; remove one of them",
        )
    return data


def _find_duplicate(data: Any, duplicates: Mapping[int, str]) -> JsonPath:
    stack: list[tuple[Any, JsonPath]] = [(data, ())]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            if id(node) in duplicates:
                return (*where, duplicates[id(node)])
            stack.extend((value, (*where, key)) for key, value in node.items())
        elif isinstance(node, list):
            stack.extend((value, (*where, index)) for index, value in enumerate(node))
    return ()  # pragma: no cover - every recorded id belongs to a dict in the tree


# -- schema --------------------------------------------------------------------------------
def _check_schema(data: Any, path: Path) -> None:
    if is_valid_manifest(data):
        return
    errors = list(manifest_validator().iter_errors(data))
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped, unused-ignore]

    error = best_match(errors)
    where: JsonPath = tuple(error.absolute_path)
    message = str(error.message)
    hint: str | None = None
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in (error.instance or {})]
        if missing:
            where = (*where, missing[0])
            message = "required field is missing"
    elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(key for key in error.instance if key not in allowed)
        if extra:
            where = (*where, extra[0])
            message = "unknown field"
            hint = f"allowed fields here: {', '.join(sorted(allowed))}"
    elif error.validator == "enum":
        hint = f"one of: {', '.join(map(str, error.validator_value))}"
    elif error.validator == "type":
        message = f"expected {error.validator_value}, got {type(error.instance).__name__}"
    elif error.validator == "const" and tuple(error.absolute_path)[:1] == ("provides",):
        kind = data.get("type") if isinstance(data, dict) else None
        message = f"a {kind} plugin provides only {_PROVIDES_KEY.get(str(kind), '?')}"
    raise PluginError(
        message,
        location=str(path),
        key=json_key(where) or None,
        hint=hint or f"see the manifest schema ({MANIFEST_FILE} reference in docs/plugins.md)",
    )


# -- checks beyond the schema --------------------------------------------------------------
def _build(data: dict[str, Any], path: Path, source: PluginSource) -> Manifest:
    location = str(path)
    root = path.parent
    try:
        Version(data["version"])
    except InvalidVersion:
        raise PluginError(
            "not a PEP 440 version",
            location=location,
            key="version",
            hint="use MAJOR.MINOR.PATCH, with a pre-release such as -rc.1 if needed",
        ) from None
    try:
        specifier = SpecifierSet(data.get("bcceVersion", ""))
    except InvalidSpecifier:
        raise PluginError(
            "not a PEP 440 version specifier",
            location=location,
            key="bcceVersion",
            hint="e.g. '>=0.1' or '>=0.1,<2'",
        ) from None
    entry = str(data["entryPoint"])
    if ":" not in entry:
        _inside(root, entry, location, "entryPoint", must_exist=True)
    kind: PluginType = data["type"]
    return Manifest(
        name=data["name"],
        version=data["version"],
        type=kind,
        api_version=str(data.get("apiVersion", DEFAULT_API_VERSION)).removeprefix("v"),
        bcce_version=specifier,
        entry_point=entry,
        permissions=_permissions(data.get("permissions", []), location),
        provides=_provides(data),
        config_schema=_config_schema(data.get("configuration"), root, location),
        step_schemas=_step_schemas(data, root, location),
        defaults=_defaults(data, location),
        description=data.get("description"),
        author=data.get("author"),
        source=source,
        path=path,
    )


def _defaults(data: Mapping[str, Any], location: str) -> dict[str, Any]:
    """A plugin's settings defaults: its own configuration, ``plugins.config.<name>``, only.

    Anything wider would let a plugin grant itself permissions or loosen policy just by being
    discovered (even if it is then refused for its signature).
    """
    defaults: dict[str, Any] = data.get("defaults", {})
    name = data["name"]
    for section, values in defaults.items():
        bad = _default_outside_own_config(section, values, name)
        if bad is not None:
            raise PluginError(
                "a plugin's defaults may set only its own configuration",
                location=location,
                key=bad,
                hint=f'write {{"plugins": {{"config": {{"{name}": {{...}}}}}}}}; other settings '
                "are the administrator's",
            )
    return defaults


def _default_outside_own_config(section: str, values: Mapping[str, Any], name: str) -> str | None:
    """The first key of a defaults section that is not ``plugins.config.<name>``, if any."""
    if section != "plugins":
        return f"defaults.{section}"
    extra = sorted(set(values) - {"config"})
    if extra:
        return f"defaults.plugins.{extra[0]}"
    config = values.get("config", {})
    others = sorted(set(config) - {name})
    if others:
        return f"defaults.plugins.config.{others[0]}"
    if not isinstance(config.get(name, {}), Mapping):
        return f"defaults.plugins.config.{name}"
    return None


def _permissions(entries: list[Any], location: str) -> tuple[Permission, ...]:
    try:
        return tuple(parse_permissions(entries))
    except PluginError as exc:
        raise PluginError(exc.message, location=location, key=exc.key, hint=exc.hint) from None


def _provides(data: Mapping[str, Any]) -> tuple[str, ...]:
    declared = data.get("provides", {}).get(_PROVIDES_KEY[data["type"]])
    if declared is None:  # a storage backend or auth provider is named after its plugin
        return (data["name"],)
    return tuple(declared) if isinstance(declared, list) else (declared,)


def _config_schema(
    configuration: Mapping[str, Any] | None, root: Path, location: str
) -> dict[str, Any] | None:
    if not configuration:
        return None
    declared = configuration.get("schema")
    key = "configuration.schema"
    schema: dict[str, Any] = (
        {"type": "object"} if declared is None else _schema(declared, root, location, key)
    )
    required = configuration.get("required")
    if required:
        schema["required"] = sorted({*schema.get("required", []), *required})
    return schema


def _step_schemas(
    data: Mapping[str, Any], root: Path, location: str
) -> dict[str, Mapping[str, Any]]:
    declared: Mapping[str, Any] = data.get("stepSchemas", {})
    provided = set(_provides(data)) if data["type"] == "step" else set()
    schemas: dict[str, Mapping[str, Any]] = {}
    for step_type, value in declared.items():
        key = f"stepSchemas.{step_type}"
        if step_type not in provided:
            raise PluginError(
                f"a schema for step type {step_type!r}, which the plugin does not provide",
                location=location,
                key=key,
                hint="list the type in provides.stepTypes or remove its schema",
            )
        schemas[step_type] = _schema(value, root, location, key)
    return schemas


def check_schemas(manifest: Manifest) -> None:
    """Check that the manifest's configuration and step schemas are valid JSON Schemas.

    Not part of :func:`load_manifest`: it needs jsonschema (some 100 ms to import), so it runs
    where a schema is first used, and in ``bcce plugin validate``.
    """
    location = str(manifest.path)
    if manifest.config_schema is not None:
        check_json_schema(manifest.config_schema, location, "configuration.schema")
    for step_type, schema in manifest.step_schemas.items():
        check_json_schema(schema, location, f"stepSchemas.{step_type}")


def _schema(
    declared: str | Mapping[str, Any], root: Path, location: str, key: str
) -> dict[str, Any]:
    """A schema written inline, or read from a JSON file inside the plugin."""
    if not isinstance(declared, str):
        return dict(declared)
    file = _inside(root, declared, location, key, must_exist=True)
    loaded = _read_strict_json(file, what="schema")
    if not isinstance(loaded, dict):
        raise PluginError("a schema must be a JSON object", location=str(file), key=key)
    return loaded


def check_json_schema(schema: Mapping[str, Any], location: str | None, key: str) -> None:
    """Raise a located PluginError unless ``schema`` is a valid draft 2020-12 JSON Schema."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]
    from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped, unused-ignore]

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise PluginError(
            f"not a valid JSON Schema: {exc.message}", location=location, key=key
        ) from None


def _inside(root: Path, relative: str, location: str, key: str, *, must_exist: bool) -> Path:
    candidate = Path(relative)
    resolved_root = root.resolve()
    resolved = (resolved_root / candidate).resolve()
    if candidate.is_absolute() or not resolved.is_relative_to(resolved_root):
        raise PluginError(
            "the path leaves the plugin directory",
            location=location,
            key=key,
            hint="use a path relative to the directory holding bcce.plugin.json",
        )
    if must_exist and not resolved.is_file():
        raise PluginError(f"no such file in the plugin: {relative}", location=location, key=key)
    return resolved


__all__ = [
    "DEFAULT_API_VERSION",
    "MAX_MANIFEST_BYTES",
    "Manifest",
    "PluginSource",
    "PluginType",
    "SourceKind",
    "check_json_schema",
    "check_schemas",
    "json_key",
    "load_manifest",
    "parse_strict_json",
]
