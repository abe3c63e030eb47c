from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from bcce.plugin.discovery import discover
from bcce.settings.model import PluginsSettings

from .conftest import LocalServer, PluginFactory, manifest_of

LOCAL_HTTP = [{"permission": "network:http", "scope": ["127.0.0.1"]}]


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 with nothing listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_manifest_loads_and_its_schema_checks_params() -> None:
    manifest = manifest_of("http")
    assert manifest.type == "step"
    assert manifest.provides == ("http:request",)
    assert {p.kind for p in manifest.permissions} == {"network:http", "network:https"}
    validator = Draft202012Validator(manifest.step_schemas["http:request"])
    valid = {
        "url": "https://api.example.com/items",
        "method": "POST",
        "headers": {"Authorization": "Bearer x"},
        "body": {"name": "a"},
        "expected_status": [200, 201],
        "max_body_bytes": 1024,
        "save_as": "items.json",
    }
    assert validator.is_valid(valid)
    assert not validator.is_valid({"method": "GET"})  # no url
    assert not validator.is_valid({"url": "ftp://example.com/file"})
    assert not validator.is_valid({"url": "https://example.com", "expected_status": "2xx"})
    assert not validator.is_valid({"url": "https://example.com", "save_as": "../escape"})


def test_discovery_finds_it_as_first_party(tmp_path: Path) -> None:
    report = discover(PluginsSettings(), cwd=tmp_path, environ={})
    found = report.get("http")
    assert found is not None and found.source is not None
    assert found.source.kind == "first-party"


def test_get_json_sets_outputs_and_artifacts(plugin: PluginFactory, server: LocalServer) -> None:
    result = plugin("http", LOCAL_HTTP).execute("http:request", {"url": server.url("/json")})
    assert result["status"] == "succeeded", result.get("error")
    outputs = result["outputs"]
    assert outputs["status"] == 200
    assert outputs["json"] == {"ok": True, "items": [1, 2]}
    assert outputs["headers"]["x-test"] == "yes"
    assert outputs["headers"]["content-type"] == "application/json"
    assert json.loads(outputs["body"]) == outputs["json"]
    assert result["artifacts"]["response.body"] == outputs["body"]
    meta = json.loads(result["artifacts"]["response.json"])
    assert meta["status"] == 200
    assert meta["url"] == server.url("/json")
    assert meta["headers"]["x-test"] == "yes"
    assert "elapsed_seconds" in meta


def test_post_object_is_sent_as_json(plugin: PluginFactory, server: LocalServer) -> None:
    params = {
        "url": server.url("/echo"),
        "method": "POST",
        "body": {"name": "a", "n": [1, 2]},
        "headers": {"X-Token": "abc"},
    }
    result = plugin("http", LOCAL_HTTP).execute("http:request", params)
    assert result["status"] == "succeeded", result.get("error")
    received = server.received[-1]
    assert received.method == "POST"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["x-token"] == "abc"
    assert received.json() == {"name": "a", "n": [1, 2]}


def test_string_body_keeps_the_given_content_type(
    plugin: PluginFactory, server: LocalServer
) -> None:
    params = {
        "url": server.url("/echo"),
        "method": "PUT",
        "body": "a,b\n1,2\n",
        "headers": {"Content-Type": "text/csv"},
    }
    result = plugin("http", LOCAL_HTTP).execute("http:request", params)
    assert result["outputs"]["json"] == {
        "method": "PUT",
        "content_type": "text/csv",
        "body": "a,b\n1,2\n",
    }


def test_unexpected_status_fails_with_outputs_set(
    plugin: PluginFactory, server: LocalServer
) -> None:
    result = plugin("http", LOCAL_HTTP).execute("http:request", {"url": server.url("/status/503")})
    assert result["status"] == "failed"
    assert result["error"].startswith("expected 2xx, got 503")
    assert result["outputs"]["status"] == 503
    assert result["outputs"]["body"] == "service down"
    assert result["artifacts"]["response.body"] == "service down"


def test_expected_status_list_accepts_a_non_2xx(plugin: PluginFactory, server: LocalServer) -> None:
    params = {"url": server.url("/status/404"), "expected_status": [404, 410]}
    result = plugin("http", LOCAL_HTTP).execute("http:request", params)
    assert result["status"] == "succeeded"
    assert result["outputs"]["status"] == 404


def test_expected_status_rejects_a_2xx_not_listed(
    plugin: PluginFactory, server: LocalServer
) -> None:
    params = {"url": server.url("/json"), "expected_status": 201}
    result = plugin("http", LOCAL_HTTP).execute("http:request", params)
    assert result["status"] == "failed"
    assert result["error"].startswith("expected 201, got 200")


@pytest.mark.parametrize(
    ("params", "step_seconds"),
    [({"timeout_seconds": 0.5}, 20.0), ({}, 1.0)],
    ids=["own-timeout", "capped-by-step-time"],
)
def test_timeout_is_a_failed_step(
    plugin: PluginFactory, server: LocalServer, params: dict[str, float], step_seconds: float
) -> None:
    http = plugin("http", LOCAL_HTTP)
    result = http.execute(
        "http:request", {"url": server.url("/slow"), **params}, timeout_seconds=step_seconds
    )
    assert result["status"] == "failed"
    assert "no response from 127.0.0.1" in result["error"]
    # Reported by the plugin, not by killing it: the worker still answers.
    assert http.worker.running
    assert http.execute("http:request", {"url": server.url("/json")})["status"] == "succeeded"


def test_body_over_max_body_bytes_fails(plugin: PluginFactory, server: LocalServer) -> None:
    params = {"url": server.url("/bytes/5000"), "max_body_bytes": 1000}
    result = plugin("http", LOCAL_HTTP).execute("http:request", params)
    assert result["status"] == "failed"
    assert "larger than max_body_bytes (1000 bytes)" in result["error"]


def test_long_body_is_truncated_in_outputs_but_whole_in_artifact(
    plugin: PluginFactory, server: LocalServer
) -> None:
    params = {"url": server.url("/bytes/70000"), "save_as": "big.txt"}
    result = plugin("http", LOCAL_HTTP).execute("http:request", params)
    assert result["status"] == "succeeded"
    assert len(result["outputs"]["body"]) == 64 * 1024
    assert result["outputs"]["truncated"] is True
    assert len(result["artifacts"]["big.txt"]) == 70000
    assert "response.body" not in result["artifacts"]


def test_redirect_is_followed(plugin: PluginFactory, server: LocalServer) -> None:
    result = plugin("http", LOCAL_HTTP).execute("http:request", {"url": server.url("/redirect")})
    assert result["outputs"]["status"] == 200
    assert result["outputs"]["json"] == {"ok": True, "items": [1, 2]}
    assert [r.path for r in server.received] == ["/redirect", "/json"]


def test_other_url_schemes_fail(plugin: PluginFactory) -> None:
    result = plugin("http", LOCAL_HTTP).execute("http:request", {"url": "file:///etc/passwd"})
    assert result["status"] == "failed"
    assert "unsupported scheme file:" in result["error"]


def test_missing_url_fails(plugin: PluginFactory) -> None:
    result = plugin("http", LOCAL_HTTP).execute("http:request", {"method": "GET"})
    assert result["status"] == "failed"
    assert result["error"].startswith("url:")


def test_plain_http_is_refused_without_network_http(
    plugin: PluginFactory, server: LocalServer
) -> None:
    http = plugin("http", [{"permission": "network:https", "scope": ["127.0.0.1"]}])
    result = http.execute("http:request", {"url": server.url("/json")})
    assert result["status"] == "failed"
    assert "'network:http'" in result["error"]
    assert server.received == []


def test_https_is_refused_without_network_https(plugin: PluginFactory, server: LocalServer) -> None:
    result = plugin("http", LOCAL_HTTP).execute(
        "http:request", {"url": f"https://127.0.0.1:{server.port}/json"}
    )
    assert result["status"] == "failed"
    assert "'network:https'" in result["error"]
    assert server.received == []


def test_host_outside_the_granted_scope_is_refused(
    plugin: PluginFactory, server: LocalServer
) -> None:
    http = plugin("http", [{"permission": "network:http", "scope": ["api.example.com"]}])
    result = http.execute("http:request", {"url": server.url("/json")})
    assert result["status"] == "failed"
    assert "permission denied" in result["error"]
    assert "'network:http'" in result["error"]
    assert server.received == []


def test_network_is_denied_without_a_grant(plugin: PluginFactory, server: LocalServer) -> None:
    http = plugin("http", [])
    assert http.permissions == []
    result = http.execute("http:request", {"url": server.url("/json")})
    assert result["status"] == "failed"
    assert "permission denied" in result["error"]
    assert "'network:http'" in result["error"]
    assert server.received == []


def test_sandbox_denies_network_even_when_the_context_claims_a_grant(
    plugin: PluginFactory, server: LocalServer
) -> None:
    http = plugin("http", [])
    result = http.execute(
        "http:request", {"url": server.url("/json")}, permissions=["network:http"]
    )
    assert result["status"] == "failed"
    assert "sandbox refused" in result["error"]
    assert "permission denied" in result["error"]
    assert server.received == []


def test_connection_refused_is_a_failed_step(plugin: PluginFactory, refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}/"
    result = plugin("http", LOCAL_HTTP).execute("http:request", {"url": url})
    assert result["status"] == "failed"
    assert result["error"] == f"connection to 127.0.0.1:{refused_port} refused"


def test_https_certificates_are_verified(plugin: PluginFactory, tls_server: LocalServer) -> None:
    https = plugin("http", [{"permission": "network:https", "scope": ["127.0.0.1"]}])
    url = f"https://127.0.0.1:{tls_server.port}/json"
    result = https.execute("http:request", {"url": url})
    assert result["status"] == "failed"
    assert "TLS error" in result["error"]
    assert "CERTIFICATE_VERIFY_FAILED" in result["error"]
