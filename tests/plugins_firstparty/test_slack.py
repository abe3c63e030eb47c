from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bcce.errors import PluginError

from .conftest import LocalServer, Plugin, PluginFactory, manifest_of

LOCAL_HTTP = [{"permission": "network:http", "scope": ["127.0.0.1"]}]

FAILED = {
    "type": "workflow.failed",
    "time": "2025-06-01T12:00:00.000+00:00",
    "seq": 42,
    "run_id": "run-20250601-abc",
    "payload": {
        "workflow": "deploy <prod>",
        "status": "failed",
        "duration_seconds": 75.2,
        "failed_steps": ["build", "test"],
    },
}

DIFF = """\
diff --git a/src/app.py b/src/app.py
--- a/src/app.py
+++ b/src/app.py
@@ -1,3 +1,3 @@
 import os
--- a removed line that looks like a header
+print("hello")
+print("world")
diff --git a/docs/new.md b/docs/new.md
--- /dev/null
+++ b/docs/new.md
@@ -0,0 +1 @@
+# New
"""

REQUEST = {
    "run_id": "run-20250601-abc",
    "step_id": "apply",
    "workflow": "refactor",
    "files": ["src/app.py", "docs/new.md"],
    "diff": DIFF,
    "requested_by": "alice",
}


@pytest.fixture
def slack(plugin: PluginFactory) -> Plugin:
    return plugin("slack", LOCAL_HTTP)


def notify(slack: Plugin, event: dict[str, Any], options: dict[str, Any]) -> Any:
    return slack.worker.call(
        "handle_event", {"type": "notification:slack", "event": event, "options": options}
    )


def all_text(message: dict[str, Any]) -> str:
    """Every text of a Slack message: the fallback and the blocks'."""
    return json.dumps(message, ensure_ascii=False)


def test_manifest_loads_and_its_configuration_schema_checks_config() -> None:
    manifest = manifest_of("slack")
    assert manifest.type == "integration"
    assert manifest.provides == ("notification:slack", "approval:slack")
    assert {p.kind for p in manifest.permissions} == {"network:http", "network:https"}
    assert manifest.step_schemas == {}
    assert manifest.config_schema is not None
    validator = Draft202012Validator(manifest.config_schema)
    assert validator.is_valid(
        {"webhook": "https://hooks.slack.com/services/T0/B0/x", "channel": "#deployments"}
    )
    assert validator.is_valid({})
    assert not validator.is_valid({"webhook": "hooks.slack.com/services/x"})
    assert not validator.is_valid({"channel": "#a", "token": "xoxb-1"})


def test_notification_posts_a_summary_to_the_webhook(slack: Plugin, server: LocalServer) -> None:
    assert (
        notify(slack, FAILED, {"webhook": server.url("/services/T0/B0/x"), "channel": "#ops"})
        is None
    )
    [received] = server.received
    assert received.method == "POST"
    assert received.path == "/services/T0/B0/x"
    assert received.headers["content-type"].startswith("application/json")
    message = received.json()
    assert message["channel"] == "#ops"
    assert "deploy &lt;prod&gt;" in message["text"]  # Slack's escaping of < and >
    assert "failed" in message["text"]
    text = all_text(message)
    assert "`build`, `test`" in text
    assert "run-20250601-abc" in text
    assert "1 min 15 s" in text
    assert {block["type"] for block in message["blocks"]} == {"section", "context"}


def test_step_failure_carries_the_error(slack: Plugin, server: LocalServer) -> None:
    event = {
        "type": "step.failed",
        "time": "2025-06-01T12:00:00.000+00:00",
        "seq": 7,
        "run_id": "run-1",
        "payload": {"step": "build", "type": "cmd", "error": "exit status 2", "attempts": 3},
    }
    notify(slack, event, {"webhook": server.url("/hook")})
    message = server.received[-1].json()
    assert "Step build (cmd) failed" in message["text"]
    text = all_text(message)
    assert "exit status 2" in text
    assert "after 3 attempts" in text


def test_configured_defaults_fill_options_left_out(slack: Plugin, server: LocalServer) -> None:
    slack.worker.call(
        "configure", {"config": {"webhook": server.url("/default"), "channel": "#general"}}
    )
    notify(slack, FAILED, {"events": ["workflow.*"]})
    notify(slack, FAILED, {"channel": "#ops"})
    assert [r.path for r in server.received] == ["/default", "/default"]
    assert [r.json()["channel"] for r in server.received] == ["#general", "#ops"]


def test_approval_request_posts_changes_and_commands_and_is_pending(
    slack: Plugin, server: LocalServer
) -> None:
    verdict = slack.worker.call(
        "request_approval",
        {"type": "approval:slack", "request": REQUEST, "options": {"webhook": server.url("/a")}},
    )
    assert verdict["verdict"] == "pending"
    message = server.received[-1].json()
    for text in (message["text"], all_text(message["blocks"])):
        assert "bcce workflow resume run-20250601-abc --approve" in text
        assert "bcce workflow resume run-20250601-abc --reject" in text
    blocks = all_text(message["blocks"])
    assert "2 files changed, 3 insertions(+), 1 deletion(-)" in blocks
    assert "`src/app.py`  +2 -1" in blocks
    assert "`docs/new.md`  +1 -0" in blocks
    assert 'print(\\"hello\\")' in blocks  # the diff itself, in a code block
    assert "alice" in blocks


def test_long_diff_is_truncated(slack: Plugin, server: LocalServer) -> None:
    lines = "".join(f"+line {n}\n" for n in range(2000))
    diff = (
        f"diff --git a/big.txt b/big.txt\n--- /dev/null\n+++ b/big.txt\n@@ -0,0 +1,2000 @@\n{lines}"
    )
    request = {**REQUEST, "files": ["big.txt"], "diff": diff}
    slack.worker.call(
        "request_approval",
        {"type": "approval:slack", "request": request, "options": {"webhook": server.url("/a")}},
    )
    message = server.received[-1].json()
    assert len(server.received[-1].body) < 20_000
    blocks = all_text(message["blocks"])
    assert "1 file changed, 2000 insertions(+), 0 deletions(-)" in blocks
    assert "more lines not shown" in blocks
    assert all(len(b["text"]["text"]) <= 3000 for b in message["blocks"] if "text" in b)


def test_webhook_error_status_raises_with_the_status(slack: Plugin, server: LocalServer) -> None:
    with pytest.raises(PluginError, match="answered 500") as caught:
        notify(slack, FAILED, {"webhook": server.url("/status/500")})
    assert "/status/500" not in caught.value.message  # the webhook URL is a secret


def test_missing_webhook_is_an_error(slack: Plugin) -> None:
    with pytest.raises(PluginError, match="no webhook"):
        notify(slack, FAILED, {"channel": "#ops"})


def test_network_is_denied_without_a_grant(plugin: PluginFactory, server: LocalServer) -> None:
    slack = plugin("slack", [])
    with pytest.raises(PluginError, match="permission denied"):
        notify(slack, FAILED, {"webhook": server.url("/hook")})
    assert server.received == []
