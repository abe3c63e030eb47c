"""The ``s3`` storage backend: artifacts and run archives in an S3 bucket.

Keys are ``<storage.s3.prefix>/<key>``. Every object is written with SSE-KMS under
``storage.s3.kms_key_id`` when it is set (else the bucket's default encryption applies) and
carries its SHA-256 as user metadata (``x-amz-meta-sha256``). Artifacts from
``storage.s3.multipart_threshold_mb`` up are uploaded in parts of ``multipart_chunk_mb`` by
boto3's managed transfer, streamed from disk, with the same encryption arguments.

Retries: each request is retried by botocore's ``standard`` retry mode (exponential backoff
with jitter) up to ``storage.s3.max_attempts`` tries; an upload or download that still fails
with a transient error (a connection cut mid-body, a 5xx, throttling) is tried again whole, at
most :data:`TRANSFER_ATTEMPTS` times. Anything else (access denied, no such bucket, a KMS key
that cannot be used) fails at once with a :class:`~bcce.errors.StorageError` naming the
bucket, the key and the setting to fix.

boto3 is imported only when the backend first talks to S3.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import functools
import hashlib
import io
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from bcce.core.log import get_logger
from bcce.errors import ConfigError, StorageError
from bcce.storage.archive import (
    MANIFEST,
    ArchivedFile,
    ArchiveResult,
    RunManifest,
    check_path,
    check_run_dir,
    describe_files,
    install,
    local_error,
    manifest_key,
    mismatch,
    missing_archive,
    run_status,
    sha256_file,
    staging_dir,
    utcnow,
)
from bcce.storage.backend import StorageBackend, validate_key

if TYPE_CHECKING:
    from bcce.settings.model import BcceSettings

log = get_logger("storage")

MB = 1024 * 1024
#: Tries of a whole upload or download that failed with a transient error after botocore's
#: own retries of each request.
TRANSFER_ATTEMPTS = 3
#: DeleteObjects takes at most this many keys.
DELETE_BATCH = 1000
SHA256_METADATA = "sha256"
#: Parallel transfers while archiving or fetching a run (and parts of one multipart upload).
CONCURRENCY = 4

_TRANSIENT_CODES = frozenset(
    {
        "BadDigest",
        "IncompleteBody",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})

T = TypeVar("T")


class S3StorageBackend(StorageBackend):
    """Artifacts and run archives in ``s3://<bucket>/<prefix>/``."""

    name = "s3"
    concurrent_calls = True

    def __init__(
        self,
        *,
        client: Callable[[], Any],
        bucket: str,
        prefix: str = "bcce",
        kms_key_id: str | None = None,
        multipart_threshold: int = 8 * MB,
        multipart_chunk: int = 8 * MB,
        max_attempts: int = 5,
        runs_dir: Path | None = None,
        transfer_attempts: int = TRANSFER_ATTEMPTS,
        retry_delay: float = 0.5,
        page_size: int = 1000,
        delete_batch: int = DELETE_BATCH,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.kms_key_id = kms_key_id
        self.multipart_threshold = multipart_threshold
        self.multipart_chunk = multipart_chunk
        self.max_attempts = max_attempts
        #: The run directories ``archive_run(run_id)`` archives (``workflow.state_dir``).
        self.runs_dir = runs_dir
        self.transfer_attempts = max(1, transfer_attempts)
        self.retry_delay = retry_delay
        self.page_size = page_size
        self.delete_batch = min(delete_batch, DELETE_BATCH)
        self._make_client = client
        self._client: Any = None
        self._lock = threading.Lock()
        # What this process stored, by full key: an archive need not upload them again.
        self._stored: dict[str, str] = {}

    @classmethod
    def from_settings(
        cls, settings: BcceSettings, *, client: Callable[[], Any]
    ) -> S3StorageBackend:
        """The backend ``storage.s3`` describes; ``client`` returns the boto3 S3 client."""
        s3 = settings.storage.s3
        if not s3.bucket:
            raise ConfigError(
                "storage.backend is s3 but no bucket is configured",
                key="storage.s3.bucket",
                hint="set storage.s3.bucket (or BCCE_STORAGE__S3__BUCKET) to the bucket's name",
            )
        return cls(
            client=client,
            bucket=s3.bucket,
            prefix=s3.prefix,
            kms_key_id=s3.kms_key_id,
            multipart_threshold=s3.multipart_threshold_mb * MB,
            multipart_chunk=s3.multipart_chunk_mb * MB,
            max_attempts=s3.max_attempts,
            runs_dir=Path(settings.workflow.state_dir).absolute(),
        )

    # -- the client -----------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The boto3 client, made on first use with ``max_attempts`` tries per request."""
        with self._lock:
            if self._client is None:
                client = self._make_client()
                _use_standard_retries(client, self.max_attempts)
                self._client = client
            return self._client

    # -- keys -----------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def location(self, key: str = "") -> str:
        path = self._key(key) if key else self.prefix
        return f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"

    def _encryption(self) -> dict[str, str]:
        if not self.kms_key_id:
            return {}  # the bucket's default encryption
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunk,
            max_concurrency=CONCURRENCY,
            use_threads=True,
            preferred_transfer_client="classic",
        )

    # -- the interface --------------------------------------------------------------------
    def store(self, key: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        if len(data) >= self.multipart_threshold:
            self._upload(key, digest, lambda full, extra: self._upload_stream(full, data, extra))
        else:
            self._upload(key, digest, lambda full, extra: self._put(full, data, extra))

    def store_file(self, key: str, path: Path) -> None:
        try:
            size = path.stat().st_size
            digest = sha256_file(path)
            small = path.read_bytes() if size < self.multipart_threshold else None
        except OSError as exc:
            raise StorageError(
                f"cannot read {path}: {exc.strerror or exc}", location=str(path)
            ) from exc
        if small is not None:
            self._upload(key, digest, lambda full, extra: self._put(full, small, extra))
        else:
            self._upload(
                key,
                digest,
                lambda full, extra: self.client.upload_file(
                    str(path), self.bucket, full, ExtraArgs=extra, Config=self._transfer_config()
                ),
            )

    def retrieve(self, key: str) -> bytes:
        full = self._key(key)

        def get() -> bytes:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        return self._transfer(get, "read", key)

    def retrieve_into(self, key: str, handle: BinaryIO) -> None:
        """Stream ``key`` into ``handle``, never the whole object in memory.

        Into a new (empty) file, ranged parts are downloaded in parallel above the multipart
        threshold and written at their offsets, and a download that fails transiently is tried
        again from the start of the file. Anywhere else (a pipe; a file with content before) it
        is written in order, with only each request's own retries: what was written cannot be
        taken back.
        """
        full = self._key(key)
        config = self._transfer_config()
        if not handle.seekable() or handle.tell() != 0:
            sink = _InOrder(handle)
            try:
                self.client.download_fileobj(self.bucket, full, sink, Config=config)
            except Exception as exc:
                if not _is_aws_error(exc):
                    raise
                raise self._error(exc, "read", key) from exc
            return

        def download() -> None:
            handle.seek(0)  # a whole retry starts the file over
            handle.truncate()
            self.client.download_fileobj(self.bucket, full, handle, Config=config)

        self._transfer(download, "read", key)

    def delete(self, key: str) -> None:
        """Delete ``key`` and every key under ``key/`` (DeleteObjects: 1000 keys a call)."""
        keys = [self._key(k) for k in self.list(key)]
        for start in range(0, len(keys), self.delete_batch):
            batch = keys[start : start + self.delete_batch]
            try:
                reply = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            except Exception as exc:
                if not _is_aws_error(exc):
                    raise
                raise self._error(exc, "delete", key) from exc
            failed = reply.get("Errors") or []
            if failed:
                first = failed[0]
                raise StorageError(
                    f"cannot delete {len(failed)} object(s) under {self.location(key)}: "
                    f"{first.get('Key')}: {first.get('Code')}: {first.get('Message')}",
                    hint="the credentials in use need s3:DeleteObject on the bucket",
                )
            with self._lock:
                for k in batch:
                    self._stored.pop(k, None)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self.list_sizes(prefix))

    def list_sizes(self, prefix: str = "") -> dict[str, int]:
        base = self._key(prefix) if prefix else self.prefix
        return {
            self._relative(item["Key"]): int(item["Size"])
            for item in self._objects(base, "list", prefix)
        }

    def folders(self, prefix: str = "") -> builtins.list[str]:
        base = self._key(prefix) + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=base,
            Delimiter="/",
            PaginationConfig={"PageSize": self.page_size},
        )
        names: set[str] = set()
        try:
            for page in pages:
                for common in page.get("CommonPrefixes") or ():
                    names.add(common["Prefix"][len(base) :].rstrip("/"))
        except Exception as exc:
            if not _is_aws_error(exc):
                raise
            raise self._error(exc, "list", prefix) from exc
        return sorted(n for n in names if n)

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def archive_run(self, run_id: str) -> str:
        if self.runs_dir is None:
            raise StorageError(
                f"cannot archive run {run_id}: this S3 backend knows no run directory",
                hint="build it with from_settings (workflow.state_dir), or call archive()",
            )
        return self.archive(self.runs_dir / run_id, run_id).location

    # -- archives -------------------------------------------------------------------------
    def archive(self, run_dir: Path, run_id: str, *, status: str | None = None) -> ArchiveResult:
        """Upload the run's files that S3 lacks or that changed, then the manifest, last.

        A file is skipped when an object of its size is there and its digest is known: from
        the previous manifest, from this process's uploads, or from the object's metadata.
        """
        check_run_dir(run_dir, run_id)
        present = self.list_sizes(run_id)
        previous = self._read_manifest(run_id) if manifest_key(run_id) in present else None
        known = {f.path: f.sha256 for f in previous.files} if previous else {}
        entries: list[ArchivedFile] = []
        changed: list[tuple[ArchivedFile, Path]] = []
        for entry, path in describe_files(run_dir):
            entries.append(entry)
            key = f"{run_id}/{entry.path}"
            if present.get(key) == entry.size and (
                known.get(entry.path) == entry.sha256
                or self._stored.get(self._key(key)) == entry.sha256
                or self.digest(key) == entry.sha256
            ):
                continue
            changed.append((entry, path))
        if previous is not None and changed:
            # The archive is complete exactly when its manifest exists: not while it changes.
            self.delete(manifest_key(run_id))
        self._each(
            [
                functools.partial(self.store_file, f"{run_id}/{entry.path}", path)
                for entry, path in changed
            ]
        )
        manifest = RunManifest(
            run_id=run_id,
            status=status or run_status(run_dir),
            archived_at=utcnow(),
            files=tuple(entries),
            location=self.location(run_id),
        )
        self.store(manifest_key(run_id), manifest.to_json())
        log.info("archived run {} to {} ({} uploaded)", run_id, manifest.location, len(changed))
        return ArchiveResult(manifest.location, manifest, len(changed))

    def fetch_run(self, run_id: str, into: Path) -> RunManifest:
        """Download the run's archive into ``into``; each file's SHA-256 is checked against
        the manifest before ``into`` is replaced."""
        if self._head(manifest_key(run_id)) is None:
            raise missing_archive(self, run_id)
        manifest = self._read_manifest(run_id)
        try:
            staged = staging_dir(into)
        except OSError as exc:
            raise local_error(exc, into) from exc
        try:
            self._each(
                [functools.partial(self._fetch_file, run_id, e, staged) for e in manifest.files]
            )
            try:
                install(staged, into, manifest)
            except OSError as exc:
                raise local_error(exc, into) from exc
        finally:
            if staged.exists():
                shutil.rmtree(staged, ignore_errors=True)
        return manifest

    def _fetch_file(self, run_id: str, entry: ArchivedFile, staged: Path) -> None:
        key = f"{run_id}/{entry.path}"
        target = staged.joinpath(*check_path(entry.path).parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise local_error(exc, target) from exc
        if entry.size < self.multipart_threshold:
            data = self.retrieve(key)
            size, digest = len(data), hashlib.sha256(data).hexdigest()
            if (size, digest) == (entry.size, entry.sha256):
                try:
                    target.write_bytes(data)
                except OSError as exc:
                    raise local_error(exc, target) from exc
        else:
            try:
                with target.open("wb") as handle:
                    self.retrieve_into(key, handle)
            except OSError as exc:
                raise local_error(exc, target) from exc
            size, digest = target.stat().st_size, sha256_file(target)
        if (size, digest) != (entry.size, entry.sha256):
            raise mismatch(run_id, entry, size, digest, self.location(key))

    def _read_manifest(self, run_id: str) -> RunManifest:
        key = manifest_key(run_id)
        return RunManifest.from_json(self.retrieve(key), where=self.location(key))

    def digest(self, key: str) -> str | None:
        """The SHA-256 bcce stored with the object (``x-amz-meta-sha256``), if any."""
        head = self._head(key)
        if head is None:
            return None
        metadata = head.get("Metadata") or {}
        value = metadata.get(SHA256_METADATA)
        return str(value) if value else None

    # -- requests -------------------------------------------------------------------------
    def _put(self, full: str, data: bytes, extra: dict[str, Any]) -> None:
        self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra)

    def _upload_stream(self, full: str, data: bytes, extra: dict[str, Any]) -> None:
        self.client.upload_fileobj(
            io.BytesIO(data), self.bucket, full, ExtraArgs=extra, Config=self._transfer_config()
        )

    def _upload(self, key: str, digest: str, send: Callable[[str, dict[str, Any]], None]) -> None:
        full = self._key(key)
        extra: dict[str, Any] = {**self._encryption(), "Metadata": {SHA256_METADATA: digest}}
        self._transfer(lambda: send(full, extra), "store", key)
        with self._lock:
            self._stored[full] = digest

    def _transfer(self, call: Callable[[], T], action: str, key: str) -> T:
        """``call()``, tried again whole (with backoff) while it fails transiently."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except Exception as exc:
                if not _is_aws_error(exc):
                    raise
                if attempt >= self.transfer_attempts or not _transient(exc):
                    raise self._error(exc, action, key, attempts=attempt) from exc
                delay = self.retry_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)  # noqa: S311
                log.warning(
                    "{} {} failed ({}); trying again in {:.2f}s",
                    action,
                    self.location(key),
                    _describe(exc),
                    delay,
                )
                time.sleep(delay)

    def _head(self, key: str) -> dict[str, Any] | None:
        full = self._key(key)
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            if _is_aws_error(exc) and _code(exc) in _NOT_FOUND:
                return None
            if not _is_aws_error(exc):
                raise
            raise self._error(exc, "check", key) from exc
        return head

    def _objects(self, base: str, action: str, key: str) -> Iterator[dict[str, Any]]:
        """Every object whose key is ``base`` or under ``base/`` (all of them if ``base`` is
        empty), page by page."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=base,
            PaginationConfig={"PageSize": self.page_size},
        )
        try:
            for page in pages:
                for item in page.get("Contents") or ():
                    name = item["Key"]
                    if not base or name == base or name.startswith(base + "/"):
                        yield item
        except Exception as exc:
            if not _is_aws_error(exc):
                raise
            raise self._error(exc, action, key) from exc

    def _each(self, calls: builtins.list[Callable[[], None]]) -> None:
        """Run ``calls`` a few at a time; the first StorageError is raised once all ended."""
        if len(calls) <= 1:
            for call in calls:
                call()
            return
        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY, "bcce-s3") as pool:
            futures = [pool.submit(call) for call in calls]
        for future in futures:
            future.result()

    # -- errors ---------------------------------------------------------------------------
    def _error(self, exc: Exception, action: str, key: str, *, attempts: int = 1) -> StorageError:
        where = self.location(key) if key else self.location()
        code = _code(exc)
        reason = _describe(exc)
        tries = f" after {attempts} tries" if attempts > 1 else ""
        if code == "NoSuchBucket":
            return StorageError(
                f"cannot {action} {where}: the bucket {self.bucket} does not exist",
                key="storage.s3.bucket",
                hint="create the bucket, or set storage.s3.bucket to an existing one "
                "(in the region aws.region names)",
            )
        if code.startswith("KMS") or "KMS" in reason:
            return StorageError(
                f"cannot {action} {where}: the KMS key cannot be used ({reason})",
                key="storage.s3.kms_key_id",
                hint=f"storage.s3.kms_key_id ({self.kms_key_id or 'not set: the bucket default'}) "
                "must name an enabled KMS key in the bucket's region that these credentials may "
                "use (kms:GenerateDataKey to write, kms:Decrypt to read)",
            )
        if code in ("AccessDenied", "403", "AllAccessDisabled", "Forbidden"):
            return StorageError(
                f"cannot {action} {where}: access denied",
                key="storage.s3.bucket",
                hint=f"the AWS identity in use needs s3:PutObject, s3:GetObject, s3:ListBucket "
                f"and s3:DeleteObject on {self.location()} (and kms:GenerateDataKey and "
                "kms:Decrypt on storage.s3.kms_key_id); check its IAM policy and the bucket "
                "policy, or choose another storage.s3.bucket / storage.s3.prefix",
            )
        if code in _CREDENTIAL_CODES:
            return StorageError(
                f"cannot {action} {where}: the AWS credentials were refused ({code})",
                hint="sign in again (aws sso login) or check aws.profile; bcce doctor checks "
                "the credentials",
            )
        if code in _NOT_FOUND:
            return StorageError(
                f"no object {where}",
                hint="`bcce workflow artifacts RUN_ID` lists what the run has",
            )
        if code in (
            "PermanentRedirect",
            "AuthorizationHeaderMalformed",
            "IllegalLocationConstraintException",
        ):
            return StorageError(
                f"cannot {action} {where}: the bucket is in another region ({reason})",
                key="aws.region",
                hint="set aws.region to the bucket's region",
            )
        kind = type(exc).__name__
        if kind == "NoCredentialsError" or kind == "PartialCredentialsError":
            return StorageError(
                f"cannot {action} {where}: no AWS credentials",
                hint="sign in (aws sso login --profile NAME) and set aws.profile; bcce doctor "
                "checks the credentials",
            )
        if kind == "EndpointConnectionError":
            return StorageError(
                f"cannot {action} {where}: cannot reach S3{tries} ({reason})",
                key="aws.endpoint_url",
                hint="check the network, aws.region and aws.endpoint_url / aws.endpoint_urls.s3",
            )
        return StorageError(
            f"cannot {action} {where}{tries}: {reason}",
            hint="a transient failure can be retried (storage.s3.max_attempts sets the tries per "
            "request); otherwise check the storage.s3 settings and the AWS credentials",
        )


def _use_standard_retries(client: Any, max_attempts: int) -> None:
    """Give ``client`` botocore's standard retry mode with ``max_attempts`` tries per request.

    The application's S3 client serves only storage, but it is built from ``aws.max_attempts``;
    botocore fixes the retry handler when it makes a client, so the handler is registered
    again with ``storage.s3.max_attempts``. Clients not in standard mode are left alone.
    """
    meta = getattr(client, "meta", None)
    config = getattr(meta, "config", None)
    retries = getattr(config, "retries", None)
    if not isinstance(retries, dict) or retries.get("mode", "legacy") != "standard":
        return
    if retries.get("total_max_attempts") == max_attempts:
        return
    from botocore.retries import standard

    service = meta.service_model.service_id.hyphenize()  # type: ignore[union-attr]
    events = meta.events  # type: ignore[union-attr]
    events.unregister(f"needs-retry.{service}", unique_id=f"retry-config-{service}")
    events.unregister(f"request-created.{service}", unique_id=f"seed-max-attempts-{service}")
    standard.register_retry_handler(client, max_attempts=max_attempts)


def _is_aws_error(exc: BaseException) -> bool:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError | Boto3Error)


def _client_error(exc: BaseException) -> Any:
    """The botocore ClientError behind ``exc`` (boto3's transfer errors wrap it), if any."""
    from botocore.exceptions import ClientError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _code(exc: BaseException) -> str:
    error = _client_error(exc)
    if error is None:
        return ""
    response = error.response
    code = str(response.get("Error", {}).get("Code") or "")
    if not code:
        code = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
    return code


def _describe(exc: BaseException) -> str:
    error = _client_error(exc)
    if error is not None:
        detail = error.response.get("Error", {})
        code = detail.get("Code") or _code(exc)
        message = detail.get("Message") or ""
        return f"{code}: {message}" if message else str(code)
    return f"{type(exc).__name__}: {exc}"


class _InOrder:
    """Only ``write``: boto3 then writes the parts of a download in order (it seeks otherwise)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.write = handle.write


def _transient(exc: BaseException) -> bool:
    from botocore.exceptions import (
        ConnectionError,
        HTTPClientError,
        IncompleteReadError,
    )

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionError | HTTPClientError | IncompleteReadError):
            return True
        seen = seen.__cause__ or seen.__context__
    error = _client_error(exc)
    if error is None:
        return False
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    return _code(exc) in _TRANSIENT_CODES or int(status) >= 500


__all__ = ["MANIFEST", "S3StorageBackend"]
