"""The first-party plugins as users meet them: configured in settings, used by workflows.

Everything goes through the application: discovery of the shipped plugins, grants from
``plugins.grants``, the sandboxed worker, the step registry, the event bus and approval gates.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bcce.containers.application import Application
from bcce.steps.approval import ApprovalRequest, Verdict
from bcce.workflow.runner import RunOptions, RunResult

from .conftest import LocalServer


def run(app: Application, tmp_path: Path, steps: list[dict[str, Any]]) -> RunResult:
    path = tmp_path / "wf.yaml"
    document = {"version": 1, "workflow": "first-party", "steps": steps}
    path.write_text(json.dumps(document), "utf-8")
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    return app.workflow.runner().run(path, RunOptions(run_id="r", workspace=workspace))


def local_http(server: LocalServer) -> dict[str, list[Any]]:
    return {"http": [{"permission": "network:http", "scope": ["127.0.0.1"]}]}


def test_http_request_step_runs_with_its_grant(
    bcce_make_app: Callable[..., Application], server: LocalServer, tmp_path: Path
) -> None:
    app = bcce_make_app(plugins={"grants": local_http(server)})
    step = {"id": "get", "type": "http:request", "url": server.url("/json")}
    result = run(app, tmp_path, [step])
    assert result.ok, result.state.steps
    outputs = result.state.steps["get"]["outputs"]
    assert outputs["status"] == 200
    assert outputs["json"] == {"ok": True, "items": [1, 2]}
    run_dir = Path(app.workflow.state_store().root) / "r" / "get"
    assert (run_dir / "response.json").is_file()


def test_http_request_step_without_a_grant_fails_naming_the_permission(
    bcce_make_app: Callable[..., Application], server: LocalServer, tmp_path: Path
) -> None:
    app = bcce_make_app()  # declared by the plugin, never granted by the administrator
    result = run(app, tmp_path, [{"id": "get", "type": "http:request", "url": server.url("/")}])
    step = result.state.steps["get"]
    assert step["status"] == "failed"
    assert "network:http" in step["error"]
    assert server.received == []


def test_sqlite_steps_run_on_a_database_in_the_granted_directory(
    bcce_make_app: Callable[..., Application], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    scope = [f"{data}/**"]
    app = bcce_make_app(
        plugins={
            "grants": {
                "sqlite": [
                    {"permission": "filesystem:read", "scope": scope},
                    {"permission": "filesystem:write", "scope": scope},
                ]
            }
        }
    )
    database = str(data / "app.db")
    steps = [
        {
            "id": "create",
            "type": "db:query",
            "database": database,
            "sql": "CREATE TABLE t (n INTEGER)",
        },
        {
            "id": "insert",
            "type": "db:query",
            "database": database,
            "sql": "INSERT INTO t VALUES (1), (2), (3)",
        },
        {
            "id": "count",
            "type": "db:query",
            "database": database,
            "sql": "SELECT count(*) AS n FROM t",
        },
        {
            "id": "backup",
            "type": "db:backup",
            "database": database,
            "destination": str(data / "backup.db"),
        },
    ]
    result = run(app, tmp_path, steps)
    assert result.ok, result.state.steps
    assert result.state.steps["count"]["outputs"]["rows"] == [{"n": 3}]
    with sqlite3.connect(data / "backup.db") as copy:
        assert copy.execute("SELECT count(*) FROM t").fetchone() == (3,)


def test_slack_notifications_hear_the_configured_events(
    bcce_make_app: Callable[..., Application], server: LocalServer, tmp_path: Path
) -> None:
    app = bcce_make_app(
        plugins={
            "grants": {"slack": [{"permission": "network:http", "scope": ["127.0.0.1"]}]},
            "integrations": [
                {
                    "type": "notification:slack",
                    "webhook": server.url("/hooks/T0/B0/secret"),
                    "events": ["workflow.started", "workflow.completed"],
                }
            ],
        }
    )
    result = run(app, tmp_path, [{"id": "hello", "type": "cmd", "command": "true"}])
    assert result.ok
    app.plugins.manager().flush(timeout=30)
    texts = [json.dumps(r.json()) for r in server.received]
    assert len(texts) == 2, texts
    assert "started" in texts[0] and "completed" in texts[1]
    assert all(r.path == "/hooks/T0/B0/secret" for r in server.received)


def test_a_failing_webhook_never_fails_the_run(
    bcce_make_app: Callable[..., Application], server: LocalServer, tmp_path: Path
) -> None:
    app = bcce_make_app(
        plugins={
            "grants": {"slack": [{"permission": "network:http", "scope": ["127.0.0.1"]}]},
            "integrations": [{"type": "notification:slack", "webhook": server.url("/status/500")}],
        }
    )
    result = run(app, tmp_path, [{"id": "hello", "type": "cmd", "command": "true"}])
    assert result.ok
    manager = app.plugins.manager()
    manager.flush(timeout=30)
    [stats] = manager.integration_stats()
    assert stats["type"] == "notification:slack"
    assert stats["failures"] >= 1 and stats["delivered"] == 0


def test_slack_approval_gate_posts_the_request_and_leaves_it_pending(
    bcce_make_app: Callable[..., Application], server: LocalServer
) -> None:
    app = bcce_make_app(
        plugins={
            "grants": {"slack": [{"permission": "network:http", "scope": ["127.0.0.1"]}]},
            "integrations": [{"type": "approval:slack", "webhook": server.url("/hooks/approve")}],
        }
    )
    gates = app.workflow.runner().approval_gates
    assert [g.name for g in gates] == ["approval:slack"]
    answer = gates[0].request(
        ApprovalRequest(
            run_id="r-42",
            step_id="apply",
            workflow="refactor",
            diff="--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n",
            files=["x.py"],
        )
    )
    assert answer.verdict is Verdict.PENDING
    message = json.dumps(server.received[0].json())
    assert "bcce workflow resume r-42 --approve" in message
    assert "x.py" in message
