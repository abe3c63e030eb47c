from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator  # type: ignore[import-untyped, unused-ignore]

from bcce.workflow.schema.compiler import UnsupportedSchema, compile_predicate


def compiled(schema: Any) -> Any:
    return compile_predicate(schema, lambda: Draft202012Validator(schema))


def agrees(schema: Any, *values: object) -> bool:
    full = Draft202012Validator(schema)
    fast = compile_predicate(schema, lambda: full)
    return all(fast(value) == full.is_valid(value) for value in values)


@pytest.mark.parametrize(
    "schema",
    [
        {"patternProperties": {"^a": {}}},
        {"prefixItems": [{}], "items": False},
        {"dependentSchemas": {"a": {}}},
        {"$ref": "https://example.com/schema"},
        {"$ref": "#anchor"},
        {"properties": {"a": {"$id": "urn:x", "type": "string"}}},
        {"type": "any"},
        {"x-unknown": 1},
    ],
    ids=lambda schema: next(iter(schema)),
)
def test_keyword_outside_the_subset_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedSchema):
        compiled(schema)


def test_recursive_reference_follows_the_value_down() -> None:
    tree = {
        "$defs": {"node": {"type": "object", "properties": {"kids": {"items": {"$ref": "#"}}}}},
        "$ref": "#/$defs/node",
        "required": ["name"],
    }
    assert compiled(tree)({"name": 1, "kids": [{"name": 2, "kids": []}]}) is True
    assert compiled(tree)({"name": 1, "kids": [{"kids": []}]}) is False


def test_unevaluated_properties_counts_only_passing_branches() -> None:
    schema = {
        "anyOf": [
            {"properties": {"a": {"type": "string"}}},
            {"properties": {"b": {"type": "string"}}},
        ],
        "unevaluatedProperties": False,
    }
    assert compiled(schema)({"a": "x", "b": "y"}) is True
    assert compiled(schema)({"a": "x", "b": 1}) is False  # b's branch failed: b is unevaluated
    assert agrees(schema, {"a": "x", "b": "y"}, {"a": "x", "b": 1}, {"c": 1}, [])


def test_unevaluated_properties_counts_names_from_if_then_and_else() -> None:
    schema = {
        "if": {"properties": {"kind": {"const": "a"}}, "required": ["kind"]},
        "then": {"properties": {"x": {}}},
        "else": {"properties": {"y": {}}},
        "unevaluatedProperties": False,
    }
    assert compiled(schema)({"kind": "a", "x": 1}) is True
    assert compiled(schema)({"kind": "a", "y": 1}) is False
    assert compiled(schema)({"y": 1}) is True
    assert agrees(schema, {"kind": "a", "x": 1}, {"kind": "a", "y": 1}, {"y": 1}, {"kind": "a"})


def test_rules_keyed_by_one_property_apply_by_its_value() -> None:
    schema = {
        "allOf": [
            {
                "if": {"required": ["kind"], "properties": {"kind": {"enum": ["a", "b"]}}},
                "then": {"required": ["x"]},
            },
            {
                "if": {"required": ["kind"], "properties": {"kind": {"enum": ["b"]}}},
                "then": {"required": ["y"]},
                "else": {"required": ["z"]},
            },
        ]
    }
    check = compiled(schema)
    assert check({"kind": "a", "x": 1, "z": 1}) is True
    assert check({"kind": "b", "x": 1, "y": 1}) is True
    assert check({"kind": "b", "x": 1}) is False
    assert check({"kind": "c", "z": 1}) is True
    values = [{"kind": "a"}, {"kind": 1, "z": 1}, {"z": 1}, {}, [], "a", {"kind": ["a"], "z": 1}]
    assert agrees(schema, *values)


def test_format_follows_the_validators_format_checker() -> None:
    schema = {"format": "ipv4"}
    checked = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    assert compile_predicate(schema, lambda: checked)("not an address") is False
    assert compile_predicate(schema, lambda: Draft202012Validator(schema))("x") is True


def test_const_and_enum_tell_true_from_one() -> None:
    assert compiled({"const": 1})(True) is False
    assert compiled({"const": 1})(1.0) is True
    assert agrees({"const": 1}, True, 1, 1.0, "1", [1], None)
    assert agrees({"enum": [1, "a", None, False]}, True, 0, 1, "a", None, False, [1], 1.0)
    assert agrees({"enum": [1, "a", [True]]}, True, 1, "a", [1], [True])


def test_unique_items_tells_true_from_one() -> None:
    schema = {"uniqueItems": True}
    assert compiled(schema)([1, True]) is True
    assert compiled(schema)([1, 1.0]) is False
    assert agrees(schema, ["a", "b"], ["a", "a"], [1, True], [[1], [True]], [{"a": 1}, {"a": 1}])


def test_jsonschema_is_consulted_only_when_a_value_needs_it() -> None:
    calls: list[int] = []

    def full() -> Any:
        calls.append(1)
        return Draft202012Validator({"uniqueItems": True})

    check = compile_predicate({"uniqueItems": True, "const": ["a"]}, full)
    assert check(["a"]) is True and check("a") is False
    assert calls == [1]  # const of a list needed it, once
    assert compile_predicate({"uniqueItems": True}, full)(["a", "b"]) and calls == [1]


# --- random schemas of the compiled subset against jsonschema ----------------------------------

NAMES = ("a", "b", "c")
_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from([0.5, 1.0, -1.5])
    | st.sampled_from(["", "a", "b", "ab", "a\n", "xyz"])
)
_value = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from([*NAMES, "d"]), inner, max_size=3)
    ),
    max_leaves=8,
)
_types = st.sampled_from(["null", "boolean", "integer", "number", "string", "array", "object"])
_number = st.integers(-2, 2) | st.sampled_from([0.5, 1.5])
_size = st.integers(0, 3)
_plain_leaf = st.one_of(
    st.booleans(),
    st.builds(
        lambda t: {"type": t}, _types | st.lists(_types, min_size=1, max_size=2, unique=True)
    ),
    st.builds(lambda e: {"enum": e}, st.lists(_scalar, min_size=1, max_size=3)),
    st.builds(lambda e: {"enum": e}, st.lists(st.sampled_from(["a", "b", "ab"]), min_size=1)),
    st.builds(lambda c: {"const": c}, _value),
    st.builds(lambda r: {"required": r}, st.lists(st.sampled_from(NAMES), max_size=2, unique=True)),
    st.builds(lambda p: {"pattern": p}, st.sampled_from(["^a", "b$", "^[a-z]+$", "x"])),
    st.builds(
        lambda k, n: {k: n},
        st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
        _number,
    ),
    st.builds(
        lambda k, n: {k: n},
        st.sampled_from(
            ["minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"]
        ),
        _size,
    ),
    st.builds(lambda u: {"uniqueItems": u}, st.booleans()),
    st.builds(lambda m: {"multipleOf": m}, st.sampled_from([2, 0.5])),
)


def _merged(parts: list[Any]) -> Any:
    return functools.reduce(lambda a, b: {**a, **b}, [p for p in parts if isinstance(p, dict)], {})


def _applicators(inner: st.SearchStrategy[Any], *, ref: bool = True) -> st.SearchStrategy[Any]:
    some = st.lists(inner, min_size=1, max_size=3)
    return st.one_of(
        st.builds(lambda p: {"properties": p}, st.dictionaries(st.sampled_from(NAMES), inner)),
        st.builds(lambda s: {"additionalProperties": s}, inner),
        st.builds(lambda s: {"unevaluatedProperties": s}, inner),
        st.builds(lambda s: {"propertyNames": s}, inner),
        st.builds(lambda s: {"items": s}, inner),
        st.builds(lambda s: {"allOf": s}, some),
        st.builds(lambda s: {"anyOf": s}, some),
        st.builds(lambda s: {"oneOf": s}, some),
        st.builds(lambda s: {"not": s}, inner),
        st.builds(
            lambda c, t, e: {"if": c, "then": t, "else": e},
            inner,
            inner,
            inner,
        ),
        st.builds(lambda c, t: {"if": c, "then": t}, inner, inner),
        st.lists(inner, min_size=2, max_size=3).map(_merged),
        _closed(inner, ref=ref),
    )


def _closed(inner: st.SearchStrategy[Any], *, ref: bool) -> st.SearchStrategy[Any]:
    """unevaluatedProperties beside properties and in-place applicators that name properties."""
    named = st.builds(
        lambda p: {"properties": p}, st.dictionaries(st.sampled_from(NAMES), inner, min_size=1)
    )
    part = named | st.lists(named | inner, min_size=2, max_size=2).map(_merged)
    parts = st.lists(part, min_size=1, max_size=3)
    in_place = st.one_of(
        st.builds(lambda s: {"allOf": s}, parts),
        st.builds(lambda s: {"anyOf": s}, parts),
        st.builds(lambda s: {"oneOf": s}, parts),
        st.builds(lambda c, t, e: {"if": c, "then": t, "else": e}, part, part, part),
        st.just({"$ref": "#/$defs/shared"} if ref else {"allOf": [True]}),
    )
    return st.builds(
        lambda own, applied, rest: {**own, **applied, "unevaluatedProperties": rest},
        st.just({}) | named,
        in_place,
        st.just(False) | inner,
    )


# The schema under test may refer to one shared definition (which refers to nothing).
_schema = st.recursive(
    _plain_leaf | st.just({"$ref": "#/$defs/shared"}), _applicators, max_leaves=10
)
_shared = st.recursive(_plain_leaf, functools.partial(_applicators, ref=False), max_leaves=4)


# Every schema also meets these, so each leaf keyword sees its edge cases at the top level.
PROBES: list[object] = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    1.5,
    -2,
    "",
    "a",
    "ab",
    "a\n",
    [],
    [1, True],
    [1, 1.0],
    ["a", "a"],
    {},
    {"a": 1},
    {"a": "a", "b": True},
    {"b": [], "d": None},
    {"a": {}, "b": 0.5, "c": "ab"},
]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _schema.filter(lambda s: isinstance(s, dict)),
    _shared,
    st.lists(_value, min_size=1, max_size=6),
)
def test_compiled_predicate_agrees_with_jsonschema(
    schema: dict[str, Any], shared: Any, values: list[Any]
) -> None:
    schema = {**schema, "$defs": {"shared": shared}}
    full = Draft202012Validator(schema)
    fast = compile_predicate(schema, lambda: full)
    values = [*PROBES, *values]
    assert [fast(value) for value in values] == [full.is_valid(value) for value in values]
