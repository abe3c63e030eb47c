"""The plugin manifest JSON Schema (``bcce.plugin.schema.json``, draft 2020-12) as a resource.

Validity is decided by a predicate compiled from the schema (:mod:`bcce.workflow.schema.compiler`),
some 50 times faster than jsonschema; jsonschema (100 ms to import) explains a rejected manifest.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bcce.workflow.schema.compiler import UnsupportedSchema, compile_predicate

if TYPE_CHECKING:
    # jsonschema ships no type information; `unused-ignore` keeps this clean with stubs.
    from jsonschema.protocols import Validator  # type: ignore[import-untyped, unused-ignore]

SCHEMA_RESOURCE = "bcce.plugin.schema.json"
MANIFEST_FILE = "bcce.plugin.json"
SIGNATURE_FILE = "bcce.plugin.sig"


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
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

    schema = _schema()
    Draft202012Validator.check_schema(schema)
    validator: Validator = Draft202012Validator(schema)
    return validator


@functools.cache
def _predicate() -> Callable[[object], bool]:
    try:
        return compile_predicate(_schema(), manifest_validator)
    except UnsupportedSchema:  # a keyword the compiler lacks: stay correct at jsonschema's speed
        full = manifest_validator()
        return lambda document: bool(full.is_valid(document))


def is_valid_manifest(document: object) -> bool:
    """Whether ``document`` satisfies the manifest schema (``manifest_validator().is_valid``)."""
    return _predicate()(document)


__all__ = [
    "MANIFEST_FILE",
    "SCHEMA_RESOURCE",
    "SIGNATURE_FILE",
    "is_valid_manifest",
    "load_schema",
    "manifest_validator",
]
