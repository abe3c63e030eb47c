"""A loopback OTLP/HTTP receiver for tests: what bcce (or Claude Code) exports, kept in memory.

    with OtlpReceiver() as receiver:
        ...  # point events.otel.endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT) at receiver.url
        spans = receiver.bodies("/v1/traces")

It answers every POST with 200 and keeps the request's path and body. ``resources()`` decodes
the resource attributes of the metrics and logs exports (it needs ``opentelemetry-proto``,
which the OTLP exporter depends on). The ``bcce_otlp_receiver`` fixture of bcce's pytest plugin
starts one per test and stops it afterwards.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class OtlpReceiver:
    """An OTLP/HTTP collector on 127.0.0.1 that keeps every request's path and body."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                received.append((self.path, self.rfile.read(length)))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread: threading.Thread | None = None

    def start(self) -> OtlpReceiver:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="otlp-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join()
            self._thread = None
        self.server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str) -> list[bytes]:
        """The bodies of the requests to ``path`` (``/v1/traces``, ``/v1/metrics``...)."""
        return [body for seen, body in list(self.requests) if seen == path]

    def resources(self) -> dict[str, list[dict[str, str]]]:
        """The resource attributes of every metrics and logs export, by path."""
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
        )
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )

        found: dict[str, list[dict[str, str]]] = {}
        for path, body in list(self.requests):
            resources: list[Any]
            if path == "/v1/metrics":
                metrics = ExportMetricsServiceRequest()
                metrics.ParseFromString(body)
                resources = [r.resource for r in metrics.resource_metrics]
            elif path == "/v1/logs":
                logs = ExportLogsServiceRequest()
                logs.ParseFromString(body)
                resources = [r.resource for r in logs.resource_logs]
            else:
                continue
            found.setdefault(path, []).extend(
                {a.key: a.value.string_value for a in r.attributes} for r in resources
            )
        return found


__all__ = ["OtlpReceiver"]
