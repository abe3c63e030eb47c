"""``kill -9`` at random moments: a run always resumes to a clean run's final state, and no step
that was recorded as succeeded runs again."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

TRIALS = 20
SEED = 20261122

#: Every leaf step appends its id to ``marks`` first, then works a little, then sets an output.
STEP = (
    'echo $BCCE_STEP_ID >> marks; sleep 0.08; echo "v=$BCCE_STEP_ID{extra}" >> "$BCCE_OUTPUT"; '
    "echo out-$BCCE_STEP_ID"
)


def _leaf(step_id: str, indent: str, extra: str = "", needs: str = "") -> str:
    command = STEP.format(extra=extra)
    needs_line = f"{indent}  needs: {needs}\n" if needs else ""
    head = f"{indent}- id: {step_id}\n{indent}  type: cmd\n"
    return f"{head}{needs_line}{indent}  command: '{command}'\n"


WORKFLOW = (
    "version: 1\nworkflow: crashy\nsteps:\n"
    + _leaf("s1", "  ")
    + _leaf("s2", "  ", extra="+${{ steps.s1.outputs.v }}")
    + "  - id: grp\n    type: composite\n    steps:\n"
    + _leaf("s3", "      ")
    + _leaf("s4", "      ", extra="+${{ steps.s3.outputs.v }}")
    + "  - id: par\n    type: parallel\n    steps:\n"
    + _leaf("s5", "      ")
    + _leaf("s6", "      ")
    + _leaf("s7", "  ", needs="[grp, par]", extra="+${{ steps.s6.outputs.v }}")
    + _leaf("s8", "  ", needs="[s7]", extra="+${{ steps.s2.outputs.v }}")
)
LEAVES = ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"]
ALL_STEPS = ["s1", "s2", "grp", "s3", "s4", "par", "s5", "s6", "s7", "s8"]


def _marks(workspace: Path) -> Counter[str]:
    path = workspace / "marks"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def _final(state: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        step_id: (info["status"], info.get("outputs") or {})
        for step_id, info in state["steps"].items()
    }


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_run_killed_at_random_moments_always_resumes_to_the_clean_final_state(
    tmp_path: Path,
    runs_dir: Path,
    write_workflow: Callable[..., Path],
    spawn_bcce: Callable[..., Any],
    bcce: Callable[..., Result],
    run_state: Callable[[str], dict[str, Any]],
    wait_until: Callable[..., None],
) -> None:
    path = write_workflow(WORKFLOW, name="crashy.yml")

    clean_space = tmp_path / "clean"
    clean_space.mkdir()
    started = time.monotonic()
    clean = spawn_bcce("workflow", "run", path, "--run-id", "clean", "--workspace", clean_space)
    wait_until(lambda: (runs_dir / "clean" / "run.json").exists(), what="the clean run to start")
    # Timings only aim the kills inside a run (after start-up, before the end); never asserted.
    startup_seconds = time.monotonic() - started
    assert clean.wait(timeout=60) == 0, clean.communicate()
    clean_seconds = time.monotonic() - started
    expected = _final(run_state("clean"))
    assert [s for s, (status, _) in expected.items() if status != "succeeded"] == []
    assert set(expected) == set(ALL_STEPS)
    assert _marks(clean_space) == Counter(LEAVES)

    rng = random.Random(SEED)
    interrupted_mid_run = 0
    for trial in range(TRIALS):
        workspace = tmp_path / f"trial-{trial:02d}"
        workspace.mkdir()
        run_id = f"kill-{trial:02d}"
        proc = spawn_bcce("workflow", "run", path, "--run-id", run_id, "--workspace", workspace)
        time.sleep(rng.uniform(startup_seconds * 0.8, clean_seconds))  # the moment of the kill
        proc.kill()
        proc.communicate(timeout=30)

        if not (runs_dir / run_id / "run.json").exists():
            # Killed before the run was recorded: nothing ran, nothing to resume.
            assert _marks(workspace) == Counter(), f"trial {trial}"
            continue
        before = run_state(run_id)  # readable after the kill
        assert before["status"] in ("pending", "interrupted", "succeeded"), f"trial {trial}"
        succeeded_before = {
            step_id for step_id, info in before["steps"].items() if info["status"] == "succeeded"
        }
        marks_before = _marks(workspace)
        if before["status"] == "interrupted":
            interrupted_mid_run += 1

        for _ in range(3):
            if bcce("workflow", "resume", run_id).exit_code == 0:
                break
        after = run_state(run_id)

        assert after["status"] == "succeeded", f"trial {trial}: {after}"
        assert _final(after) == expected, f"trial {trial}"
        marks_after = _marks(workspace)
        for step_id in sorted(succeeded_before & set(LEAVES)):
            assert marks_after[step_id] == marks_before[step_id], (
                f"trial {trial}: {step_id} succeeded before the kill and ran again"
            )
        assert set(marks_after) == set(LEAVES), f"trial {trial}"

    assert interrupted_mid_run > 0, "no kill landed inside a run: the test proved nothing"
