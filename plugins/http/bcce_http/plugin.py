"""The ``http:request`` step: one HTTP(S) request, its response as outputs and artifacts.

The plugin runs in the plugin sandbox, so it uses the standard library and
:mod:`bcce.plugin.api` only. The sandbox is the boundary for the network; the plugin also checks
the grant it was given (``context["permissions"]``) before it connects, so a refused URL fails the
step with the missing permission named instead of a bare connection error. Every hop of a
redirect is checked the same way.

Everything a user can get wrong (a parameter, a refused URL, an unreachable host, a timeout, an
unexpected status) is a failed step with an error saying what happened, never an exception.
"""

from __future__ import annotations

import base64
import codecs
import fnmatch
import http.client
import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bcce.plugin.api import binary, step_result

STEP_TYPE: Final = "http:request"
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_MAX_BODY: Final = 10 * 1024 * 1024
#: The largest body the JSON-lines protocol can carry back (as base64) within its reply limit.
MAX_BODY_LIMIT: Final = 10 * 1024 * 1024
OUTPUT_BODY_BYTES: Final = 64 * 1024
DEFAULT_ARTIFACT: Final = "response.body"
META_ARTIFACT: Final = "response.json"
MAX_REDIRECTS: Final = 10
USER_AGENT: Final = "bcce-http/1.0"

_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_CREDENTIAL_HEADERS: Final = frozenset({"authorization", "cookie", "proxy-authorization"})
_CHUNK: Final = 64 * 1024
_EXCERPT: Final = 200


class StepFailure(Exception):
    """Why the step fails: the message becomes the step's error."""


@dataclass(frozen=True)
class _Request:
    url: str
    method: str
    headers: dict[str, str]
    body: bytes | None
    expected: frozenset[int] | None  # None: any 2xx
    timeout: float
    max_body: int
    save_as: str
    follow_redirects: bool


@dataclass(frozen=True)
class _Response:
    url: str
    status: int
    reason: str
    headers: dict[str, str]
    charset: str
    body: bytes


class HttpPlugin:
    """The http plugin: provides the ``http:request`` step type."""

    def execute(self, type: str, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """Send the request described by ``params``; see the plugin's README for the keys."""
        if type != STEP_TYPE:
            raise ValueError(f"unsupported step type {type!r}; this plugin provides {STEP_TYPE}")
        permissions = context.get("permissions") or []
        try:
            request = _parse(params, context)
            started = time.monotonic()
            response = _exchange(request, permissions, started + request.timeout)
            elapsed = time.monotonic() - started
        except StepFailure as exc:
            return step_result("failed", error=str(exc))
        return _result(request, response, elapsed)


# -- parameters ----------------------------------------------------------------------------
def _parse(params: Mapping[str, Any], context: Mapping[str, Any]) -> _Request:
    url = params.get("url")
    if not isinstance(url, str) or not url.strip():
        raise StepFailure("url: a URL is required")
    method = params.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise StepFailure(f"method: {method!r} is not one of {', '.join(sorted(_METHODS))}")
    headers = _headers(params.get("headers") or {})
    body = _body(params.get("body"), headers)
    save_as = params.get("save_as", DEFAULT_ARTIFACT)
    if not isinstance(save_as, str) or not _artifact_name_ok(save_as):
        raise StepFailure(
            f"save_as: {save_as!r} is not a relative artifact name "
            f"(letters, digits, '.', '_', '-', '/'; not {META_ARTIFACT!r})"
        )
    follow = params.get("follow_redirects", True)
    if not isinstance(follow, bool):
        raise StepFailure("follow_redirects: expected true or false")
    max_body = _integer(params.get("max_body_bytes", DEFAULT_MAX_BODY), "max_body_bytes")
    if not 0 < max_body <= MAX_BODY_LIMIT:
        raise StepFailure(f"max_body_bytes: must be between 1 and {MAX_BODY_LIMIT}")
    return _Request(
        url=url.strip(),
        method=method.upper(),
        headers=headers,
        body=body,
        expected=_expected(params.get("expected_status")),
        timeout=_timeout(params.get("timeout_seconds", DEFAULT_TIMEOUT), context),
        max_body=max_body,
        save_as=save_as,
        follow_redirects=follow,
    )


def _headers(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise StepFailure("headers: expected an object of header names to values")
    headers: dict[str, str] = {}
    for name, raw in value.items():
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise StepFailure(f"headers.{name}: expected a string")
        text = str(raw)
        if any(char in f"{name}{text}" for char in "\r\n\x00"):
            raise StepFailure(f"headers.{name}: line breaks are not allowed in headers")
        headers[str(name)] = text
    return headers


def _body(value: object, headers: dict[str, str]) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, Mapping | list):
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
        return json.dumps(value, separators=(",", ":")).encode("utf-8")
    raise StepFailure("body: expected a string, or an object or array to send as JSON")


def _expected(value: object) -> frozenset[int] | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not values:
        raise StepFailure("expected_status: give at least one status code")
    codes = frozenset(_integer(item, "expected_status") for item in values)
    if any(not 100 <= code <= 599 for code in codes):
        raise StepFailure("expected_status: status codes are between 100 and 599")
    return codes


def _timeout(value: object, context: Mapping[str, Any]) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise StepFailure("timeout_seconds: expected a number of seconds")
    try:
        timeout = float(value)
    except ValueError:
        raise StepFailure("timeout_seconds: expected a number of seconds") from None
    if not timeout > 0:
        raise StepFailure("timeout_seconds: must be more than 0")
    left = context.get("timeout_seconds")
    if isinstance(left, int | float) and not isinstance(left, bool) and left > 0:
        # Keep a little of the step's time to report the timeout before the host's own
        # call timeout kills the worker.
        timeout = min(timeout, max(float(left) - min(1.0, float(left) * 0.1), 0.001))
    return timeout


def _integer(value: object, key: str) -> int:
    """An integer parameter; a rendered expression arrives as its digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise StepFailure(f"{key}: expected an integer, got {value!r}")


def _artifact_name_ok(name: str) -> bool:
    segments = name.split("/")
    return name != META_ARTIFACT and all(
        segment
        and segment[0] not in ".-"
        and all(char.isascii() and (char.isalnum() or char in "._-") for char in segment)
        for segment in segments
    )


# -- permissions ---------------------------------------------------------------------------
def _allowed(permissions: object, kind: str, host: str) -> bool:
    """Whether the grant list (the host's ``PermissionSet.to_list()``) covers ``host``."""
    for entry in permissions if isinstance(permissions, list) else []:
        if entry == kind:
            return True
        if isinstance(entry, Mapping) and entry.get("permission") == kind:
            scope = entry.get("scope")
            if scope is None:
                return True
            patterns = [scope] if isinstance(scope, str) else scope
            if any(
                isinstance(pattern, str) and fnmatch.fnmatchcase(host.lower(), pattern.lower())
                for pattern in patterns
            ):
                return True
    return False


def _check_url(url: str, permissions: object) -> urllib.parse.SplitResult:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here, not in the middle of a request
    except ValueError as exc:
        raise StepFailure(f"url: not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise StepFailure(
            f"url: unsupported scheme {parts.scheme + ':' if parts.scheme else '(none)'}; "
            "only http:// and https:// URLs can be requested"
        )
    host = parts.hostname
    if not host:
        raise StepFailure("url: the URL has no host")
    kind = f"network:{scheme}"
    if not _allowed(permissions, kind, host):
        raise StepFailure(
            f"permission denied: {scheme}:// requests to {host!r} need {kind!r}, which the http "
            f"plugin was not granted; grant it in plugins.grants.http, e.g. "
            f'{{"permission": "{kind}", "scope": ["{host}"]}}'
        )
    return parts


# -- the exchange --------------------------------------------------------------------------
def _exchange(request: _Request, permissions: object, deadline: float) -> _Response:
    url, method, body = request.url, request.method, request.body
    headers = {"User-Agent": USER_AGENT, **request.headers}
    origin = urllib.parse.urlsplit(url).netloc.lower()
    for _ in range(MAX_REDIRECTS + 1):
        parts = _check_url(url, permissions)
        status, reason, raw_headers, charset, data = _send(
            parts, method, headers, body, request, deadline
        )
        location = raw_headers.get("location")
        if request.follow_redirects and status in _REDIRECTS and location:
            url = urllib.parse.urljoin(url, location)
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                # What browsers and curl do: the redirected request is a GET without a body.
                method, body = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
            if urllib.parse.urlsplit(url).netloc.lower() != origin:
                headers = {k: v for k, v in headers.items() if k.lower() not in _CREDENTIAL_HEADERS}
            continue
        return _Response(url, status, reason, raw_headers, charset, data)
    raise StepFailure(f"more than {MAX_REDIRECTS} redirects, the last to {_display(url)}")


def _connection(parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
    host = parts.hostname or ""
    if parts.scheme.lower() == "https":
        return http.client.HTTPSConnection(host, parts.port, context=ssl.create_default_context())
    return http.client.HTTPConnection(host, parts.port)


def _send(
    parts: urllib.parse.SplitResult,
    method: str,
    headers: dict[str, str],
    body: bytes | None,
    request: _Request,
    deadline: float,
) -> tuple[int, str, dict[str, str], str, bytes]:
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    if parts.username is not None and not any(k.lower() == "authorization" for k in headers):
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers = {**headers, "Authorization": f"Basic {token}"}
    connection = _connection(parts)
    try:
        connection.timeout = _left(deadline, request.timeout)
        connection.connect()
        # Held here because the connection drops it once the response says it will close;
        # its timeout bounds each read so the whole exchange keeps to the deadline.
        sock = connection.sock
        connection.request(method, target, body=body, headers=headers)
        if sock is not None:
            sock.settimeout(_left(deadline, request.timeout))
        response = connection.getresponse()
        merged: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        charset = response.msg.get_content_charset() or "utf-8"
        data = b"" if method == "HEAD" else _read(response, sock, request, deadline)
        return response.status, response.reason, merged, charset, data
    except StepFailure:
        raise
    except TimeoutError:
        raise StepFailure(
            f"no response from {where} within {request.timeout:g} s (timeout_seconds)"
        ) from None
    except PermissionError as exc:
        raise StepFailure(f"the sandbox refused the connection to {where}: {exc}") from None
    except socket.gaierror as exc:
        raise StepFailure(f"cannot resolve {parts.hostname!r}: {exc.strerror or exc}") from None
    except ConnectionRefusedError:
        raise StepFailure(f"connection to {where} refused") from None
    except ssl.SSLError as exc:
        raise StepFailure(f"TLS error with {where}: {exc.reason or exc}") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        detail = str(exc) or type(exc).__name__
        raise StepFailure(f"request to {where} failed: {detail}") from None
    finally:
        connection.close()


def _read(
    response: http.client.HTTPResponse,
    sock: socket.socket | None,
    request: _Request,
    deadline: float,
) -> bytes:
    declared = response.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > request.max_body:
        raise _too_large(request.max_body, int(declared))
    chunks: list[bytes] = []
    size = 0
    # The response closes its socket as soon as it has read the whole body.
    while not response.isclosed():
        if sock is not None:
            sock.settimeout(_left(deadline, request.timeout))
        chunk = response.read(min(_CHUNK, request.max_body + 1 - size))
        if not chunk:
            break
        size += len(chunk)
        if size > request.max_body:
            raise _too_large(request.max_body, None)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int, declared: int | None) -> StepFailure:
    size = f" ({declared} bytes)" if declared is not None else ""
    return StepFailure(
        f"the response body{size} is larger than max_body_bytes ({limit} bytes); "
        "raise max_body_bytes or request less"
    )


def _left(deadline: float, timeout: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return min(left, timeout)


# -- the result ----------------------------------------------------------------------------
def _result(request: _Request, response: _Response, elapsed: float) -> dict[str, Any]:
    truncated = len(response.body) > OUTPUT_BODY_BYTES
    outputs: dict[str, Any] = {
        "status": response.status,
        "headers": response.headers,
        "body": _decode(response.body[:OUTPUT_BODY_BYTES], response.charset),
        "json": None if truncated else _json(response),
        "truncated": truncated,
    }
    meta = {
        "url": _display(response.url),
        "method": request.method,
        "status": response.status,
        "reason": response.reason,
        "headers": response.headers,
        "elapsed_seconds": round(elapsed, 6),
        "bytes": len(response.body),
        "body_artifact": request.save_as,
    }
    artifacts = {
        META_ARTIFACT: json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
        request.save_as: _artifact(response.body),
    }
    if _status_ok(response.status, request.expected):
        return step_result("succeeded", outputs=outputs, artifacts=artifacts)
    wanted = (
        "2xx"
        if request.expected is None
        else " or ".join(str(code) for code in sorted(request.expected))
    )
    excerpt = " ".join(_decode(response.body[: _EXCERPT * 4], response.charset).split())
    detail = f": {excerpt[:_EXCERPT]}" if excerpt else ""
    return step_result(
        "failed",
        outputs=outputs,
        artifacts=artifacts,
        error=f"expected {wanted}, got {response.status} {response.reason}{detail}",
    )


def _status_ok(status: int, expected: frozenset[int] | None) -> bool:
    return 200 <= status < 300 if expected is None else status in expected


def _decode(data: bytes, charset: str) -> str:
    try:
        decoder = codecs.getincrementaldecoder(charset)(errors="replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    # final=False drops a character cut in half by the truncation instead of garbling it.
    return decoder.decode(data, final=False)


def _json(response: _Response) -> Any:
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        return None
    try:
        return json.loads(response.body.decode(response.charset))
    except (ValueError, LookupError):
        return None


def _artifact(data: bytes) -> str | dict[str, str]:
    """Text when the body is UTF-8 and no bigger as JSON text than as base64, else binary."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return binary(data)
    if len(json.dumps(text)) > (len(data) + 2) // 3 * 4 + 16:
        return binary(data)
    return text


def _display(url: str) -> str:
    """The URL without a password in it (the artifact is kept with the run)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


__all__ = ["STEP_TYPE", "HttpPlugin"]
