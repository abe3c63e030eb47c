"""``${VAR}`` substitution: values, literals, undefined names and where they are."""

from __future__ import annotations

from typing import Any

import pytest

from bcce.workflow.substitution import (
    UndefinedVariable,
    substitute,
    substitute_text,
    variable_names,
)


class Missing(Exception):
    def __init__(self, name: str, path: tuple[str | int, ...]) -> None:
        super().__init__(name)
        self.name = name
        self.path = path


def on_error(exc: UndefinedVariable, path: tuple[str | int, ...]) -> Exception:
    return Missing(exc.name, path)


def test_a_variable_is_replaced_by_its_value() -> None:
    assert substitute_text("deploy ${TARGET} now", {"TARGET": "prod"}) == "deploy prod now"


def test_several_variables_in_one_string_are_replaced() -> None:
    assert substitute_text("${A}-${B}-${A}", {"A": "1", "B": "2"}) == "1-2-1"


def test_a_doubled_dollar_gives_a_literal_reference() -> None:
    assert substitute_text("echo $${HOME}", {}) == "echo ${HOME}"


def test_a_literal_and_a_variable_can_sit_side_by_side() -> None:
    assert substitute_text("$${A}${A}", {"A": "x"}) == "${A}x"


def test_text_without_variables_is_returned_unchanged() -> None:
    text = "echo $HOME and ${{ steps.a.outputs.x }} and $1"

    assert substitute_text(text, {}) == text


def test_an_undefined_variable_raises_with_its_name_and_column() -> None:
    with pytest.raises(UndefinedVariable) as caught:
        substitute_text("echo ${DEFINED} ${UNDEFINED}", {"DEFINED": "x"})

    assert caught.value.name == "UNDEFINED"
    assert caught.value.column == 16


def test_an_empty_value_is_a_value_not_an_undefined_variable() -> None:
    assert substitute_text("[${EMPTY}]", {"EMPTY": ""}) == "[]"


def test_values_are_not_substituted_again() -> None:
    assert substitute_text("${A}", {"A": "${B}", "B": "nested"}) == "${B}"


def test_names_must_look_like_identifiers() -> None:
    assert substitute_text("${1X} ${A-B} ${}", {}) == "${1X} ${A-B} ${}"


def test_substitute_walks_nested_data_and_leaves_other_types_alone() -> None:
    data: dict[str, Any] = {"a": ["${X}", 3, {"b": "${X}!"}], "n": None, "t": True}

    assert substitute(data, {"X": "v"}, on_error) == {
        "a": ["v", 3, {"b": "v!"}],
        "n": None,
        "t": True,
    }


def test_substitute_reports_the_path_of_an_undefined_variable() -> None:
    data = {"steps": [{"id": "a"}, {"id": "b", "command": "echo ${NOPE}"}]}

    with pytest.raises(Missing) as caught:
        substitute(data, {}, on_error)

    assert caught.value.name == "NOPE"
    assert caught.value.path == ("steps", 1, "command")


def test_substitute_starts_paths_at_the_given_prefix() -> None:
    with pytest.raises(Missing) as caught:
        substitute({"A": "${NOPE}"}, {}, on_error, ("env",))

    assert caught.value.path == ("env", "A")


def test_keys_are_not_substituted() -> None:
    assert substitute({"${X}": "v"}, {"X": "k"}, on_error) == {"${X}": "v"}


def test_variable_names_lists_references_but_not_literals() -> None:
    assert variable_names("${A} $${B} ${C} ${{ d }}") == ["A", "C"]
