"""The configuration layers and how they become one validated :class:`BcceSettings`.

Highest first: explicit overrides > env (``BCCE_``, ``__`` nesting) > SSM Parameter Store (when
``ssm.path`` is set) > YAML files (``--config``, ``./bcce.yaml``, the user config file,
``config/environments/<env>.yaml``) > plugin defaults > ``config/defaults.yaml``.

Every layer is loaded up front into a :class:`Layer` (data plus the origin of each value), because
the SSM layer is configured by the layers around it. pydantic-settings then merges the layers,
through one thin source per layer, and validates the result. Validation errors are translated
into a :class:`~bcce.errors.ConfigError` that names the key, its origin and what was expected.
"""

from __future__ import annotations

import contextvars
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from bcce.core.resources import data_dir
from bcce.core.strict_yaml import flatten, load_yaml_file
from bcce.errors import ConfigError
from bcce.settings.provenance import LayerKind, Origin, PathKey, Provenance, dotted

if TYPE_CHECKING:
    from bcce.settings.model import BcceSettings

ENV_PREFIX = "BCCE_"
ENV_NESTING = "__"


def is_settings_variable(name: str) -> bool:
    """Whether environment variable ``name`` sets a key: ``BCCE_<SECTION>__KEY``.

    A ``BCCE_`` variable whose name starts with a settings section (``BCCE_STORAGE__ROOT``, or
    the typo ``BCCE_STORAGE_ROOT``, which is then reported) is a setting. Others
    (``BCCE_ENV``, ``BCCE_PLUGIN_PATH``, ``BCCE_ID_TOKEN``, a plugin's ``BCCE_LDAP_PASSWORD``)
    belong to whoever reads them.
    """
    from bcce.settings.model import BcceSettings

    if not name.startswith(ENV_PREFIX):
        return False
    rest = name[len(ENV_PREFIX) :].lower()
    return ENV_NESTING.lower() in rest or any(
        rest == section or rest.startswith(f"{section}_") for section in BcceSettings.SECTIONS
    )


@dataclass
class Layer:
    """One source of settings: nested data and the origin of each path in it."""

    kind: LayerKind
    name: str
    data: dict[str, Any]
    origins: dict[PathKey, Origin] = field(default_factory=dict)

    def describe(self) -> str:
        count = sum(1 for _ in flatten(self.data))
        return f"{self.kind}: {self.name} ({count} value{'s' if count != 1 else ''})"

    def leaf_paths(self) -> set[PathKey]:
        return {path for path, _ in flatten(self.data)}


@dataclass(frozen=True)
class PluginDefaults:
    """Configuration defaults contributed by an enabled plugin's manifest."""

    plugin: str
    values: Mapping[str, Any]


@dataclass
class LayerOptions:
    """What to load. ``None`` means: take it from the process (environment, cwd, home)."""

    config_files: Sequence[Path] = ()
    env_name: str | None = None
    environ: Mapping[str, str] | None = None
    cwd: Path | None = None
    user_config_file: Path | None = None
    plugin_defaults: Sequence[PluginDefaults] = ()
    override_label: str = "explicit override"


def user_config_file(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/bcce/config.yaml``, defaulting to ``~/.config/bcce/config.yaml``."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "bcce" / "config.yaml"


class LayerStack:
    """Loads every layer below the explicit overrides and assembles the provenance."""

    def __init__(self, options: LayerOptions | None = None) -> None:
        self.options = options or LayerOptions()
        self.environ: Mapping[str, str] = (
            self.options.environ if self.options.environ is not None else os.environ
        )
        self.layers: list[Layer] = []  # highest first, overrides excluded
        self._loaded = False

    # -- loading -------------------------------------------------------------------------
    def load(self, overrides: Mapping[str, Any]) -> None:
        if self._loaded:
            return
        below_ssm = [*self._file_layers(), *self._plugin_layers(), self._defaults_layer()]
        env = self._env_layer()
        ssm = self._ssm_layer([_override_layer(overrides, self.options), env, *below_ssm])
        self.layers = [env, *([ssm] if ssm else []), *below_ssm]
        self._loaded = True

    def _defaults_layer(self) -> Layer:
        return _yaml_layer("default", data_dir("config") / "defaults.yaml", required=True)

    def _plugin_layers(self) -> list[Layer]:
        layers = []
        for contribution in self.options.plugin_defaults:
            data = _plain(contribution.values)
            origins = {
                path: Origin("plugin", f"plugin {contribution.plugin}") for path in _all_paths(data)
            }
            layers.append(Layer("plugin", contribution.plugin, data, origins))
        return layers

    def environment_name(self) -> str | None:
        return self.options.env_name or self.environ.get("BCCE_ENV") or None

    def config_files(self) -> list[tuple[Path, bool]]:
        """YAML files to read, highest precedence first, each with whether it must exist."""
        cwd = self.options.cwd or Path.cwd()
        files: list[tuple[Path, bool]] = [(f, True) for f in reversed(self.options.config_files)]
        files.append((cwd / "bcce.yaml", False))
        files.append((self.options.user_config_file or user_config_file(self.environ), False))
        env_name = self.environment_name()
        if env_name:
            files.append((self._environment_file(env_name, cwd), True))
        return files

    def _environment_file(self, name: str, cwd: Path) -> Path:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(
                f"invalid environment name {name!r}",
                key="BCCE_ENV",
                hint="use letters, digits, '-' and '_' only, e.g. dev or prod",
            )
        candidates = [cwd / "config" / "environments", data_dir("config") / "environments"]
        for directory in candidates:
            path = directory / f"{name}.yaml"
            if path.is_file():
                return path
        known = sorted({p.stem for d in candidates if d.is_dir() for p in d.glob("*.yaml")})
        raise ConfigError(
            f"no configuration for environment {name!r}",
            key="BCCE_ENV",
            hint=f"known environments: {', '.join(known) or 'none'}; "
            f"or create config/environments/{name}.yaml",
        )

    def _file_layers(self) -> list[Layer]:
        layers = []
        for path, required in self.config_files():
            if not required and not path.is_file():
                continue
            layers.append(_yaml_layer("file", path, required=required))
        return layers

    def _env_layer(self) -> Layer:
        data: dict[str, Any] = {}
        origins: dict[PathKey, Origin] = {}
        for name in sorted(self.environ):
            if not is_settings_variable(name):
                continue
            parts = [p.lower() for p in name[len(ENV_PREFIX) :].split(ENV_NESTING)]
            if not all(parts):
                raise ConfigError(
                    "empty key segment in environment variable",
                    key=name,
                    hint="use BCCE_SECTION__KEY, e.g. BCCE_CORE__LOG_LEVEL=DEBUG",
                )
            path: PathKey = tuple(parts)
            value = decode_value(self.environ[name])
            _set_path(data, path, value, source=name)
            for depth in range(1, len(path) + 1):
                origins.setdefault(path[:depth], Origin("env", name))
            origins[path] = Origin("env", name)
            if isinstance(value, Mapping):  # a JSON object: each key inside came from here too
                for inner in _all_paths(value, path):
                    origins[inner] = Origin("env", name)
        return Layer("env", "environment", data, origins)

    def _ssm_layer(self, layers: Sequence[Layer]) -> Layer | None:
        from bcce.settings.model import AwsSettings, SsmSettings

        merged: dict[str, Any] = {}
        for layer in reversed(layers):
            merged = _deep_merge(merged, layer.data)
        ssm = _validate_section(SsmSettings, "ssm", merged.get("ssm", {}), layers)
        if ssm.path is None:
            return None
        aws = _validate_section(AwsSettings, "aws", merged.get("aws", {}), layers)
        from bcce.settings.ssm import read_parameters

        where = _locate(layers, ("ssm", "path"))
        data: dict[str, Any] = {}
        origins: dict[PathKey, Origin] = {}
        for parameter in read_parameters(ssm, aws, where=where):
            _set_path(data, parameter.path, parameter.value, source=parameter.name)
            origin = Origin("ssm", parameter.name, secret=parameter.secure)
            for depth in range(1, len(parameter.path)):
                origins.setdefault(parameter.path[:depth], Origin("ssm", parameter.name))
            origins[parameter.path] = origin
        return Layer("ssm", ssm.path, data, origins)

    # -- assembling ----------------------------------------------------------------------
    def all_layers(self, overrides: Mapping[str, Any]) -> list[Layer]:
        return [_override_layer(overrides, self.options), *self.layers]

    def provenance(self, settings: BcceSettings, overrides: Mapping[str, Any]) -> Provenance:
        layers = [(layer, layer.leaf_paths()) for layer in self.all_layers(overrides)]
        origins: dict[PathKey, Origin] = {}
        for path, _ in flatten(settings.model_dump(mode="python")):
            for layer, leaves in layers:
                if path in leaves:
                    origins[path] = layer.origins.get(path) or Origin(layer.kind, layer.name)
                    break
            else:
                origins[path] = Origin("default", "built-in default")
        return Provenance(origins, sources=[layer.describe() for layer in self.layers])

    def translate(self, error: ValidationError, overrides: Mapping[str, Any]) -> ConfigError:
        return _translate(error, self.all_layers(overrides))


class LayerSource(PydanticBaseSettingsSource):
    """Hands one pre-loaded layer to pydantic-settings."""

    def __init__(self, settings_cls: type[BaseSettings], layer: Layer) -> None:
        super().__init__(settings_cls)
        self.layer = layer
        self.__name__ = f"{layer.kind}:{layer.name}"

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.layer.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.layer.data


_current: contextvars.ContextVar[LayerStack | None] = contextvars.ContextVar(
    "bcce_settings_layers", default=None
)


def current_sources(settings_cls: type[BaseSettings]) -> tuple[PydanticBaseSettingsSource, ...]:
    stack = _current.get()
    if stack is None:  # pragma: no cover - build_settings always sets it
        raise RuntimeError("settings sources requested outside of BcceSettings construction")
    return tuple(LayerSource(settings_cls, layer) for layer in stack.layers)


def build_settings(
    instance: BcceSettings, values: dict[str, Any], init: Callable[..., None]
) -> None:
    """Load the layers (once), let pydantic-settings merge and validate, record provenance."""
    stack = _current.get()
    token = None
    if stack is None:
        stack = LayerStack()
        token = _current.set(stack)
    try:
        stack.load(values)
        try:
            init(**values)
        except ValidationError as exc:
            raise stack.translate(exc, values) from None
        instance._provenance = stack.provenance(instance, values)
    finally:
        if token is not None:
            _current.reset(token)


def load_settings(
    options: LayerOptions | None = None, overrides: Mapping[str, Any] | None = None
) -> BcceSettings:
    """Load every layer as ``options`` says, with ``overrides`` on top."""
    from bcce.settings.model import BcceSettings

    stack = LayerStack(options)
    token = _current.set(stack)
    try:
        return BcceSettings(**_plain(overrides or {}))
    finally:
        _current.reset(token)


def with_overrides(settings: BcceSettings, overrides: Mapping[str, Any]) -> BcceSettings:
    """``settings`` with ``overrides`` as a new highest layer (validated, provenance kept)."""
    from bcce.settings.model import BcceSettings

    data = _plain(overrides)
    try:
        updated = BcceSettings.model_validate(_deep_merge(settings.model_dump(), data))
    except ValidationError as exc:
        raise _translate(exc, [Layer("override", "overrides", data)]) from None
    origins = dict(settings.provenance.origins)
    for path in _all_paths(data):
        if path in origins or not isinstance(_get(data, path), Mapping):
            origins[path] = Origin("override", "explicit override")
    updated._provenance = Provenance(origins, sources=settings.provenance.sources)
    return updated


def _get(data: Mapping[str, Any], path: PathKey) -> Any:
    for part in path:
        data = data[str(part)]
    return data


# -- helpers -------------------------------------------------------------------------------
def _override_layer(overrides: Mapping[str, Any], options: LayerOptions) -> Layer:
    data = _plain(overrides)
    origins = {path: Origin("override", options.override_label) for path in _all_paths(data)}
    return Layer("override", options.override_label, data, origins)


def _yaml_layer(kind: LayerKind, path: Path, *, required: bool) -> Layer:
    if not path.is_file():
        raise ConfigError(
            "configuration file not found",
            location=str(path),
            hint="check the path given to --config" if required else None,
        )
    document = load_yaml_file(path)
    if document.data is None:
        return Layer(kind, str(path), {})
    if not isinstance(document.data, dict):
        raise ConfigError(
            "the top level of a configuration file must be a mapping of sections",
            location=str(document.mark_of(())),
            hint="start with a section name such as 'storage:' or 'agent:'",
        )
    origins = {p: Origin(kind, str(mark)) for p, mark in document.marks.items() if p}
    return Layer(kind, str(path), document.data, origins)


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides may hold pydantic models; turn them into nested dicts."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, BaseModel):
            out[key] = value.model_dump(exclude_unset=True)
        elif isinstance(value, Mapping):
            out[key] = _plain(value)
        else:
            out[key] = value
    return out


def _all_paths(data: Mapping[str, Any], prefix: PathKey = ()) -> Iterator[PathKey]:
    for key, value in data.items():
        path = (*prefix, key)
        yield path
        if isinstance(value, Mapping):
            yield from _all_paths(value, path)


def decode_value(raw: str) -> Any:
    """Environment and parameter values are text; lists and mappings are written as JSON.

    ``null`` means "no value" (None), so a variable can clear a setting a lower layer made.
    """
    stripped = raw.strip()
    if stripped == "null":
        return None
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def _set_path(data: dict[str, Any], path: PathKey, value: Any, *, source: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(str(part), {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"{dotted(path[: path.index(part) + 1])} is set both as a value and as a section",
                key=source,
                hint="remove one of the two",
            )
        node = child
    node[str(path[-1])] = value


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _locate(layers: Sequence[Layer], path: PathKey) -> Origin | None:
    """The origin of ``path`` in the highest layer that sets it (or an ancestor of it)."""
    for layer in layers:
        probe = path
        while probe:
            if probe in layer.origins:
                return layer.origins[probe]
            probe = probe[:-1]
    for layer in layers:
        for candidate, origin in layer.origins.items():
            if candidate[: len(path)] == path:
                return origin
    return None


def _validate_section(model: type[BaseModel], name: str, data: Any, layers: Sequence[Layer]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, layers, prefix=(name,)) from None


def _translate(
    error: ValidationError, layers: Sequence[Layer], prefix: PathKey = ()
) -> ConfigError:
    problems = []
    first: tuple[str, str | None, str | None] | None = None
    for item in error.errors(include_url=False):
        path: PathKey = (*prefix, *item["loc"])
        key = dotted(path)
        origin = _locate(layers, path)
        where = origin.location if origin is not None else None
        hint: str | None
        if item["type"] == "extra_forbidden":
            message = "unknown key"
            hint = _allowed_keys_hint(path)
        else:
            shown = "<hidden>" if origin is not None and origin.secret else repr(item["input"])
            message = f"{item['msg']} (got {shown})"
            hint = _field_hint(path)
        problems.append(f"{where + ': ' if where else ''}{key}: {message}")
        if first is None:
            first = (message, where, hint)
    assert first is not None
    message, where, first_hint = first
    if len(problems) > 1:
        message += "\n  also:\n    " + "\n    ".join(problems[1:])
    first_key = dotted((*prefix, *error.errors()[0]["loc"]))
    return ConfigError(message, key=first_key, location=where, hint=first_hint)


def _model_at(path: PathKey) -> type[BaseModel] | None:
    from bcce.settings.model import BcceSettings

    model: type[BaseModel] | None = BcceSettings
    for part in path:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return model
        annotation = model.model_fields[part].annotation
        model = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    return model


def _allowed_keys_hint(path: PathKey) -> str:
    model = _model_at(path[:-1])
    if model is None:
        return "remove the key"
    return f"allowed keys here: {', '.join(sorted(model.model_fields))}"


def _field_hint(path: PathKey) -> str | None:
    model = _model_at(path[:-1])
    if model is None or not path or path[-1] not in model.model_fields:
        return None
    return model.model_fields[str(path[-1])].description
