"""Strict YAML: hostile input is refused with file:line:col before it can cost anything."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcce.core.strict_yaml import Limits, Mark, flatten, load_yaml, load_yaml_file
from bcce.errors import BcceError, ConfigError, WorkflowError

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_plain_data_loads_as_python_values() -> None:
    text = "a: 1\nb: [x, 2.5, true, null]\nc: {d: e}\n"

    assert load_yaml(text).data == {"a": 1, "b": ["x", 2.5, True, None], "c": {"d": "e"}}


def test_an_empty_document_is_none() -> None:
    assert load_yaml("# only a comment\n").data is None


def test_marks_give_the_line_and_column_of_every_value() -> None:
    text = "storage:\n  backend: local\nlist:\n  - one\n  - two\n"

    document = load_yaml(text, source="cfg.yaml")

    assert document.marks[("storage", "backend")] == Mark("cfg.yaml", 2, 12)
    assert document.marks[("list", 1)] == Mark("cfg.yaml", 5, 5)
    assert str(document.mark_of(("storage", "backend"))) == "cfg.yaml:2:12"


def test_mark_of_a_path_without_a_mark_falls_back_to_its_parent() -> None:
    document = load_yaml("storage:\n  backend: local\n", source="cfg.yaml")

    assert document.mark_of(("storage", "backend", "missing")) == Mark("cfg.yaml", 2, 12)


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    with pytest.raises(ConfigError) as caught:
        load_yaml("a: 1\nb: 2\na: 3\n", source="dup.yaml")

    assert caught.value.location == "dup.yaml:3:1"
    assert "duplicate key 'a'" in caught.value.message
    assert "line 1" in caught.value.message


def test_billion_laughs_is_refused_before_expansion() -> None:
    with pytest.raises(ConfigError, match="alias expansion limit") as caught:
        load_yaml(BILLION_LAUGHS, source="lol.yaml")

    assert (caught.value.location or "").startswith("lol.yaml:")


def test_a_few_aliases_within_the_limit_are_allowed() -> None:
    document = load_yaml("a: &x [1, 2]\nb: *x\n")

    assert document.data == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize(
    "text",
    ["[" * 10_000 + "]" * 10_000, "{a: " * 10_000 + "}" * 10_000, "- " * 10_000 + "x"],
    ids=["flow-sequences", "flow-mappings", "block-sequences"],
)
def test_ten_thousand_levels_of_nesting_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="nesting deeper than the limit of 64"):
        load_yaml(text)


def test_nesting_up_to_the_limit_is_allowed() -> None:
    depth = Limits().max_depth

    assert load_yaml("[" * depth + "]" * depth).data is not None


def test_multiple_documents_are_refused() -> None:
    with pytest.raises(ConfigError, match="more than one YAML document") as caught:
        load_yaml("a: 1\n---\nb: 2\n", source="two.yaml")

    assert caught.value.location == "two.yaml:2:1"


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system [echo pwned]",
        "a: !!python/name:os.system",
        "a: !custom value",
        "a: !!binary aGVsbG8=",
        "a: !!set {x, y}",
        "a: !!omap [x: 1]",
    ],
)
def test_tags_beyond_plain_data_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="unsupported tag") as caught:
        load_yaml(text, source="tags.yaml")

    assert caught.value.location == "tags.yaml:1:4"


@pytest.mark.parametrize("text", ["a: !!int abc", "a: !!float x", "a: !!bool maybe", "a: !!int "])
def test_a_standard_tag_on_a_value_that_does_not_fit_it_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a valid") as caught:
        load_yaml(text, source="t.yaml")

    assert caught.value.location == "t.yaml:1:4"


def test_dates_stay_the_text_the_user_wrote() -> None:
    assert load_yaml("a: 2026-01-02\n").data == {"a": "2026-01-02"}


def test_merge_keys_merge_with_explicit_keys_winning() -> None:
    text = "base: &base {x: 1, y: 2}\nderived:\n  <<: *base\n  y: 3\n"

    assert load_yaml(text).data["derived"] == {"x": 1, "y": 3}


def test_merge_keys_accept_a_list_of_mappings_earlier_ones_winning() -> None:
    text = "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n"

    assert load_yaml(text).data["c"] == {"x": 1, "y": 2}


def test_merging_a_scalar_is_refused() -> None:
    with pytest.raises(ConfigError, match="'<<' must merge a mapping"):
        load_yaml("a: &a 1\nb:\n  <<: *a\n")


def test_non_scalar_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="mapping keys must be plain scalars"):
        load_yaml("? [a, b]\n: 1\n")


def test_an_alias_to_an_enclosing_anchor_is_refused() -> None:
    with pytest.raises(ConfigError, match="undefined or enclosing anchor"):
        load_yaml("&a [*a]")


def test_syntax_errors_point_at_the_line_and_column() -> None:
    with pytest.raises(ConfigError, match="invalid YAML") as caught:
        load_yaml("storage:\n  root: [a\n", source="bad.yaml")

    assert caught.value.location == "bad.yaml:3:1"
    assert caught.value.hint


def test_control_characters_are_refused_at_their_position() -> None:
    with pytest.raises(ConfigError, match="#x0001") as caught:
        load_yaml("a: 1\nbé: x\x01\n", source="ctl.yaml")

    assert caught.value.location == "ctl.yaml:2:6"


def test_files_larger_than_the_limit_are_refused() -> None:
    with pytest.raises(ConfigError, match="larger than the limit of 10 bytes"):
        load_yaml("a: 12345678901", limits=Limits(max_bytes=10))


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_yaml(b"a: \xff\n")


def test_the_error_class_is_the_callers_choice() -> None:
    with pytest.raises(WorkflowError):
        load_yaml("a: 1\na: 2\n", error=WorkflowError)


def test_load_yaml_file_names_the_file_in_marks(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a:\n  b: 1\n")

    document = load_yaml_file(path)

    assert document.marks[("a", "b")] == Mark(str(path), 2, 6)


def test_load_yaml_file_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file") as caught:
        load_yaml_file(tmp_path / "absent.yaml")

    assert caught.value.location == str(tmp_path / "absent.yaml")


def test_flatten_yields_leaves_with_empty_mappings_as_values() -> None:
    leaves = dict(flatten({"a": {"b": 1, "c": {}}, "d": [1]}))

    assert leaves == {("a", "b"): 1, ("a", "c"): {}, ("d",): [1]}


YAML_PIECES = st.sampled_from(
    [
        *"ab:-[]{},&*!|>'\"#%@`?<\n\t 0.~\\\x00\x85\u2028é",
        "!!int ",
        "!!bool ",
        "!!float ",
        "!!str ",
        "!!binary ",
        "!!merge ",
        "!!timestamp ",
        "!x ",
        "<<: ",
        "&a ",
        "*a",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "? ",
        "0x",
        "1e9",
        ".nan",
    ]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.lists(YAML_PIECES, max_size=40).map("".join)))
def test_any_text_loads_or_raises_a_bcce_error(text: str) -> None:
    with contextlib.suppress(BcceError):
        load_yaml(text)


@settings(max_examples=200)
@given(st.binary())
def test_any_bytes_load_or_raise_a_bcce_error(raw: bytes) -> None:
    with contextlib.suppress(BcceError):
        load_yaml(raw)
