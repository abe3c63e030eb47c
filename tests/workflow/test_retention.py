"""``bcce workflow prune --older-than AGE``: which local runs go, which stay and why; and the
read-back copies of archived runs unused since the cutoff."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from bcce.core.durable import RunLock
from bcce.core.when import parse_iso
from bcce.storage.backend import LocalStorageBackend
from bcce.workflow.artifacts import read_back, reading_cache
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


# -- the read-back cache ------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> LocalStorageBackend:
    """A storage backend other than the run directories (archives go there)."""
    return LocalStorageBackend(tmp_path / "store")


@pytest.fixture
def read_back_copy(
    make_run: Callable[..., Path], store: LocalStorageBackend, runs_dir: Path
) -> Callable[[str], Path]:
    """``read_back_copy(run_id)``: a run archived in ``store``, its directory deleted, read back
    into ``<runs_dir>/.archived/<run_id>``; the copy's directory."""

    def read(run_id: str) -> Path:
        directory = make_run(run_id, "succeeded")
        store.archive(directory, run_id)
        shutil.rmtree(directory)
        archived = read_back(store, runs_dir, run_id)
        assert archived is not None and archived.fetched
        return archived.directory

    return read


def unused_since_long_ago(path: Path) -> None:
    moment = parse_iso(LONG_AGO).timestamp()
    os.utime(path, (moment, moment))


def test_a_cached_copy_unused_since_the_cutoff_is_removed(
    read_back_copy: Callable[[str], Path], bcce: Callable[..., Result], runs_dir: Path
) -> None:
    copy = read_back_copy("nightly-1")
    unused_since_long_ago(copy)

    result = bcce("workflow", "prune", "--older-than", "30d")

    assert result.exit_code == 0, result.output
    row = lines(result)["nightly-1"]
    assert row.startswith("removed") and "cached copy" in row
    assert row.endswith("last used 2020-01-01 00:00 UTC, before the cutoff")
    assert not copy.exists()
    assert [p.name for p in (runs_dir / ".archived").iterdir()] == [".lock"]


def test_a_cached_copy_used_since_the_cutoff_is_kept(
    read_back_copy: Callable[[str], Path], bcce: Callable[..., Result]
) -> None:
    copy = read_back_copy("nightly-1")

    result = bcce("workflow", "prune", "--older-than", "30d", "--json")

    assert json.loads(result.stdout)["cached_copies"] == []
    assert (copy / "run.json").is_file()


def test_reading_a_cached_copy_back_again_counts_as_using_it(
    read_back_copy: Callable[[str], Path],
    store: LocalStorageBackend,
    bcce: Callable[..., Result],
    runs_dir: Path,
) -> None:
    copy = read_back_copy("nightly-1")
    unused_since_long_ago(copy)

    again = read_back(store, runs_dir, "nightly-1")
    result = bcce("workflow", "prune", "--older-than", "30d", "--json")

    assert again is not None and not again.fetched  # the cached copy matched the archive
    assert json.loads(result.stdout)["cached_copies"] == []
    assert (copy / "run.json").is_file()


def test_a_cached_copy_being_read_back_is_not_removed(
    read_back_copy: Callable[[str], Path], bcce: Callable[..., Result], runs_dir: Path
) -> None:
    copy = read_back_copy("nightly-1")
    unused_since_long_ago(copy)

    with reading_cache(runs_dir):
        result = bcce("workflow", "prune", "--older-than", "30d", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cached_copies"] == []
    assert (copy / "run.json").is_file()


def test_a_dry_run_keeps_cached_copies_and_says_which_would_go(
    read_back_copy: Callable[[str], Path], bcce: Callable[..., Result]
) -> None:
    copy = read_back_copy("nightly-1")
    unused_since_long_ago(copy)

    result = bcce("workflow", "prune", "--older-than", "30d", "--dry-run")

    assert lines(result)["nightly-1"].startswith("would remove")
    summary = result.stdout.splitlines()[-1]
    assert summary.startswith("0 would remove (0 B), 0 kept; would remove 1 cached archive copy (")
    assert summary.endswith("dry run: nothing was deleted")
    assert (copy / "run.json").is_file()


def test_what_cut_off_read_backs_and_prunes_left_in_the_cache_is_cleared(
    bcce: Callable[..., Result], runs_dir: Path
) -> None:
    cache = runs_dir / ".archived"
    stale = [cache / ".r1.1a2b3c4d.fetching", cache / ".r1.5e6f7a8b.old"]
    pruning = cache / ".r2.9c0d1e2f.pruning"  # however recent
    fetching = cache / ".r3.3a4b5c6d.fetching"  # a read-back in progress
    for leftover in [*stale, pruning, fetching]:
        (leftover / "build").mkdir(parents=True)
    for leftover in stale:
        unused_since_long_ago(leftover)

    result = bcce("workflow", "prune", "--older-than", "30d")

    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in cache.iterdir()) == [".lock", fetching.name]


def test_the_json_lists_removed_cached_copies_beside_the_runs(
    make_run: Callable[..., Path],
    read_back_copy: Callable[[str], Path],
    bcce: Callable[..., Result],
) -> None:
    make_run("old", "succeeded")
    copy = read_back_copy("nightly-1")
    unused_since_long_ago(copy)
    copy_bytes = sum(p.stat().st_size for p in copy.rglob("*") if p.is_file())

    result = bcce("workflow", "prune", "--older-than", "30d", "--json")

    data = json.loads(result.stdout)
    assert list(data) == ["cutoff", "dry_run", "removed", "kept", "cached_copies"]
    assert [r["run_id"] for r in data["removed"]] == ["old"]
    assert data["cached_copies"] == [
        {
            "run_id": "nightly-1",
            "last_used": "2020-01-01T00:00:00+00:00",
            "reason": "last used 2020-01-01 00:00 UTC, before the cutoff",
            "bytes": copy_bytes,
        }
    ]


def test_the_text_summary_counts_runs_and_cached_copies_apart(
    make_run: Callable[..., Path],
    read_back_copy: Callable[[str], Path],
    bcce: Callable[..., Result],
) -> None:
    make_run("old", "succeeded")
    make_run("recent", "succeeded", finished=utcnow())
    for run_id in ("nightly-1", "nightly-2"):
        unused_since_long_ago(read_back_copy(run_id))

    result = bcce("workflow", "prune", "--older-than", "30d")

    rows = lines(result)
    assert rows["old"].startswith("removed") and "cached copy" not in rows["old"]
    assert all("cached copy" in rows[r] for r in ("nightly-1", "nightly-2"))
    summary = result.stdout.splitlines()[-1]
    assert (
        summary.startswith("1 removed (")
        and ", 1 kept; removed 2 cached archive copies (" in summary
    )


def test_showing_an_archived_run_counts_as_using_its_cached_copy(
    read_back_copy: Callable[[str], Path],
    store: LocalStorageBackend,
    make_workflow_app: Callable[..., Application],
    bcce: Callable[..., Result],
) -> None:
    copy = read_back_copy("nightly-1")
    unused_since_long_ago(copy)
    app = make_workflow_app(storage={"root": str(store.root)})

    shown = bcce("workflow", "status", "nightly-1", app=app)
    result = bcce("workflow", "prune", "--older-than", "30d", "--json", app=app)

    assert shown.exit_code == 0, shown.output
    assert "read back from its archive" in shown.stderr
    assert json.loads(result.stdout)["cached_copies"] == []
    assert (copy / "run.json").is_file()
