"""Tests for the workflow condition expression language (bcce.workflow.expressions)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcce.errors import ExitCode, WorkflowError
from bcce.workflow.expressions import (
    DEFAULT_ROOTS,
    MAX_DEPTH,
    MAX_LENGTH,
    EvaluationContext,
    Expression,
    ExpressionError,
    Status,
    parse,
)

VALUES: dict[str, Any] = {
    "steps": {
        "build": {
            "outcome": "success",
            "outputs": {"version": "1.2.3", "list": ["a", "b", "c"], "json": '{"ok": true}'},
        },
        "my_step": {"outcome": "failure"},
    },
    "env": {"NAME": "prod", "name": "lower", "Region": "eu-west-1"},
    "vars": {"empty": "", "zero": 0},
    "inputs": {"count": 3, "flag": False, "items": [1, 2, 3]},
}


def evaluate(
    text: str, values: Mapping[str, object] | None = None, status: Status = "success"
) -> object:
    return parse(text).evaluate(EvaluationContext(VALUES if values is None else values, status))


def parse_error(text: str, **kwargs: Any) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        parse(text, **kwargs)
    return caught.value


def evaluation_error(text: str, values: Mapping[str, object] | None = None) -> ExpressionError:
    expression = parse(text)
    with pytest.raises(ExpressionError) as caught:
        expression.evaluate(EvaluationContext(VALUES if values is None else values))
    return caught.value


# --- wrapper and literals ---------------------------------------------------------------------


def test_wrapper_is_stripped() -> None:
    assert evaluate("  ${{ steps.build.outcome }}  ") == "success"


def test_expression_without_wrapper_is_accepted() -> None:
    assert evaluate("steps.build.outcome") == "success"


def test_unclosed_wrapper_is_an_error() -> None:
    assert parse_error("${{ true").position == 0


def test_empty_expression_is_an_error() -> None:
    assert parse_error("${{   }}").reason == "empty expression"


def test_blank_text_is_an_error() -> None:
    assert parse_error("   ").reason == "empty expression"


def test_doubled_quote_escapes_a_quote() -> None:
    assert evaluate("'it''s'") == "it's"


def test_string_may_contain_closing_braces_inside_wrapper() -> None:
    assert evaluate("${{ 'a}}b' }}") == "a}}b"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-7", -7),
        ("2.5", 2.5),
        ("-0.5", -0.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("0x1F", 31),
        ("0o17", 15),
        ("true", True),
        ("false", False),
        ("null", None),
    ],
)
def test_literal_values(text: str, expected: object) -> None:
    value = evaluate(text)
    assert value == expected
    assert type(value) is type(expected)


def test_nan_and_infinity_literals() -> None:
    assert math.isnan(evaluate("NaN"))  # type: ignore[arg-type]
    assert evaluate("-Infinity") == -math.inf


def test_long_integer_literal_is_a_double_like_in_github() -> None:
    assert evaluate("12345678901234567890 == 12345678901234567891") is True


# --- references -------------------------------------------------------------------------------


def test_dotted_path_reads_nested_values() -> None:
    assert evaluate("steps.build.outputs.version") == "1.2.3"


def test_index_with_string_reads_a_property() -> None:
    assert evaluate("steps['my_step'].outcome") == "failure"


def test_index_with_number_reads_an_array_element() -> None:
    assert evaluate("steps.build.outputs.list[1]") == "b"


def test_fractional_array_index_is_floored() -> None:
    assert evaluate("steps.build.outputs.list[1.9]") == "b"


@pytest.mark.parametrize("index", ["3", "-1", "NaN", "'x'"])
def test_array_index_out_of_range_is_null(index: str) -> None:
    assert evaluate(f"steps.build.outputs.list[{index}]") is None


def test_computed_index_is_evaluated() -> None:
    values = {"steps": {"b": {"outcome": "ok"}}, "inputs": {"step": "b"}}
    assert evaluate("steps[inputs.step].outcome", values) == "ok"


def test_missing_property_is_null() -> None:
    assert evaluate("steps.nope.outcome") is None


def test_property_of_a_string_is_null() -> None:
    assert evaluate("steps.build.outcome.length") is None


def test_root_absent_from_values_is_null() -> None:
    assert evaluate("vars.anything", {}) is None


def test_exact_property_name_wins_over_other_case() -> None:
    assert evaluate("env.name") == "lower"


def test_property_lookup_falls_back_to_ignoring_case() -> None:
    assert evaluate("env.REGION") == "eu-west-1"


def test_root_names_ignore_case() -> None:
    assert evaluate("STEPS.build.outcome") == "success"


def test_keyword_is_a_property_name_after_a_dot() -> None:
    assert evaluate("steps.null.outcome", {"steps": {"null": {"outcome": "x"}}}) == "x"


def test_hyphen_is_part_of_a_name() -> None:
    assert evaluate("steps.my-step.outcome", {"steps": {"my-step": {"outcome": "x"}}}) == "x"


def test_property_of_a_function_result() -> None:
    assert evaluate("fromJSON(steps.build.outputs.json).ok") is True


def test_property_of_a_parenthesised_expression() -> None:
    assert evaluate("(steps.build).outcome") == "success"


def test_property_of_a_literal_is_a_syntax_error() -> None:
    error = parse_error("'abc'.length")
    assert error.position == 5


def test_unknown_root_is_an_error() -> None:
    error = parse_error("steps.a.outcome == github.ref")
    assert error.reason == "unknown name 'github'"
    assert error.position == 19
    assert error.hint is not None
    assert "steps" in error.hint


def test_roots_can_be_chosen_by_the_caller() -> None:
    expression = parse("matrix.os == 'linux'", roots=frozenset({"matrix"}))
    assert expression.truthy(EvaluationContext({"matrix": {"os": "Linux"}}))


def test_default_root_is_unknown_when_the_caller_omits_it() -> None:
    assert parse_error("env.X", roots=frozenset({"steps"})).reason == "unknown name 'env'"


# --- operators --------------------------------------------------------------------------------


def test_not_binds_tighter_than_equality() -> None:
    # (!'') == 'x' is true == 'x' -> 1 == NaN; !('' == 'x') would be true
    assert evaluate("!'' == 'x'") is False


def test_and_binds_tighter_than_or() -> None:
    assert evaluate("true || false && false") is True


def test_comparison_binds_tighter_than_and() -> None:
    # (1 < 2) && 'a' is 'a'; 1 < (2 && 'a') would be false
    assert evaluate("1 < 2 && 'a'") == "a"


def test_relational_binds_tighter_than_equality() -> None:
    # 3 == (1 < 2) is 3 == true -> false; (3 == 1) < 2 would be true
    assert evaluate("3 == 1 < 2") is False


def test_parentheses_override_precedence() -> None:
    assert evaluate("(true || false) && false") is False


def test_comparisons_are_left_associative() -> None:
    # (3 > 2) > 1 is true > 1 -> 1 > 1; 3 > (2 > 1) would be true
    assert evaluate("3 > 2 > 1") is False


def test_and_returns_the_deciding_operand() -> None:
    assert evaluate("'a' && 'b'") == "b"


def test_and_returns_the_first_falsy_operand() -> None:
    assert evaluate("'a' && '' && 'c'") == ""


def test_or_returns_the_first_truthy_operand() -> None:
    assert evaluate("null || 0 || 'x' || 'y'") == "x"


def test_or_of_falsy_values_returns_the_last() -> None:
    assert evaluate("0 || null") is None


def test_and_short_circuits() -> None:
    assert evaluate("false && fromJSON('not json')") is False


def test_or_short_circuits() -> None:
    assert evaluate("true || fromJSON('not json')") is True


def test_right_operand_is_evaluated_when_needed() -> None:
    assert evaluation_error("true && fromJSON('not json')").position == 8


def test_not_returns_a_boolean() -> None:
    assert evaluate("!'text'") is False


def test_long_or_chain_is_not_deep() -> None:
    assert evaluate("||".join(["0"] * 999 + ["'last'"])) == "last"


# --- coercion and comparison ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null == 0", True),
        ("null == false", True),
        ("null == ''", True),
        ("null == null", True),
        ("true == 1", True),
        ("true == '1'", True),
        ("false == ''", True),
        ("false == 'false'", False),
        ("'' == 0", True),
        ("' 42 ' == 42", True),
        ("'1.0' == 1", True),
        ("'0x10' == 16", True),
        ("'abc' == 0", False),
        ("'abc' == NaN", False),
        ("NaN == NaN", False),
        ("NaN != NaN", True),
        ("1 != 2", True),
        ("fromJSON('[]') == fromJSON('[]')", False),
        ("fromJSON('[]') == ''", False),
        ("fromJSON('{}') == 0", False),
        ("inputs.items == inputs.items", True),
    ],
)
def test_loose_equality_follows_github(text: str, expected: bool) -> None:
    assert evaluate(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'ABC' == 'abc'", True),
        ("'a' < 'B'", True),
        ("'b' > 'A'", True),
        ("'a' <= 'A'", True),
        ("'abc' >= 'ABD'", False),
        ("'10' > '9'", False),
        ("'STRASSE' == 'strasse'", True),
    ],
)
def test_strings_compare_ignoring_case(text: str, expected: bool) -> None:
    assert evaluate(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 < 2", True),
        ("2 <= 2", True),
        ("-1 > -2", True),
        ("2.5 >= 3", False),
        ("'10' > 9", True),
        ("null < 1", True),
        ("true > false", True),
        ("false < true", True),
        ("true > 0", True),
        ("NaN < 1", False),
        ("NaN >= NaN", False),
        ("'abc' > 1", False),
        ("'abc' < 1", False),
        ("fromJSON('[1]') > 0", False),
    ],
)
def test_ordering_follows_github(text: str, expected: bool) -> None:
    assert evaluate(text) is expected


@pytest.mark.parametrize("value", [False, 0, -0.0, math.nan, "", None])
def test_falsy_values(value: object) -> None:
    assert parse("inputs.v").truthy(EvaluationContext({"inputs": {"v": value}})) is False


@pytest.mark.parametrize("value", [True, 1, -1, 0.5, "false", "0", [], {}])
def test_truthy_values(value: object) -> None:
    assert parse("inputs.v").truthy(EvaluationContext({"inputs": {"v": value}})) is True


# --- functions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "success", "failure", "cancelled"),
    [
        ("success", True, False, False),
        ("failure", False, True, False),
        ("cancelled", False, False, True),
    ],
)
def test_status_functions_answer_from_the_context(
    status: Status, success: bool, failure: bool, cancelled: bool
) -> None:
    assert evaluate("success()", status=status) is success
    assert evaluate("failure()", status=status) is failure
    assert evaluate("cancelled()", status=status) is cancelled
    assert evaluate("always()", status=status) is True


def test_contains_finds_a_substring_ignoring_case() -> None:
    assert evaluate("contains('Hello World', 'WORLD')") is True


def test_contains_converts_numbers_to_strings() -> None:
    assert evaluate("contains(12345, 34)") is True


def test_contains_finds_an_array_element_by_loose_equality() -> None:
    assert evaluate("contains(inputs.items, '2')") is True


def test_contains_misses_an_absent_array_element() -> None:
    assert evaluate("contains(steps.build.outputs.list, 'z')") is False


def test_contains_with_an_object_is_false() -> None:
    assert evaluate("contains(steps.build, 'outcome')") is False


def test_starts_with_ignores_case() -> None:
    assert evaluate("startsWith(steps.build.outputs.version, '1.')") is True
    assert evaluate("startsWith('Release-1', 'release')") is True


def test_ends_with_ignores_case() -> None:
    assert evaluate("endsWith('build.YAML', '.yaml')") is True


def test_starts_with_a_non_primitive_is_false() -> None:
    assert evaluate("startsWith(inputs.items, '1')") is False


def test_format_substitutes_placeholders() -> None:
    assert evaluate("format('{0}-{1}-{0}', 'a', 2)") == "a-2-a"


def test_format_escapes_braces() -> None:
    assert evaluate("format('{{{0}}}', 'x')") == "{x}"


def test_format_converts_values_like_github() -> None:
    values = {"inputs": {"f": 0.1 + 0.2, "items": [1], "obj": {}}}
    text = "format('{0}|{1}|{2}|{3}|{4}|{5}', null, true, 3.0, inputs.f, inputs.items, inputs.obj)"
    assert evaluate(text, values) == "|true|3|0.3|Array|Object"


def test_format_with_a_literal_template_is_checked_when_parsed() -> None:
    error = parse_error("true && format('{1}', 'only one')")
    assert error.position == 8
    assert "{1}" in error.reason


@pytest.mark.parametrize("template", ["'{'", "'}'", "'{x}'", "'{0'"])
def test_format_rejects_invalid_templates(template: str) -> None:
    assert "format string" in parse_error(f"format({template}, 1)").reason


def test_format_with_a_bad_template_from_the_context_fails_when_evaluated() -> None:
    error = evaluation_error("format(inputs.t, 1)", {"inputs": {"t": "{2}"}})
    assert error.position == 0


def test_join_uses_a_comma_by_default() -> None:
    assert evaluate("join(steps.build.outputs.list)") == "a,b,c"


def test_join_uses_the_given_separator() -> None:
    assert evaluate("join(inputs.items, ' + ')") == "1 + 2 + 3"


def test_join_of_a_string_is_the_string() -> None:
    assert evaluate("join('abc', '-')") == "abc"


def test_join_of_an_object_is_empty() -> None:
    assert evaluate("join(steps.build)") == ""


def test_to_json_pretty_prints() -> None:
    assert evaluate("toJSON(steps.my_step)") == '{\n  "outcome": "failure"\n}'


def test_to_json_writes_non_finite_numbers_as_null() -> None:
    assert evaluate("toJSON(NaN)") == "null"


def test_to_json_of_a_cyclic_value_is_an_error() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    assert "nests deeper" in evaluation_error("toJSON(vars)", {"vars": cyclic}).reason


def test_from_json_parses_json() -> None:
    assert evaluate("fromJSON('{\"a\": [1, 2.5, null]}')") == {"a": [1, 2.5, None]}


def test_from_json_round_trips_to_json() -> None:
    assert evaluate("fromJSON(toJSON(steps.build)) == steps.build") is False  # new instance
    assert evaluate("toJSON(fromJSON(toJSON(steps.build))) == toJSON(steps.build)") is True


def test_from_json_of_invalid_json_is_an_error_at_the_call() -> None:
    error = evaluation_error("true && fromJSON(steps.build.outcome)")
    assert error.position == 8
    assert error.reason.startswith("fromJSON: invalid JSON")


def test_from_json_rejects_nan() -> None:
    assert evaluation_error("fromJSON('NaN')").reason.startswith("fromJSON")


def test_from_json_of_deeply_nested_json_is_an_error() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    assert evaluation_error("fromJSON(inputs.j)", {"inputs": {"j": deep}}).position == 0


@pytest.mark.parametrize("text", ["TOJSON(1)", "startswith('ab', 'A')", "Always()"])
def test_function_names_ignore_case(text: str) -> None:
    parse(text)


def test_unknown_function_is_an_error() -> None:
    error = parse_error("true && hashFiles('x')")
    assert error.reason == "unknown function 'hashFiles'"
    assert error.position == 8


def test_root_name_called_as_function_is_an_unknown_function() -> None:
    assert parse_error("steps()").reason == "unknown function 'steps'"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("contains('a')", "contains() takes 2 arguments but got 1"),
        ("success(1)", "success() takes 0 arguments but got 1"),
        ("toJSON()", "toJSON() takes 1 argument but got 0"),
        ("join(1, 2, 3)", "join() takes 1 to 2 arguments but got 3"),
        ("format()", "format() takes at least 1 argument but got 0"),
    ],
)
def test_wrong_arity_is_an_error(text: str, reason: str) -> None:
    assert parse_error(text).reason == reason


# --- syntax errors and positions --------------------------------------------------------------


def test_unexpected_token_reports_its_column() -> None:
    error = parse_error("steps.build.outcome == )")
    assert error.position == 23
    assert error.message == "unexpected token ')' at column 24"


def test_position_counts_from_the_start_of_the_wrapped_text() -> None:
    error = parse_error("${{ true && }}")
    assert error.reason == "unexpected end of expression"
    assert error.position == 12


def test_unterminated_string_points_at_its_quote() -> None:
    error = parse_error("env.NAME == 'prod")
    assert error.reason == "unterminated string"
    assert error.position == 12


@pytest.mark.parametrize(
    ("text", "position", "hint"),
    [
        ("env.A = 'x'", 6, "=="),
        ("true & false", 5, "&&"),
        ("true | false", 5, "||"),
        ('env.A == "x"', 9, "single quotes"),
        ("steps.*.outcome", 6, "not supported"),
    ],
)
def test_stray_operator_characters_are_errors_with_a_hint(
    text: str, position: int, hint: str
) -> None:
    error = parse_error(text)
    assert error.position == position
    assert error.hint is not None
    assert hint in error.hint


@pytest.mark.parametrize(("text", "position"), [("1 # 2", 2), ("env$b", 3), ("true\x00", 4)])
def test_stray_characters_are_errors(text: str, position: int) -> None:
    error = parse_error(text)
    assert error.reason.startswith("unexpected character")
    assert error.position == position


def test_trailing_tokens_are_an_error() -> None:
    assert parse_error("true false").position == 5


def test_unclosed_parenthesis_is_an_error() -> None:
    error = parse_error("(true || false")
    assert error.reason == "expected ')' but found end of expression"
    assert error.position == 14


def test_unclosed_index_is_an_error() -> None:
    assert parse_error("steps['a'.outcome").reason.startswith("expected ']'")


def test_missing_property_name_is_an_error() -> None:
    assert parse_error("steps.build.").position == 12


def test_number_followed_by_letters_is_an_error() -> None:
    assert parse_error("1abc == 1").reason == "invalid number '1abc'"


def test_trailing_comma_in_call_is_an_error() -> None:
    assert parse_error("contains('a', 'b',)").position == 18


def test_expression_error_is_a_workflow_error() -> None:
    error = parse_error(")")
    assert isinstance(error, WorkflowError)
    assert error.exit_code == ExitCode.INVALID
    assert str(error).startswith("[BCCE200] unexpected token ')' at column 1")


def test_expression_error_carries_the_source() -> None:
    assert parse_error("${{ ) }}").source == "${{ ) }}"


# --- limits -----------------------------------------------------------------------------------


def test_overlong_expression_is_an_error() -> None:
    error = parse_error("'" + "a" * MAX_LENGTH + "'")
    assert error.reason == f"expression is longer than {MAX_LENGTH} characters"


def test_ten_thousand_nested_parentheses_are_an_expression_error() -> None:
    parse_error("(" * 10_000 + "true" + ")" * 10_000)


def test_parentheses_may_nest_to_the_limit() -> None:
    assert evaluate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == 1


def test_parentheses_beyond_the_limit_are_an_error() -> None:
    error = parse_error("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
    assert error.reason == f"expression nests deeper than {MAX_DEPTH} levels"
    assert error.position == MAX_DEPTH


def test_thousands_of_nots_are_a_depth_error() -> None:
    assert "nests deeper" in parse_error("!" * 3000 + "true").reason


def test_nots_may_nest_to_the_limit() -> None:
    assert evaluate("!" * MAX_DEPTH + "true") is True


def test_long_comparison_chain_is_a_depth_error() -> None:
    assert "nests deeper" in parse_error("==".join(["1"] * 1000)).reason


def test_deeply_nested_calls_are_a_depth_error() -> None:
    depth = MAX_DEPTH + 1
    assert "nests deeper" in parse_error("toJSON(" * depth + "1" + ")" * depth).reason


def test_deeply_nested_indexes_are_a_depth_error() -> None:
    depth = 500
    assert "nests deeper" in parse_error("steps[" * depth + "'a'" + "]" * depth).reason


# --- implicit success() and references --------------------------------------------------------


def test_expression_without_status_function_has_none() -> None:
    assert parse("steps.build.outcome == 'success'").has_status_function is False


def test_status_function_anywhere_counts() -> None:
    assert parse("contains(env.A, 'x') || (true && FAILURE())").has_status_function is True


def test_should_run_applies_implicit_success_after_a_failure() -> None:
    expression = parse("true")
    assert expression.should_run(EvaluationContext(status="success")) is True
    assert expression.should_run(EvaluationContext(status="failure")) is False


def test_should_run_with_always_runs_after_a_failure() -> None:
    assert parse("always()").should_run(EvaluationContext(status="failure")) is True


def test_should_run_with_failure_runs_only_after_a_failure() -> None:
    expression = parse("failure() && env.NAME == 'prod'")
    assert expression.should_run(EvaluationContext(VALUES, "failure")) is True
    assert expression.should_run(EvaluationContext(VALUES, "success")) is False


def test_evaluation_context_rejects_an_unknown_status() -> None:
    with pytest.raises(ValueError, match="status"):
        EvaluationContext(status="skipped")  # type: ignore[arg-type]


def test_references_lists_dotted_paths() -> None:
    expression = parse("steps.build.outcome == 'success' && env.NAME")
    assert expression.references() == {("steps", "build", "outcome"), ("env", "NAME")}


def test_references_include_literal_indexes() -> None:
    assert parse("steps['my step'].outputs['v']").references() == {
        ("steps", "my step", "outputs", "v")
    }


def test_references_stop_at_a_dynamic_index() -> None:
    assert parse("steps[inputs.id].outcome").references() == {("steps",), ("inputs", "id")}


def test_references_stop_at_a_numeric_index() -> None:
    assert parse("inputs.items[0].name").references() == {("inputs", "items")}


def test_references_look_inside_function_arguments() -> None:
    assert parse("contains(toJSON(vars.a), format('{0}', steps.x.outcome))").references() == {
        ("vars", "a"),
        ("steps", "x", "outcome"),
    }


def test_references_use_the_canonical_root_spelling() -> None:
    assert parse("Steps.Build").references() == {("steps", "Build")}


def test_references_of_a_bare_root() -> None:
    assert parse("toJSON(env)").references() == {("env",)}


def test_references_of_literals_are_empty() -> None:
    assert parse("'steps.build' == 1").references() == set()


def test_expression_keeps_its_source() -> None:
    expression = parse("${{ true }}")
    assert expression.source == "${{ true }}"
    assert repr(expression) == "Expression('${{ true }}')"


# --- properties -------------------------------------------------------------------------------

_VOCABULARY = [
    *sorted(DEFAULT_ROOTS),
    "build",
    "outcome",
    "outputs",
    "a",
    ".",
    "[",
    "]",
    "(",
    ")",
    ",",
    "!",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "'a'",
    "'it''s'",
    "''",
    "'{0}{1}'",
    "'{{'",
    "'[1, {\"a\": 2}]'",
    "'",
    "0",
    "-2.5",
    "0x1f",
    "1e400",
    "true",
    "false",
    "null",
    "NaN",
    "success()",
    "always()",
    "contains",
    "startsWith",
    "endsWith",
    "format",
    "join",
    "toJSON",
    "fromJSON",
    "${{",
    "}}",
    "=",
    "#",
]

token_soup = st.lists(st.sampled_from(_VOCABULARY), max_size=25).flatmap(
    lambda words: st.sampled_from([" ", ""]).map(lambda sep: sep.join(words))
)

_KEYS = st.sampled_from(["build", "outcome", "outputs", "a", "A", "NAME", "0"]) | st.text(
    max_size=4
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["{0}", "[1,2]", '{"a": {"b": 1}}', "0x10", " 1 "]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(_KEYS, children, max_size=3)
    ),
    max_leaves=8,
)
contexts = st.builds(
    EvaluationContext,
    values=st.dictionaries(st.sampled_from(sorted(DEFAULT_ROOTS)), json_values, max_size=4),
    status=st.sampled_from(["success", "failure", "cancelled"]),
)

_ATOMS = st.sampled_from(
    [
        "true",
        "false",
        "null",
        "0",
        "-1.5",
        "NaN",
        "'abc'",
        "''",
        "'[1, {\"a\": 2}]'",
        "steps.build.outcome",
        "steps['build'].outputs[0]",
        "env.NAME",
        "inputs.a.b",
        "vars",
        "success()",
        "failure()",
        "always()",
        "cancelled()",
    ]
)


def _compound(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    operators = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "&&", "||"])
    binary_functions = st.sampled_from(["contains", "startsWith", "endsWith", "join"])
    unary_functions = st.sampled_from(["toJSON", "fromJSON", "join"])
    return st.one_of(
        st.tuples(children, operators, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda c: f"!{c}"),
        st.tuples(binary_functions, children, children).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.tuples(unary_functions, children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(children, children).map(lambda t: f"format('{{0}}-{{1}}', {t[0]}, {t[1]})"),
        children.map(lambda c: f"format(toJSON({c}), 1)"),
        children.map(lambda c: f"fromJSON({c})[1].a"),
        st.tuples(children, children).map(lambda t: f"inputs[{t[0]}][{t[1]}]"),
    )


valid_expressions = st.recursive(_ATOMS, _compound, max_leaves=10)

_FAST = settings(
    max_examples=300, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _parse_or_none(text: str) -> Expression | None:
    try:
        return parse(text)
    except ExpressionError:
        return None


@_FAST
@given(st.text(max_size=120))
def test_arbitrary_text_parses_or_raises_expression_error(text: str) -> None:
    _parse_or_none(text)


@_FAST
@given(token_soup)
def test_token_soup_parses_or_raises_expression_error(text: str) -> None:
    _parse_or_none(text)


@_FAST
@given(token_soup, contexts)
def test_token_soup_evaluates_or_raises_expression_error(
    text: str, context: EvaluationContext
) -> None:
    expression = _parse_or_none(text)
    if expression is not None:
        with contextlib.suppress(ExpressionError):
            expression.should_run(context)


@_FAST
@given(valid_expressions, contexts)
def test_generated_expressions_parse_and_evaluate_or_raise_expression_error(
    text: str, context: EvaluationContext
) -> None:
    expression = parse(text)
    try:
        value = expression.evaluate(context)
    except ExpressionError:
        return
    assert isinstance(expression.truthy(context), bool)
    assert value is None or isinstance(value, bool | int | float | str | list | tuple | Mapping)
