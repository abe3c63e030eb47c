"""Compiling a JSON Schema into a plain Python predicate that decides validity, fast.

jsonschema walks a schema afresh for every value and builds error objects on the way; deciding
only *whether* a document is valid needs none of that (nor importing jsonschema, which alone
takes longer than validating a large workflow). :func:`compile_predicate` turns the schema into
nested closures once. They give the answer of jsonschema's Draft 2020-12 validator with its
standard type checker: the same types (a bool is not a number, 1.0 is an integer), the same
equality (``True`` is not ``1``), the same rules for ``unevaluatedProperties``. Values whose
comparison is subtle (``const`` or ``enum`` of lists and mappings, ``uniqueItems`` of anything
but strings, ``format``, ``multipleOf`` ...) are handed to that validator when one reaches them.
A keyword outside the compiled subset raises :class:`UnsupportedSchema` at compile time, so a
schema edit can make the caller fall back to jsonschema, slower, but never make the answer wrong.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # jsonschema ships no type information; `unused-ignore` keeps this clean with stubs.
    from jsonschema.protocols import Validator  # type: ignore[import-untyped, unused-ignore]

Predicate = Callable[[Any], bool]
# The property names a subschema evaluated (for unevaluatedProperties), or None when it failed.
_Keys = frozenset[Any] | set[Any]
_Annotator = Callable[[Any], _Keys | None]

_NO_KEYS: frozenset[Any] = frozenset()
_ANY_KEY = object()  # in a static bound below: names without limit
_ANNOTATIONS = frozenset(
    {
        "$comment",
        "$defs",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
# Keywords that look at the value alone and are left to jsonschema, one keyword at a time.
_DELEGATED = frozenset({"multipleOf", "dependentRequired", "format"})
# Keywords whose subschemas apply to the value itself, so their evaluated properties count.
_IN_PLACE = frozenset({"allOf", "anyOf", "oneOf", "if", "$ref"})


class UnsupportedSchema(ValueError):
    """The schema needs a keyword, or a form of one, that :func:`compile_predicate` lacks."""


def compile_predicate(
    schema: Mapping[str, Any] | bool, validator: Callable[[], Validator]
) -> Predicate:
    """A function telling whether a value is valid against ``schema``, as jsonschema would.

    ``validator`` returns the jsonschema validator for ``schema`` (its format checker applies);
    it is called only when a value reaches a keyword the predicate leaves to jsonschema. Raises
    :class:`UnsupportedSchema` when the schema needs a keyword outside the compiled subset.
    """
    return _Compiler(schema, validator).check(schema)


class _Compiler:
    def __init__(self, root: Mapping[str, Any] | bool, validator: Callable[[], Validator]) -> None:
        self.root = root
        self.validator = validator
        self.checks: dict[int, Predicate] = {}
        self.annotators: dict[int, _Annotator] = {}
        self.bounds: dict[int, frozenset[Any]] = {}

    # -- entry points, cached by schema identity so that recursive $refs terminate ------------
    def check(self, schema: object) -> Predicate:
        key = id(schema)
        if key not in self.checks:
            cell: list[Predicate] = []
            self.checks[key] = lambda value: cell[0](value)  # used while compiling a cycle
            compiled = self._compile_check(schema)
            cell.append(compiled)
            self.checks[key] = compiled
        return self.checks[key]

    def annotate(self, schema: object) -> _Annotator:
        key = id(schema)
        if key not in self.annotators:
            cell: list[_Annotator] = []
            self.annotators[key] = lambda value: cell[0](value)
            compiled = self._compile_annotate(schema)
            cell.append(compiled)
            self.annotators[key] = compiled
        return self.annotators[key]

    # -- checking: validity only --------------------------------------------------------------
    def _compile_check(self, schema: object) -> Predicate:
        if schema is True:
            return _always
        if schema is False:
            return _never
        node = self._node(schema)
        if "unevaluatedProperties" in node:
            annotator = self.annotate(node)
            return lambda value: annotator(value) is not None
        return _all([self._keyword(node, keyword) for keyword in self._keywords(node)])

    def _keyword(self, node: Mapping[str, Any], keyword: str) -> Predicate:
        arg = node[keyword]
        if keyword == "type":
            names = [arg] if isinstance(arg, str) else list(arg)
            unknown = [name for name in names if name not in _TYPES]
            if unknown:
                raise UnsupportedSchema(f"unknown type {unknown[0]!r}")
            tests = [_TYPES[name] for name in names]
            if len(tests) == 1:
                return tests[0]
            return lambda value: any(test(value) for test in tests)
        if keyword == "enum" and arg and all(isinstance(v, str) for v in arg):
            # jsonschema compares with strings by ==, so only a string can equal one.
            choices = frozenset(arg)
            return lambda value: isinstance(value, str) and value in choices
        if keyword in ("const", "enum"):
            wanted = [arg] if keyword == "const" else list(arg)
            if not all(v is None or isinstance(v, bool | int | float | str) for v in wanted):
                return self._delegate(keyword, arg)
            tests = [_equals(v) for v in wanted]
            return tests[0] if len(tests) == 1 else lambda value: any(t(value) for t in tests)
        if keyword == "uniqueItems":
            return self._unique_items(arg)
        if keyword in _DELEGATED:
            return self._delegate(keyword, arg)
        if keyword == "required":
            names = list(arg)

            def required(value: Any) -> bool:
                if isinstance(value, dict):
                    for name in names:
                        if name not in value:
                            return False
                return True

            return required
        if keyword == "properties":
            props = [(name, self.check(sub)) for name, sub in arg.items()]

            def properties(value: Any) -> bool:
                if not isinstance(value, dict):
                    return True
                for name, test in props:  # noqa: SIM110 - a loop is faster than all() here
                    if name in value and not test(value[name]):
                        return False
                return True

            return properties
        if keyword == "additionalProperties":
            return self._additional(node, arg)
        if keyword == "minProperties":
            return lambda value: not isinstance(value, dict) or len(value) >= arg
        if keyword == "maxProperties":
            return lambda value: not isinstance(value, dict) or len(value) <= arg
        if keyword == "propertyNames":
            test = self.check(arg)
            return lambda value: not isinstance(value, dict) or all(test(n) for n in value)
        if keyword in ("pattern", "minLength", "maxLength"):
            return self._string(keyword, arg)
        if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            return self._number(keyword, arg)
        if keyword in ("minItems", "maxItems", "items"):
            return self._array(node, keyword, arg)
        if keyword == "allOf":
            return self._switch(arg) or _all([self.check(sub) for sub in arg])
        if keyword == "anyOf":
            tests = [self.check(sub) for sub in arg]
            return lambda value: any(test(value) for test in tests)
        if keyword == "oneOf":
            tests = [self.check(sub) for sub in arg]
            return lambda value: sum(1 for test in tests if test(value)) == 1
        if keyword == "not":
            test = self.check(arg)
            return lambda value: not test(value)
        if keyword == "if":
            condition = self.check(arg)
            then = self.check(node.get("then", True))
            otherwise = self.check(node.get("else", True))
            return lambda value: then(value) if condition(value) else otherwise(value)
        if keyword == "$ref":
            return self.check(self._resolve(arg))
        raise UnsupportedSchema(f"keyword {keyword!r} is not compiled")

    def _switch(self, rules: Sequence[Any]) -> Predicate | None:
        """``allOf`` rules whose ``if`` each tests one property against strings, or None.

        Which rules' ``then`` (or ``else``) apply depends on that property's value alone, so the
        combined check is built once per value instead of testing every ``if`` on every value.
        """
        name: object = None
        choices: list[frozenset[str]] = []
        for rule in rules:
            if not isinstance(rule, Mapping):
                return None
            keywords = set(rule) - _ANNOTATIONS
            if "if" not in keywords or not keywords <= {"if", "then", "else"}:
                return None
            condition = rule["if"]
            if not isinstance(condition, Mapping) or set(condition) - _ANNOTATIONS != {
                "required",
                "properties",
            }:
                return None
            required, properties = condition["required"], condition["properties"]
            if not (isinstance(properties, Mapping) and len(properties) == 1):
                return None
            ((tested, test),) = properties.items()
            if required != [tested] or (name is not None and tested != name):
                return None
            if not isinstance(test, Mapping) or set(test) - _ANNOTATIONS != {"enum"}:
                return None
            enum = test["enum"]
            if not enum or not all(isinstance(choice, str) for choice in enum):
                return None
            name = tested
            choices.append(frozenset(enum))
        if name is None:
            return None
        thens = [self.check(rule.get("then", True)) for rule in rules]
        elses = [self.check(rule.get("else", True)) for rule in rules]
        on_object_without_match = _all(elses)
        on_non_object = _all(thens)  # 'required' and 'properties' ignore what is not an object
        by_value = {
            value: _all(
                [
                    then if value in among else otherwise
                    for then, otherwise, among in zip(thens, elses, choices, strict=True)
                ]
            )
            for value in frozenset().union(*choices)
        }

        def switch(value: Any) -> bool:
            if not isinstance(value, dict):
                return on_non_object(value)
            chosen = value.get(name)
            if isinstance(chosen, str):
                return by_value.get(chosen, on_object_without_match)(value)
            return on_object_without_match(value)

        return switch

    def _delegate(self, keyword: str, arg: object) -> Predicate:
        single: list[Validator] = []  # built when first needed: it imports jsonschema

        def delegated(value: Any) -> bool:
            if not single:
                single.append(self.validator().evolve(schema={keyword: arg}))
            return bool(single[0].is_valid(value))

        return delegated

    def _unique_items(self, arg: object) -> Predicate:
        if not arg:
            return _always
        delegated = self._delegate("uniqueItems", arg)

        def unique_items(value: Any) -> bool:
            if not isinstance(value, list):
                return True
            if all(isinstance(item, str) for item in value):
                return len(set(value)) == len(value)
            return delegated(value)  # bools, numbers and containers compare subtly

        return unique_items

    def _additional(self, node: Mapping[str, Any], arg: object) -> Predicate:
        known = frozenset(node.get("properties", {}))
        if arg is True:
            return _always
        if arg is False:
            return lambda value: not isinstance(value, dict) or all(n in known for n in value)
        test = self.check(arg)
        return lambda value: (
            not isinstance(value, dict)
            or all(test(item) for name, item in value.items() if name not in known)
        )

    @staticmethod
    def _string(keyword: str, arg: Any) -> Predicate:
        if keyword == "pattern":
            search = re.compile(arg).search  # jsonschema uses re.search with the same pattern
            return lambda value: not isinstance(value, str) or search(value) is not None
        if keyword == "minLength":
            return lambda value: not isinstance(value, str) or len(value) >= arg
        return lambda value: not isinstance(value, str) or len(value) <= arg

    @staticmethod
    def _number(keyword: str, arg: Any) -> Predicate:
        if keyword == "minimum":
            return lambda value: not _is_number(value) or not value < arg
        if keyword == "maximum":
            return lambda value: not _is_number(value) or not value > arg
        if keyword == "exclusiveMinimum":
            return lambda value: not _is_number(value) or not value <= arg
        return lambda value: not _is_number(value) or not value >= arg

    def _array(self, node: Mapping[str, Any], keyword: str, arg: Any) -> Predicate:
        if keyword == "minItems":
            return lambda value: not isinstance(value, list) or len(value) >= arg
        if keyword == "maxItems":
            return lambda value: not isinstance(value, list) or len(value) <= arg
        if "prefixItems" in node:
            raise UnsupportedSchema("keyword 'prefixItems' is not compiled")
        test = self.check(arg)
        return lambda value: not isinstance(value, list) or all(test(item) for item in value)

    # -- annotating: validity and the property names evaluated (unevaluatedProperties) ---------
    def _compile_annotate(self, schema: object) -> _Annotator:
        if schema is True:
            return lambda value: _NO_KEYS
        if schema is False:
            return lambda value: None
        node = self._node(schema)
        own = frozenset(node.get("properties", {}))
        tests: list[Predicate] = []
        producers: list[_Annotator] = []
        for keyword in self._keywords(node):
            if keyword == "unevaluatedProperties":
                continue
            if keyword == "properties":
                tests.append(self._keyword(node, keyword))
                producers.append(self._present(own))
            elif keyword == "additionalProperties":
                tests.append(self._keyword(node, keyword))
                if node[keyword] is not False:
                    producers.append(self._extras(own))
            elif keyword in _IN_PLACE:
                if keyword == "if":
                    parts = [node[k] for k in ("if", "then", "else") if k in node]
                elif keyword == "$ref":
                    parts = [self._resolve(node[keyword])]
                else:
                    parts = list(node[keyword])
                if all(self._bound(part) <= own for part in parts):
                    # Whatever names these evaluate, `properties` here evaluates too: check only.
                    tests.append(self._keyword(node, keyword))
                else:
                    producers.append(self._in_place(node, keyword))
            else:
                tests.append(self._keyword(node, keyword))
        test = _all(tests)
        rest = self._unevaluated(node)

        def annotated(value: Any) -> _Keys | None:
            if not test(value):
                return None
            keys: _Keys = _NO_KEYS
            for produce in producers:
                found = produce(value)
                if found is None:
                    return None
                keys = keys | found if keys else found
            return rest(value, keys)

        return annotated

    def _unevaluated(self, node: Mapping[str, Any]) -> Callable[[Any, _Keys], _Keys | None]:
        if "unevaluatedProperties" not in node:
            return lambda value, keys: keys
        arg = node["unevaluatedProperties"]
        test = self.check(arg)

        def unevaluated(value: Any, keys: _Keys) -> _Keys | None:
            if not isinstance(value, dict):
                return keys
            if arg is True:
                return frozenset(value)
            for name in value:
                if name not in keys and not test(value[name]):
                    return None
            # Valid, so every name is evaluated: by a sibling keyword or by this one.
            return frozenset(value)

        return unevaluated

    @staticmethod
    def _present(names: frozenset[Any]) -> _Annotator:
        return lambda value: names & value.keys() if isinstance(value, dict) else _NO_KEYS

    @staticmethod
    def _extras(own: frozenset[Any]) -> _Annotator:
        return lambda value: frozenset(value) - own if isinstance(value, dict) else _NO_KEYS

    def _in_place(self, node: Mapping[str, Any], keyword: str) -> _Annotator:
        arg = node[keyword]
        if keyword == "$ref":
            return self.annotate(self._resolve(arg))
        if keyword == "if":
            condition = self.annotate(arg)
            then = self.annotate(node.get("then", True))
            otherwise = self.annotate(node.get("else", True))

            def if_then_else(value: Any) -> _Keys | None:
                found = condition(value)
                if found is None:
                    return otherwise(value)
                more = then(value)
                return None if more is None else found | more

            return if_then_else
        parts = [self.annotate(sub) for sub in arg]
        if keyword == "allOf":

            def all_of(value: Any) -> _Keys | None:
                keys: _Keys = _NO_KEYS
                for part in parts:
                    found = part(value)
                    if found is None:
                        return None
                    keys = keys | found
                return keys

            return all_of

        def any_or_one_of(value: Any) -> _Keys | None:
            # Every passing branch's names count, as in jsonschema, so none is skipped.
            results = [found for found in (part(value) for part in parts) if found is not None]
            if not results or (keyword == "oneOf" and len(results) != 1):
                return None
            return frozenset().union(*results)

        return any_or_one_of

    def _bound(self, schema: object) -> frozenset[Any]:
        """Every property name ``schema`` may evaluate, or a set holding ``_ANY_KEY``."""
        key = id(schema)
        if key in self.bounds:
            return self.bounds[key]
        unbounded = frozenset({_ANY_KEY})
        if not isinstance(schema, Mapping):
            return _NO_KEYS
        self.bounds[key] = unbounded  # a cycle is assumed unbounded
        names: set[Any] = set(schema.get("properties", {}))
        if "additionalProperties" in schema or "unevaluatedProperties" in schema:
            names.add(_ANY_KEY)
        for keyword in _IN_PLACE | {"then", "else"}:
            if keyword not in schema:
                continue
            arg = schema[keyword]
            if keyword == "$ref":
                names |= self._bound(self._resolve(arg))
            elif keyword in ("if", "then", "else"):
                names |= self._bound(arg)
            else:
                for sub in arg:
                    names |= self._bound(sub)
        self.bounds[key] = frozenset(names)
        return self.bounds[key]

    # -- schema structure --------------------------------------------------------------------
    def _node(self, schema: object) -> Mapping[str, Any]:
        if not isinstance(schema, Mapping):
            raise UnsupportedSchema(f"a schema must be a mapping or a boolean, not {schema!r}")
        if schema is not self.root and ("$id" in schema or "$schema" in schema):
            raise UnsupportedSchema("'$id' and '$schema' are compiled only at the root")
        return schema

    def _keywords(self, node: Mapping[str, Any]) -> list[str]:
        skip = _ANNOTATIONS | {"then", "else"}  # then and else belong to 'if'
        if node is self.root:
            skip = skip | {"$id", "$schema"}
        return [keyword for keyword in node if keyword not in skip]

    def _resolve(self, ref: str) -> object:
        if not (ref == "#" or ref.startswith("#/")) or "%" in ref:
            raise UnsupportedSchema(f"only local JSON pointers are compiled, not {ref!r}")
        target: Any = self.root
        for part in ref[1:].split("/")[1:]:
            name = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, Mapping) and name in target:
                target = target[name]
            elif isinstance(target, Sequence) and name.isdigit() and int(name) < len(target):
                target = target[int(name)]
            else:
                raise UnsupportedSchema(f"cannot resolve {ref!r}")
        return target


def _equals(wanted: object) -> Predicate:
    """jsonschema's equality with a scalar: by identity, and by == for strings and numbers."""
    if wanted is None or isinstance(wanted, bool):
        return lambda value: value is wanted
    if isinstance(wanted, str):
        return lambda value: isinstance(value, str) and value == wanted
    return lambda value: value is wanted or (_is_number(value) and value == wanted)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, numbers.Number)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


# jsonschema's standard type checker (drafts 6 to 2020-12), one predicate per type name.
_TYPES: dict[str, Predicate] = {
    "array": lambda value: isinstance(value, list),
    "boolean": lambda value: isinstance(value, bool),
    "integer": _is_integer,
    "null": lambda value: value is None,
    "number": _is_number,
    "object": lambda value: isinstance(value, dict),
    "string": lambda value: isinstance(value, str),
}


def _always(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False


def _all(tests: list[Predicate]) -> Predicate:
    tests = [test for test in tests if test is not _always]
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]

    def every(value: Any) -> bool:
        for test in tests:  # noqa: SIM110 - a loop is faster than all() here
            if not test(value):
                return False
        return True

    return every
