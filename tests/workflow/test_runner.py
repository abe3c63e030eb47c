"""Running workflows: cmd steps, artifacts, outputs, events, JUnit, redaction, concurrency,
retries and timeouts."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bcce.containers.application import Application
from bcce.workflow.runner import RunOptions

RunWorkflow = Callable[..., Any]

SECRET = "hunter2-TOPSECRET-7f3a9c"

#: A shell snippet: wait (at most 10 s) until file $1 exists; fail the step if it never does.
WAIT_FOR = (
    'w() { i=0; while [ ! -e "$1" ]; do i=$((i+1)); [ $i -gt 1000 ] && exit 99; sleep 0.01; done; }'
)


# --- cmd steps ----------------------------------------------------------------------------------


def test_a_cmd_step_runs_in_the_workspace(run_workflow: RunWorkflow, tmp_path: Path) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: cwd
        steps:
          - {id: a, type: cmd, command: pwd}
        """
    )

    assert ran.exit_code == 0
    assert ran.artifact("a", "output.txt").strip() == str(tmp_path.resolve())


def test_a_cmd_step_gets_a_clean_environment(
    run_workflow: RunWorkflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAKY_SECRET", "must-not-reach-the-step")
    monkeypatch.setenv("LANG", "C.UTF-8")

    ran = run_workflow(
        """
        version: 1
        workflow: env
        env:
          WF_VAR: from-workflow
          WF_FLAG: true
        steps:
          - {id: a, type: cmd, command: env}
        """
    )

    env = dict(line.split("=", 1) for line in ran.artifact("a", "output.txt").splitlines())
    assert "LEAKY_SECRET" not in env
    assert env["WF_VAR"] == "from-workflow"
    assert env["WF_FLAG"] == "true"
    assert env["LANG"] == "C.UTF-8"
    assert env["BCCE_RUN_ID"] == "run-1"
    assert env["BCCE_STEP_ID"] == "a"
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ", "WF_VAR", "WF_FLAG"}
    added_by_the_shell = {"PWD", "SHLVL", "_", "OLDPWD"}
    unexpected = {
        name
        for name in env
        if name not in allowed | added_by_the_shell and not name.startswith("BCCE_")
    }
    assert unexpected == set()


def test_an_allow_listed_process_variable_reaches_the_step(
    run_workflow: RunWorkflow,
    make_workflow_app: Callable[..., Application],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEAM_NAME", "blue")
    app = make_workflow_app(workflow={"env_allowlist": ["PATH", "TEAM_NAME"]})

    ran = run_workflow(
        "version: 1\nworkflow: e\nsteps:\n  - {id: a, type: cmd, command: 'echo $TEAM_NAME'}\n",
        app=app,
    )

    assert ran.artifact("a", "output.txt") == "blue\n"


def test_stdout_and_stderr_go_to_the_step_artifacts(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: streams
        steps:
          - {id: a, type: cmd, command: "echo to-out; echo to-err >&2"}
        """
    )

    assert ran.artifact("a", "output.txt") == "to-out\n"
    assert ran.artifact("a", "error.txt") == "to-err\n"


def test_metrics_record_exit_code_duration_and_output_sizes(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: metrics
        steps:
          - {id: a, type: cmd, command: "printf 12345; printf abc >&2; exit 7"}
        """
    )

    metrics = json.loads(ran.artifact("a", "metrics.json"))
    assert metrics["exit_code"] == 7
    assert metrics["stdout_bytes"] == 5
    assert metrics["stderr_bytes"] == 3
    assert metrics["status"] == "failed"
    assert metrics["attempts"] == 1
    assert isinstance(metrics["duration_seconds"], float) and metrics["duration_seconds"] >= 0
    assert ran.step("a")["exit_code"] == 7


def test_a_failing_step_fails_the_run_with_exit_code_1(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        "version: 1\nworkflow: f\nsteps:\n  - {id: a, type: cmd, command: 'false'}\n"
    )

    assert ran.exit_code == 1
    assert ran.state["status"] == "failed"
    assert ran.state["error"] == "failed steps: a"


def test_outputs_written_to_bcce_output_reach_later_steps(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: outputs
        steps:
          - {id: a, type: cmd, command: 'echo "colour=green" >> "$BCCE_OUTPUT"'}
          - {id: b, type: cmd, command: 'echo "got ${{ steps.a.outputs.colour }}"'}
        """
    )

    assert ran.step("a")["outputs"]["colour"] == "green"
    assert ran.artifact("b", "output.txt") == "got green\n"


def test_a_steps_stdout_is_one_of_its_outputs(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: stdout
        steps:
          - {id: a, type: cmd, command: 'echo 1.2.3'}
          - {id: b, type: cmd, command: 'echo v${{ steps.a.outputs.stdout }}'}
        """
    )

    assert ran.step("a")["outputs"]["stdout"] == "1.2.3"
    assert ran.artifact("b", "output.txt") == "v1.2.3\n"


def test_declared_outputs_are_rendered_from_templates(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: declared
        steps:
          - {id: a, type: cmd, command: 'echo "n=4" >> "$BCCE_OUTPUT"'}
          - id: b
            type: cmd
            command: echo built
            outputs:
              label: "${{ steps.a.outputs.n }}-items"
              said: "${{ self.outputs.stdout }}"
          - {id: c, type: cmd, command: 'echo ${{ steps.b.outputs.label }}'}
        """
    )

    assert ran.step("b")["outputs"]["label"] == "4-items"
    assert ran.step("b")["outputs"]["said"] == "built"
    assert ran.artifact("c", "output.txt") == "4-items\n"


def test_bcce_output_works_when_the_workspace_is_not_the_current_directory(
    run_workflow: RunWorkflow,
    make_workflow_app: Callable[..., Application],
    tmp_path: Path,
) -> None:
    # The default state_dir is relative (.bcce_runs); steps run in the workspace.
    app = make_workflow_app(workflow={"state_dir": "relative-runs"})
    workspace = tmp_path / "elsewhere"
    workspace.mkdir()

    ran = run_workflow(
        "version: 1\nworkflow: o\nsteps:\n"
        "  - {id: a, type: cmd, command: 'echo x=1 >> \"$BCCE_OUTPUT\"'}\n",
        "--workspace",
        workspace,
        app=app,
    )

    assert ran.result.exit_code == 0, ran.result.output
    state = app.workflow.runner().status("run-1")
    assert state.steps["a"]["outputs"]["x"] == "1"


# --- events and reports -------------------------------------------------------------------------


def test_events_are_written_to_events_jsonl_in_order(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: events
        steps:
          - {id: a, type: cmd, command: 'true'}
          - {id: b, type: cmd, command: 'true'}
        """
    )

    events = ran.events()
    assert [(e["type"], e["payload"].get("step")) for e in events] == [
        ("workflow.started", None),
        ("step.started", "a"),
        ("step.completed", "a"),
        ("step.started", "b"),
        ("step.completed", "b"),
        ("workflow.completed", None),
    ]
    all_events = ran.events(prefixes=("",))
    assert [e["seq"] for e in all_events] == sorted(e["seq"] for e in all_events)
    assert {e["run_id"] for e in all_events} == {"run-1"}


def test_a_run_goes_through_the_five_phases_in_order(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: phases
        steps:
          - {id: a, type: cmd, command: 'true'}
        """
    )

    assert ran.phases() == ["validate", "plan", "execute", "monitor", "complete"]
    assert ran.state["phase"] == "complete"


def test_a_failed_run_publishes_step_failed_skipped_and_workflow_failed(
    run_workflow: RunWorkflow,
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: events
        steps:
          - {id: a, type: cmd, command: 'exit 2'}
          - {id: b, type: cmd, command: 'true'}
        """
    )

    types = [e["type"] for e in ran.events()]
    assert types == [
        "workflow.started",
        "step.started",
        "step.failed",
        "step.skipped",
        "workflow.failed",
    ]
    assert ran.events()[2]["payload"]["exit_code"] == 2


def test_junit_xml_has_a_case_per_step_with_failures_and_skips(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: junit
        steps:
          - {id: good, type: cmd, command: 'true'}
          - id: grp
            type: composite
            steps:
              - {id: bad, type: cmd, command: 'exit 3'}
          - {id: never, type: cmd, command: 'true'}
        """
    )

    suite = ET.parse(ran.directory / "junit.xml").getroot()
    assert suite.tag == "testsuite"
    assert suite.get("name") == "junit"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert list(cases) == ["good", "bad", "never"]
    assert cases["good"].find("failure") is None and cases["good"].find("skipped") is None
    failure = cases["bad"].find("failure")
    assert failure is not None and "exited with code 3" in (failure.get("message") or "")
    assert cases["never"].find("skipped") is not None
    assert cases["bad"].get("classname") == "junit.cmd"


# --- redaction ----------------------------------------------------------------------------------


@pytest.fixture
def secret_run(
    run_workflow: RunWorkflow,
    make_workflow_app: Callable[..., Application],
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    monkeypatch.setenv("API_TOKEN", SECRET)
    app = make_workflow_app(
        core={"secrets": [SECRET]}, workflow={"env_allowlist": ["PATH", "API_TOKEN"]}
    )
    return run_workflow(
        """
        version: 1
        workflow: secrets
        steps:
          - id: leak
            type: cmd
            command: 'echo "token is $API_TOKEN"; echo "tok=$API_TOKEN" >> "$BCCE_OUTPUT"'
            outputs:
              copy: "${{ self.outputs.tok }}"
        """,
        app=app,
    )


def test_a_configured_secret_is_redacted_in_output_txt(secret_run: Any) -> None:
    text = secret_run.artifact("leak", "output.txt")

    assert SECRET not in text
    assert text.startswith("token is ")


def test_a_configured_secret_is_redacted_in_events_jsonl(secret_run: Any) -> None:
    assert secret_run.exit_code == 0
    assert SECRET not in (secret_run.directory / "events.jsonl").read_text()


def test_a_configured_secret_is_redacted_in_run_json_outputs(secret_run: Any) -> None:
    outputs = secret_run.step("leak")["outputs"]

    assert SECRET not in json.dumps(outputs)
    assert set(outputs) >= {"stdout", "tok", "copy"}
    assert SECRET not in (secret_run.directory / "run.json").read_text()
    assert SECRET not in (secret_run.directory / "journal.jsonl").read_text()


def test_a_configured_secret_is_in_no_file_of_the_run_directory(secret_run: Any) -> None:
    leaking = [
        str(path.relative_to(secret_run.directory))
        for path in secret_run.directory.rglob("*")
        if path.is_file() and SECRET.encode() in path.read_bytes()
    ]

    assert leaking == []


# --- needs: concurrency and order ---------------------------------------------------------------


def test_independent_steps_run_concurrently(run_workflow: RunWorkflow) -> None:
    # Each step waits for the other's marker: they can only both finish if they overlap.
    ran = run_workflow(
        f"""
        version: 1
        workflow: dag
        steps:
          - id: a
            type: cmd
            needs: []
            command: '{WAIT_FOR}; touch a.started; w b.started'
          - id: b
            type: cmd
            needs: []
            command: '{WAIT_FOR}; touch b.started; w a.started'
          - id: c
            type: cmd
            needs: [a, b]
            command: 'test -e a.started && test -e b.started'
        """
    )

    assert ran.statuses() == {"a": "succeeded", "b": "succeeded", "c": "succeeded"}


def test_a_step_starts_only_after_everything_it_needs(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: dag
        steps:
          - {id: slow, type: cmd, needs: [], command: 'sleep 0.2; touch slow.done'}
          - {id: fast, type: cmd, needs: [], command: 'touch fast.done'}
          - {id: last, type: cmd, needs: [slow, fast], command: 'test -e slow.done -a -e fast.done'}
        """
    )

    assert ran.step("last")["status"] == "succeeded"


def test_reports_keep_file_order_when_steps_finish_out_of_order(
    run_workflow: RunWorkflow, bcce: Callable[..., Any]
) -> None:
    ran = run_workflow(
        f"""
        version: 1
        workflow: order
        steps:
          - {{id: first, type: cmd, needs: [], command: '{WAIT_FOR}; w second.done'}}
          - {{id: second, type: cmd, needs: [], command: 'touch second.done'}}
          - {{id: third, type: cmd, needs: [first, second], command: 'true'}}
        """
    )

    finished = [e["payload"]["step"] for e in ran.events() if e["type"] == "step.completed"]
    assert finished[:2] == ["second", "first"]  # the premise: completion order differs
    assert ran.state["order"] == ["first", "second", "third"]
    suite = ET.parse(ran.directory / "junit.xml").getroot()
    assert [c.get("name") for c in suite.iter("testcase")] == ["first", "second", "third"]
    text = bcce("workflow", "status", "run-1").stdout
    assert text.index("first") < text.index("second") < text.index("third")


def test_the_max_parallel_setting_limits_concurrent_steps(
    run_workflow: RunWorkflow, make_workflow_app: Callable[..., Application], tmp_path: Path
) -> None:
    (tmp_path / "running").mkdir()
    app = make_workflow_app(workflow={"max_parallel": 2})
    body = (
        "n() { ls running | wc -l; }; touch running/$BCCE_STEP_ID; n >> counts; "
        "i=0; while [ $(n) -lt 2 ] && [ $i -lt 500 ]; do i=$((i+1)); sleep 0.01; done; "
        "sleep 0.2; rm running/$BCCE_STEP_ID"
    )
    steps = "".join(
        f"  - {{id: s{i}, type: cmd, needs: [], command: '{body}'}}\n" for i in range(4)
    )

    ran = run_workflow(f"version: 1\nworkflow: limit\nsteps:\n{steps}", app=app)

    assert ran.exit_code == 0
    counts = [int(n) for n in (tmp_path / "counts").read_text().split()]
    assert len(counts) == 4
    assert max(counts) == 2


# --- on_error -----------------------------------------------------------------------------------


def test_on_error_fail_skips_the_steps_after_a_failure(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: fail
        steps:
          - {id: a, type: cmd, command: 'exit 1', on_error: fail}
          - {id: b, type: cmd, command: 'touch b.ran'}
        """
    )

    assert ran.exit_code == 1
    assert ran.step("b")["status"] == "skipped"
    assert ran.step("b")["reason"] == "skipped: an earlier step failed"


def test_on_error_continue_lets_the_run_go_on_and_succeed(
    run_workflow: RunWorkflow, tmp_path: Path
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: continue
        steps:
          - {id: a, type: cmd, command: 'exit 1', on_error: continue}
          - {id: b, type: cmd, command: 'touch b.ran'}
        """
    )

    assert ran.exit_code == 0
    assert ran.state["status"] == "succeeded"
    assert (ran.step("a")["status"], ran.step("a")["outcome"]) == ("failed", "failure")
    assert ran.step("a")["conclusion"] == "success"
    assert (tmp_path / "b.ran").exists()


# --- retries ------------------------------------------------------------------------------------

COUNTING = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count"


def test_a_failing_step_is_retried_until_it_succeeds(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        f"""
        version: 1
        workflow: retry
        steps:
          - id: flaky
            type: cmd
            retry: {{max_attempts: 4, backoff_seconds: 0.01, jitter: false}}
            command: '{COUNTING}; [ $n -ge 3 ]'
        """
    )

    assert ran.exit_code == 0
    assert ran.step("flaky")["status"] == "succeeded"
    assert ran.step("flaky")["attempts"] == 3
    assert json.loads(ran.artifact("flaky", "metrics.json"))["attempts"] == 3


def test_retries_are_recorded_as_retrying_in_the_journal(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        f"""
        version: 1
        workflow: retry
        steps:
          - id: flaky
            type: cmd
            retry: {{max_attempts: 3, backoff_seconds: 0.01, jitter: false}}
            command: '{COUNTING}; [ $n -ge 3 ]'
        """
    )

    journal = (ran.directory / "journal.jsonl").read_text().splitlines()
    statuses = [
        json.loads(line.split(" ", 1)[1])["rec"]["set"].get("status")
        for line in journal
        if '"id":"flaky"' in line
    ]
    assert statuses == ["running", "retrying", "running", "retrying", "running", "succeeded"]


def test_retry_backoff_doubles_up_to_its_maximum(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: backoff
        steps:
          - id: never
            type: cmd
            command: 'exit 1'
            retry:
              max_attempts: 4
              backoff_seconds: 0.02
              max_backoff_seconds: 0.05
              jitter: false
        """
    )

    delays = [e["payload"]["delay_seconds"] for e in ran.events() if e["type"] == "step.retrying"]
    assert delays == [0.02, 0.04, 0.05]


def test_retry_jitter_keeps_each_delay_between_half_and_all_of_the_backoff(
    run_workflow: RunWorkflow,
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: jitter
        steps:
          - id: never
            type: cmd
            command: 'exit 1'
            retry: {max_attempts: 3, backoff_seconds: 0.04, jitter: true}
        """
    )

    delays = [e["payload"]["delay_seconds"] for e in ran.events() if e["type"] == "step.retrying"]
    assert len(delays) == 2
    assert 0.02 <= delays[0] <= 0.04
    assert 0.04 <= delays[1] <= 0.08


def test_a_step_that_keeps_failing_gives_up_after_max_attempts(
    run_workflow: RunWorkflow, tmp_path: Path
) -> None:
    ran = run_workflow(
        f"""
        version: 1
        workflow: retry
        steps:
          - id: never
            type: cmd
            retry: {{max_attempts: 3, backoff_seconds: 0.01, jitter: false}}
            command: '{COUNTING}; exit 1'
        """
    )

    assert ran.exit_code == 1
    assert (ran.step("never")["status"], ran.step("never")["attempts"]) == ("failed", 3)
    assert (tmp_path / "count").read_text().strip() == "3"


def test_outputs_of_a_failed_attempt_do_not_leak_into_the_retry(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: stale
        steps:
          - id: flaky
            type: cmd
            retry: {max_attempts: 2, backoff_seconds: 0.01, jitter: false}
            command: >-
              if [ ! -e tried ]; then touch tried; echo stale=1 >> "$BCCE_OUTPUT"; exit 1; fi;
              echo fresh=1 >> "$BCCE_OUTPUT"
        """
    )

    outputs = ran.step("flaky")["outputs"]
    assert outputs["fresh"] == "1"
    assert "stale" not in outputs


# --- timeouts -----------------------------------------------------------------------------------

#: Ignores SIGTERM and leaves behind: a child, a child in a new session, and a daemon whose
#: parent exited (re-parented away from the step). Every pid goes to the file "pids".
STUBBORN = """
      trap '' TERM
      echo $$ >> pids
      sleep 300 & echo $! >> pids
      setsid sh -c 'trap "" TERM; echo $$ >> pids; exec sleep 300' &
      ( setsid sh -c 'trap "" TERM; echo $$ >> pids; exec sleep 300' & )
      while [ $(wc -l < pids) -lt 4 ]; do sleep 0.01; done
      touch ready
      wait
"""


def _stubborn_step(extra: str) -> str:
    return f"\n  - id: stubborn\n    type: cmd\n    {extra}\n    command: |{STUBBORN}"


@pytest.mark.timeout(30)
def test_a_step_timeout_kills_a_process_tree_that_ignores_sigterm(
    run_workflow: RunWorkflow,
    tmp_path: Path,
    wait_until: Callable[..., None],
    pid_gone: Callable[[int], bool],
    read_pids: Callable[[Path], list[int]],
    kill_leftovers: Callable[[list[int]], None],
) -> None:
    ran = run_workflow(
        "version: 1\nworkflow: timeout\nsteps:" + _stubborn_step("timeout_seconds: 1")
    )

    pids = read_pids(tmp_path / "pids")
    kill_leftovers(pids)
    assert (tmp_path / "ready").exists()
    assert len(pids) == 4
    wait_until(lambda: all(pid_gone(p) for p in pids), timeout=5, what="the step's processes")
    assert ran.step("stubborn")["status"] == "timed_out"


def test_a_timed_out_step_is_recorded_timed_out_and_fails_the_run(
    run_workflow: RunWorkflow,
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: timeout
        steps:
          - {id: slow, type: cmd, timeout_seconds: 1, command: 'sleep 30'}
        """
    )

    assert ran.exit_code == 1
    step = ran.step("slow")
    assert (step["status"], step["outcome"], step["conclusion"]) == (
        "timed_out",
        "failure",
        "failure",
    )
    assert [e["type"] for e in ran.events()][-2:] == ["step.timed_out", "workflow.failed"]


def test_a_step_that_exits_zero_when_terminated_after_its_timeout_is_not_a_success(
    run_workflow: RunWorkflow,
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: timeout
        steps:
          - id: polite
            type: cmd
            timeout_seconds: 1
            command: "trap 'exit 0' TERM; sleep 30 & wait"
        """
    )

    assert ran.step("polite")["status"] == "timed_out"
    assert ran.exit_code == 1


def test_a_policy_timeout_applies_to_a_cmd_step(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: timeout
        steps:
          - {id: slow, type: cmd, policy: {timeout_seconds: 1}, command: 'sleep 30'}
        """
    )

    assert ran.step("slow")["status"] == "timed_out"


@pytest.mark.timeout(30)
def test_the_workflow_max_runtime_kills_the_running_steps_process_tree(
    run_workflow: RunWorkflow,
    tmp_path: Path,
    wait_until: Callable[..., None],
    pid_gone: Callable[[int], bool],
    read_pids: Callable[[Path], list[int]],
    kill_leftovers: Callable[[list[int]], None],
) -> None:
    ran = run_workflow(
        "version: 1\nworkflow: runtime\nenv:\n  max_runtime_seconds: 1\nsteps:"
        + "\n  - {id: first, type: cmd, command: 'true'}"
        + _stubborn_step("on_error: fail")
    )

    pids = read_pids(tmp_path / "pids")
    kill_leftovers(pids)
    assert len(pids) == 4
    wait_until(lambda: all(pid_gone(p) for p in pids), timeout=5, what="the step's processes")
    assert ran.step("first")["status"] == "succeeded"
    assert ran.step("stubborn")["status"] == "timed_out"
    assert ran.exit_code == 1


def test_no_step_starts_after_the_workflow_max_runtime_has_passed(
    run_workflow: RunWorkflow, tmp_path: Path
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: runtime
        env:
          max_runtime_seconds: 1
        steps:
          - {id: slow, type: cmd, command: 'sleep 30'}
          - {id: cleanup, type: cmd, if: always(), command: 'touch cleanup.ran'}
        """
    )

    assert ran.step("slow")["status"] == "timed_out"
    assert not (tmp_path / "cleanup.ran").exists()
    assert ran.step("cleanup")["status"] != "succeeded"


def test_the_lower_of_the_step_and_policy_timeouts_holds(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: timeout
        steps:
          - id: slow
            type: cmd
            timeout_seconds: 600
            policy: {timeout_seconds: 1}
            command: 'sleep 30'
        """
    )

    assert ran.step("slow")["status"] == "timed_out"


def test_a_run_over_its_max_runtime_says_so(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: runtime
        env:
          max_runtime_seconds: 1
        steps:
          - {id: slow, type: cmd, command: 'sleep 30'}
          - {id: never, type: cmd, if: always(), command: 'true'}
        """
    )

    assert "max_runtime_seconds" in ran.state["error"]
    assert ran.step("never")["status"] == "cancelled"
    assert "time limit passed" in ran.step("never")["reason"]


def test_command_line_vars_reach_the_steps_environment(run_workflow: RunWorkflow) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: vars
        env:
          TARGET: staging
        steps:
          - {id: a, type: cmd, command: 'echo "$TARGET ${TARGET}"'}
        """,
        "--var",
        "TARGET=prod",
    )

    assert ran.artifact("a", "output.txt") == "prod prod\n"


def test_streamed_output_is_redacted_even_when_a_secret_is_split_across_writes(
    make_workflow_app: Callable[..., Application],
    write_workflow: Callable[..., Path],
    tmp_path: Path,
    runs_dir: Path,
) -> None:
    app = make_workflow_app(core={"secrets": [SECRET]})
    half = len(SECRET) // 2
    path = write_workflow(
        f"""
        version: 1
        workflow: stream
        steps:
          - id: a
            type: cmd
            command: "printf '{SECRET[:half]}'; sleep 0.1; printf '{SECRET[half:]} done\\n'"
        """
    )
    streamed: list[bytes] = []

    def echo(_step: str, _stream: str, data: bytes) -> None:
        streamed.append(data)

    result = app.workflow.runner().run(path, RunOptions(run_id="r", workspace=tmp_path, echo=echo))

    assert result.exit_code == 0
    assert SECRET.encode() not in b"".join(streamed)
    assert b"done" in b"".join(streamed)
    assert SECRET not in (runs_dir / "r" / "a" / "output.txt").read_text()


def test_a_configured_secret_passed_as_a_var_is_not_written_to_the_run_state(
    run_workflow: RunWorkflow, make_workflow_app: Callable[..., Application]
) -> None:
    app = make_workflow_app(core={"secrets": [SECRET]})

    ran = run_workflow(
        "version: 1\nworkflow: v\nsteps:\n  - {id: a, type: cmd, command: 'echo ${TOKEN}'}\n",
        "--var",
        f"TOKEN={SECRET}",
        app=app,
    )

    assert ran.exit_code == 0
    assert SECRET not in (ran.directory / "run.json").read_text()
    assert SECRET not in (ran.directory / "journal.jsonl").read_text()
