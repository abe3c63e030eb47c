"""Loading workflows: schema errors located, semantic checks, ``${VAR}`` substitution."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcce.containers.application import Application
from bcce.errors import WorkflowError
from bcce.workflow.loader import LoadOptions, load_workflow
from bcce.workflow.model import Workflow

STEP_TYPES = ("cmd", "prompt", "agent", "apply_diff", "custom")

Write = Callable[..., Path]


def load(path: Path, **options: Any) -> Workflow:
    options.setdefault("environ", {})
    options.setdefault("step_types", STEP_TYPES)
    return load_workflow(path, LoadOptions(**options))


def load_error(path: Path, **options: Any) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        load(path, **options)
    return caught.value


def command_of(workflow: Workflow, step_id: str = "a") -> str:
    return str(workflow.step(step_id).raw["command"])


def one_command(write: Write, command: str, env: str = "") -> Path:
    env_block = f"env:\n{env}" if env else ""
    return write(
        f"version: 1\nworkflow: subst\n{env_block}steps:\n"
        f"  - id: a\n    type: cmd\n    command: {command!r}\n"
    )


# --- schema errors ------------------------------------------------------------------------------


def test_a_valid_workflow_loads_its_steps_in_file_order(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: ok
        steps:
          - {id: a, type: cmd, command: echo a}
          - {id: b, type: cmd, command: echo b, needs: [a]}
        """
    )

    workflow = load(path)

    assert workflow.name == "ok"
    assert [s.id for s in workflow.steps] == ["a", "b"]
    assert workflow.step("b").needs == ("a",)
    assert workflow.source == path.resolve()


def test_a_schema_error_is_located_at_file_line_and_column(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: bad
        steps:
          - id: a
            type: cmd
            command: echo
            bogus: 1
        """
    )

    error = load_error(path)

    assert error.location is not None
    assert re.fullmatch(rf"{re.escape(str(path))}:7:\d+", error.location)
    assert error.key == "steps[0].bogus"
    assert "bogus" in error.message
    assert error.exit_code == 3


def test_a_wrong_type_error_carries_the_schema_hint(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: bad
        steps:
          - {id: a, type: cmd, command: echo, timeout_seconds: soon}
        """
    )

    error = load_error(path)

    assert error.key == "steps[0].timeout_seconds"
    assert "integer" in error.message
    assert error.hint and "seconds" in error.hint


def test_several_schema_errors_are_reported_together(write_workflow: Write) -> None:
    path = write_workflow("version: 2\nworkflow: x\nsteps: []\n")

    error = load_error(path)

    assert error.location == f"{path}:1:10"
    assert "also:" in error.message
    assert "3:8 steps" in error.message


def test_a_cmd_step_without_a_command_is_rejected(write_workflow: Write) -> None:
    path = write_workflow("version: 1\nworkflow: x\nsteps:\n  - id: a\n    type: cmd\n")

    error = load_error(path)

    assert error.location == f"{path}:4:5"
    assert "command" in error.message


def test_a_document_that_is_not_a_mapping_is_rejected_with_a_hint(write_workflow: Write) -> None:
    path = write_workflow("- a\n- b\n")

    error = load_error(path)

    assert "must be a mapping" in error.message
    assert error.hint == "start the file with 'version: 1'"


def test_a_missing_file_is_a_workflow_error_naming_it(tmp_path: Path) -> None:
    error = load_error(tmp_path / "absent.yml")

    assert error.location == str(tmp_path / "absent.yml")
    assert "cannot read" in error.message


# --- semantic checks ----------------------------------------------------------------------------


def test_duplicate_step_ids_are_rejected(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: dup
        steps:
          - {id: a, type: cmd, command: echo}
          - {id: a, type: cmd, command: echo}
        """
    )

    error = load_error(path)

    assert "duplicate step id 'a'" in error.message
    assert error.location is not None and error.location.startswith(f"{path}:5:")


def test_duplicate_step_ids_are_rejected_across_nesting(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: dup
        steps:
          - id: a
            type: cmd
            command: echo
          - id: grp
            type: composite
            steps:
              - id: a
                type: cmd
                command: echo
        """
    )

    error = load_error(path)

    assert "duplicate step id 'a' (first used on line 4)" in error.message
    assert error.key == "steps[1].steps[0].id"
    assert error.location == f"{path}:10:13"
    assert error.hint and "nested" in error.hint


def test_needs_naming_an_unknown_step_is_rejected_listing_the_block(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: needs
        steps:
          - {id: a, type: cmd, command: echo}
          - {id: b, type: cmd, command: echo, needs: [a, zz]}
        """
    )

    error = load_error(path)

    assert "step 'b' needs unknown step 'zz'" in error.message
    assert error.key == "steps[1].needs[1]"
    assert error.hint == "steps in this block: a, b"


def test_needs_cannot_reach_outside_its_block(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: needs
        steps:
          - {id: a, type: cmd, command: echo}
          - id: grp
            type: composite
            steps:
              - {id: inner, type: cmd, command: echo, needs: a}
        """
    )

    error = load_error(path)

    assert "needs unknown step 'a'" in error.message
    assert error.key == "steps[1].steps[0].needs"


def test_a_needs_cycle_is_rejected_showing_the_cycle(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: cycle
        steps:
          - {id: a, type: cmd, command: echo, needs: [c]}
          - {id: b, type: cmd, command: echo, needs: [a]}
          - {id: c, type: cmd, command: echo, needs: [b]}
        """
    )

    error = load_error(path)

    assert "'needs' form a cycle: a -> c -> b -> a" in error.message
    assert error.location is not None and error.location.startswith(f"{path}:4:")
    assert error.hint and "remove one" in error.hint


def test_a_needs_cycle_inside_a_parallel_block_is_rejected(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: cycle
        steps:
          - id: par
            type: parallel
            steps:
              - {id: x, type: cmd, command: echo, needs: y}
              - {id: y, type: cmd, command: echo, needs: x}
        """
    )

    error = load_error(path)

    assert "cycle: x -> y -> x" in error.message


def test_a_step_needing_itself_is_rejected(write_workflow: Write) -> None:
    path = write_workflow(
        "version: 1\nworkflow: x\nsteps:\n  - {id: a, type: cmd, command: echo, needs: a}\n"
    )

    error = load_error(path)

    assert "step 'a' needs itself" in error.message


def test_a_missing_prompt_file_is_rejected_relative_to_the_workflow(write_workflow: Write) -> None:
    path = write_workflow(
        "version: 1\nworkflow: x\nsteps:\n  - {id: a, type: prompt, prompt_file: p/ask.md}\n",
        name="sub/workflow.yml",
    )

    error = load_error(path)

    assert "prompt_file 'p/ask.md' not found" in error.message
    assert str(path.parent / "p" / "ask.md") in error.message
    assert error.key == "steps[0].prompt_file"
    assert error.hint and "relative to the workflow file" in error.hint


def test_an_existing_prompt_file_next_to_the_workflow_is_accepted(write_workflow: Write) -> None:
    path = write_workflow(
        "version: 1\nworkflow: x\nsteps:\n  - {id: a, type: prompt, prompt_file: p/ask.md}\n",
        name="sub/workflow.yml",
    )
    (path.parent / "p").mkdir()
    (path.parent / "p" / "ask.md").write_text("Summarise.")

    assert load(path).step("a").raw["prompt_file"] == "p/ask.md"


def test_prompt_files_are_not_checked_when_asked_not_to(write_workflow: Write) -> None:
    path = write_workflow(
        "version: 1\nworkflow: x\nsteps:\n  - {id: a, type: prompt, prompt_file: gone.md}\n"
    )

    assert load(path, check_files=False).step("a").type == "prompt"


def test_an_unregistered_step_type_is_rejected_listing_the_registered_ones(
    write_workflow: Write,
) -> None:
    path = write_workflow("version: 1\nworkflow: x\nsteps:\n  - {id: a, type: 'acme:lint'}\n")

    error = load_error(path)

    assert "unknown step type 'acme:lint'" in error.message
    assert error.key == "steps[0].type"
    assert error.hint and "registered types: agent, apply_diff, cmd, custom, prompt" in error.hint


def test_a_registered_plugin_step_type_is_accepted(write_workflow: Write) -> None:
    path = write_workflow("version: 1\nworkflow: x\nsteps:\n  - {id: a, type: 'acme:lint'}\n")

    assert load(path, step_types=(*STEP_TYPES, "acme:lint")).step("a").type == "acme:lint"


def test_the_application_registry_supplies_the_registered_types(
    write_workflow: Write, workflow_app: Application
) -> None:
    path = write_workflow("version: 1\nworkflow: x\nsteps:\n  - {id: a, type: 'acme:lint'}\n")

    with pytest.raises(WorkflowError) as caught:
        workflow_app.workflow.runner().load(path, {})

    assert caught.value.hint and "cmd" in caught.value.hint


def test_a_bad_if_expression_is_rejected_with_its_position(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: x
        steps:
          - id: a
            type: cmd
            command: echo
            if: "success() &&& steps.b.outcome"
        """
    )

    error = load_error(path)

    assert error.message.startswith("invalid expression:")
    assert "column 13" in error.message
    assert error.key == "steps[0].if"
    assert error.location == f"{path}:7:9"
    assert error.hint == "use '&&'"


def test_an_if_expression_naming_an_unknown_root_is_rejected(write_workflow: Write) -> None:
    path = write_workflow(
        "version: 1\nworkflow: x\nsteps:\n  - {id: a, type: cmd, command: echo, if: secrets.x}\n"
    )

    error = load_error(path)

    assert error.key == "steps[0].if"
    assert "secrets" in error.message


def test_a_bad_conditional_condition_is_rejected(write_workflow: Write) -> None:
    path = write_workflow(
        """
        version: 1
        workflow: x
        steps:
          - id: gate
            type: conditional
            condition: "steps.a.outcome =="
            then:
              - {id: a, type: cmd, command: echo}
        """
    )

    error = load_error(path)

    assert error.key == "steps[0].condition"
    assert "unexpected end of expression" in error.message


def test_a_bad_template_expression_in_a_value_is_rejected(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${{ steps.a.outputs. }}")

    error = load_error(path)

    assert error.key == "steps[0].command"
    assert "invalid ${{ }} expression" in error.message


def test_an_unterminated_template_expression_is_rejected(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${{ steps.a.outputs.x")

    error = load_error(path)

    assert "unterminated" in error.message


# --- substitution -------------------------------------------------------------------------------


def test_a_variable_comes_from_the_workflow_env(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${GREETING}", env="  GREETING: hello\n")

    assert command_of(load(path)) == "echo hello"


def test_a_variable_comes_from_a_command_line_var(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${TARGET}")

    assert command_of(load(path, variables={"TARGET": "prod"})) == "echo prod"


def test_a_variable_comes_from_an_allow_listed_process_variable(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${TEAM}")

    loaded = load(path, environ={"TEAM": "blue"}, env_allowlist=["TEAM"])

    assert command_of(loaded) == "echo blue"


def test_a_process_variable_that_is_not_allow_listed_is_undefined(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${TEAM}")

    error = load_error(path, environ={"TEAM": "blue"}, env_allowlist=["PATH"])

    assert "undefined variable ${TEAM}" in error.message


def test_env_values_may_use_other_variables(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${OUT}", env="  OUT: ${WORKFLOW_DIR}/out\n")

    assert command_of(load(path)) == f"echo {path.parent.resolve()}/out"


def test_workflow_dir_is_the_workflow_files_directory(write_workflow: Write) -> None:
    path = write_workflow(
        "version: 1\nworkflow: x\nsteps:\n  - {id: a, type: cmd, command: 'ls ${WORKFLOW_DIR}'}\n",
        name="deep/er/workflow.yml",
    )

    assert command_of(load(path)) == f"ls {path.parent.resolve()}"


def test_run_id_is_a_built_in_variable(write_workflow: Write, workflow_app: Application) -> None:
    path = one_command(write_workflow, "echo ${RUN_ID}")

    loaded = workflow_app.workflow.runner().load(path, {}, "run-42")

    assert command_of(loaded) == "echo run-42"


def test_bedrock_model_id_defaults_to_the_configured_model(
    write_workflow: Write, make_workflow_app: Callable[..., Application]
) -> None:
    app = make_workflow_app(agent={"model": "test.model-v1"})
    path = one_command(write_workflow, "echo ${BEDROCK_MODEL_ID}")

    assert command_of(app.workflow.runner().load(path, {})) == "echo test.model-v1"


def test_bedrock_model_id_follows_the_workflows_own_model(
    write_workflow: Write, workflow_app: Application
) -> None:
    path = write_workflow(
        "version: 1\nworkflow: x\nmodel: wf.model-v2\n"
        "steps:\n  - {id: a, type: cmd, command: 'echo ${BEDROCK_MODEL_ID}'}\n"
    )

    assert command_of(workflow_app.workflow.runner().load(path, {})) == "echo wf.model-v2"


def test_aws_region_is_a_built_in_variable(
    write_workflow: Write, make_workflow_app: Callable[..., Application]
) -> None:
    app = make_workflow_app(aws={"region": "eu-west-3"})
    path = one_command(write_workflow, "echo ${AWS_REGION}")

    assert command_of(app.workflow.runner().load(path, {})) == "echo eu-west-3"


def test_a_doubled_dollar_is_a_literal_variable_reference(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo $${NOT_A_VARIABLE} ${X}", env="  X: x\n")

    assert command_of(load(path)) == "echo ${NOT_A_VARIABLE} x"


def test_template_expressions_are_left_for_run_time(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${{ steps.a.outputs.x }}")

    assert command_of(load(path)) == "echo ${{ steps.a.outputs.x }}"


def test_an_undefined_variable_is_an_error_with_location_and_hint(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${NOPE}")

    error = load_error(path)

    assert error.message == "undefined variable ${NOPE}"
    assert error.location == f"{path}:6:14"
    assert error.key == "steps[0].command"
    assert error.hint and "--var NOPE=VALUE" in error.hint and "$${NOPE}" in error.hint


def test_an_undefined_variable_is_never_an_empty_string(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo [${EMPTY_OR_NOT}]")

    with pytest.raises(WorkflowError):
        load(path)


def test_an_undefined_variable_in_env_is_located_in_env(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${A}", env="  A: ${MISSING}\n")

    error = load_error(path)

    assert error.key == "env.A"
    assert "${MISSING}" in error.message


def test_a_command_line_var_beats_the_workflow_env(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${NAME}", env="  NAME: from-env\n")

    assert command_of(load(path, variables={"NAME": "from-var"})) == "echo from-var"


def test_the_workflow_env_beats_the_process_environment(write_workflow: Write) -> None:
    path = one_command(write_workflow, "echo ${NAME}", env="  NAME: from-env\n")

    loaded = load(path, environ={"NAME": "from-process"}, env_allowlist=["NAME"])

    assert command_of(loaded) == "echo from-env"


def test_built_ins_beat_command_line_vars(write_workflow: Write, workflow_app: Application) -> None:
    path = one_command(write_workflow, "echo ${RUN_ID}")

    loaded = workflow_app.workflow.runner().load(path, {"RUN_ID": "spoofed"}, "real-id")

    assert command_of(loaded) == "echo real-id"
