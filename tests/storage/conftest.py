"""Fixtures for the storage backends' tests: an S3 bucket and a KMS key on the moto server
(real HTTP on 127.0.0.1), S3 backends and applications using them, and a TCP proxy that cuts
uploads mid-body.

    s3              a boto3 S3 client of the moto server (to check what the backend wrote)
    bucket          a fresh bucket's name
    kms_key         a KMS key created on the same server: its KeyId
    make_backend    ``make_backend(**kwargs)``: an S3StorageBackend on the bucket, SSE-KMS key
    s3_app          ``s3_app(**storage_s3)``: an Application whose storage is that bucket
    cutting_proxy   ``cutting_proxy(match, cuts=1)``: a started CuttingProxy to moto
    run_workflow    ``run_workflow(app, text, run_id)``: run a workflow in process
"""

from __future__ import annotations

import contextlib
import socket
import struct
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config

from bcce.storage.s3 import S3StorageBackend
from bcce.workflow.runner import RunOptions, RunResult

if TYPE_CHECKING:
    from bcce.containers.application import Application
    from bcce.testing.aws import MotoServer

BUCKET = "bcce-artifacts"
MB = 1024 * 1024


@pytest.fixture
def s3(aws_env: MotoServer) -> Any:
    return boto3.client("s3", endpoint_url=aws_env.url, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    s3.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def kms_key(aws_env: MotoServer) -> str:
    kms = boto3.client("kms", endpoint_url=aws_env.url, region_name="us-east-1")
    key_id: str = kms.create_key(Description="bcce artifacts")["KeyMetadata"]["KeyId"]
    return key_id


def client_for(url: str, max_attempts: int = 3) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}),
    )


@pytest.fixture
def make_backend(
    aws_env: MotoServer, bucket: str, kms_key: str, tmp_path: Path
) -> Callable[..., S3StorageBackend]:
    """``make_backend(url=None, **kwargs)``: an S3 backend on ``bucket`` (through ``url``)."""

    def make(url: str | None = None, **kwargs: Any) -> S3StorageBackend:
        endpoint = url or aws_env.url
        options: dict[str, Any] = {
            "bucket": bucket,
            "prefix": "bcce",
            "kms_key_id": kms_key,
            "runs_dir": tmp_path / "runs",
            "retry_delay": 0.01,
        }
        options.update(kwargs)
        return S3StorageBackend(client=lambda: client_for(endpoint), **options)

    return make


@pytest.fixture
def s3_app(
    bcce_make_app: Callable[..., Application],
    bcce_layer_options: Any,
    aws_env: MotoServer,
    bucket: str,
    kms_key: str,
    tmp_path: Path,
) -> Callable[..., Application]:
    """``s3_app(storage=None, endpoint=None, **s3)``: runs under ``tmp_path/runs``, storage in
    the bucket (through ``endpoint``, default the moto server), ``s3`` the storage.s3 keys."""
    import os

    bcce_layer_options.environ["PATH"] = os.environ["PATH"]

    def make(
        storage: dict[str, Any] | None = None, endpoint: str | None = None, **s3: Any
    ) -> Application:
        settings_s3 = {"bucket": bucket, "kms_key_id": kms_key, "prefix": "bcce", **s3}
        return bcce_make_app(
            aws={"endpoint_url": endpoint or aws_env.url, "region": "us-east-1"},
            storage={"backend": "s3", "s3": settings_s3, **(storage or {})},
            workflow={"state_dir": str(tmp_path / "runs")},
        )

    return make


@pytest.fixture
def run_workflow(tmp_path: Path) -> Callable[..., RunResult]:
    """``run_workflow(app, text, run_id="r1")``: write the workflow and run it in process."""

    def run(app: Application, text: str, run_id: str = "r1") -> RunResult:
        path = tmp_path / f"{run_id}.yml"
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        workspace = tmp_path / "workspace"
        workspace.mkdir(exist_ok=True)
        options = RunOptions(run_id=run_id, workspace=workspace)
        result: RunResult = app.workflow.runner().run(path, options)
        return result

    return run


class CuttingProxy:
    """A loopback TCP proxy in front of the moto server that resets the connection carrying a
    matching request half-way through its body, ``cuts`` times at most (then it only relays).

    It reads each request's head and forwards its ``Content-Length`` bytes, so it knows where
    every request on a kept-alive connection starts.
    """

    def __init__(self, upstream: int, match: Callable[[str, str], bool], cuts: float) -> None:
        self.upstream = upstream
        self.match = match
        self.cuts_left = cuts
        self.requests: list[str] = []
        self.cut: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self._sockets += [client, upstream]
            threading.Thread(target=self._relay, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _relay(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = client.recv(65536)
                    if not data:
                        upstream.shutdown(socket.SHUT_WR)
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (line.partition(":") for line in lines[1:])
                }
                if "chunked" in headers.get("transfer-encoding", ""):
                    raise AssertionError("the proxy handles Content-Length bodies only")
                length = int(headers.get("content-length", "0"))
                with self._lock:
                    self.requests.append(f"{method} {target}")
                    cut = length > 0 and self.cuts_left > 0 and self.match(method, target)
                    if cut:
                        self.cuts_left -= 1
                        self.cut.append(f"{method} {target}")
                upstream.sendall(head + b"\r\n\r\n")
                send = length // 2 if cut else length
                while send > 0:
                    if not buffer:
                        buffer = client.recv(65536)
                        if not buffer:
                            return
                    piece, buffer = buffer[:send], buffer[send:]
                    upstream.sendall(piece)
                    send -= len(piece)
                if cut:
                    # A reset, not a polite close: the client is still sending its body.
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.close()
                    upstream.close()
                    return
        except OSError:
            return


def is_upload(method: str, target: str) -> bool:
    """PutObject or UploadPart (path-style: PUT /bucket/key...)."""
    return method == "PUT" and target.count("/") >= 2


MATCHES: dict[str, Callable[[str, str], bool]] = {
    "upload": is_upload,
    "put_object": lambda method, target: is_upload(method, target) and "partNumber=" not in target,
    "upload_part": lambda method, target: is_upload(method, target) and "partNumber=" in target,
}


@pytest.fixture
def cutting_proxy(aws_env: MotoServer) -> Iterator[Callable[..., CuttingProxy]]:
    """``cutting_proxy(kind, cuts=1)``: kind is ``put_object``, ``upload_part`` or ``upload``."""
    started: list[CuttingProxy] = []

    def start(kind: str, cuts: float = 1) -> CuttingProxy:
        proxy = CuttingProxy(aws_env.port, MATCHES[kind], cuts)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.close()
