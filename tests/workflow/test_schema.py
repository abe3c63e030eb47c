from __future__ import annotations

import copy
import importlib.resources
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcce.workflow.schema import (
    SCHEMA_RESOURCE,
    SchemaIssue,
    is_valid,
    load_schema,
    schema_errors,
    validator,
)
from bcce.workflow.schema.compiler import compile_predicate

FIXTURES = Path(__file__).parent / "fixtures" / "schema"
V1_CORPUS = sorted(FIXTURES.glob("v1_*.yml"))
ID_PATTERN = "^[a-z][a-z0-9_]*$"


def load_fixture(name: str) -> Any:
    return yaml.safe_load((FIXTURES / name).read_text(encoding="utf-8"))


def workflow(*steps: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "workflow": "test", "steps": list(steps), **top}


def cmd(step_id: str = "run", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "cmd", "command": "echo hi", **extra}


def issue_at(issues: list[SchemaIssue], *path: str | int) -> SchemaIssue:
    matches = [i for i in issues if i.path == path]
    assert matches, f"no issue at {path}; got {issues}"
    return matches[0]


# --- the resource and its loader -------------------------------------------------------------


def test_schema_is_shipped_as_package_data() -> None:
    resource = importlib.resources.files("bcce.workflow.schema").joinpath(SCHEMA_RESOURCE)
    assert resource.is_file()


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = load_schema()
    validator().check_schema(schema)  # raises SchemaError if the schema breaks its metaschema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_load_schema_returns_a_copy_the_caller_may_change() -> None:
    load_schema()["properties"].clear()
    assert "steps" in load_schema()["properties"]
    assert schema_errors(workflow(cmd())) == []


def test_validator_is_built_once() -> None:
    assert validator() is validator()


def test_validator_checks_formats() -> None:
    assert validator().format_checker is not None


def _property_schemas(node: Any, where: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("allOf", "if"):
                continue  # conditions and per-type rules restate keys documented on the step
            if key == "properties" and isinstance(value, dict):
                found.extend((f"{where}.{name}", sub) for name, sub in value.items())
            found.extend(_property_schemas(value, f"{where}.{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_property_schemas(value, f"{where}[{index}]"))
    return found


def test_every_property_is_documented() -> None:
    undocumented = [
        where
        for where, sub in _property_schemas(load_schema())
        if not (isinstance(sub, dict) and sub.get("description"))
    ]
    assert undocumented == []


def test_every_object_with_known_keys_is_closed_except_free_form_ones() -> None:
    schema = load_schema()
    open_objects = []
    for name, sub in [("<root>", schema), *schema["$defs"].items()]:
        if "properties" in sub and sub.get("type") == "object":
            closed = (
                sub.get("additionalProperties") is False
                or sub.get("unevaluatedProperties") is False
            )
            if not closed:
                open_objects.append(name)
    assert sorted(open_objects) == ["env", "inputs"]


def test_every_pattern_is_anchored() -> None:
    patterns = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.append(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_schema())
    assert patterns
    assert [p for p in patterns if not (p.startswith("^") and p.endswith("$"))] == []


# --- compatibility: every v1 workflow validates unchanged -------------------------------------


def test_compatibility_corpus_is_not_empty() -> None:
    assert len(V1_CORPUS) >= 3


@pytest.mark.parametrize("path", V1_CORPUS, ids=lambda p: p.name)
def test_v1_workflow_validates_unchanged(path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    before = copy.deepcopy(document)
    assert schema_errors(document) == []
    assert document == before


_text = st.text(max_size=12)
_json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text
_json = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
_v1_ids = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
_v1_tools = st.lists(st.sampled_from(["ReadFile", "Search", "Diff", "Apply", "Cmd", "Bash"]))
_v1_policy = st.fixed_dictionaries(
    {},
    optional={
        "timeout_seconds": st.integers(1, 1800),
        "max_files": st.integers(1, 1000),
        "max_edits": st.integers(1, 1000),
        "allowed_paths": st.lists(_text, max_size=3),
        "cmd_allowlist": st.lists(_text, max_size=3),
    },
)
_v1_inputs = st.tuples(
    st.fixed_dictionaries(
        {},
        optional={
            "paths": st.lists(_text, max_size=3),
            "file_size_limit_kb": st.integers(1, 10240),
        },
    ),
    st.dictionaries(_v1_ids.filter(lambda k: k not in {"paths", "file_size_limit_kb"}), _json),
).map(lambda parts: {**parts[1], **parts[0]})
_v1_step_keys: dict[str, st.SearchStrategy[Any]] = {
    "prompt_file": _text,
    "command": _text,
    "on_error": st.sampled_from(["fail", "continue", "retry"]),
    "approve": st.booleans(),
    "available_tools": _v1_tools,
    "policy": _v1_policy,
    "inputs": _v1_inputs,
}
# What v1's `workflow validate` demanded beyond its schema: prompt steps a prompt_file, cmd steps a
# command (both non-empty), agent steps a policy. Custom steps could not run in v1 and are left out.
_v1_required: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "prompt": {"prompt_file": _text.filter(bool)},
    "agent": {"policy": _v1_policy},
    "cmd": {"command": _text.filter(bool)},
    "apply_diff": {},
}
_v1_step = st.sampled_from(sorted(_v1_required)).flatmap(
    lambda step_type: st.fixed_dictionaries(
        {"id": _v1_ids, "type": st.just(step_type), **_v1_required[step_type]},
        optional={k: v for k, v in _v1_step_keys.items() if k not in _v1_required[step_type]},
    )
)
_v1_env = st.tuples(
    st.fixed_dictionaries(
        {},
        optional={
            "max_runtime_seconds": st.integers(1, 3600),
            "artifacts_dir": _text,
            "seed": st.integers(),
        },
    ),
    st.dictionaries(_text.filter(lambda k: k not in {"max_runtime_seconds", "seed"}), _json),
).map(lambda parts: {**parts[1], **parts[0]})
_v1_workflow = st.fixed_dictionaries(
    {
        "version": st.just(1),
        "workflow": _text.filter(bool),
        "steps": st.lists(_v1_step, min_size=1, max_size=4),
    },
    optional={
        "model": _text.filter(bool),
        "guardrails": st.lists(_text, max_size=3),
        "env": _v1_env,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_v1_workflow)
def test_any_v1_shaped_workflow_validates(document: dict[str, Any]) -> None:
    assert schema_errors(document) == []


# --- additions ------------------------------------------------------------------------------


def test_workflow_using_every_addition_validates() -> None:
    assert schema_errors(load_fixture("additions.yml")) == []


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(cmd(needs="setup"), id="needs-one-id"),
        pytest.param(cmd(needs=["setup", "build"]), id="needs-list"),
        pytest.param(cmd(needs=[]), id="needs-empty-list"),
        pytest.param(cmd(**{"if": "success()"}), id="if"),
        pytest.param(cmd(timeout_seconds=30), id="timeout"),
        pytest.param(cmd(retry={"max_attempts": 3}), id="retry-attempts-only"),
        pytest.param(cmd(retry={"backoff_seconds": 0.5, "jitter": False}), id="retry-backoff"),
        pytest.param(cmd(outputs={"sha": "${{ result.stdout }}"}), id="outputs"),
        pytest.param(cmd(name="Run", description="Runs it."), id="name-description"),
        pytest.param(cmd(max_budget_usd=0.25), id="step-budget"),
        pytest.param({"id": "ask", "type": "prompt", "prompt": "Say hi"}, id="inline-prompt"),
        pytest.param(
            {"id": "ask", "type": "prompt", "prompt_file": "p.md", "model": "m"}, id="step-model"
        ),
        pytest.param({"id": "fix", "type": "agent", "prompt": "Fix it"}, id="agent-prompt-only"),
        pytest.param(
            {"id": "read", "type": "agent", "prompt": "Read", "policy": {"max_edits": 0}},
            id="read-only-agent",
        ),
        pytest.param(
            {"id": "w", "type": "agent", "prompt": "x", "available_tools": ["WriteFile"]},
            id="write-file-tool",
        ),
        pytest.param(
            {"id": "c", "type": "custom", "handler": "pkg.mod:run", "config": {"a": [1]}},
            id="custom",
        ),
        pytest.param({"id": "g", "type": "composite", "steps": [cmd()]}, id="composite"),
        pytest.param(
            {"id": "p", "type": "parallel", "steps": [cmd("a"), cmd("b")], "max_parallel": 1},
            id="parallel",
        ),
        pytest.param(
            {"id": "c", "type": "conditional", "condition": "true", "then": [cmd()]},
            id="conditional-without-else",
        ),
        pytest.param(
            {
                "id": "c",
                "type": "conditional",
                "condition": "x",
                "then": [cmd("a")],
                "else": [cmd("b")],
            },
            id="conditional-with-else",
        ),
        pytest.param(
            {"id": "l", "type": "acme:lint", "rules": ["x"], "strict": True}, id="plugin-keys"
        ),
        pytest.param({"id": "l", "type": "my-org:code_scan"}, id="plugin-name-with-dash"),
    ],
)
def test_addition_validates(step: dict[str, Any]) -> None:
    assert schema_errors(workflow(step)) == []


def test_workflow_budget_and_description_validate() -> None:
    assert schema_errors(workflow(cmd(), max_budget_usd=3, description="d")) == []


def test_integer_fields_accept_a_whole_float_as_json_schema_does() -> None:
    # Documented in the schema's $comment: consumers coerce with int().
    assert schema_errors(workflow(cmd(timeout_seconds=60.0))) == []


def test_integer_fields_reject_booleans() -> None:
    issue = issue_at(
        schema_errors(workflow(cmd(timeout_seconds=True))), "steps", 0, "timeout_seconds"
    )
    assert issue.message == "must be an integer (got true)"


# --- errors: where, what, and a hint --------------------------------------------------------


def test_valid_document_has_no_issues() -> None:
    assert schema_errors(workflow(cmd())) == []


def test_non_mapping_document_is_reported_at_the_root() -> None:
    issues = schema_errors(["not", "a", "workflow"])
    assert issues[0].path == ()
    assert issues[0].message == "must be a mapping (got a list)"


def test_unknown_top_level_key_lists_allowed_keys_and_suggests_one() -> None:
    issue = issue_at(schema_errors(workflow(cmd(), stpes=[])), "stpes")
    assert issue.message.startswith("unknown key 'stpes' (allowed: version, workflow, ")
    assert issue.hint == "did you mean 'steps'?"


def test_unknown_step_key_names_the_key_and_suggests_one() -> None:
    step = {"id": "run", "type": "cmd", "comand": "ls"}
    issue = issue_at(schema_errors(workflow(step)), "steps", 0, "comand")
    assert issue.message.startswith("unknown key 'comand' (allowed: id, type, ")
    assert issue.hint == "did you mean 'command'?"


def test_unknown_step_key_lists_only_keys_of_that_step_type() -> None:
    issue = issue_at(schema_errors(workflow(cmd(colour="red"))), "steps", 0, "colour")
    assert "command" in issue.message
    assert "then" not in issue.message
    assert issue.hint is None


def test_unknown_policy_key_is_an_error() -> None:
    step = {"id": "fix", "type": "agent", "policy": {"cmd_allow_list": ["npm"]}}
    issue = issue_at(schema_errors(workflow(step)), "steps", 0, "policy", "cmd_allow_list")
    assert issue.message.startswith(
        "unknown key 'cmd_allow_list' (allowed: preset, timeout_seconds, "
    )
    assert issue.hint == "did you mean 'cmd_allowlist'?"


def test_unknown_retry_key_is_an_error() -> None:
    issues = schema_errors(workflow(cmd(retry={"attempts": 3})))
    assert issue_at(issues, "steps", 0, "retry", "attempts").hint == "did you mean 'max_attempts'?"


def test_bad_step_id_shows_the_pattern() -> None:
    issue = issue_at(schema_errors(workflow(cmd("Id"))), "steps", 0, "id")
    assert issue.message == f"'Id' does not match {ID_PATTERN}"
    assert issue.hint is not None and "lower-case" in issue.hint


def test_wrong_type_says_what_was_expected_and_what_was_given() -> None:
    step = {"id": "fix", "type": "agent", "policy": {"max_files": "many"}}
    issue = issue_at(schema_errors(workflow(step)), "steps", 0, "policy", "max_files")
    assert issue.message == "must be an integer (got 'many')"


def test_bad_enum_lists_the_choices() -> None:
    issue = issue_at(schema_errors(workflow(cmd(on_error="abort"))), "steps", 0, "on_error")
    assert issue.message == "must be one of fail, continue, retry (got 'abort')"


def test_bad_tool_is_reported_at_its_list_position() -> None:
    step = {"id": "a", "type": "agent", "prompt": "x", "available_tools": ["ReadFile", "Shell"]}
    issue = issue_at(schema_errors(workflow(step)), "steps", 0, "available_tools", 1)
    assert issue.message.startswith("must be one of ReadFile, Search, Diff, Apply, Cmd, Bash")


def test_wrong_version_is_reported() -> None:
    issue = issue_at(schema_errors(workflow(cmd(), version=2)), "version")
    assert issue.message == "must be 1 (got 2)"


def test_missing_top_level_key_is_reported_at_the_root() -> None:
    issues = schema_errors({"version": 1, "workflow": "w"})
    assert issue_at(issues).message == "missing required key 'steps'"


def test_empty_steps_list_is_reported() -> None:
    assert issue_at(schema_errors(workflow()), "steps").message == "must not be empty"


def test_step_without_id_is_reported() -> None:
    issues = schema_errors(workflow({"type": "cmd", "command": "ls"}))
    assert issue_at(issues, "steps", 0).message == "every step needs 'id'"


def test_out_of_range_number_gives_the_bound() -> None:
    issue = issue_at(schema_errors(workflow(cmd(timeout_seconds=0))), "steps", 0, "timeout_seconds")
    assert issue.message == "must be at least 1 (got 0)"


def test_zero_budget_is_rejected() -> None:
    issue = issue_at(schema_errors(workflow(cmd(), max_budget_usd=0)), "max_budget_usd")
    assert issue.message == "must be greater than 0 (got 0)"


def test_needs_of_the_wrong_type_says_both_accepted_forms() -> None:
    issue = issue_at(schema_errors(workflow(cmd(needs=5))), "steps", 0, "needs")
    assert issue.message == "must be a string or a list (got 5)"


def test_bad_id_in_needs_list_is_reported_at_the_item() -> None:
    issue = issue_at(schema_errors(workflow(cmd(needs=["ok", "Bad"]))), "steps", 0, "needs", 1)
    assert issue.message == f"'Bad' does not match {ID_PATTERN}"


def test_duplicate_needs_are_reported() -> None:
    issue = issue_at(schema_errors(workflow(cmd(needs=["a", "a"]))), "steps", 0, "needs")
    assert issue.message == "must not list the same item twice"


def test_bad_output_name_is_reported_at_the_name() -> None:
    issues = schema_errors(workflow(cmd(outputs={"Bad-Name": "x"})))
    issue = issue_at(issues, "steps", 0, "outputs", "Bad-Name")
    assert issue.message == f"name 'Bad-Name' does not match {ID_PATTERN}"


def test_non_string_output_value_is_reported() -> None:
    issue = issue_at(schema_errors(workflow(cmd(outputs={"n": 3}))), "steps", 0, "outputs", "n")
    assert issue.message == "must be a string (got 3)"


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"id": "s", "type": "cmd"}, "a 'cmd' step needs 'command'"),
        ({"id": "s", "type": "custom"}, "a 'custom' step needs 'handler'"),
        ({"id": "s", "type": "composite"}, "a 'composite' step needs 'steps'"),
        ({"id": "s", "type": "parallel"}, "a 'parallel' step needs 'steps'"),
        (
            {"id": "s", "type": "conditional", "then": [cmd()]},
            "a 'conditional' step needs 'condition'",
        ),
        ({"id": "s", "type": "conditional", "condition": "x"}, "a 'conditional' step needs 'then'"),
        ({"id": "s", "type": "prompt"}, "a 'prompt' step needs 'prompt' or 'prompt_file'"),
        ({"id": "s", "type": "agent"}, "an 'agent' step needs 'prompt', 'prompt_file' or 'policy'"),
    ],
    ids=lambda value: value if isinstance(value, str) else value["type"],
)
def test_missing_key_required_by_the_step_type(step: dict[str, Any], message: str) -> None:
    assert issue_at(schema_errors(workflow(step)), "steps", 0).message == message


def test_required_key_message_carries_its_documentation_as_hint() -> None:
    issue = issue_at(schema_errors(workflow({"id": "s", "type": "custom"})), "steps", 0)
    assert issue.hint is not None and "module:attribute" in issue.hint


def test_empty_command_on_a_cmd_step_is_rejected() -> None:
    issue = issue_at(schema_errors(workflow(cmd(command=""))), "steps", 0, "command")
    assert issue.message == "must not be empty"


def test_prompt_and_prompt_file_together_are_rejected() -> None:
    step = {"id": "s", "type": "prompt", "prompt": "x", "prompt_file": "p.md"}
    issue = issue_at(schema_errors(workflow(step)), "steps", 0)
    assert issue.message == "use either 'prompt' or 'prompt_file', not both"


def test_custom_handler_must_be_module_colon_attribute() -> None:
    step = {"id": "s", "type": "custom", "handler": "scripts/run.py"}
    issue = issue_at(schema_errors(workflow(step)), "steps", 0, "handler")
    assert issue.message.startswith("'scripts/run.py' does not match ^")


@pytest.mark.parametrize(
    ("step", "key", "owners"),
    [
        (cmd(then=[cmd("x")]), "then", "conditional"),
        (
            {"id": "a", "type": "agent", "policy": {}, "steps": [cmd()]},
            "steps",
            "composite and parallel",
        ),
        (cmd(prompt="hi"), "prompt", "prompt and agent"),
        (cmd(model="m"), "model", "prompt, agent and custom"),
        (cmd(handler="a:b"), "handler", "custom"),
        (
            {"id": "g", "type": "composite", "steps": [cmd()], "max_parallel": 2},
            "max_parallel",
            "parallel",
        ),
        (
            {"id": "g", "type": "composite", "steps": [cmd()], "policy": {}},
            "policy",
            "prompt, agent, cmd, apply_diff and custom",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_key_of_another_step_type_is_refused_with_its_owners(
    step: dict[str, Any], key: str, owners: str
) -> None:
    issue = issue_at(schema_errors(workflow(step)), "steps", 0, key)
    assert (
        issue.message == f"key {key!r} is not allowed on {_a(step['type'])} {step['type']!r} step"
    )
    assert issue.hint == f"{key!r} belongs to {owners} steps"


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@pytest.mark.parametrize(
    "step_type",
    [
        "Acme:lint",
        "acme:",
        ":lint",
        "acme:lint:extra",
        "acme lint",
        "1acme:lint",
        "acme:Lint",
        "foo",
    ],
)
def test_bad_step_type_is_reported_with_the_accepted_forms(step_type: str) -> None:
    issue = issue_at(schema_errors(workflow({"id": "s", "type": step_type})), "steps", 0, "type")
    assert issue.message == f"unknown step type {step_type!r}"
    assert issue.hint is not None
    assert "namespace:name" in issue.hint
    assert "apply_diff" in issue.hint


def test_misspelt_step_type_gets_a_suggestion() -> None:
    issue = issue_at(schema_errors(workflow({"id": "s", "type": "agnet"})), "steps", 0, "type")
    assert issue.hint is not None and issue.hint.startswith("did you mean 'agent'?")


def test_non_string_step_type_is_reported() -> None:
    issue = issue_at(schema_errors(workflow({"id": "s", "type": 3})), "steps", 0, "type")
    assert issue.message == "the step type must be a string (got 3)"


def test_plugin_step_keeps_the_meaning_of_known_keys() -> None:
    step = {"id": "l", "type": "acme:lint", "extra": 1, "timeout_seconds": "soon"}
    issues = schema_errors(workflow(step))
    assert [i.path for i in issues] == [("steps", 0, "timeout_seconds")]


# --- nested control steps -------------------------------------------------------------------


def _nested(innermost: dict[str, Any]) -> dict[str, Any]:
    return workflow(
        {
            "id": "gate",
            "type": "conditional",
            "condition": "x",
            "then": [cmd("ok")],
            "else": [
                {
                    "id": "fan_out",
                    "type": "parallel",
                    "steps": [
                        cmd("first"),
                        {"id": "group", "type": "composite", "steps": [cmd("inner"), innermost]},
                    ],
                }
            ],
        }
    )


NESTED = ("steps", 0, "else", 0, "steps", 1, "steps", 1)


def test_nested_bad_id_is_reported_at_its_full_path() -> None:
    issue = issue_at(schema_errors(_nested(cmd("Bad"))), *NESTED, "id")
    assert issue.message == f"'Bad' does not match {ID_PATTERN}"


def test_nested_unknown_key_is_reported_at_its_full_path() -> None:
    issue = issue_at(schema_errors(_nested(cmd(comand="ls"))), *NESTED, "comand")
    assert issue.hint == "did you mean 'command'?"


def test_nested_missing_requirement_is_reported_at_the_nested_step() -> None:
    issue = issue_at(schema_errors(_nested({"id": "c", "type": "cmd"})), *NESTED)
    assert issue.message == "a 'cmd' step needs 'command'"


def test_nested_bad_failure_strategy_is_reported() -> None:
    inner = {"id": "g2", "type": "composite", "steps": [cmd()], "failure_strategy": "ignore"}
    issue = issue_at(schema_errors(_nested(inner)), *NESTED, "failure_strategy")
    assert issue.message == "must be one of abort, continue (got 'ignore')"


def test_empty_then_branch_is_reported() -> None:
    step = {"id": "c", "type": "conditional", "condition": "x", "then": []}
    assert (
        issue_at(schema_errors(workflow(step)), "steps", 0, "then").message == "must not be empty"
    )


def test_bad_step_inside_then_branch_is_reported() -> None:
    step = {"id": "c", "type": "conditional", "condition": "x", "then": [cmd(on_error="x")]}
    issues = schema_errors(workflow(step))
    assert issue_at(issues, "steps", 0, "then", 0, "on_error").message.startswith("must be one of")


# --- ordering and rendering -----------------------------------------------------------------


def test_best_match_comes_first() -> None:
    # The misspelt key explains the missing one, so it leads.
    issues = schema_errors({"version": 1, "workflow": "w", "stpes": [cmd()]})
    assert issues[0].path == ("stpes",)
    assert ((), "missing required key 'steps'") in [(i.path, i.message) for i in issues]


def test_remaining_issues_follow_document_order() -> None:
    document = workflow(cmd("a", on_error="x"), cmd("b"), cmd("C", on_error="y"), version=2)
    paths = [issue.path for issue in schema_errors(document)]
    assert paths[0] == ("version",)
    assert paths[1:] == [("steps", 0, "on_error"), ("steps", 2, "id"), ("steps", 2, "on_error")]


def test_each_issue_is_reported_once() -> None:
    issues = schema_errors(workflow({"id": "c", "type": "conditional"}))
    assert len(issues) == len({(i.path, i.message) for i in issues}) == 2


def test_issue_key_renders_the_path_as_users_write_it() -> None:
    assert SchemaIssue(("steps", 2, "policy", "max_files"), "m").key == "steps[2].policy.max_files"
    assert SchemaIssue((), "m").key == ""


_known_words = st.sampled_from(
    [
        "version",
        "workflow",
        "steps",
        "id",
        "type",
        "cmd",
        "agent",
        "prompt",
        "policy",
        "then",
        "else",
        "condition",
        "needs",
        "outputs",
        "command",
        "handler",
        "acme:lint",
        "composite",
    ]
)
_fuzz = st.recursive(
    _json_scalar | _known_words,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_known_words | _text, inner, max_size=5)
    ),
    max_leaves=25,
)


_fuzz_steps = st.lists(
    st.fixed_dictionaries(
        {"id": _v1_ids, "type": _known_words | _text},
    ).flatmap(
        lambda base: st.dictionaries(_known_words | _text, _fuzz, max_size=5).map(
            lambda extra: {**base, **extra}
        )
    ),
    min_size=1,
    max_size=3,
).map(lambda steps: workflow(*steps))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_fuzz | _fuzz_steps)
def test_any_document_gets_issues_instead_of_an_exception(document: Any) -> None:
    issues = schema_errors(document)
    assert (issues == []) == validator().is_valid(document)
    assert all(isinstance(i.message, str) and i.message for i in issues)


# --- the fast path: is_valid decides, jsonschema explains ----------------------------------------


def _trivial_steps(count: int) -> dict[str, Any]:
    return workflow(*({"id": f"s{i}", "type": "cmd", "command": "/bin/true"} for i in range(count)))


def test_two_hundred_step_workflow_has_no_issues() -> None:
    assert schema_errors(_trivial_steps(200)) == []


def test_shipped_schema_compiles_to_a_fast_predicate() -> None:
    # Without this the fallback (jsonschema's own is_valid) would hide a lost fast path.
    assert compile_predicate(load_schema(), validator)(_trivial_steps(3)) is True


def test_valid_document_is_checked_without_importing_jsonschema() -> None:
    # Importing jsonschema and checking the schema cost ~100 ms a process: the error path's alone.
    script = (
        "import sys\n"
        "from bcce.workflow.schema import schema_errors\n"
        "document = {'version': 1, 'workflow': 'w', 'steps': [{'id': 'a', 'type': 'cmd', "
        "'command': 'ls', 'needs': ['b', 'c']}]}\n"
        "assert schema_errors(document) == []\n"
        "print('jsonschema' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


def test_is_valid_rejects_what_schema_errors_reports() -> None:
    document = workflow(cmd(comand="ls"))
    assert is_valid(document) is False
    assert issue_at(schema_errors(document), "steps", 0, "comand")


COMMON_KEYS = (
    "id",
    "type",
    "name",
    "description",
    "needs",
    "if",
    "timeout_seconds",
    "on_error",
    "retry",
    "outputs",
    "max_budget_usd",
)
V1_KEYS = ("prompt_file", "command", "approve", "available_tools", "policy", "inputs")
KEYS_OF_TYPE: dict[str, tuple[str, ...]] = {
    "prompt": (*COMMON_KEYS, *V1_KEYS, "prompt", "model"),
    "agent": (*COMMON_KEYS, *V1_KEYS, "prompt", "model"),
    "cmd": (*COMMON_KEYS, *V1_KEYS),
    "apply_diff": (*COMMON_KEYS, *V1_KEYS),
    "custom": (*COMMON_KEYS, *V1_KEYS, "model", "handler", "config"),
    "composite": (*COMMON_KEYS, "steps", "failure_strategy"),
    "parallel": (*COMMON_KEYS, "steps", "failure_strategy", "max_parallel"),
    "conditional": (*COMMON_KEYS, "condition", "then", "else"),
}
ALL_STEP_KEYS = tuple(dict.fromkeys(k for keys in KEYS_OF_TYPE.values() for k in keys))
CHILD_KEYS = ("steps", "then", "else")
PLUGIN_TYPES = ("acme:lint", "my-org:code_scan")
BAD_TYPES: tuple[object, ...] = ("foo", "Acme:lint", "acme:", "agnet", "", 3, None, ["cmd"])
REQUIRED_OF_TYPE: dict[str, tuple[str, ...]] = {
    "cmd": ("command",),
    "custom": ("handler",),
    "composite": ("steps",),
    "parallel": ("steps",),
    "conditional": ("condition", "then"),
}

_name = _text.filter(bool)
_range = st.integers
_retry = st.fixed_dictionaries(
    {},
    optional={
        "max_attempts": _range(1, 100),
        "backoff_seconds": st.floats(0, 60) | _range(0, 60),
        "max_backoff_seconds": st.floats(0, 600),
        "jitter": st.booleans(),
    },
)
_policy = st.fixed_dictionaries(
    {},
    optional={
        "timeout_seconds": _range(1, 86400) | st.just(60.0),
        "max_files": _range(0, 100000),
        "max_edits": _range(0, 100000),
        "allowed_paths": st.lists(_text, max_size=2),
        "cmd_allowlist": st.lists(_text, max_size=2),
    },
)
_tools = st.lists(
    st.sampled_from(["ReadFile", "Search", "Diff", "Apply", "Cmd", "Bash", "WriteFile"])
)
_handler = st.from_regex(
    r"[a-z_][a-z0-9_]{0,5}(\.[a-z_]{1,4})?:[A-Za-z_][a-z0-9_]{0,5}", fullmatch=True
)
# Each step key: values the schema accepts, and values that break it the ways users do.
VALID: dict[str, st.SearchStrategy[Any]] = {
    "id": _v1_ids,
    "name": _name,
    "description": _text,
    "needs": _v1_ids | st.lists(_v1_ids, max_size=3, unique=True),
    "if": _name,
    "timeout_seconds": _range(1, 86400) | st.just(60.0),
    "on_error": st.sampled_from(["fail", "continue", "retry"]),
    "retry": _retry,
    "outputs": st.dictionaries(_v1_ids, _text, max_size=2),
    "max_budget_usd": st.floats(0.01, 100) | _range(1, 100),
    "prompt_file": _name,
    "prompt": _name,
    "command": _name,
    "approve": st.booleans(),
    "available_tools": _tools,
    "policy": _policy,
    "inputs": _v1_inputs,
    "model": _name,
    "handler": _handler,
    "config": st.dictionaries(_text, _json, max_size=2),
    "failure_strategy": st.sampled_from(["abort", "continue"]),
    "max_parallel": _range(1, 8),
    "condition": _name,
}
BROKEN: dict[str, tuple[object, ...]] = {
    "id": ("Bad", "", "a-b", 3, None),
    "type": BAD_TYPES,
    "name": ("", 5),
    "description": (1, []),
    "needs": (5, ["a", "a"], ["Bad"], "Bad", [1]),
    "if": ("", True),
    "timeout_seconds": (0, 86401, True, "60", 1.5),
    "on_error": ("abort", None),
    "retry": ({"attempts": 3}, {"max_attempts": 0}, {"jitter": 1}, []),
    "outputs": ({"Bad-Name": "x"}, {"n": 3}, "x"),
    "max_budget_usd": (0, -1, "1", False),
    "prompt_file": (3, None),
    "prompt": ("", 3),
    "command": (3, ["ls"]),
    "approve": ("yes", 1),
    "available_tools": (["Shell"], "ReadFile", [1]),
    "policy": ({"cmd_allow_list": []}, {"max_files": -1}, {"max_edits": 1.5}, "x"),
    "inputs": ({"file_size_limit_kb": 0}, {"paths": "x"}, []),
    "model": ("", 1),
    "handler": ("scripts/run.py", "mod:", 1),
    "config": ([], "x"),
    "failure_strategy": ("ignore",),
    "max_parallel": (0, 2.5, "2"),
    "condition": ("", 1),
    "steps": ([], "x", [3]),
    "then": ([], "x", [3]),
    "else": ([], "x", [3]),
}


@st.composite
def _valid_step(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    """A step the schema accepts, of any built-in or plugin type, control steps nested."""
    step_type = draw(st.sampled_from([*KEYS_OF_TYPE, *PLUGIN_TYPES]))
    children = st.lists(_valid_step(depth + 1) if depth < 2 else _v1_step, min_size=1, max_size=2)
    values = {**VALID, **dict.fromkeys(CHILD_KEYS, children)}
    step: dict[str, Any] = {"id": draw(_v1_ids), "type": step_type}
    if step_type in ("prompt", "agent"):
        sources = ["prompt", "prompt_file", "policy"][: 3 if step_type == "agent" else 2]
        source = draw(st.sampled_from(sources))
        step[source] = draw(values[source])
    for key in REQUIRED_OF_TYPE.get(step_type, ()):
        step[key] = draw(values[key])
    allowed = KEYS_OF_TYPE.get(step_type, ALL_STEP_KEYS)
    optional = [k for k in allowed if k not in ("id", "type", "prompt", "prompt_file")]
    for key in draw(st.lists(st.sampled_from(optional), max_size=3, unique=True)):
        step[key] = draw(values[key])
    if step_type in PLUGIN_TYPES:
        step.update(
            draw(st.dictionaries(_text.filter(lambda k: k not in ALL_STEP_KEYS), _json, max_size=2))
        )
    return step


_valid_workflow = st.fixed_dictionaries(
    {
        "version": st.just(1) | st.just(1.0),
        "workflow": _name,
        "steps": st.lists(_valid_step(), min_size=1, max_size=4),
    },
    optional={
        "description": _text,
        "model": _name,
        "guardrails": st.lists(_text, max_size=2),
        "env": _v1_env,
        "max_budget_usd": st.floats(0.01, 10),
    },
)


def _steps_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    pending = list(document["steps"])
    while pending:
        step = pending.pop()
        if not isinstance(step, dict):
            continue
        found.append(step)
        for key in CHILD_KEYS:
            if isinstance(step.get(key), list):
                pending.extend(step[key])
    return found


def _unknown_key(data: st.DataObject, step: dict[str, Any]) -> None:
    name = data.draw(st.sampled_from(["comand", "colour", "Steps", ""]) | _text)
    step[name] = data.draw(_json)


def _foreign_key(data: st.DataObject, step: dict[str, Any]) -> None:
    step_type = step.get("type")
    allowed = KEYS_OF_TYPE.get(step_type, ()) if isinstance(step_type, str) else ()
    foreign = [k for k in ALL_STEP_KEYS if allowed and k not in allowed]
    key = data.draw(st.sampled_from(foreign or ["then"]))
    step[key] = data.draw(VALID[key] if key in VALID else st.lists(_v1_step, min_size=1))


def _broken_value(data: st.DataObject, step: dict[str, Any]) -> None:
    keys = sorted(k for k in step if k in BROKEN)
    if keys:
        key = data.draw(st.sampled_from(keys))
        step[key] = data.draw(st.sampled_from(BROKEN[key]) | _json)


def _dropped_key(data: st.DataObject, step: dict[str, Any]) -> None:
    if step:
        del step[data.draw(st.sampled_from(sorted(step, key=str)))]


def _retyped(data: st.DataObject, step: dict[str, Any]) -> None:
    step["type"] = data.draw(st.sampled_from([*KEYS_OF_TYPE, *PLUGIN_TYPES, *BAD_TYPES]))


def _unchanged(data: st.DataObject, step: dict[str, Any]) -> None:
    return None


MUTATIONS = [_unchanged, _unknown_key, _foreign_key, _broken_value, _dropped_key, _retyped]


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fast_validity_agrees_with_the_full_validator_on_a_mutated_step(
    mutate: Any, data: st.DataObject
) -> None:
    document = data.draw(_valid_workflow)
    mutate(data, data.draw(st.sampled_from(_steps_of(document))))
    assert is_valid(document) == validator().is_valid(document)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_v1_workflow | _fuzz_steps | _fuzz | st.sampled_from([None, 1, "x", [], {}]))
def test_fast_validity_agrees_with_the_full_validator_on_any_document(document: Any) -> None:
    assert is_valid(document) == validator().is_valid(document)


def test_valid_workflow_generator_yields_only_valid_documents() -> None:
    # The mutations mean something only if they start from documents the schema accepts.
    @settings(max_examples=100, deadline=None, database=None)
    @given(_valid_workflow)
    def check(document: dict[str, Any]) -> None:
        assert schema_errors(document) == []

    check()


def _keyed(key: object, value: object) -> dict[str, Any]:
    # YAML can give keys JSON cannot (an integer, say); the annotation would refuse them.
    mapping: dict[Any, Any] = {key: value}
    return mapping


EDGE_VALUES = {
    "bool-as-integer": workflow(cmd(timeout_seconds=True)),
    "whole-float-as-integer": workflow(cmd(timeout_seconds=60.0)),
    "fraction-as-integer": workflow(cmd(timeout_seconds=60.5)),
    "bool-as-number": workflow(cmd(max_budget_usd=True)),
    "version-true": workflow(cmd(), version=True),
    "version-float": workflow(cmd(), version=1.0),
    "repeated-needs": workflow(cmd(needs=["a", "a"])),
    "list-as-enum-value": workflow(cmd(on_error=["fail"])),
    "newline-after-id": workflow(cmd(id="a\n")),
    "integer-output-name": workflow(cmd(outputs=_keyed(1, "x"))),
    "newline-after-type": workflow({"id": "s", "type": "cmd\n", "command": "x"}),
    "integer-key-on-builtin": workflow(cmd() | _keyed(1, "y")),
    "integer-key-on-plugin": workflow({"id": "s", "type": "acme:lint"} | _keyed(1, "y")),
    "plugin-with-broken-known-key": workflow(
        {"id": "s", "type": "acme:lint", "then": [cmd()], "approve": "yes"}
    ),
    "list-as-type": workflow({"id": "s", "type": ["cmd"], "command": "x"}),
    "odd-env": workflow(cmd(), env=_keyed(1, 2) | {"seed": 1.0}),
    "tuple-of-steps": {"version": 1, "workflow": "w", "steps": (cmd(),)},
}


@pytest.mark.parametrize("document", EDGE_VALUES.values(), ids=EDGE_VALUES.keys())
def test_fast_validity_agrees_on_edge_values(document: dict[str, Any]) -> None:
    assert is_valid(document) == validator().is_valid(document)
