"""The workflow JSON Schema (format version 1) and validation against it in a user's words.

The schema is the package resource ``workflow-v1.json``, a superset of the original BCCE v1
schema. :func:`schema_errors` turns jsonschema's errors into :class:`SchemaIssue` values: a path
into the document (which the loader maps to ``file:line:col``), a message and an optional hint,
the most relevant issue first and the rest in document order.

Collecting and explaining errors is slow (about 0.7 ms a step, after some 100 ms to import
jsonschema and check the schema), so validity is decided first by :func:`is_valid`, a predicate
compiled from the same schema (:mod:`.compiler`); jsonschema is imported and run only for a
document that predicate rejects.
"""

from __future__ import annotations

import copy
import difflib
import functools
import importlib.resources
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bcce.core.strict_yaml import dotted
from bcce.workflow.schema.compiler import UnsupportedSchema, compile_predicate

if TYPE_CHECKING:
    # jsonschema ships no type information; `unused-ignore` keeps this clean with stubs.
    from jsonschema.protocols import Validator  # type: ignore[import-untyped, unused-ignore]

SCHEMA_RESOURCE = "workflow-v1.json"

PathKey = tuple[str | int, ...]

_FORBIDDEN_MARKER = {"$ref": "#/$defs/not_for_this_type"}
_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


@dataclass(frozen=True, slots=True)
class SchemaIssue:
    """One way a document breaks the schema: where, what, and what to do about it."""

    path: PathKey
    message: str
    hint: str | None = None

    @property
    def key(self) -> str:
        """The path as a user writes it, e.g. ``steps[2].policy.max_files`` ('' for the root)."""
        return dotted(self.path)


@functools.cache
def _schema() -> dict[str, Any]:
    resource = importlib.resources.files(__name__).joinpath(SCHEMA_RESOURCE)
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def load_schema() -> dict[str, Any]:
    """The workflow v1 schema. Read once; each call returns a copy the caller may change."""
    return copy.deepcopy(_schema())


@functools.cache
def validator() -> Validator:
    """A Draft 2020-12 validator for the schema, with format checking on (built once)."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

    schema = _schema()
    Draft202012Validator.check_schema(schema)
    checker: Validator = Draft202012Validator(
        schema, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return checker


@functools.cache
def _predicate() -> Callable[[object], bool]:
    try:
        return compile_predicate(_schema(), validator)
    except UnsupportedSchema:
        # A keyword the compiler lacks: stay correct, at jsonschema's speed.
        full = validator()
        return lambda document: bool(full.is_valid(document))


def is_valid(document: object) -> bool:
    """Whether ``document`` satisfies the schema: ``validator().is_valid``'s answer, much faster."""
    return _predicate()(document)


def schema_errors(document: object) -> list[SchemaIssue]:
    """Every way ``document`` breaks the schema, best match first, then in document order.

    An empty list means the document is valid. Uniqueness of step ids and references between
    steps are not checked here (JSON Schema cannot express them).
    """
    if is_valid(document):
        return []
    instance: Any = document  # any parsed YAML/JSON value; the validator reports what is wrong
    errors = list(validator().iter_errors(instance))
    if not errors:
        return []
    best = max(errors, key=_relevance())
    order = _document_order(document)
    first = _describe(best, document)
    others = [issue for e in errors if e is not best for issue in _describe(e, document)]
    others.sort(key=lambda issue: _position(order, issue.path))
    seen: set[tuple[PathKey, str]] = set()
    issues = []
    for issue in [*first, *others]:
        if (issue.path, issue.message) not in seen:
            seen.add((issue.path, issue.message))
            issues.append(issue)
    return issues


@functools.cache
def _relevance() -> Callable[[Any], Any]:
    from jsonschema.exceptions import by_relevance  # type: ignore[import-untyped, unused-ignore]

    # At one place in a document an unknown key ("comand") explains more than what it left out.
    key: Callable[[Any], Any] = by_relevance(
        strong=frozenset({"additionalProperties", "unevaluatedProperties"})
    )
    return key


@functools.cache
def _step_scheme() -> tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple[str, ...]]]:
    """Step keys, built-in step types, and for each scoped key the built-in types that take it.

    Read from the schema's key-scope rules, so this module and the schema cannot disagree.
    """
    defs = _schema()["$defs"]
    keys = tuple(defs["step"]["properties"])
    builtins = tuple(defs["builtin_step_type"]["enum"])
    scope: dict[str, tuple[str, ...]] = {}
    for rule in defs["step"]["allOf"]:
        props = rule.get("then", {}).get("properties")
        if props and all(value == _FORBIDDEN_MARKER for value in props.values()):
            excluded = set(rule["if"]["properties"]["type"]["enum"])
            for key in props:
                scope[key] = tuple(t for t in builtins if t not in excluded)
    return keys, builtins, scope


def _step_keys_for(step_type: object) -> tuple[str, ...]:
    keys, builtins, scope = _step_scheme()
    if step_type not in builtins:
        return keys
    return tuple(k for k in keys if step_type in scope.get(k, builtins))


def _describe(error: Any, document: object) -> list[SchemaIssue]:
    """Translate one jsonschema error into issues a user understands."""
    path: PathKey = tuple(error.absolute_path)
    keyword = error.validator
    value = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    defs = _schema()["$defs"]
    about = schema.get("description")

    if keyword in ("additionalProperties", "unevaluatedProperties") and isinstance(value, dict):
        if keyword == "unevaluatedProperties":
            allowed = _step_keys_for(value.get("type"))
            known = set(_step_scheme()[0])
        else:
            allowed = tuple(schema.get("properties", {}))
            known = set(allowed)
        return [
            SchemaIssue(
                (*path, key),
                f"unknown key {key!r} (allowed: {', '.join(allowed)})",
                _did_you_mean(str(key), allowed),
            )
            for key in value
            if key not in known
        ]

    if keyword == "not" and schema == defs["not_for_this_type"] and path:
        key = path[-1]
        step_type = _lookup(document, path[:-1]).get("type")
        _, _, scope = _step_scheme()
        return [
            SchemaIssue(
                path,
                f"key {key!r} is not allowed on {_a_step(step_type)}",
                f"{key!r} belongs to {_join(scope.get(str(key), ()), 'and')} steps",
            )
        ]

    if keyword == "not" and isinstance(value, dict):
        both = schema.get("not", {}).get("required", [])
        if both:
            return [SchemaIssue(path, f"use either {_join(both, 'or', quote=True)}, not both")]

    if keyword == "required" and isinstance(value, dict):
        missing = [p for p in error.validator_value if p not in value]
        in_rule = len(error.schema_path) >= 2 and error.schema_path[-2] == "then"
        if in_rule:
            what = f"{_a_step(value.get('type'))} needs"
        elif schema == defs["step"]:
            what = "every step needs"
        else:
            what = "missing required key"
        props = defs["step"]["properties"] if in_rule else schema.get("properties", {})
        return [
            SchemaIssue(path, f"{what} {p!r}", props.get(p, {}).get("description")) for p in missing
        ]

    if keyword in ("anyOf", "oneOf"):
        return _describe_alternatives(error, document, path, value, schema)

    if keyword == "pattern" and "propertyNames" in error.schema_path:
        path = (*path, str(value))
    elif keyword == "type" and not path:
        about = "a workflow is a mapping with at least the keys version, workflow and steps"
    return [SchemaIssue(path, _simple_message(error, value, schema), about)]


def _describe_alternatives(
    error: Any, document: object, path: PathKey, value: object, schema: dict[str, Any]
) -> list[SchemaIssue]:
    defs = _schema()["$defs"]
    if schema == defs["step_type"]:
        builtins = _step_scheme()[1]
        plugin_pattern = defs["plugin_step_type"]["pattern"]
        hint = (
            f"built-in types: {', '.join(builtins)}; plugin types are written namespace:name"
            f" ({plugin_pattern}), e.g. acme:lint"
        )
        if not isinstance(value, str):
            return [SchemaIssue(path, f"the step type must be a string (got {_show(value)})", hint)]
        guess = _did_you_mean(value, builtins)
        return [
            SchemaIssue(path, f"unknown step type {value!r}", f"{guess} {hint}" if guess else hint)
        ]

    options = schema.get(error.validator, [])
    if options and all(set(o) == {"required"} and len(o["required"]) == 1 for o in options):
        names = [o["required"][0] for o in options]
        step_type = value.get("type") if isinstance(value, dict) else None
        return [SchemaIssue(path, f"{_a_step(step_type)} needs {_join(names, 'or', quote=True)}")]

    context = list(error.context or ())
    if context and all(
        c.validator == "type" and c.absolute_path == error.absolute_path for c in context
    ):
        expected: list[str] = []
        for c in context:
            expected.extend(_as_list(c.validator_value))
        return [
            SchemaIssue(
                path,
                f"must be {_type_words(expected)} (got {_show(value)})",
                schema.get("description"),
            )
        ]

    from jsonschema.exceptions import best_match  # type: ignore[import-untyped, unused-ignore]

    leaf = best_match([error], key=_relevance())
    if leaf is not error:
        return _describe(leaf, document)
    return [SchemaIssue(path, f"{_show(value)} is not valid here", schema.get("description"))]


def _simple_message(error: Any, value: object, schema: Mapping[str, Any]) -> str:
    keyword = error.validator
    limit = error.validator_value
    got = _show(value)
    if keyword == "type":
        return f"must be {_type_words(_as_list(limit))} (got {got})"
    if keyword == "enum":
        return f"must be one of {', '.join(str(v) for v in limit)} (got {got})"
    if keyword == "const":
        return f"must be {_show(limit)} (got {got})"
    if keyword == "pattern":
        if "propertyNames" in error.schema_path:
            return f"name {value!r} does not match {limit}"
        return f"{got} does not match {limit}"
    if keyword == "minimum":
        return f"must be at least {limit} (got {got})"
    if keyword == "maximum":
        return f"must be at most {limit} (got {got})"
    if keyword == "exclusiveMinimum":
        return f"must be greater than {limit} (got {got})"
    if keyword == "exclusiveMaximum":
        return f"must be less than {limit} (got {got})"
    if keyword in ("minItems", "minLength"):
        unit = "items" if keyword == "minItems" else "characters"
        return "must not be empty" if limit == 1 else f"must have at least {limit} {unit}"
    if keyword == "uniqueItems":
        return "must not list the same item twice"
    if keyword == "format":
        return f"{got} is not a valid {limit}"
    return str(error.message)


def _document_order(document: object) -> dict[PathKey, int]:
    """Each path in ``document`` mapped to its position in a depth-first walk (source order)."""
    order: dict[PathKey, int] = {}
    stack: list[tuple[PathKey, object]] = [((), document)]
    while stack:
        path, node = stack.pop()
        order[path] = len(order)
        children: Iterable[tuple[str | int, object]] = ()
        if isinstance(node, Mapping):
            children = node.items()
        elif isinstance(node, list):
            children = enumerate(node)
        stack.extend(((*path, k), v) for k, v in reversed(list(children)))
    return order


def _position(order: Mapping[PathKey, int], path: PathKey) -> int:
    while path not in order and path:
        path = path[:-1]
    return order.get(path, 0)


def _lookup(document: object, path: PathKey) -> Mapping[str, Any]:
    node = document
    for part in path:
        node = node[part]  # type: ignore[index]
    return node if isinstance(node, Mapping) else {}


def _did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _a_step(step_type: object) -> str:
    if not isinstance(step_type, str):
        return "a step"
    article = "an" if step_type[:1] in tuple("aeiou") else "a"
    return f"{article} {step_type!r} step"


def _join(words: Iterable[str], last: str, *, quote: bool = False) -> str:
    items = [repr(w) if quote else str(w) for w in words]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def _as_list(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _type_words(types: Sequence[str]) -> str:
    return _join(dict.fromkeys(_TYPE_WORDS.get(t, t) for t in types), "or")


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


__all__ = [
    "SCHEMA_RESOURCE",
    "SchemaIssue",
    "is_valid",
    "load_schema",
    "schema_errors",
    "validator",
]
