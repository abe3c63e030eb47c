"""The plugin manifest JSON Schema (``bcce.plugin.schema.json``, draft 2020-12) as a resource.

jsonschema takes some 100 ms to import, so it is imported on first use, not with this module.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # jsonschema ships no type information; `unused-ignore` keeps this clean with stubs.
    from jsonschema.protocols import Validator  # type: ignore[import-untyped, unused-ignore]

SCHEMA_RESOURCE = "bcce.plugin.schema.json"
MANIFEST_FILE = "bcce.plugin.json"


@functools.cache
def _schema() -> dict[str, Any]:
    text = importlib.resources.files(__name__).joinpath(SCHEMA_RESOURCE).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def load_schema() -> dict[str, Any]:
    """A fresh copy of the manifest schema (callers may change it)."""
    return copy.deepcopy(_schema())


@functools.cache
def manifest_validator() -> Validator:
    """A draft 2020-12 validator for manifests, built once."""
    from jsonschema import Draft202012Validator

    schema = _schema()
    Draft202012Validator.check_schema(schema)
    validator: Validator = Draft202012Validator(schema)
    return validator


__all__ = ["MANIFEST_FILE", "SCHEMA_RESOURCE", "load_schema", "manifest_validator"]
