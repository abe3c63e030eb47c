"""Fixtures for bcce's first-party plugins, driven as the host drives them.

Each plugin is read from the shipped plugins directory (the first-party discovery source) with
``load_manifest``, gets ``effective(declared, granted)`` permissions, and runs in a real
``PluginWorker`` at tier A (bubblewrap). A step's context carries those permissions, as the
host's step executor passes them. Servers live on 127.0.0.1 and stop with the test.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bcce.core.resources import data_dir
from bcce.plugin.manifest import Manifest, load_manifest
from bcce.plugin.permissions import PermissionSet, effective, parse_permissions
from bcce.plugin.worker import PluginWorker
from bcce.policy.sandbox import SandboxTier, probe_sandbox

FIRST_PARTY = data_dir("plugins")


@pytest.fixture(scope="session")
def tier_a() -> SandboxTier:
    tier = probe_sandbox()
    if tier.name != "bubblewrap":
        pytest.skip(f"first-party plugins run at tier A: {tier.reason}")
    return tier


def manifest_of(name: str) -> Manifest:
    return load_manifest(FIRST_PARTY / name)


@dataclass
class Plugin:
    """A started plugin worker and the permissions the host gave it."""

    worker: PluginWorker
    manifest: Manifest

    @property
    def permissions(self) -> list[Any]:
        return self.worker.permissions.to_list()

    def execute(
        self,
        step_type: str,
        params: dict[str, Any],
        *,
        workspace: Path | None = None,
        timeout_seconds: float = 20.0,
        permissions: list[Any] | None = None,
    ) -> dict[str, Any]:
        """Call ``execute`` with the context the host's step executor builds."""
        context = {
            "run_id": "run-1",
            "step_id": "step-1",
            "attempt": 1,
            "workflow": "test",
            "workspace": str(workspace or Path.cwd()),
            "timeout_seconds": timeout_seconds,
            "permissions": self.permissions if permissions is None else permissions,
            "env": {},
        }
        result: dict[str, Any] = self.worker.call(
            "execute", {"type": step_type, "params": params, "context": context}
        )
        return result


PluginFactory = Callable[..., Plugin]


@pytest.fixture
def plugin(tier_a: SandboxTier) -> Iterator[PluginFactory]:
    """Start a first-party plugin with ``granted`` permissions (grant-list syntax)."""
    started: list[PluginWorker] = []

    def start(name: str, granted: list[Any] | None = None) -> Plugin:
        manifest = manifest_of(name)
        assert manifest.root is not None
        # As the host does: declared (the manifest) ∩ granted (plugins.grants.<name>).
        permissions = effective(
            PermissionSet(manifest.permissions), parse_permissions(granted or [])
        )
        worker = PluginWorker(
            manifest.root, manifest.entry_point, permissions, sandbox=tier_a, timeout=30.0
        )
        assert worker.isolation()["tier"] == "A"
        started.append(worker)
        worker.start()
        return Plugin(worker, manifest)

    yield start
    for worker in started:
        worker.close()


@dataclass
class Received:
    """One request the local server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class LocalServer:
    """An HTTP server on 127.0.0.1 answering by path; it records what it receives."""

    port: int
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server.received.append(
                Received(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
            )
            route = self.path.split("?")[0]
            if route == "/json":
                self._send(200, json.dumps({"ok": True, "items": [1, 2]}), "application/json")
            elif route == "/echo":
                echoed = {
                    "method": self.command,
                    "content_type": self.headers.get("Content-Type"),
                    "body": body.decode(),
                }
                self._send(200, json.dumps(echoed), "application/json")
            elif route.startswith("/status/"):
                code = int(route.rsplit("/", 1)[1])
                self._send(code, "service down", "text/plain")
            elif route == "/slow":
                # Holds the request until the test ends: the client times out first.
                server.release.wait(30)
                self._send(200, "late", "text/plain")
            elif route.startswith("/bytes/"):
                self._send(200, "x" * int(route.rsplit("/", 1)[1]), "text/plain")
            elif route == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/json")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(200, "ok", "text/plain")

        def _send(self, code: int, text: str, content_type: str) -> None:
            data = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Test", "yes")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    return Handler


def _serve(tls: ssl.SSLContext | None = None) -> Iterator[LocalServer]:
    state = LocalServer(port=0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A local HTTP server; ``/slow`` requests are released when the test ends."""
    yield from _serve()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A local HTTPS server with a self-signed certificate for 127.0.0.1 (trusted by nobody)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "server.crt", tmp_path / "server.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    yield from _serve(context)
