"""``bcce workflow prune --older-than AGE``: which local runs go, which stay and why."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from bcce.core.durable import RunLock
from bcce.workflow.state import TERMINAL_RUN, JsonRunStateStore, RunState, utcnow

if TYPE_CHECKING:
    from click.testing import Result

    from bcce.containers.application import Application
    from bcce.testing.aws import MotoServer

LONG_AGO = "2020-01-01T00:00:00.000+00:00"
BUCKET = "bcce-prune"


@pytest.fixture
def make_run(runs_dir: Path) -> Callable[..., Path]:
    """``make_run(run_id, status, finished=LONG_AGO)``: a recorded run with one artifact."""
    store = JsonRunStateStore(runs_dir, fsync=False)

    def make(run_id: str, status: str, finished: str = LONG_AGO) -> Path:
        recorder = store.create(RunState(run_id=run_id, workflow={"name": "w"}))
        ended = finished if status in TERMINAL_RUN else None
        recorder.record("run", None, status=status, finished_at=ended)
        recorder.snapshot()
        (recorder.directory / "build").mkdir()
        (recorder.directory / "build" / "output.txt").write_text("built\n")
        recorder.release()
        return recorder.directory

    return make


def lines(result: Result) -> dict[str, str]:
    """Each run's line of the text output, by run id."""
    return {line[13:].split()[0]: line for line in result.stdout.splitlines()[:-1]}


def test_runs_that_finished_before_the_cutoff_are_removed(
    make_run: Callable[..., Path], bcce: Callable[..., Result], runs_dir: Path
) -> None:
    for run_id, status in (("ok", "succeeded"), ("bad", "failed"), ("stopped", "cancelled")):
        make_run(run_id, status)
    make_run("recent", "succeeded", finished=utcnow())
    (runs_dir / "audit.jsonl").write_text("")

    result = bcce("workflow", "prune", "--older-than", "30d")

    assert result.exit_code == 0, result.output
    rows = lines(result)
    for run_id in ("ok", "bad", "stopped"):
        assert rows[run_id].startswith("removed") and "before the cutoff" in rows[run_id]
        assert not (runs_dir / run_id).exists()
    assert rows["recent"].startswith("kept") and "finished after the cutoff" in rows["recent"]
    assert (runs_dir / "recent" / "run.json").is_file()
    assert (runs_dir / "audit.jsonl").is_file()
    assert result.stdout.splitlines()[-1].startswith("3 removed (")
    assert sorted(p.name for p in runs_dir.iterdir()) == ["audit.jsonl", "recent"]


def test_unfinished_runs_are_kept_however_old(
    make_run: Callable[..., Path], bcce: Callable[..., Result], runs_dir: Path
) -> None:
    make_run("paused", "awaiting_approval")
    make_run("crashed", "running")
    make_run("new", "pending")

    result = bcce("workflow", "prune", "--older-than", "0s")

    rows = lines(result)
    assert "awaiting approval" in rows["paused"]
    assert "interrupted: no process drives it" in rows["crashed"]
    assert "not finished (pending)" in rows["new"]
    assert all(row.startswith("kept") for row in rows.values())
    assert all((runs_dir / r / "run.json").is_file() for r in ("paused", "crashed", "new"))


def test_a_run_whose_lock_a_process_holds_is_kept(
    make_run: Callable[..., Path], bcce: Callable[..., Result]
) -> None:
    directory = make_run("held", "succeeded")

    with RunLock(directory):
        result = bcce("workflow", "prune", "--older-than", "1d")

    assert lines(result)["held"].startswith("kept")
    assert "driven by a process (pid " in lines(result)["held"]
    assert (directory / "run.json").is_file()


def test_a_dry_run_removes_nothing(
    make_run: Callable[..., Path], bcce: Callable[..., Result]
) -> None:
    directory = make_run("old", "succeeded")

    result = bcce("workflow", "prune", "--older-than", "1d", "--dry-run", "--json")

    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["dry_run"] is True
    assert [r["run_id"] for r in data["removed"]] == ["old"]
    assert data["removed"][0]["bytes"] > 0 and data["kept"] == []
    assert (directory / "build" / "output.txt").is_file()


def test_the_text_of_a_dry_run_says_nothing_was_deleted(
    make_run: Callable[..., Path], bcce: Callable[..., Result]
) -> None:
    make_run("old", "succeeded")

    result = bcce("workflow", "prune", "--older-than", "1d", "--dry-run")

    assert lines(result)["old"].startswith("would remove")
    assert result.stdout.splitlines()[-1].endswith("dry run: nothing was deleted")


def test_a_malformed_age_is_a_usage_error(bcce: Callable[..., Result]) -> None:
    result = bcce("workflow", "prune", "--older-than", "soon")

    assert result.exit_code == 2
    assert "--older-than: cannot read 'soon' as a time" in result.stderr


def test_what_an_interrupted_prune_left_is_cleared(
    bcce: Callable[..., Result], runs_dir: Path
) -> None:
    leftover = runs_dir / ".old.1a2b3c4d.pruning"
    (leftover / "build").mkdir(parents=True)

    result = bcce("workflow", "prune", "--older-than", "1d")

    assert result.exit_code == 0 and not leftover.exists()


# -- with S3 ------------------------------------------------------------------------------------
@pytest.fixture
def s3_app(
    make_workflow_app: Callable[..., Application], aws_env: MotoServer
) -> Iterator[Application]:
    boto3.client("s3", endpoint_url=aws_env.url, region_name="us-east-1").create_bucket(
        Bucket=BUCKET
    )
    yield make_workflow_app(
        aws={"endpoint_url": aws_env.url, "region": "us-east-1"},
        storage={"backend": "s3", "s3": {"bucket": BUCKET}},
    )


def test_with_s3_only_archived_runs_are_removed(
    s3_app: Application,
    make_run: Callable[..., Path],
    bcce: Callable[..., Result],
    runs_dir: Path,
) -> None:
    make_run("archived", "succeeded")
    make_run("unarchived", "failed")
    assert bcce("workflow", "archive", "archived", app=s3_app).exit_code == 0

    result = bcce("workflow", "prune", "--older-than", "7d", app=s3_app)

    rows = lines(result)
    assert rows["archived"].startswith("removed") and rows["archived"].endswith("; archived")
    assert rows["unarchived"].startswith("kept")
    assert f"not archived in s3://{BUCKET}/bcce" in rows["unarchived"]
    assert "--include-unarchived" in rows["unarchived"]
    assert not (runs_dir / "archived").exists()
    assert (runs_dir / "unarchived" / "run.json").is_file()


def test_include_unarchived_removes_runs_s3_lacks(
    s3_app: Application,
    make_run: Callable[..., Path],
    bcce: Callable[..., Result],
    runs_dir: Path,
) -> None:
    make_run("unarchived", "failed")

    result = bcce(
        "workflow", "prune", "--older-than", "7d", "--include-unarchived", "--json", app=s3_app
    )

    data: dict[str, Any] = json.loads(result.stdout)
    assert [r["run_id"] for r in data["removed"]] == ["unarchived"]
    assert "not archived (--include-unarchived)" in data["removed"][0]["reason"]
    assert not (runs_dir / "unarchived").exists()


def test_a_storage_error_stops_pruning_before_anything_is_removed(
    aws_env: MotoServer,
    make_workflow_app: Callable[..., Application],
    make_run: Callable[..., Path],
    bcce: Callable[..., Result],
    runs_dir: Path,
) -> None:
    # Nothing listens on the discard port: S3 cannot be asked whether the runs are archived.
    app = make_workflow_app(
        aws={"endpoint_url": "http://127.0.0.1:9", "region": "us-east-1"},
        storage={"backend": "s3", "s3": {"bucket": BUCKET, "max_attempts": 1}},
    )
    make_run("a", "succeeded")
    make_run("b", "succeeded")

    result = bcce("workflow", "prune", "--older-than", "7d", "--include-unarchived", app=app)

    assert result.exit_code == 1
    assert "[BCCE700]" in result.stderr and "cannot reach S3" in result.stderr
    assert (runs_dir / "a" / "run.json").is_file() and (runs_dir / "b" / "run.json").is_file()
