"""The effective configuration as data for display: secrets masked, each value with its origin."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from bcce.core.strict_yaml import flatten
from bcce.settings.model import BcceSettings, is_secret_option
from bcce.settings.provenance import Origin, PathKey, dotted

MASK = "********"


@dataclass(frozen=True)
class SourcedValue:
    key: str
    value: Any
    origin: Origin | None


def _masked(path: PathKey, value: Any) -> Any:
    """``value`` with secrets masked, looking inside lists (``plugins.integrations``) too."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if isinstance(value, list):
        return [_masked((*path, index), item) for index, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _masked((*path, key), item) for key, item in value.items()}
    return MASK if value and is_secret_option(path) else value


def effective_config(settings: BcceSettings) -> dict[str, Any]:
    """Nested, JSON-ready effective settings; secret fields and secret-origin values masked."""
    data = settings.model_dump(mode="python")
    out: dict[str, Any] = {}
    for path, value in flatten(data):
        shown = MASK if settings.provenance.is_secret(path) else _masked(path, value)
        _put(out, path, _jsonable(shown))
    return out


def sourced_values(settings: BcceSettings) -> list[SourcedValue]:
    """Every leaf setting with its origin, in key order."""
    effective = effective_config(settings)
    return [
        SourcedValue(dotted(path), value, settings.provenance.origin_of(path))
        for path, value in flatten(effective)
    ]


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _put(target: dict[str, Any], path: PathKey, value: Any) -> None:
    node = target
    for part in path[:-1]:
        node = node.setdefault(str(part), {})
    node[str(path[-1])] = value
