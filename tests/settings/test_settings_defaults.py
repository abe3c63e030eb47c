"""``config/defaults.yaml`` lists every setting with exactly the model's default."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from bcce.core.resources import data_dir
from bcce.core.strict_yaml import load_yaml_file
from bcce.settings import BcceSettings

DEFAULTS = data_dir("config") / "defaults.yaml"


def _fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every leaf field of the settings model as a path."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation, (*prefix, name))
        else:
            yield (*prefix, name)


def _default(path: tuple[str, ...]) -> Any:
    model: type[BaseModel] = BcceSettings
    for part in path[:-1]:
        annotation = model.model_fields[part].annotation
        assert isinstance(annotation, type)
        model = annotation
    return model.model_fields[path[-1]].get_default(call_default_factory=True)


def _plain(value: Any) -> Any:
    """The model default as YAML writes it."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _yaml_leaves(data: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in data.items():
        path = (*prefix, key)
        # A mapping is a section only where the model has a section; {} is a value.
        if isinstance(value, dict) and value and path not in FIELDS:
            yield from _yaml_leaves(value, path)
        else:
            yield path


FIELDS = set(_fields(BcceSettings))
YAML = load_yaml_file(DEFAULTS).data


def _yaml_value(path: tuple[str, ...]) -> Any:
    node = YAML
    for part in path:
        node = node[part]
    return node


def test_defaults_yaml_sets_every_settings_field() -> None:
    missing = FIELDS - set(_yaml_leaves(YAML))

    assert not missing, f"add to config/defaults.yaml: {sorted('.'.join(p) for p in missing)}"


def test_defaults_yaml_sets_nothing_the_model_does_not_know() -> None:
    unknown = set(_yaml_leaves(YAML)) - FIELDS

    assert not unknown, f"unknown keys in config/defaults.yaml: {sorted(unknown)}"


@pytest.mark.parametrize("path", sorted(FIELDS), ids=".".join)
def test_defaults_yaml_value_equals_the_model_default(path: tuple[str, ...]) -> None:
    expected = _plain(_default(path))

    actual = _yaml_value(path)

    assert actual == expected
    assert type(actual) is type(expected)


def test_the_model_sections_are_the_top_level_keys_of_defaults_yaml() -> None:
    assert list(YAML) == list(BcceSettings.SECTIONS)
