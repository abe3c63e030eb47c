"""Driving runs across processes: resume, the run lock, cancel and signals."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from dependency_injector import providers

from bcce.containers.application import Application

Bcce = Callable[..., Result]
Spawn = Callable[..., "subprocess.Popen[str]"]

#: Three steps appending to ``marks``; ``b`` waits (at most 30 s) for ``release`` to exist.
HELD = """
version: 1
workflow: held
steps:
  - {id: a, type: cmd, command: 'echo a >> marks'}
  - id: b
    type: cmd
    command: >-
      echo b >> marks; echo $$ > b.pid; touch b.started;
      i=0; while [ ! -e release ] && [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.01; done;
      test -e release
  - {id: c, type: cmd, command: 'echo c >> marks'}
"""

SIMPLE = """
version: 1
workflow: simple
steps:
  - {id: a, type: cmd, command: 'echo a >> marks'}
  - {id: b, type: cmd, command: 'echo b >> marks'}
  - {id: c, type: cmd, command: 'echo c >> marks'}
"""


def marks(tmp_path: Path) -> list[str]:
    path = tmp_path / "marks"
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def held_run(
    write_workflow: Callable[..., Path],
    spawn_bcce: Spawn,
    tmp_path: Path,
    wait_until: Callable[..., None],
) -> Callable[[str], subprocess.Popen[str]]:
    """Start HELD as ``python -m bcce workflow run`` and return once step b is running."""

    def start(run_id: str) -> subprocess.Popen[str]:
        path = write_workflow(HELD, name="held.yml")
        proc = spawn_bcce("workflow", "run", path, "--run-id", run_id, "--workspace", tmp_path)
        wait_until(
            lambda: (tmp_path / "b.started").exists() or proc.poll() is not None,
            what="step b to start",
        )
        assert proc.poll() is None, proc.communicate()
        return proc

    return start


def kill9(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate(timeout=10)


# --- resume -------------------------------------------------------------------------------------


def test_resume_never_re_runs_completed_steps(
    run_workflow: Callable[..., Any], bcce: Bcce, tmp_path: Path
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: flaky
        steps:
          - {id: a, type: cmd, command: 'echo a >> marks'}
          - {id: b, type: cmd, command: 'echo b >> marks; test -e fixed'}
          - {id: c, type: cmd, command: 'echo c >> marks'}
        """
    )
    assert ran.exit_code == 1
    (tmp_path / "fixed").touch()

    result = bcce("workflow", "resume", "run-1")

    assert result.exit_code == 0, result.output
    assert marks(tmp_path) == ["a", "b", "b", "c"]


def test_resume_reports_kept_steps_and_counts_resumes(
    run_workflow: Callable[..., Any],
    bcce: Bcce,
    tmp_path: Path,
    run_state: Callable[[str], dict[str, Any]],
) -> None:
    run_workflow(
        """
        version: 1
        workflow: flaky
        steps:
          - {id: a, type: cmd, command: 'true'}
          - {id: b, type: cmd, command: 'test -e fixed'}
        """
    )
    (tmp_path / "fixed").touch()

    result = bcce("workflow", "resume", "run-1")

    assert "a kept from the earlier attempt" in result.stdout
    state = run_state("run-1")
    assert (state["status"], state["resumes"]) == ("succeeded", 1)
    assert state["steps"]["b"]["attempts"] == 2


@pytest.mark.timeout(60)
def test_resume_re_runs_the_step_that_was_interrupted(
    held_run: Callable[[str], subprocess.Popen[str]],
    bcce: Bcce,
    tmp_path: Path,
    run_state: Callable[[str], dict[str, Any]],
) -> None:
    kill9(held_run("int-1"))
    assert run_state("int-1")["steps"]["b"]["status"] == "running"
    (tmp_path / "release").touch()

    result = bcce("workflow", "resume", "int-1")

    assert result.exit_code == 0, result.output
    assert marks(tmp_path) == ["a", "b", "b", "c"]
    assert run_state("int-1")["status"] == "succeeded"


@pytest.mark.timeout(60)
def test_resume_first_stops_what_the_dead_driver_left_running(
    held_run: Callable[[str], subprocess.Popen[str]],
    bcce: Bcce,
    tmp_path: Path,
    pid_gone: Callable[[int], bool],
    wait_until: Callable[..., None],
) -> None:
    kill9(held_run("orphan-1"))
    orphan = int((tmp_path / "b.pid").read_text())
    assert not pid_gone(orphan)
    (tmp_path / "release").touch()

    bcce("workflow", "resume", "orphan-1")

    wait_until(lambda: pid_gone(orphan), timeout=5, what="the orphaned step process")


def test_resume_from_step_re_runs_that_step_and_the_ones_after(
    run_workflow: Callable[..., Any], bcce: Bcce, tmp_path: Path
) -> None:
    run_workflow(SIMPLE)

    result = bcce("workflow", "resume", "run-1", "--from-step", "b")

    assert result.exit_code == 0, result.output
    assert marks(tmp_path) == ["a", "b", "c", "b", "c"]


def test_resume_from_a_composite_re_runs_its_children(
    run_workflow: Callable[..., Any], bcce: Bcce, tmp_path: Path
) -> None:
    run_workflow(
        """
        version: 1
        workflow: nested
        steps:
          - {id: a, type: cmd, command: 'echo a >> marks'}
          - id: grp
            type: composite
            steps:
              - {id: inner, type: cmd, command: 'echo inner >> marks'}
        """
    )

    bcce("workflow", "resume", "run-1", "--from-step", "grp")

    assert marks(tmp_path) == ["a", "inner", "inner"]


def test_resume_from_an_unknown_step_is_refused(
    run_workflow: Callable[..., Any], bcce: Bcce
) -> None:
    run_workflow(SIMPLE)

    result = bcce("workflow", "resume", "run-1", "--from-step", "zz")

    assert result.exit_code == 3
    assert "no step 'zz'" in result.stderr
    assert "steps: a, b, c" in result.stderr


def test_resuming_a_succeeded_run_runs_nothing(
    run_workflow: Callable[..., Any], bcce: Bcce, tmp_path: Path
) -> None:
    run_workflow(SIMPLE)

    result = bcce("workflow", "resume", "run-1")

    assert result.exit_code == 0
    assert marks(tmp_path) == ["a", "b", "c"]


def test_resume_refuses_a_changed_workflow_file(
    run_workflow: Callable[..., Any], bcce: Bcce, tmp_path: Path
) -> None:
    ran = run_workflow(SIMPLE.replace("echo c", "false && echo c"))
    (tmp_path / "run-1.yml").write_text(SIMPLE)

    result = bcce("workflow", "resume", "run-1")

    assert ran.exit_code == 1
    assert result.exit_code == 3
    assert "the workflow file changed since run run-1 started" in result.stderr
    assert "--force" in result.stderr
    assert marks(tmp_path) == ["a", "b"]


def test_resume_with_force_runs_the_changed_workflow(
    run_workflow: Callable[..., Any], bcce: Bcce, tmp_path: Path
) -> None:
    run_workflow(SIMPLE.replace("echo c", "false && echo c"))
    (tmp_path / "run-1.yml").write_text(SIMPLE)

    result = bcce("workflow", "resume", "run-1", "--force")

    assert result.exit_code == 0, result.output
    assert marks(tmp_path) == ["a", "b", "c"]


def test_resume_of_an_unknown_run_is_a_usage_error(bcce: Bcce) -> None:
    result = bcce("workflow", "resume", "no-such-run")

    assert result.exit_code == 2
    assert "no run no-such-run" in result.stderr


# --- the lock -----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_second_process_cannot_drive_a_running_run(
    held_run: Callable[[str], subprocess.Popen[str]], bcce: Bcce, tmp_path: Path
) -> None:
    proc = held_run("locked-1")

    result = bcce("workflow", "resume", "locked-1")

    (tmp_path / "release").touch()
    assert proc.wait(timeout=30) == 0
    assert result.exit_code == 1
    assert "locked by another process" in result.stderr
    assert f"pid {proc.pid}" in result.stderr
    assert marks(tmp_path) == ["a", "b", "c"]


def test_a_run_id_cannot_be_reused(run_workflow: Callable[..., Any]) -> None:
    run_workflow(SIMPLE)

    again = run_workflow(SIMPLE)

    assert again.exit_code == 2
    assert "run run-1 already exists" in again.result.stderr


# --- cancel and signals -------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_cancel_from_another_process_stops_a_running_run(
    held_run: Callable[[str], subprocess.Popen[str]],
    bcce: Bcce,
    tmp_path: Path,
    run_state: Callable[[str], dict[str, Any]],
    pid_gone: Callable[[int], bool],
    wait_until: Callable[..., None],
) -> None:
    proc = held_run("cancel-1")
    step_pid = int((tmp_path / "b.pid").read_text())

    result = bcce("workflow", "cancel", "cancel-1")

    assert result.exit_code == 0
    assert proc.wait(timeout=30) == 130
    state = run_state("cancel-1")
    assert state["status"] == "cancelled"
    assert [state["steps"][s]["status"] for s in "abc"] == ["succeeded", "cancelled", "cancelled"]
    wait_until(lambda: pid_gone(step_pid), timeout=5, what="the cancelled step's process")
    assert marks(tmp_path) == ["a", "b"]


@pytest.mark.timeout(60)
def test_cancel_finalises_a_run_whose_driver_was_killed(
    held_run: Callable[[str], subprocess.Popen[str]],
    bcce: Bcce,
    tmp_path: Path,
    run_state: Callable[[str], dict[str, Any]],
    pid_gone: Callable[[int], bool],
    wait_until: Callable[..., None],
) -> None:
    kill9(held_run("cancel-2"))
    orphan = int((tmp_path / "b.pid").read_text())
    assert run_state("cancel-2")["status"] == "interrupted"

    result = bcce("workflow", "cancel", "cancel-2")

    assert result.stdout.strip() == "run cancel-2 cancelled"
    state = run_state("cancel-2")
    assert state["status"] == "cancelled"
    assert state["finished_at"] is not None
    assert [state["steps"][s]["status"] for s in "abc"] == ["succeeded", "cancelled", "cancelled"]
    wait_until(lambda: pid_gone(orphan), timeout=5, what="the orphaned step process")


@pytest.mark.timeout(60)
def test_sigterm_to_the_run_process_stops_it_cleanly(
    held_run: Callable[[str], subprocess.Popen[str]],
    tmp_path: Path,
    run_state: Callable[[str], dict[str, Any]],
    pid_gone: Callable[[int], bool],
    wait_until: Callable[..., None],
) -> None:
    proc = held_run("term-1")
    step_pid = int((tmp_path / "b.pid").read_text())

    proc.send_signal(signal.SIGTERM)

    assert proc.wait(timeout=30) == 130
    _, stderr = proc.communicate()
    assert "Traceback" not in stderr
    assert run_state("term-1")["status"] == "cancelled"
    wait_until(lambda: pid_gone(step_pid), timeout=5, what="the step's process")
    assert (Path(tmp_path) / "marks").read_text().split() == ["a", "b"]


def test_cancelling_a_finished_run_changes_nothing(
    run_workflow: Callable[..., Any], bcce: Bcce, run_state: Callable[[str], dict[str, Any]]
) -> None:
    run_workflow(SIMPLE)

    result = bcce("workflow", "cancel", "run-1")

    assert result.stdout.strip() == "run run-1 already succeeded"
    assert run_state("run-1")["status"] == "succeeded"


@pytest.mark.timeout(60)
def test_a_cancelled_run_can_be_resumed_to_completion(
    held_run: Callable[[str], subprocess.Popen[str]],
    bcce: Bcce,
    tmp_path: Path,
    workflow_app: Application,
) -> None:
    proc = held_run("cancel-3")
    bcce("workflow", "cancel", "cancel-3")
    proc.wait(timeout=30)
    (tmp_path / "release").touch()

    result = bcce("workflow", "resume", "cancel-3")

    assert result.exit_code == 0, result.output
    assert marks(tmp_path) == ["a", "b", "b", "c"]
    assert workflow_app.workflow.runner().status("cancel-3").status == "succeeded"


def test_after_a_forced_resume_the_changed_file_is_the_runs_own(
    run_workflow: Callable[..., Any], bcce: Bcce, tmp_path: Path
) -> None:
    flaky = SIMPLE.replace("echo c", "test -e fixed && echo c")
    run_workflow(flaky)
    (tmp_path / "run-1.yml").write_text(flaky + "# edited\n")
    assert bcce("workflow", "resume", "run-1", "--force").exit_code == 1
    (tmp_path / "fixed").touch()

    result = bcce("workflow", "resume", "run-1")

    assert result.exit_code == 0, result.output
    assert marks(tmp_path) == ["a", "b", "c"]


@pytest.mark.timeout(60)
def test_cancelling_a_dead_drivers_run_records_the_event(
    held_run: Callable[[str], subprocess.Popen[str]], bcce: Bcce, runs_dir: Path
) -> None:
    kill9(held_run("cancel-4"))

    bcce("workflow", "cancel", "cancel-4")

    lines = (runs_dir / "cancel-4" / "events.jsonl").read_text().splitlines()
    assert '"workflow.cancelled"' in lines[-1]


def test_resume_from_a_nested_step_re_runs_it_and_what_follows(
    run_workflow: Callable[..., Any], bcce: Bcce, tmp_path: Path
) -> None:
    run_workflow(
        """
        version: 1
        workflow: nested
        steps:
          - {id: a, type: cmd, command: 'echo a >> marks'}
          - id: grp
            type: composite
            steps:
              - {id: i1, type: cmd, command: 'echo i1 >> marks'}
              - {id: i2, type: cmd, command: 'echo i2 >> marks'}
          - {id: z, type: cmd, command: 'echo z >> marks'}
        """
    )

    result = bcce("workflow", "resume", "run-1", "--from-step", "i2")

    assert result.exit_code == 0, result.output
    assert marks(tmp_path) == ["a", "i1", "i2", "z", "i2", "z"]


class _StaleFirstLoad:
    """A state store whose first ``load`` answers from before the run finished."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._stale = True

    def load(self, run_id: str) -> Any:
        state = self._store.load(run_id)
        if self._stale:
            self._stale = False
            state.status = "running"
        return state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_cancel_never_overwrites_a_run_that_finished_meanwhile(
    run_workflow: Callable[..., Any],
    bcce: Bcce,
    workflow_app: Application,
    run_state: Callable[[str], dict[str, Any]],
) -> None:
    # The run completes between cancel's first look (still running) and taking the lock.
    run_workflow(SIMPLE)
    stale = _StaleFirstLoad(workflow_app.workflow.state_store())

    with workflow_app.workflow.state_store.override(providers.Object(stale)):
        workflow_app.workflow.runner().cancel("run-1")

    assert run_state("run-1")["status"] == "succeeded"


def test_event_sequence_numbers_keep_increasing_across_a_resume(
    write_workflow: Callable[..., Path], spawn_bcce: Spawn, tmp_path: Path, runs_dir: Path
) -> None:
    path = write_workflow(SIMPLE.replace("echo b", "test -e fixed && echo b"))
    first = spawn_bcce("workflow", "run", path, "--run-id", "seq-1", "--workspace", tmp_path)
    assert first.wait(timeout=30) == 1
    (tmp_path / "fixed").touch()
    second = spawn_bcce("workflow", "resume", "seq-1")
    assert second.wait(timeout=30) == 0

    lines = (runs_dir / "seq-1" / "events.jsonl").read_text().splitlines()
    seqs = [json.loads(line)["seq"] for line in lines]

    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs


HELD_WITH_CLEANUP = """
version: 1
workflow: held-cleanup
steps:
  - id: b
    type: cmd
    command: >-
      echo b >> marks; touch b.started;
      i=0; while [ $i -lt 3000 ]; do i=$((i+1)); sleep 0.01; done
  - {id: plain, type: cmd, command: 'echo plain >> marks'}
  - {id: tidy, type: cmd, if: always(), command: 'echo tidy >> marks'}
  - {id: notify, type: cmd, if: cancelled(), command: 'echo notify >> marks'}
  - {id: on_fail, type: cmd, if: failure(), command: 'echo on_fail >> marks'}
"""


def test_after_a_cancel_always_and_cancelled_steps_still_run(
    write_workflow: Callable[..., Path],
    spawn_bcce: Spawn,
    bcce: Bcce,
    tmp_path: Path,
    run_state: Callable[[str], dict[str, Any]],
    wait_until: Callable[..., None],
) -> None:
    path = write_workflow(HELD_WITH_CLEANUP, name="cleanup.yml")
    proc = spawn_bcce("workflow", "run", path, "--run-id", "cleanup-1", "--workspace", tmp_path)
    wait_until(lambda: (tmp_path / "b.started").exists(), what="step b to start")

    assert bcce("workflow", "cancel", "cleanup-1").exit_code == 0

    assert proc.wait(timeout=30) == 130
    state = run_state("cleanup-1")
    assert state["status"] == "cancelled"
    statuses = {s: state["steps"][s]["status"] for s in ("b", "plain", "tidy", "notify", "on_fail")}
    assert statuses == {
        "b": "cancelled",
        "plain": "cancelled",
        "tidy": "succeeded",
        "notify": "succeeded",
        "on_fail": "cancelled",
    }
    assert marks(tmp_path) == ["b", "tidy", "notify"]


HELD_IN_CLEANUP = """
version: 1
workflow: held-in-cleanup
steps:
  - {id: b, type: cmd, command: 'touch b.started; sleep 30'}
  - id: tidy
    type: cmd
    if: always()
    command: 'touch tidy.started; sleep 30; echo tidy >> marks'
"""


def test_a_second_cancel_stops_the_cleanup_steps_too(
    write_workflow: Callable[..., Path],
    spawn_bcce: Spawn,
    bcce: Bcce,
    tmp_path: Path,
    run_state: Callable[[str], dict[str, Any]],
    wait_until: Callable[..., None],
) -> None:
    path = write_workflow(HELD_IN_CLEANUP, name="cleanup2.yml")
    proc = spawn_bcce("workflow", "run", path, "--run-id", "cleanup-2", "--workspace", tmp_path)
    wait_until(lambda: (tmp_path / "b.started").exists(), what="step b to start")
    bcce("workflow", "cancel", "cleanup-2")
    wait_until(lambda: (tmp_path / "tidy.started").exists(), what="the cleanup step to start")

    bcce("workflow", "cancel", "cleanup-2")

    assert proc.wait(timeout=30) == 130
    state = run_state("cleanup-2")
    assert state["steps"]["tidy"]["status"] == "cancelled"
    assert marks(tmp_path) == []
