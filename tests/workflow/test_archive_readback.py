"""A run archived in S3 (moto's server, real HTTP) at completion, its local directory deleted,
read back by ``bcce workflow status`` and ``bcce workflow report``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

if TYPE_CHECKING:
    from click.testing import Result

    from bcce.containers.application import Application
    from bcce.testing.aws import MotoServer

    from .conftest import Ran

BUCKET = "bcce-archive"

WORKFLOW = """
version: 1
workflow: nightly
steps:
  - {id: build, type: cmd, command: 'echo built'}
  - {id: check, type: cmd, command: 'echo checked'}
"""


@pytest.fixture
def s3(aws_env: MotoServer) -> Any:
    client = boto3.client("s3", endpoint_url=aws_env.url, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def s3_app(
    make_workflow_app: Callable[..., Application], aws_env: MotoServer, s3: Any
) -> Application:
    kms = boto3.client("kms", endpoint_url=aws_env.url, region_name="us-east-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    return make_workflow_app(
        aws={"endpoint_url": aws_env.url, "region": "us-east-1"},
        storage={"backend": "s3", "s3": {"bucket": BUCKET, "kms_key_id": key_id}},
    )


@pytest.fixture
def archived(s3_app: Application, run_workflow: Callable[..., Ran], runs_dir: Path) -> Ran:
    """Run 'nightly' with S3 storage; then delete its run directory."""
    ran = run_workflow(WORKFLOW, run_id="nightly-1", app=s3_app)
    assert ran.exit_code == 0, ran.result.output
    shutil.rmtree(runs_dir / "nightly-1")
    return ran


def test_status_reads_a_run_whose_directory_is_gone_back_from_its_archive(
    archived: Ran, s3_app: Application, bcce: Callable[..., Result], runs_dir: Path
) -> None:
    result = bcce("workflow", "status", "nightly-1", "--json", app=s3_app)

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["run_id"] == "nightly-1" and data["status"] == "succeeded"
    assert data["workflow"]["name"] == "nightly"
    assert {s: i["status"] for s, i in data["steps"].items()} == {
        "build": "succeeded",
        "check": "succeeded",
    }
    assert data["archive"]["location"] == f"s3://{BUCKET}/bcce/nightly-1"
    assert data["archive"]["copy"] == str(runs_dir / ".archived" / "nightly-1")
    assert "read back from its archive s3://bcce-archive/bcce/nightly-1" in result.stderr
    assert not (runs_dir / "nightly-1").exists()


def test_status_text_says_the_run_came_from_the_archive(
    archived: Ran, s3_app: Application, bcce: Callable[..., Result]
) -> None:
    result = bcce("workflow", "status", "nightly-1", app=s3_app)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("run nightly-1  ")
    assert "succeeded" in result.stdout and "build" in result.stdout
    assert "is not in" in result.stderr and "read back from its archive" in result.stderr


def test_report_json_of_an_archived_run(
    archived: Ran, s3_app: Application, bcce: Callable[..., Result]
) -> None:
    result = bcce("workflow", "report", "nightly-1", "--format", "json", app=s3_app)

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["run_id"] == "nightly-1"
    assert report["status"] == "succeeded"
    assert [s["id"] for s in report["steps"]] == ["build", "check"]
    build = report["steps"][0]
    assert "build/output.txt" in {a["path"] for a in build["artifacts"]}
    assert "read back from its archive" in result.stderr


def test_the_copy_is_downloaded_once_while_the_archive_is_unchanged(
    archived: Ran, s3_app: Application, bcce: Callable[..., Result]
) -> None:
    gets: list[str] = []
    s3_app.aws.s3().meta.events.register(
        "provide-client-params.s3.GetObject", lambda params, **_: gets.append(params["Key"])
    )

    assert bcce("workflow", "status", "nightly-1", app=s3_app).exit_code == 0
    first = list(gets)
    gets.clear()
    assert bcce("workflow", "report", "nightly-1", "--format", "md", app=s3_app).exit_code == 0

    assert "bcce/nightly-1/run.json" in first and len(first) > 2
    assert gets == ["bcce/nightly-1/archive.json"]


def test_an_archive_changed_after_it_was_written_is_refused(
    archived: Ran, s3_app: Application, bcce: Callable[..., Result], s3: Any, runs_dir: Path
) -> None:
    s3.put_object(Bucket=BUCKET, Key="bcce/nightly-1/run.json", Body=b'{"status": "forged"}')

    result = bcce("workflow", "status", "nightly-1", app=s3_app)

    assert result.exit_code == 1
    assert "[BCCE700]" in result.stderr and "does not match its manifest" in result.stderr
    assert not (runs_dir / ".archived" / "nightly-1").exists()


def test_a_run_neither_local_nor_archived_is_a_usage_error_naming_both_places(
    s3_app: Application, bcce: Callable[..., Result], runs_dir: Path
) -> None:
    result = bcce("workflow", "status", "nightly-9", app=s3_app)

    assert result.exit_code == 2
    assert f"no run nightly-9 in {runs_dir} nor in s3://{BUCKET}/bcce" in result.stderr
    assert "bcce workflow list" in result.stderr
