"""Control flow: ``if`` conditions, ``needs`` after failures, composite, conditional and parallel
steps with their failure strategies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

RunWorkflow = Callable[..., Any]

#: A shell function: wait (at most 10 s) until file $1 exists; exit 99 if it never does.
WAIT_FOR = (
    'w() { i=0; while [ ! -e "$1" ]; do i=$((i+1)); [ $i -gt 1000 ] && exit 99; sleep 0.01; done; }'
)


# --- if -----------------------------------------------------------------------------------------


def test_a_step_without_if_is_skipped_after_a_failure(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: implicit
        steps:
          - {id: a, type: cmd, command: 'false'}
          - {id: b, type: cmd, command: 'true'}
        """
    )

    assert ran.step("b")["status"] == "skipped"
    assert ran.step("b")["conclusion"] == "skipped"


def test_if_failure_runs_only_after_a_failure(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: failure
        steps:
          - {id: a, type: cmd, command: 'false'}
          - {id: on_fail, type: cmd, if: failure(), command: 'true'}
        """
    )

    assert ran.step("on_fail")["status"] == "succeeded"


def test_if_failure_is_skipped_when_everything_succeeded(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: failure
        steps:
          - {id: a, type: cmd, command: 'true'}
          - {id: on_fail, type: cmd, if: failure(), command: 'true'}
        """
    )

    assert ran.step("on_fail")["status"] == "skipped"
    assert ran.step("on_fail")["reason"] == "skipped: condition failure() is false"
    assert ran.exit_code == 0


def test_if_always_runs_after_a_failure(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: always
        steps:
          - {id: a, type: cmd, command: 'false'}
          - {id: b, type: cmd, command: 'true'}
          - {id: cleanup, type: cmd, if: always(), command: 'true'}
        """
    )

    assert ran.statuses() == {"a": "failed", "b": "skipped", "cleanup": "succeeded"}
    assert ran.exit_code == 1


def test_if_success_is_explicitly_false_after_a_failure(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: success
        steps:
          - {id: a, type: cmd, command: 'false'}
          - {id: b, type: cmd, if: success(), command: 'true'}
        """
    )

    assert ran.step("b")["status"] == "skipped"


def test_if_can_test_an_earlier_steps_outputs(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: outputs
        steps:
          - {id: probe, type: cmd, command: 'echo "mode=fast" >> "$BCCE_OUTPUT"'}
          - {id: fast, type: cmd, if: "steps.probe.outputs.mode == 'fast'", command: 'true'}
          - {id: slow, type: cmd, if: "steps.probe.outputs.mode == 'slow'", command: 'true'}
        """
    )

    assert ran.step("fast")["status"] == "succeeded"
    assert ran.step("slow")["status"] == "skipped"


def test_if_can_test_an_earlier_steps_outcome(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: outcome
        steps:
          - {id: tests, type: cmd, command: 'false', on_error: continue}
          - {id: report, type: cmd, if: "steps.tests.outcome == 'failure'", command: 'true'}
        """
    )

    assert ran.step("report")["status"] == "succeeded"
    assert ran.exit_code == 0


def test_if_can_test_a_variable(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: vars
        steps:
          - {id: deploy, type: cmd, if: "vars.TARGET == 'prod'", command: 'true'}
        """,
        "--var",
        "TARGET=prod",
    )

    assert ran.step("deploy")["status"] == "succeeded"


def test_a_condition_that_fails_to_evaluate_fails_its_step(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: broken
        steps:
          - {id: a, type: cmd, if: "fromJSON('{not json')", command: 'touch ran'}
        """
    )

    assert ran.step("a")["status"] == "failed"
    assert ran.step("a")["error"].startswith("condition failed:")
    assert ran.exit_code == 1


def test_a_step_whose_need_failed_is_skipped(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: needs
        steps:
          - {id: build, type: cmd, needs: [], command: 'false'}
          - {id: lint, type: cmd, needs: [], command: 'true'}
          - {id: ship, type: cmd, needs: [build, lint], command: 'true'}
        """
    )

    assert ran.statuses() == {"build": "failed", "lint": "succeeded", "ship": "skipped"}


# --- composite ----------------------------------------------------------------------------------


def test_a_composite_runs_its_steps_in_order(run_workflow: RunWorkflow, tmp_path: Path) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: composite
        steps:
          - id: grp
            type: composite
            steps:
              - {id: one, type: cmd, command: 'echo one >> order'}
              - {id: two, type: cmd, command: 'echo two >> order'}
              - {id: three, type: cmd, command: 'echo three >> order'}
          - {id: after, type: cmd, command: 'echo ${{ steps.two.outputs.exit_code }}'}
        """
    )

    assert (tmp_path / "order").read_text().split() == ["one", "two", "three"]
    assert ran.step("grp")["status"] == "succeeded"
    assert ran.artifact("after", "output.txt") == "0\n"


def test_a_composite_with_abort_skips_the_rest_after_a_failure(
    run_workflow: RunWorkflow,
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: composite
        steps:
          - id: grp
            type: composite
            failure_strategy: abort
            steps:
              - {id: one, type: cmd, command: 'false'}
              - {id: two, type: cmd, if: always(), command: 'true'}
          - {id: after, type: cmd, command: 'true'}
        """
    )

    assert ran.statuses() == {
        "grp": "failed",
        "one": "failed",
        "two": "skipped",
        "after": "skipped",
    }
    assert ran.step("two")["reason"] == "skipped: an earlier step in the block failed"
    assert ran.exit_code == 1


def test_a_composite_with_continue_runs_every_step_and_still_fails(
    run_workflow: RunWorkflow,
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: composite
        steps:
          - id: grp
            type: composite
            failure_strategy: continue
            steps:
              - {id: one, type: cmd, command: 'false'}
              - {id: two, type: cmd, command: 'true'}
        """
    )

    assert ran.statuses() == {"grp": "failed", "one": "failed", "two": "succeeded"}
    assert ran.exit_code == 1


def test_a_composite_run_by_always_after_a_failure_runs_its_steps(
    run_workflow: RunWorkflow, tmp_path: Path
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: composite
        steps:
          - {id: build, type: cmd, command: 'false'}
          - id: cleanup
            type: composite
            if: always()
            steps:
              - {id: wipe, type: cmd, command: 'touch wiped'}
        """
    )

    assert ran.step("wipe")["status"] == "succeeded"
    assert (tmp_path / "wiped").exists()


# --- conditional --------------------------------------------------------------------------------

CONDITIONAL = """
version: 1
workflow: conditional
steps:
  - {{id: probe, type: cmd, command: 'echo "answer={answer}" >> "$BCCE_OUTPUT"'}}
  - id: gate
    type: conditional
    condition: "steps.probe.outputs.answer == 'yes'"
    then:
      - {{id: on_yes, type: cmd, command: 'touch yes'}}
      - {{id: on_yes_too, type: cmd, command: 'true'}}
    else:
      - {{id: on_no, type: cmd, command: 'touch no'}}
"""


def test_a_conditional_takes_the_then_branch_when_true(
    run_workflow: RunWorkflow, tmp_path: Path
) -> None:
    ran = run_workflow(CONDITIONAL.format(answer="yes"))

    assert ran.statuses() == {
        "probe": "succeeded",
        "gate": "succeeded",
        "on_yes": "succeeded",
        "on_yes_too": "succeeded",
        "on_no": "skipped",
    }
    assert ran.step("on_no")["reason"] == "skipped: branch not taken"
    assert ran.step("gate")["outputs"]["branch"] == "then"
    assert not (tmp_path / "no").exists()


def test_a_conditional_takes_the_else_branch_when_false(
    run_workflow: RunWorkflow, tmp_path: Path
) -> None:
    ran = run_workflow(CONDITIONAL.format(answer="no"))

    assert ran.step("on_no")["status"] == "succeeded"
    assert (ran.step("on_yes")["status"], ran.step("on_yes_too")["status"]) == (
        "skipped",
        "skipped",
    )
    assert ran.step("gate")["outputs"]["branch"] == "else"
    assert not (tmp_path / "yes").exists()


def test_a_failure_in_the_taken_branch_fails_the_conditional(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: conditional
        steps:
          - id: gate
            type: conditional
            condition: "true"
            then:
              - {id: a, type: cmd, command: 'false'}
              - {id: b, type: cmd, command: 'true'}
        """
    )

    assert ran.statuses() == {"gate": "failed", "a": "failed", "b": "skipped"}
    assert ran.exit_code == 1


def test_a_conditionals_if_is_honoured(run_workflow: RunWorkflow, tmp_path: Path) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: conditional
        steps:
          - {id: build, type: cmd, command: 'false'}
          - id: gate
            type: conditional
            if: always()
            condition: "steps.build.outcome == 'failure'"
            then:
              - {id: notify, type: cmd, command: 'touch notified'}
        """
    )

    assert ran.step("gate")["status"] == "succeeded"
    assert (tmp_path / "notified").exists()


# --- parallel -----------------------------------------------------------------------------------


def test_a_parallel_step_runs_its_steps_concurrently(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        f"""
        version: 1
        workflow: parallel
        steps:
          - id: par
            type: parallel
            steps:
              - {{id: left, type: cmd, command: '{WAIT_FOR}; touch left.up; w right.up'}}
              - {{id: right, type: cmd, command: '{WAIT_FOR}; touch right.up; w left.up'}}
        """
    )

    assert ran.statuses() == {"par": "succeeded", "left": "succeeded", "right": "succeeded"}


def test_parallel_abort_stops_a_running_sibling(
    run_workflow: RunWorkflow,
    tmp_path: Path,
    wait_until: Callable[..., None],
    pid_gone: Callable[[int], bool],
) -> None:
    ran = run_workflow(
        f"""
        version: 1
        workflow: parallel
        steps:
          - id: par
            type: parallel
            failure_strategy: abort
            steps:
              - {{id: doomed, type: cmd, command: '{WAIT_FOR}; w sibling.up; exit 1'}}
              - id: sibling
                type: cmd
                command: 'echo $$ > sibling.pid; touch sibling.up; sleep 30; touch sibling.done'
              - {{id: later, type: cmd, needs: [doomed], command: 'touch later.ran'}}
          - {{id: after, type: cmd, command: 'true'}}
        """
    )

    assert ran.statuses() == {
        "par": "failed",
        "doomed": "failed",
        "sibling": "cancelled",
        "later": "skipped",
        "after": "skipped",
    }
    pid = int((tmp_path / "sibling.pid").read_text())
    wait_until(lambda: pid_gone(pid), timeout=5, what="the cancelled sibling")
    assert not (tmp_path / "sibling.done").exists()
    assert not (tmp_path / "later.ran").exists()


def test_parallel_continue_lets_siblings_finish_and_fails(
    run_workflow: RunWorkflow, tmp_path: Path
) -> None:
    ran = run_workflow(
        f"""
        version: 1
        workflow: parallel
        steps:
          - id: par
            type: parallel
            failure_strategy: continue
            steps:
              - {{id: doomed, type: cmd, command: '{WAIT_FOR}; w sibling.up; exit 1'}}
              - id: sibling
                type: cmd
                command: '{WAIT_FOR}; touch sibling.up; w doomed.gone; touch sibling.done'
              - id: watcher
                type: cmd
                needs: [doomed]
                if: always()
                command: 'touch doomed.gone'
        """
    )

    assert ran.statuses() == {
        "par": "failed",
        "doomed": "failed",
        "sibling": "succeeded",
        "watcher": "succeeded",
    }
    assert (tmp_path / "sibling.done").exists()
    assert ran.exit_code == 1


def test_parallel_max_parallel_is_honoured(run_workflow: RunWorkflow, tmp_path: Path) -> None:
    (tmp_path / "running").mkdir()
    body = (
        "n() { ls running | wc -l; }; touch running/$BCCE_STEP_ID; n >> counts; "
        "i=0; while [ $(n) -lt 2 ] && [ $i -lt 500 ]; do i=$((i+1)); sleep 0.01; done; "
        "sleep 0.2; rm running/$BCCE_STEP_ID"
    )
    children = "".join(f"      - {{id: c{i}, type: cmd, command: '{body}'}}\n" for i in range(4))

    ran = run_workflow(
        "version: 1\nworkflow: limit\nsteps:\n"
        f"  - id: par\n    type: parallel\n    max_parallel: 2\n    steps:\n{children}"
    )

    assert ran.exit_code == 0
    counts = [int(n) for n in (tmp_path / "counts").read_text().split()]
    assert len(counts) == 4
    assert max(counts) == 2


def test_a_parallel_run_by_always_after_a_failure_runs_its_steps(
    run_workflow: RunWorkflow,
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: parallel
        steps:
          - {id: build, type: cmd, command: 'false'}
          - id: collect
            type: parallel
            if: always()
            steps:
              - {id: logs, type: cmd, command: 'true'}
              - {id: core, type: cmd, command: 'true'}
        """
    )

    assert (ran.step("logs")["status"], ran.step("core")["status"]) == ("succeeded", "succeeded")


def test_a_parallel_inside_a_composite_reports_each_step(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: nested
        steps:
          - id: outer
            type: composite
            steps:
              - {id: prepare, type: cmd, command: 'true'}
              - id: fan
                type: parallel
                steps:
                  - {id: x, type: cmd, command: 'echo "v=x" >> "$BCCE_OUTPUT"'}
                  - {id: y, type: cmd, command: 'echo "v=y" >> "$BCCE_OUTPUT"'}
              - id: join
                type: cmd
                command: 'echo ${{ steps.x.outputs.v }}${{ steps.y.outputs.v }}'
        """
    )

    assert set(ran.statuses().values()) == {"succeeded"}
    assert ran.state["order"] == ["outer", "prepare", "fan", "x", "y", "join"]
    assert ran.artifact("join", "output.txt") == "xy\n"


def test_a_composites_timeout_bounds_the_steps_inside_it(
    run_workflow: RunWorkflow, tmp_path: Path
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: bounded
        steps:
          - id: grp
            type: composite
            timeout_seconds: 1
            steps:
              - {id: slow, type: cmd, command: 'sleep 30'}
              - {id: later, type: cmd, if: always(), command: 'touch later.ran'}
        """
    )

    assert ran.step("grp")["status"] == "timed_out"
    assert ran.step("slow")["status"] == "timed_out"
    assert ran.step("later")["status"] != "succeeded"
    assert not (tmp_path / "later.ran").exists()
    assert ran.exit_code == 1


def test_a_composite_with_on_error_continue_absorbs_its_steps_failure(
    run_workflow: RunWorkflow,
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: absorbed
        steps:
          - id: optional
            type: composite
            on_error: continue
            steps:
              - {id: flaky, type: cmd, command: 'false'}
          - {id: after, type: cmd, command: 'true'}
        """
    )

    assert ran.step("optional")["conclusion"] == "success"
    assert ran.step("after")["status"] == "succeeded"
    assert (ran.exit_code, ran.state["status"]) == (0, "succeeded")
