"""``${{ expression }}`` interpolation in step values at run time."""

from __future__ import annotations

import json

import pytest

from bcce.errors import WorkflowError
from bcce.workflow.expressions import EvaluationContext, ExpressionError
from bcce.workflow.templating import expressions_in, render, render_data

ROOTS = frozenset({"steps", "env", "vars"})

CONTEXT = EvaluationContext(
    values={
        "steps": {
            "build": {
                "outcome": "success",
                "outputs": {
                    "version": "1.2.3",
                    "count": 3,
                    "ratio": 2.0,
                    "half": 0.5,
                    "ok": True,
                    "list": ["a", "b"],
                    "map": {"k": "v"},
                },
            }
        },
        "env": {"STAGE": "prod"},
        "vars": {},
    }
)


def r(text: str) -> str:
    return render(text, CONTEXT, ROOTS)


def test_an_expression_is_replaced_by_its_value() -> None:
    assert r("v${{ steps.build.outputs.version }}") == "v1.2.3"


def test_several_expressions_and_the_text_around_them_are_kept_in_order() -> None:
    assert r("[${{ env.STAGE }}|${{ steps.build.outcome }}]") == "[prod|success]"


def test_text_without_expressions_is_returned_unchanged() -> None:
    assert r("echo ${HOME} $HOME {{ x }}") == "echo ${HOME} $HOME {{ x }}"


def test_booleans_render_as_lower_case_words() -> None:
    assert r("${{ steps.build.outputs.ok }} ${{ !steps.build.outputs.ok }}") == "true false"


def test_whole_floats_render_without_a_decimal_point() -> None:
    assert r("${{ steps.build.outputs.ratio }} ${{ steps.build.outputs.half }}") == "2 0.5"


def test_integers_render_as_digits() -> None:
    assert r("${{ steps.build.outputs.count }}") == "3"


def test_a_missing_value_renders_as_empty_text() -> None:
    assert r("[${{ steps.nothing.outputs.x }}]") == "[]"


def test_arrays_and_objects_render_as_json() -> None:
    assert json.loads(r("${{ steps.build.outputs.list }}")) == ["a", "b"]
    assert json.loads(r("${{ steps.build.outputs.map }}")) == {"k": "v"}


def test_a_closing_brace_pair_inside_a_quoted_string_does_not_end_the_expression() -> None:
    assert r("${{ 'a}}b' }}!") == "a}}b!"


def test_an_unterminated_expression_is_an_error_with_its_column() -> None:
    with pytest.raises(WorkflowError) as caught:
        r("ok ${{ steps.build.outcome")

    assert "unterminated '${{' at column 4" in caught.value.message
    assert caught.value.hint == "close the expression with '}}'"


def test_an_invalid_expression_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError):
        r("${{ steps.build. }}")


def test_an_unknown_root_is_rejected() -> None:
    with pytest.raises(ExpressionError):
        r("${{ secrets.token }}")


def test_render_data_walks_nested_values_and_keeps_other_types() -> None:
    data = {"a": ["${{ env.STAGE }}", 1, None], "b": {"c": "x${{ env.STAGE }}"}, "d": False}

    assert render_data(data, CONTEXT, ROOTS) == {
        "a": ["prod", 1, None],
        "b": {"c": "xprod"},
        "d": False,
    }


def test_expressions_in_parses_each_expression_with_its_offset() -> None:
    found = expressions_in("a ${{ env.STAGE }} b ${{ steps.build.outcome }}", ROOTS)

    assert [offset for _, offset in found] == [2, 21]
    assert found[0][0].evaluate(CONTEXT) == "prod"


def test_expressions_in_text_without_expressions_is_empty() -> None:
    assert expressions_in("plain ${VAR}", ROOTS) == []


def test_expressions_in_rejects_an_invalid_expression() -> None:
    with pytest.raises(ExpressionError):
        expressions_in("${{ 1 + }}", ROOTS)
