"""The S3 backend against moto's S3 server (real HTTP on 127.0.0.1) with a KMS key: encryption
on every object, multipart uploads, retries of cut uploads, listing and deleting with pages,
errors with hints, and run archives."""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.stub import Stubber

from bcce.errors import ConfigError, StorageError
from bcce.events import catalogue
from bcce.settings.model import BcceSettings
from bcce.storage.archive import MANIFEST, RunManifest
from bcce.storage.s3 import S3StorageBackend

if TYPE_CHECKING:
    from bcce.containers.application import Application
    from bcce.events.bus import Event
    from bcce.testing.aws import MotoServer
    from bcce.workflow.runner import RunResult

    from .conftest import CuttingProxy

MB = 1024 * 1024

TWO_STEPS = """
version: 1
workflow: build
steps:
  - {id: build, type: cmd, command: 'echo built'}
  - {id: test, type: cmd, command: 'echo tested'}
"""

BIG_ARTIFACT = """
version: 1
workflow: big
steps:
  - id: package
    type: cmd
    command: 'head -c 11534336 /dev/urandom > "$BCCE_RUN_DIR/package/bundle.bin"'
"""


def calls(client: Any, operation: str) -> list[dict[str, Any]]:
    """The parameters of every ``operation`` call ``client`` makes from now on."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append({k: v for k, v in params.items() if k != "Body"})

    client.meta.events.register(f"provide-client-params.s3.{operation}", record)
    return seen


def keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def sha256_of_object(s3: Any, bucket: str, key: str) -> str:
    return hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


# -- encryption ---------------------------------------------------------------------------------
def test_every_object_of_a_run_is_encrypted_with_the_configured_kms_key(
    s3_app: Callable[..., Application],
    run_workflow: Callable[..., RunResult],
    s3: Any,
    bucket: str,
    kms_key: str,
) -> None:
    assert run_workflow(s3_app(), TWO_STEPS).exit_code == 0

    stored = keys(s3, bucket, "bcce/r1/")
    assert {"bcce/r1/build/output.txt", "bcce/r1/test/output.txt", "bcce/r1/run.json"} <= set(
        stored
    )
    assert stored[-1] != "" and f"bcce/r1/{MANIFEST}" in stored
    for key in stored:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms", key
        assert head["SSEKMSKeyId"].endswith(kms_key), key


def test_without_a_kms_key_objects_get_the_buckets_default_encryption(
    make_backend: Callable[..., S3StorageBackend], s3: Any, bucket: str
) -> None:
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    backend = make_backend(kms_key_id=None)
    puts = calls(backend.client, "PutObject")

    backend.store("r1/build/output.txt", b"built\n")

    assert "SSEKMSKeyId" not in puts[0] and "ServerSideEncryption" not in puts[0]
    head = s3.head_object(Bucket=bucket, Key="bcce/r1/build/output.txt")
    assert head["ServerSideEncryption"] == "AES256"


# -- multipart ----------------------------------------------------------------------------------
def test_a_run_artifact_above_the_threshold_goes_up_in_parts_encrypted(
    s3_app: Callable[..., Application],
    run_workflow: Callable[..., RunResult],
    s3: Any,
    bucket: str,
    kms_key: str,
    tmp_path: Path,
) -> None:
    app = s3_app(multipart_threshold_mb=5, multipart_chunk_mb=5)
    creates = calls(app.aws.s3(), "CreateMultipartUpload")
    parts = calls(app.aws.s3(), "UploadPart")

    assert run_workflow(app, BIG_ARTIFACT).exit_code == 0

    key = "bcce/r1/package/bundle.bin"
    assert [c["Key"] for c in creates] == [key]
    assert creates[0]["ServerSideEncryption"] == "aws:kms"
    assert creates[0]["SSEKMSKeyId"] == kms_key
    assert len(parts) == 3  # 11 MiB in 5 MiB parts
    head = s3.head_object(Bucket=bucket, Key=key)
    local = tmp_path / "runs" / "r1" / "package" / "bundle.bin"
    assert head["ContentLength"] == local.stat().st_size == 11 * MB
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(kms_key)
    assert sha256_of_object(s3, bucket, key) == hashlib.sha256(local.read_bytes()).hexdigest()


def test_a_file_at_the_threshold_is_a_multipart_upload(
    make_backend: Callable[..., S3StorageBackend], tmp_path: Path
) -> None:
    backend = make_backend(multipart_threshold=5 * MB, multipart_chunk=5 * MB)
    creates = calls(backend.client, "CreateMultipartUpload")
    puts = calls(backend.client, "PutObject")
    source = tmp_path / "exact.bin"
    source.write_bytes(os.urandom(5 * MB))

    backend.store_file("r1/step/exact.bin", source)

    assert len(creates) == 1 and puts == []


def test_a_file_below_the_threshold_is_one_put(
    make_backend: Callable[..., S3StorageBackend], tmp_path: Path, kms_key: str
) -> None:
    backend = make_backend(multipart_threshold=5 * MB, multipart_chunk=5 * MB)
    creates = calls(backend.client, "CreateMultipartUpload")
    puts = calls(backend.client, "PutObject")
    source = tmp_path / "small.bin"
    source.write_bytes(os.urandom(5 * MB - 1))

    backend.store_file("r1/step/small.bin", source)

    assert creates == []
    assert len(puts) == 1 and puts[0]["SSEKMSKeyId"] == kms_key


# -- retries ------------------------------------------------------------------------------------
def test_an_upload_part_cut_mid_body_is_retried_and_the_object_is_intact(
    make_backend: Callable[..., S3StorageBackend],
    cutting_proxy: Callable[..., CuttingProxy],
    s3: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    proxy = cutting_proxy("upload_part")
    backend = make_backend(proxy.url, multipart_threshold=5 * MB, multipart_chunk=5 * MB)
    source = tmp_path / "bundle.bin"
    source.write_bytes(os.urandom(12 * MB))

    backend.store_file("r1/package/bundle.bin", source)

    assert len(proxy.cut) == 1 and "partNumber=" in proxy.cut[0]
    digest = sha256_of_object(s3, bucket, "bcce/r1/package/bundle.bin")
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()


def test_a_whole_upload_is_tried_again_when_its_request_gives_up(
    make_backend: Callable[..., S3StorageBackend],
    cutting_proxy: Callable[..., CuttingProxy],
    s3: Any,
    bucket: str,
) -> None:
    proxy = cutting_proxy("put_object")
    # One try per request: only the backend's retry of the whole upload can save it.
    backend = make_backend(proxy.url, max_attempts=1, transfer_attempts=3)
    data = os.urandom(256 * 1024)

    backend.store("r1/build/output.bin", data)

    assert len(proxy.cut) == 1
    puts = [r for r in proxy.requests if r.startswith("PUT /bcce-artifacts/bcce/r1/build")]
    assert len(puts) == 2
    assert sha256_of_object(s3, bucket, "bcce/r1/build/output.bin") == (
        hashlib.sha256(data).hexdigest()
    )


def test_a_large_object_is_read_into_a_file_in_ranged_parts(
    make_backend: Callable[..., S3StorageBackend], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make_backend(multipart_threshold=5 * MB, multipart_chunk=5 * MB)
    data = os.urandom(12 * MB)
    backend.store("r1/package/bundle.bin", data)
    gets = calls(backend.client, "GetObject")
    monkeypatch.setattr(backend, "retrieve", lambda key: pytest.fail("read whole into memory"))

    with (tmp_path / "bundle.bin").open("wb") as handle:
        backend.retrieve_into("r1/package/bundle.bin", handle)

    assert (tmp_path / "bundle.bin").read_bytes() == data
    starts = sorted(int(g["Range"].removeprefix("bytes=").split("-")[0]) for g in gets)
    assert starts == [0, 5 * MB, 10 * MB]


def cut_first_download(backend: S3StorageBackend) -> list[int]:
    """Make the backend's first download write a little then lose its connection; returns
    the list of download attempts (the position of the handle at each)."""
    from botocore.exceptions import EndpointConnectionError

    real = backend.client.download_fileobj
    attempts: list[int] = []

    def download(bucket: str, key: str, handle: Any, **kwargs: Any) -> None:
        seekable = getattr(handle, "seekable", lambda: False)()
        attempts.append(handle.tell() if seekable else -1)
        if len(attempts) == 1:
            handle.write(b"half a download")
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        real(bucket, key, handle, **kwargs)

    backend.client.download_fileobj = download
    return attempts


def test_a_download_tried_again_starts_the_file_over(
    make_backend: Callable[..., S3StorageBackend], tmp_path: Path
) -> None:
    backend = make_backend(transfer_attempts=2)
    backend.store("r1/build/output.txt", b"built\n")
    attempts = cut_first_download(backend)
    target = tmp_path / "output.txt"

    with target.open("wb") as handle:
        backend.retrieve_into("r1/build/output.txt", handle)

    assert attempts == [0, 0]
    assert target.read_bytes() == b"built\n"  # nothing of the cut attempt is left


class Pipe(io.BytesIO):
    def seekable(self) -> bool:
        return False


def test_a_download_into_a_pipe_is_not_tried_again(
    make_backend: Callable[..., S3StorageBackend],
) -> None:
    backend = make_backend(transfer_attempts=3)
    backend.store("r1/build/output.txt", b"built\n")
    attempts = cut_first_download(backend)

    with pytest.raises(StorageError, match="cannot read s3://bcce-artifacts/bcce/r1/build/output"):
        backend.retrieve_into("r1/build/output.txt", Pipe())

    assert attempts == [-1]  # what reached the pipe cannot be taken back


def test_a_large_object_read_after_content_already_in_the_file_keeps_that_content(
    make_backend: Callable[..., S3StorageBackend], tmp_path: Path
) -> None:
    backend = make_backend(multipart_threshold=5 * MB, multipart_chunk=5 * MB)
    data = os.urandom(12 * MB)
    backend.store("r1/package/bundle.bin", data)
    target = tmp_path / "log.bin"  # as `bcce workflow artifacts --get NAME >> log.bin`

    with target.open("ab") as handle:
        handle.write(b"earlier output\n")
        backend.retrieve_into("r1/package/bundle.bin", handle)

    assert target.read_bytes() == b"earlier output\n" + data


def test_reading_a_missing_object_into_a_file_is_a_storage_error(
    make_backend: Callable[..., S3StorageBackend],
) -> None:
    with pytest.raises(StorageError, match="no object s3://bcce-artifacts/bcce/r1/missing"):
        make_backend().retrieve_into("r1/missing", io.BytesIO())


def test_max_attempts_is_the_number_of_tries_of_each_request(
    make_backend: Callable[..., S3StorageBackend], cutting_proxy: Callable[..., CuttingProxy]
) -> None:
    proxy = cutting_proxy("put_object", cuts=float("inf"))
    backend = make_backend(proxy.url, max_attempts=3, transfer_attempts=1)

    with pytest.raises(StorageError, match="cannot store s3://bcce-artifacts/bcce/r1/x"):
        backend.store("r1/x", b"x" * 1024)

    assert len(proxy.cut) == 3


def test_whole_upload_retries_are_bounded(
    make_backend: Callable[..., S3StorageBackend], cutting_proxy: Callable[..., CuttingProxy]
) -> None:
    proxy = cutting_proxy("put_object", cuts=float("inf"))
    backend = make_backend(proxy.url, max_attempts=1, transfer_attempts=2)

    with pytest.raises(StorageError, match="after 2 tries") as caught:
        backend.store("r1/x", b"x" * 1024)

    assert len(proxy.cut) == 2
    assert "storage.s3.max_attempts" in (caught.value.hint or "")


def test_the_applications_client_makes_storage_max_attempts_tries(
    s3_app: Callable[..., Application], cutting_proxy: Callable[..., CuttingProxy]
) -> None:
    proxy = cutting_proxy("put_object", cuts=float("inf"))
    # aws.max_attempts (3 retries: 4 tries) built the client; storage.s3.max_attempts wins.
    backend = s3_app(endpoint=proxy.url, max_attempts=2).storage.backend()
    assert isinstance(backend, S3StorageBackend)
    backend.transfer_attempts = 1

    with pytest.raises(StorageError):
        backend.store("r1/x", b"x")

    assert len(proxy.cut) == 2


# -- listing and deleting -----------------------------------------------------------------------
def test_list_pages_through_every_key(make_backend: Callable[..., S3StorageBackend]) -> None:
    backend = make_backend(page_size=7)
    for n in range(25):
        backend.store(f"r1/step/f{n:02}.txt", b"x")
    pages = calls(backend.client, "ListObjectsV2")

    listed = backend.list("r1")

    assert listed == [f"r1/step/f{n:02}.txt" for n in range(25)]
    assert len(pages) == 4  # 7 + 7 + 7 + 4


def test_list_of_a_run_leaves_out_runs_whose_id_starts_the_same(
    make_backend: Callable[..., S3StorageBackend],
) -> None:
    backend = make_backend()
    backend.store("r1/a.txt", b"a")
    backend.store("r10/b.txt", b"b")

    assert backend.list("r1") == ["r1/a.txt"]
    assert backend.list_sizes("") == {"r1/a.txt": 1, "r10/b.txt": 1}
    assert backend.folders() == ["r1", "r10"]


def test_delete_removes_every_key_under_a_prefix_in_batches(
    make_backend: Callable[..., S3StorageBackend], s3: Any, bucket: str
) -> None:
    backend = make_backend(page_size=10, delete_batch=10)
    for n in range(25):
        backend.store(f"r1/s/{n:02}", b"")
    backend.store("r10/kept.txt", b"kept")
    deletes = calls(backend.client, "DeleteObjects")

    backend.delete("r1")

    assert [len(d["Delete"]["Objects"]) for d in deletes] == [10, 10, 5]
    assert keys(s3, bucket, "bcce/") == ["bcce/r10/kept.txt"]


def test_a_delete_batch_is_never_above_what_s3_takes(
    make_backend: Callable[..., S3StorageBackend],
) -> None:
    assert make_backend(delete_batch=5000).delete_batch == 1000


def test_exists_is_false_for_a_missing_key(make_backend: Callable[..., S3StorageBackend]) -> None:
    backend = make_backend()
    backend.store("r1/there", b"x")

    assert backend.exists("r1/there") and not backend.exists("r1/missing")


def test_retrieve_of_a_missing_key_is_a_storage_error(
    make_backend: Callable[..., S3StorageBackend],
) -> None:
    with pytest.raises(StorageError, match="no object s3://bcce-artifacts/bcce/r1/missing"):
        make_backend().retrieve("r1/missing")


# -- errors -------------------------------------------------------------------------------------
def test_a_missing_bucket_names_the_bucket_setting(
    make_backend: Callable[..., S3StorageBackend],
) -> None:
    backend = make_backend(bucket="no-such-bucket")

    with pytest.raises(StorageError) as caught:
        backend.store("r1/x", b"x")

    error = caught.value
    assert error.message == (
        "cannot store s3://no-such-bucket/bcce/r1/x: the bucket no-such-bucket does not exist"
    )
    assert error.key == "storage.s3.bucket"
    assert "create the bucket" in (error.hint or "")
    assert error.exit_code == 1


@pytest.fixture
def denied_client(aws_env: MotoServer, bucket: str) -> Iterator[Callable[[], Any]]:
    """A client whose IAM user may do anything in S3 but PutObject and GetObject, with moto
    checking IAM for every request until the test ends."""
    iam = boto3.client("iam", endpoint_url=aws_env.url, region_name="us-east-1")
    iam.create_user(UserName="reader")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": "*"},
        ],
    }
    iam.put_user_policy(
        UserName="reader", PolicyName="no-writes", PolicyDocument=json.dumps(policy)
    )
    key = iam.create_access_key(UserName="reader")["AccessKey"]

    def enforce(count: str) -> None:
        request = urllib.request.Request(
            f"{aws_env.url}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:
            response.read()

    enforce("0")
    try:
        yield lambda: boto3.client(
            "s3",
            endpoint_url=aws_env.url,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
    finally:
        enforce("inf")


def test_access_denied_is_a_storage_error_with_a_hint(
    denied_client: Callable[[], Any], bucket: str
) -> None:
    backend = S3StorageBackend(client=denied_client, bucket=bucket)

    with pytest.raises(StorageError) as caught:
        backend.store("r1/x", b"x")

    error = caught.value
    assert error.message == "cannot store s3://bcce-artifacts/bcce/r1/x: access denied"
    assert "s3:PutObject" in (error.hint or "") and "bucket policy" in (error.hint or "")


def test_reading_a_key_it_may_not_read_is_access_denied(
    denied_client: Callable[[], Any], bucket: str
) -> None:
    backend = S3StorageBackend(client=denied_client, bucket=bucket)

    with pytest.raises(StorageError, match="cannot read s3://bcce-artifacts/bcce/r1/x: access"):
        backend.retrieve("r1/x")


def offline_client() -> Any:
    """A client for botocore's Stubber: no request leaves the process."""
    return boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_exists_is_an_error_not_false_when_s3_refuses_to_say() -> None:
    # moto does not check permissions on HeadObject; S3 answers a bare 403 to a HEAD.
    client = offline_client()
    backend = S3StorageBackend(client=lambda: client, bucket="b1")
    with Stubber(client) as stub:
        stub.add_client_error("head_object", service_error_code="403", http_status_code=403)
        with pytest.raises(StorageError, match="cannot check s3://b1/bcce/r1/x: access denied"):
            backend.exists("r1/x")


def test_a_kms_key_that_cannot_be_used_names_the_kms_setting() -> None:
    # moto accepts any key id; real S3 answers like this for a key that is not there.
    client = offline_client()
    backend = S3StorageBackend(client=lambda: client, bucket="b1", kms_key_id="alias/gone")
    with Stubber(client) as stub:
        stub.add_client_error(
            "put_object",
            service_error_code="KMS.NotFoundException",
            service_message="Invalid keyId alias/gone",
            http_status_code=400,
        )
        with pytest.raises(StorageError) as caught:
            backend.store("r1/x", b"x")

    error = caught.value
    assert error.key == "storage.s3.kms_key_id"
    assert "alias/gone" in (error.hint or "") and "kms:GenerateDataKey" in (error.hint or "")


def test_the_s3_backend_without_a_bucket_is_a_configuration_error() -> None:
    settings = BcceSettings.model_validate({"storage": {"backend": "s3"}})

    with pytest.raises(ConfigError) as caught:
        S3StorageBackend.from_settings(settings, client=lambda: None)

    assert caught.value.key == "storage.s3.bucket" and caught.value.exit_code == 3


# -- archives -----------------------------------------------------------------------------------
def test_a_completed_run_is_archived_with_the_manifest_written_last(
    s3_app: Callable[..., Application],
    run_workflow: Callable[..., RunResult],
    s3: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    app = s3_app()
    puts = calls(app.aws.s3(), "PutObject")

    assert run_workflow(app, TWO_STEPS).exit_code == 0

    written = [p["Key"] for p in puts]
    assert written[-1] == f"bcce/r1/{MANIFEST}" and written.count(written[-1]) == 1
    raw = s3.get_object(Bucket=bucket, Key=f"bcce/r1/{MANIFEST}")["Body"].read()
    manifest = RunManifest.from_json(raw, where="test")
    assert manifest.status == "succeeded"
    assert manifest.location == "s3://bcce-artifacts/bcce/r1"
    run_dir = tmp_path / "runs" / "r1"
    for entry in manifest.files:
        assert entry.sha256 == sha256_of_object(s3, bucket, f"bcce/r1/{entry.path}")
        if entry.path != "events.jsonl":
            assert entry.size == (run_dir / entry.path).stat().st_size
    # The archive holds every event up to the run's end; storage.archived came after it.
    archived = s3.get_object(Bucket=bucket, Key="bcce/r1/events.jsonl")["Body"].read()
    local = (run_dir / "events.jsonl").read_bytes()
    assert local.startswith(archived)
    assert json.loads(archived.splitlines()[-1])["type"] == "workflow.completed"
    assert json.loads(local[len(archived) :])["type"] == "storage.archived"
    names = {f.path for f in manifest.files}
    assert {"run.json", "journal.jsonl", "events.jsonl", "junit.xml", "build/output.txt"} <= names
    assert ".lock" not in names


def test_archiving_again_uploads_only_what_changed(
    make_backend: Callable[..., S3StorageBackend], tmp_path: Path
) -> None:
    run_dir = tmp_path / "runs" / "r1"
    (run_dir / "build").mkdir(parents=True)
    (run_dir / "run.json").write_text('{"status": "succeeded"}')
    (run_dir / "build" / "output.txt").write_text("built\n")

    first = make_backend().archive(run_dir, "r1")
    again = make_backend().archive(run_dir, "r1")  # another process: nothing known but S3
    (run_dir / "build" / "output.txt").write_text("built again\n")
    changed = make_backend().archive(run_dir, "r1")

    assert (first.uploaded, again.uploaded, changed.uploaded) == (2, 0, 1)
    assert changed.files == 2 and changed.manifest.status == "succeeded"


def test_a_symlink_in_a_run_directory_is_not_archived(
    make_backend: Callable[..., S3StorageBackend], tmp_path: Path
) -> None:
    run_dir = tmp_path / "runs" / "r1"
    (run_dir / "build").mkdir(parents=True)
    (run_dir / "run.json").write_text('{"status": "failed"}')
    secret = tmp_path / "secret.txt"
    secret.write_text("not an artifact")
    (run_dir / "build" / "leak.txt").symlink_to(secret)

    result = make_backend().archive(run_dir, "r1")

    assert [f.path for f in result.manifest.files] == ["run.json"]


def test_fetch_run_refuses_a_file_that_does_not_match_the_manifest(
    make_backend: Callable[..., S3StorageBackend], s3: Any, bucket: str, tmp_path: Path
) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text('{"status": "succeeded"}')
    backend = make_backend()
    backend.archive(run_dir, "r1")
    s3.put_object(Bucket=bucket, Key="bcce/r1/run.json", Body=b'{"status": "forged"}')
    into = tmp_path / "copy" / "r1"

    with pytest.raises(StorageError, match="does not match its manifest"):
        backend.fetch_run("r1", into)

    assert not into.exists()
    assert [p.name for p in into.parent.iterdir()] == []  # no staging left behind


def test_fetch_run_reads_back_every_file_in_parts_too(
    make_backend: Callable[..., S3StorageBackend], tmp_path: Path
) -> None:
    run_dir = tmp_path / "runs" / "r1"
    (run_dir / "package").mkdir(parents=True)
    (run_dir / "run.json").write_text('{"status": "succeeded"}')
    (run_dir / "package" / "bundle.bin").write_bytes(os.urandom(6 * MB))
    backend = make_backend(multipart_threshold=5 * MB, multipart_chunk=5 * MB)
    backend.archive(run_dir, "r1")
    into = tmp_path / "copy" / "r1"

    manifest = backend.fetch_run("r1", into)

    assert manifest.status == "succeeded"
    for name in ("run.json", "package/bundle.bin"):
        assert (into / name).read_bytes() == (run_dir / name).read_bytes()
    assert (into / MANIFEST).is_file()


def test_fetch_run_without_an_archive_says_how_to_make_one(
    make_backend: Callable[..., S3StorageBackend], tmp_path: Path
) -> None:
    with pytest.raises(StorageError, match="no archive of run r9 in s3://") as caught:
        make_backend().fetch_run("r9", tmp_path / "r9")

    assert "bcce workflow archive" in (caught.value.hint or "")


# -- integration with runs ----------------------------------------------------------------------
def test_the_storage_events_of_a_run_are_as_catalogued(
    s3_app: Callable[..., Application],
    run_workflow: Callable[..., RunResult],
    bcce_captured_events: Callable[..., list[Event]],
) -> None:
    app = s3_app()
    events = bcce_captured_events(app, "storage.*")

    run_workflow(app, TWO_STEPS)

    assert [e.type for e in events] == ["storage.archived"]
    event = events[0]
    assert catalogue.problems(event.type, event.payload, event.run_id) == []
    assert event.payload["location"] == "s3://bcce-artifacts/bcce/r1"
    assert event.payload["files"] >= 6 and event.payload["bytes"] > 0


def test_a_backend_that_fails_never_fails_the_run(
    s3_app: Callable[..., Application],
    run_workflow: Callable[..., RunResult],
    bcce_captured_events: Callable[..., list[Event]],
    tmp_path: Path,
) -> None:
    app = s3_app(bucket="no-such-bucket")
    events = bcce_captured_events(app, "*")

    result = run_workflow(app, TWO_STEPS)

    assert result.exit_code == 0 and result.state.status == "succeeded"
    failed = [e for e in events if e.type in ("artifacts.failed", "storage.archive_failed")]
    assert sorted((e.type, e.payload.get("step") or "") for e in failed) == [
        ("artifacts.failed", "build"),
        ("artifacts.failed", "test"),
        ("storage.archive_failed", ""),
    ]
    assert all("no-such-bucket does not exist" in e.payload["error"] for e in failed)
    for event in failed:
        assert catalogue.problems(event.type, event.payload, event.run_id) == []
    assert (tmp_path / "runs" / "r1" / "build" / "output.txt").read_text() == "built\n"
