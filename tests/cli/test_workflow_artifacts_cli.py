"""``bcce workflow artifacts`` and ``bcce workflow archive``: a run's stored files listed and
fetched from the storage backend (the run directory, or S3 on moto's server), and archives made
on request."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
import pytest

from bcce.core.durable import RunLock
from bcce.errors import StorageError
from bcce.storage.backend import LocalStorageBackend
from bcce.storage.s3 import S3StorageBackend
from bcce.workflow.runner import RunOptions

if TYPE_CHECKING:
    from click.testing import Result

    from bcce.containers.application import Application
    from bcce.events.bus import Event
    from bcce.testing.aws import MotoServer

BUCKET = "bcce-cli-artifacts"

WORKFLOW = """
version: 1
workflow: build
steps:
  - {id: build, type: cmd, command: 'echo built'}
  - {id: test, type: cmd, command: 'echo tested; echo report > "$BCCE_RUN_DIR/test/report.txt"'}
"""


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., None]:
    """``run(app, run_id="r1")``: run WORKFLOW in process; it must succeed."""

    def start(app: Application, run_id: str = "r1") -> None:
        path = tmp_path / "wf.yml"
        path.write_text(textwrap.dedent(WORKFLOW).lstrip())
        workspace = tmp_path / "ws"
        workspace.mkdir(exist_ok=True)
        result = app.workflow.runner().run(path, RunOptions(run_id=run_id, workspace=workspace))
        assert result.exit_code == 0

    return start


@pytest.fixture
def local_app(bcce_make_app: Callable[..., Application], bcce_layer_options: Any) -> Application:
    """The default: the storage backend is the run directories themselves."""
    bcce_layer_options.environ["PATH"] = os.environ["PATH"]
    return bcce_make_app()


@pytest.fixture
def make_s3_app(
    bcce_make_app: Callable[..., Application], bcce_layer_options: Any, aws_env: MotoServer
) -> Callable[..., Application]:
    bcce_layer_options.environ["PATH"] = os.environ["PATH"]
    boto3.client("s3", endpoint_url=aws_env.url, region_name="us-east-1").create_bucket(
        Bucket=BUCKET
    )
    kms = boto3.client("kms", endpoint_url=aws_env.url, region_name="us-east-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]

    def make(**storage: Any) -> Application:
        return bcce_make_app(
            aws={"endpoint_url": aws_env.url, "region": "us-east-1"},
            storage={"backend": "s3", "s3": {"bucket": BUCKET, "kms_key_id": key_id}, **storage},
        )

    return make


def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / ".bcce_runs"


# -- artifacts ----------------------------------------------------------------------------------
def test_artifacts_lists_the_runs_files_with_their_sizes(
    local_app: Application,
    run: Callable[..., None],
    bcce_cli: Callable[..., Result],
    tmp_path: Path,
) -> None:
    run(local_app)

    result = bcce_cli(["workflow", "artifacts", "r1"], app=local_app)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"artifacts of run r1 in {runs_dir(tmp_path) / 'r1'}"
    assert ["6", "B", "build/output.txt"] in [line.split() for line in lines]
    assert ["7", "B", "test/report.txt"] in [line.split() for line in lines]
    assert "run.json" in result.stdout


def test_artifacts_json_gives_name_step_and_size(
    local_app: Application, run: Callable[..., None], bcce_cli: Callable[..., Result]
) -> None:
    run(local_app)

    result = bcce_cli(["workflow", "artifacts", "r1", "--json"], app=local_app)

    data = json.loads(result.stdout)
    assert {"name": "build/output.txt", "step": "build", "size": 6} in data["artifacts"]
    assert any(a["name"] == "run.json" and a["step"] is None for a in data["artifacts"])


def test_artifacts_of_one_step(
    local_app: Application, run: Callable[..., None], bcce_cli: Callable[..., Result]
) -> None:
    run(local_app)

    result = bcce_cli(["workflow", "artifacts", "r1", "--step", "test", "--json"], app=local_app)

    names = [a["name"] for a in json.loads(result.stdout)["artifacts"]]
    assert names and all(n.startswith("test/") for n in names)
    assert "test/report.txt" in names


def test_get_writes_one_artifact_to_standard_output(
    local_app: Application, run: Callable[..., None], bcce_cli: Callable[..., Result]
) -> None:
    run(local_app)

    result = bcce_cli(["workflow", "artifacts", "r1", "--get", "build/output.txt"], app=local_app)

    assert result.exit_code == 0 and result.stdout == "built\n"


def test_get_with_a_step_names_a_file_in_its_folder(
    local_app: Application, run: Callable[..., None], bcce_cli: Callable[..., Result]
) -> None:
    run(local_app)

    result = bcce_cli(
        ["workflow", "artifacts", "r1", "--step", "test", "--get", "report.txt", "-o", "-"],
        app=local_app,
    )

    assert result.exit_code == 0 and result.stdout == "report\n"


def test_get_output_writes_a_file(
    local_app: Application,
    run: Callable[..., None],
    bcce_cli: Callable[..., Result],
    tmp_path: Path,
) -> None:
    run(local_app)
    target = tmp_path / "out" / "build.txt"
    target.parent.mkdir()

    result = bcce_cli(
        ["workflow", "artifacts", "r1", "--get", "build/output.txt", "--output", str(target)],
        app=local_app,
    )

    assert result.exit_code == 0, result.output
    assert target.read_text() == "built\n"
    assert result.stdout == f"{target} (6 B)\n"


def test_a_get_cut_short_leaves_the_output_file_as_it_was(
    local_app: Application,
    run: Callable[..., None],
    bcce_cli: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run(local_app)
    target = tmp_path / "out" / "build.txt"
    target.parent.mkdir()
    target.write_text("the previous download\n")

    def cut(self: LocalStorageBackend, key: str, handle: BinaryIO) -> None:
        handle.write(b"bu")
        raise StorageError(f"cannot read {key}: connection reset")

    monkeypatch.setattr(LocalStorageBackend, "retrieve_into", cut)
    result = bcce_cli(
        ["workflow", "artifacts", "r1", "--get", "build/output.txt", "-o", str(target)],
        app=local_app,
    )

    assert result.exit_code == 1
    assert "cannot read r1/build/output.txt: connection reset" in result.stderr
    assert "Traceback" not in result.output
    assert target.read_text() == "the previous download\n"
    assert [p.name for p in target.parent.iterdir()] == ["build.txt"]


def test_get_of_a_multipart_s3_artifact_streams_it_to_a_file_and_to_stdout(
    make_s3_app: Callable[..., Application],
    bcce_cli: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_s3_app(s3={"bucket": BUCKET, "multipart_threshold_mb": 5})
    workflow = tmp_path / "big.yml"
    workflow.write_text(
        "version: 1\nworkflow: big\nsteps:\n"
        "  - {id: package, type: cmd, "
        "command: 'head -c 6291456 /dev/urandom > \"$BCCE_RUN_DIR/package/bundle.bin\"'}\n"
    )
    (tmp_path / "ws").mkdir()
    started = app.workflow.runner().run(
        workflow, RunOptions(run_id="r1", workspace=tmp_path / "ws")
    )
    assert started.exit_code == 0
    local = runs_dir(tmp_path) / "r1" / "package" / "bundle.bin"
    data = local.read_bytes()
    shutil.rmtree(runs_dir(tmp_path) / "r1")
    monkeypatch.setattr(S3StorageBackend, "retrieve", lambda *a: pytest.fail("read whole"))
    target = tmp_path / "bundle.bin"

    to_file = bcce_cli(
        ["workflow", "artifacts", "r1", "--get", "package/bundle.bin", "-o", str(target)], app=app
    )
    to_stdout = bcce_cli(["workflow", "artifacts", "r1", "--get", "package/bundle.bin"], app=app)

    assert to_file.exit_code == 0, to_file.output
    assert target.read_bytes() == data
    assert to_file.stdout == f"{target} (6.3 MB)\n"
    assert to_stdout.exit_code == 0, to_stdout.stderr
    assert to_stdout.stdout_bytes == data


def test_an_unknown_run_is_a_usage_error_listing_the_runs_there(
    local_app: Application, run: Callable[..., None], bcce_cli: Callable[..., Result]
) -> None:
    run(local_app)

    result = bcce_cli(["workflow", "artifacts", "r9"], app=local_app)

    assert result.exit_code == 2
    assert "[BCCE002] no artifacts of run r9 in" in result.stderr
    assert "hint: runs there: r1" in result.stderr


def test_an_unknown_step_lists_the_steps_with_artifacts(
    local_app: Application, run: Callable[..., None], bcce_cli: Callable[..., Result]
) -> None:
    run(local_app)

    result = bcce_cli(["workflow", "artifacts", "r1", "--step", "deploy"], app=local_app)

    assert result.exit_code == 2
    assert "run r1 has no artifacts of step 'deploy'" in result.stderr
    assert "hint: steps with artifacts: build, test" in result.stderr


def test_an_unknown_name_suggests_the_artifacts_of_that_name(
    local_app: Application, run: Callable[..., None], bcce_cli: Callable[..., Result]
) -> None:
    run(local_app)

    result = bcce_cli(["workflow", "artifacts", "r1", "--get", "output.txt"], app=local_app)

    assert result.exit_code == 2
    assert "run r1 has no artifact 'output.txt'" in result.stderr
    assert "hint: did you mean: build/output.txt, test/output.txt" in result.stderr


def test_output_without_get_is_a_usage_error(
    local_app: Application, bcce_cli: Callable[..., Result]
) -> None:
    result = bcce_cli(["workflow", "artifacts", "r1", "-o", "x.txt"], app=local_app)

    assert result.exit_code == 2 and "--output goes with --get NAME" in result.stderr


def test_artifacts_of_an_s3_run_come_from_the_bucket(
    make_s3_app: Callable[..., Application],
    run: Callable[..., None],
    bcce_cli: Callable[..., Result],
    tmp_path: Path,
) -> None:
    app = make_s3_app()
    run(app)
    shutil.rmtree(runs_dir(tmp_path) / "r1")  # the listing does not look here

    listed = bcce_cli(["workflow", "artifacts", "r1"], app=app)
    got = bcce_cli(["workflow", "artifacts", "r1", "--get", "test/report.txt"], app=app)

    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[0] == f"artifacts of run r1 in s3://{BUCKET}/bcce/r1"
    assert "build/output.txt" in listed.stdout and "archive.json" in listed.stdout
    assert got.exit_code == 0 and got.stdout == "report\n"


def test_a_local_run_not_yet_in_s3_says_how_to_upload_it(
    make_s3_app: Callable[..., Application],
    local_app: Application,
    run: Callable[..., None],
    bcce_cli: Callable[..., Result],
) -> None:
    run(local_app)  # while storage was the run directory

    result = bcce_cli(["workflow", "artifacts", "r1"], app=make_s3_app())

    assert result.exit_code == 2
    assert "nothing of it is stored yet: `bcce workflow archive r1`" in result.stderr


# -- archive ------------------------------------------------------------------------------------
def test_archive_with_the_local_backend_has_nothing_to_do(
    local_app: Application,
    run: Callable[..., None],
    bcce_cli: Callable[..., Result],
    tmp_path: Path,
) -> None:
    run(local_app)

    result = bcce_cli(["workflow", "archive", "r1"], app=local_app)

    assert result.exit_code == 0
    assert result.stdout.startswith(f"run r1 is kept in {runs_dir(tmp_path) / 'r1'}")
    assert "nothing to archive" in result.stdout


def test_archive_uploads_a_run_and_prints_where(
    make_s3_app: Callable[..., Application],
    run: Callable[..., None],
    bcce_cli: Callable[..., Result],
    bcce_captured_events: Callable[..., list[Event]],
    aws_env: MotoServer,
) -> None:
    app = make_s3_app(archive_on_completion=False)
    run(app)
    s3 = boto3.client("s3", endpoint_url=aws_env.url, region_name="us-east-1")
    manifest = "bcce/r1/archive.json"
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=manifest)
    events = bcce_captured_events(app, "storage.*")

    result = bcce_cli(["workflow", "archive", "r1"], app=app)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"s3://{BUCKET}/bcce/r1\n"
    assert "uploaded now" in result.stderr
    assert s3.head_object(Bucket=BUCKET, Key=manifest)["ServerSideEncryption"] == "aws:kms"
    assert [(e.type, e.run_id, e.payload["location"]) for e in events] == [
        ("storage.archived", "r1", f"s3://{BUCKET}/bcce/r1")
    ]


def test_archive_refuses_a_run_a_process_drives(
    make_s3_app: Callable[..., Application],
    run: Callable[..., None],
    bcce_cli: Callable[..., Result],
    tmp_path: Path,
) -> None:
    app = make_s3_app(archive_on_completion=False)
    run(app)

    with RunLock(runs_dir(tmp_path) / "r1"):
        result = bcce_cli(["workflow", "archive", "r1"], app=app)

    assert result.exit_code == 1
    assert "[BCCE710]" in result.stderr and "run r1 is being driven by a process" in result.stderr
    assert "bcce workflow cancel r1" in result.stderr


def test_archive_of_an_unknown_run_is_a_usage_error(
    make_s3_app: Callable[..., Application], bcce_cli: Callable[..., Result]
) -> None:
    result = bcce_cli(["workflow", "archive", "r9"], app=make_s3_app())

    assert result.exit_code == 2 and "no run r9 in" in result.stderr
