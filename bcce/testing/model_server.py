"""A local HTTP server that plays a :class:`~bcce.testing.script.Script` as the model.

It speaks both wire formats the Claude Code CLI uses, so the real CLI can run offline against it:

- Anthropic Messages API: ``HEAD /``, ``POST /v1/messages`` (streaming server-sent events, or one
  JSON message), ``POST /v1/messages/count_tokens``;
- Bedrock runtime: ``GET /inference-profiles``, ``POST /model/<id>/invoke-with-response-stream``
  (AWS event-stream frames wrapping the same events), ``POST /model/<id>/invoke``,
  ``POST /model/<id>/count-tokens``.

Every request is recorded (before it is answered, so a client that has its answer can assert on
it). The server binds 127.0.0.1 only. Run it standalone with
``python -m bcce.testing.model_server SCRIPT [--port N] [--set NAME=VALUE ...]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from bcce.errors import BcceError
from bcce.testing.script import Conversation, Reply, Script, load_script

Wire = Literal["anthropic", "bedrock"]
RequestKind = Literal[
    "probe", "messages", "count_tokens", "inference_profiles", "not_found", "bad_request"
]

HOST = "127.0.0.1"
DEFAULT_BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
#: Environment that keeps Claude Code from any traffic other than to the model endpoint.
QUIET_ENV = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}

_MAX_BODY = 32 * 1024 * 1024
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "x-amz-security-token", "cookie"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it.

    ``turn`` is set for scripted (non-side) replies; ``exhausted`` when the conversation went past
    the script; ``reply`` is the message that was sent back.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    kind: RequestKind
    wire: Wire | None = None
    stream: bool = False
    model: str | None = None
    conversation: Conversation | None = None
    turn: int | None = None
    exhausted: bool = False
    reply: dict[str, Any] | None = field(default=None, repr=False)

    def tool_results(self) -> list[dict[str, Any]]:
        """Every ``tool_result`` block in the request's messages, oldest first."""
        messages = self.body.get("messages") if isinstance(self.body, dict) else None
        results: list[dict[str, Any]] = []
        for message in messages if isinstance(messages, list) else []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                results.extend(
                    block
                    for block in content
                    if isinstance(block, dict) and block.get("type") == "tool_result"
                )
        return results


class ScriptedModelServer:
    """Serves a script over HTTP on 127.0.0.1 from a background thread.

    ``script`` is a :class:`Script`, a mapping, or a YAML/JSON file path; ``placeholders``
    fill ``{name}`` in the script's texts and tool inputs. Use as a context manager, or call
    :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        script: Script | Mapping[str, Any] | str | os.PathLike[str],
        *,
        placeholders: Mapping[str, str] | None = None,
        port: int = 0,
    ) -> None:
        self.script = load_script(script)
        self.placeholders = dict(placeholders or {})
        self._requested_port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._message_count = 0
        self._http: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> ScriptedModelServer:
        """Bind and start serving; returns ``self``."""
        if self._http is not None:
            raise RuntimeError("the scripted model server is already running")
        self._http = _HttpServer((HOST, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"scripted-model-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection. Safe to call twice."""
        http, thread = self._http, self._thread
        if http is None:
            return
        http.shutdown()
        http.close_connections()
        http.server_close()
        if thread is not None:
            thread.join()
        self._http = self._thread = None

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("the scripted model server is not running")
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # environment for the Claude Code process -------------------------------------------------

    def anthropic_env(self, home: str | os.PathLike[str]) -> dict[str, str]:
        """Environment that points Claude Code at this server with the Anthropic API format."""
        return {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": "dummy",
            **QUIET_ENV,
            "HOME": os.fspath(home),
        }

    def bedrock_env(
        self, home: str | os.PathLike[str], model: str = DEFAULT_BEDROCK_MODEL
    ) -> dict[str, str]:
        """Environment that points Claude Code at this server with the Bedrock format."""
        return {
            "CLAUDE_CODE_USE_BEDROCK": "1",
            "CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1",
            "AWS_REGION": "us-east-1",
            "ANTHROPIC_BEDROCK_BASE_URL": self.url,
            "ANTHROPIC_MODEL": model,
            **QUIET_ENV,
            "HOME": os.fspath(home),
        }

    # recorded requests -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def turn_requests(self, conversation: Conversation = "main") -> list[RecordedRequest]:
        """The Messages requests of one conversation (``main``, ``subagent`` or ``side``)."""
        return [
            request
            for request in self.requests
            if request.kind == "messages" and request.conversation == conversation
        ]

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._requests.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _answer(self, body: Mapping[str, Any], model: str) -> tuple[Reply, dict[str, Any]]:
        reply = self.script.reply(body, self.placeholders)
        with self._lock:
            self._message_count += 1
            number = self._message_count
        message = {
            "id": f"msg_bcce_{number:04d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": reply.content,
            "stop_reason": reply.stop_reason,
            "stop_sequence": None,
            "usage": reply.usage.to_dict(),
        }
        return reply, message


def message_events(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The streaming events, in order, that deliver ``message`` (an Anthropic message)."""
    usage = dict(message["usage"])
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0},
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            delta: dict[str, Any] = {"type": "text_delta", "text": block["text"]}
        else:
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append({"type": "content_block_start", "index": index, "content_block": opening})
        events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events


def encode_sse(events: Iterable[Mapping[str, Any]]) -> bytes:
    """Server-sent events: ``event: <type>`` and ``data: <json>`` per event."""
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events
    )


def encode_event_frame(payload: bytes, headers: Mapping[str, str]) -> bytes:
    """One AWS event-stream frame with string headers (type 7) and both CRC32 checksums."""
    encoded = b"".join(
        struct.pack(">B", len(name.encode()))
        + name.encode()
        + struct.pack(">BH", 7, len(value.encode()))
        + value.encode()
        for name, value in headers.items()
    )
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    frame = prelude + encoded + payload
    return frame + struct.pack(">I", zlib.crc32(frame))


def bedrock_chunk(event: Mapping[str, Any]) -> bytes:
    """One Bedrock ``chunk`` frame carrying ``event`` base64-encoded in ``{"bytes": ...}``."""
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()})
    return encode_event_frame(
        payload.encode(),
        {
            ":event-type": "chunk",
            ":content-type": "application/json",
            ":message-type": "event",
        },
    )


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: ScriptedModelServer) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, is_open: bool) -> None:
        with self._connections_lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        # Idle keep-alive connections would otherwise keep their handler threads alive.
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _BadRequest(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer
    timeout = 60  # an abandoned keep-alive connection frees its thread eventually

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, is_open=True)

    def finish(self) -> None:
        self.server.track(self.connection, is_open=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        return  # tests read the recorded requests instead

    # routing ---------------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        path, query = self._target()
        kind: RequestKind = "probe" if path == "/" else "not_found"
        self._record(path, query, None, kind)
        self._send(200 if kind == "probe" else 404, b"", "text/plain", head=True)

    def do_GET(self) -> None:
        path, query = self._target()
        if path == "/":
            self._record(path, query, None, "probe")
            self._send(200, b"ok", "text/plain")
        elif path.startswith("/inference-profiles"):
            self._record(path, query, None, "inference_profiles", wire="bedrock")
            self._send_json(200, {})
        else:
            self._not_found(path, query, None)

    def do_POST(self) -> None:
        path, query = self._target()
        try:
            body = self._read_json()
        except _BadRequest as exc:
            self._record(path, query, None, "bad_request")
            self._send_error(400, str(exc), bedrock=path.startswith("/model/"))
            return
        if path == "/v1/messages":
            self._messages(path, query, body, "anthropic", str(body.get("model", "")))
        elif path == "/v1/messages/count_tokens":
            self._record(path, query, body, "count_tokens", wire="anthropic")
            self._send_json(200, {"input_tokens": _estimate_tokens(body)})
        elif path.startswith("/model/"):
            model, _, action = path[len("/model/") :].rpartition("/")
            model = unquote(model)
            if action == "invoke-with-response-stream":
                self._messages(path, query, body, "bedrock", model, stream=True)
            elif action == "invoke":
                self._messages(path, query, body, "bedrock", model, stream=False)
            elif action == "count-tokens":
                self._record(path, query, body, "count_tokens", wire="bedrock", model=model)
                self._send_json(200, {"inputTokens": _estimate_tokens(body)})
            else:
                self._not_found(path, query, body)
        else:
            self._not_found(path, query, body)

    # handlers --------------------------------------------------------------------------------

    def _messages(
        self,
        path: str,
        query: dict[str, str],
        body: dict[str, Any],
        wire: Wire,
        model: str,
        *,
        stream: bool | None = None,
    ) -> None:
        if stream is None:
            stream = body.get("stream") is True
        try:
            reply, message = self.server.owner._answer(body, model)
        except Exception as exc:  # noqa: BLE001 - answer 400, not 500, so the CLI does not retry
            self._record(path, query, body, "bad_request", wire=wire, model=model)
            self._send_error(400, f"scripted model server: {exc!r}", bedrock=wire == "bedrock")
            return
        self._record(
            path,
            query,
            body,
            "messages",
            wire=wire,
            model=model,
            stream=stream,
            conversation=reply.conversation,
            turn=reply.turn,
            exhausted=reply.exhausted,
            reply=message,
        )
        if not stream:
            self._send_json(200, message, _usage_headers(message) if wire == "bedrock" else {})
        elif wire == "anthropic":
            self._send(
                200,
                encode_sse(message_events(message)),
                "text/event-stream; charset=utf-8",
                {"Cache-Control": "no-cache"},
            )
        else:
            events = message_events(message)
            events[-1]["amazon-bedrock-invocationMetrics"] = {
                "inputTokenCount": message["usage"]["input_tokens"],
                "outputTokenCount": message["usage"]["output_tokens"],
                "invocationLatency": 1,
                "firstByteLatency": 1,
            }
            self._send(
                200,
                b"".join(bedrock_chunk(event) for event in events),
                "application/vnd.amazon.eventstream",
                {"X-Amzn-Bedrock-Content-Type": "application/json"},
            )

    def _not_found(self, path: str, query: dict[str, str], body: Any) -> None:
        self._record(path, query, body, "not_found")
        self._send_error(
            404, f"no such endpoint: {self.command} {path}", bedrock=path.startswith("/model/")
        )

    # plumbing --------------------------------------------------------------------------------

    def _target(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            size = 0
            while True:
                length = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                size += length
                if size > _MAX_BODY:
                    raise _BadRequest("request body is too large")
                chunks.append(self.rfile.read(length))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise _BadRequest("request body is too large")
        return self.rfile.read(length)

    def _read_json(self) -> dict[str, Any]:
        try:
            body = json.loads(self._read_body() or b"{}")
        except ValueError as exc:
            raise _BadRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest("request body must be a JSON object")
        return body

    def _record(
        self,
        path: str,
        query: dict[str, str],
        body: Any,
        kind: RequestKind,
        **details: Any,
    ) -> None:
        headers = {
            name.lower(): "***" if name.lower() in _SECRET_HEADERS else value
            for name, value in self.headers.items()
        }
        self.server.owner._record(
            RecordedRequest(self.command, path, query, headers, body, kind, **details)
        )

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        *,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", "req_bcce_scripted")
        self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    def _send_json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), "application/json", headers)

    def _send_error(self, status: int, message: str, *, bedrock: bool) -> None:
        if bedrock:
            kind = "ValidationException" if status == 400 else "ResourceNotFoundException"
            self._send_json(status, {"message": message}, {"x-amzn-ErrorType": kind})
        else:
            kind = "invalid_request_error" if status == 400 else "not_found_error"
            self._send_json(status, {"type": "error", "error": {"type": kind, "message": message}})


def _usage_headers(message: Mapping[str, Any]) -> dict[str, str]:
    usage = message["usage"]
    return {
        "X-Amzn-Bedrock-Input-Token-Count": str(usage["input_tokens"]),
        "X-Amzn-Bedrock-Output-Token-Count": str(usage["output_tokens"]),
    }


def _estimate_tokens(body: Any) -> int:
    return max(1, len(json.dumps(body)) // 4)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a script until SIGINT or SIGTERM; prints the URL on the first line of stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m bcce.testing.model_server",
        description="Serve a scripted model on 127.0.0.1 (Anthropic and Bedrock formats).",
    )
    parser.add_argument("script", help="YAML or JSON script file")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: any free)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="placeholder value substituted for {NAME} in the script (repeatable)",
    )
    args = parser.parse_args(argv)
    placeholders: dict[str, str] = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name:
            parser.error(f"--set expects NAME=VALUE, got {item!r}")
        placeholders[name] = value
    try:
        server = ScriptedModelServer(args.script, placeholders=placeholders, port=args.port)
    except BcceError as exc:
        print(exc.render(), file=sys.stderr)
        return int(exc.exit_code)
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        server.start()
    except OSError as exc:
        print(f"cannot listen on {HOST}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        print(server.url, flush=True)
        stopping.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
