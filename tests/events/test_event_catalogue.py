"""The event catalogue against what bcce really publishes, and the docs against the catalogue.

Real runs (cmd steps that succeed, fail, retry, time out, are skipped, cancelled, kept on
resume or denied by an allowlist; composite, parallel and conditional steps; a first-party
plugin step and the plugin lifecycle; agent steps on the real Claude Code with a denied tool
call, an approval and a budget stop) publish events with every one captured. Each must be in
the catalogue, with its required fields, no undeclared field and the declared types.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from bcce.containers.application import Application
from bcce.errors import BcceError
from bcce.events import catalogue
from bcce.events.bus import Event, InProcessEventBus
from bcce.settings.layers import LayerOptions
from bcce.steps.approval import Approval, Verdict
from bcce.workflow.runner import RunOptions

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"

#: What each test below drives; with NOT_DRIVEN they must make up the whole catalogue.
CMD_AND_PLUGIN_EVENTS = {
    "workflow.started",
    "workflow.phase",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "step.started",
    "step.retrying",
    "step.completed",
    "step.failed",
    "step.timed_out",
    "step.cancelled",
    "step.skipped",
    "step.kept",
    "policy.decision",
    "policy.denied",
    "plugin.call",
    "plugin.registered",
    "plugin.started",
    "plugin.loaded",
    "plugin.unloaded",
    "plugin.failed",
    "plugin.health",
    "events.subscriber_failed",
    "auth.decision",
    # The runs keep their state in tmp_path/runs and storage.root is elsewhere: archived there.
    "storage.archived",
}
AGENT_EVENTS = {
    "auth.decision",
    "workflow.started",
    "workflow.phase",
    "workflow.completed",
    "workflow.failed",
    "step.started",
    "step.completed",
    "step.failed",
    "step.awaiting_approval",
    "step.kept",
    "policy.decision",
    "policy.denied",
    "policy.isolation",
    "agent.tool_result",
    "cost.recorded",
    "budget.exceeded",
    "approval.pending",
    "approval.approved",
    "storage.archived",
}
BUS_EVENTS = {"events.subscriber_failed", "events.subscriber_slow"}
#: Published only where a test would need a broken storage backend, a crashed plugin worker
#: or a second approval round: checked by their declared fields only (tests/storage checks
#: real storage.archive_failed events against the catalogue).
NOT_DRIVEN = {
    "auth.failed",  # a failed login: tests/workflow/test_authorisation_runs.py
    "artifacts.failed",
    "approval.rejected",
    "plugin.restarted",
    "storage.archive_failed",
}


def _problems(events: list[Event]) -> list[str]:
    found: list[str] = []
    for event in events:
        found += catalogue.problems(event.type, event.payload, event.run_id)
    return sorted(set(found))


@pytest.fixture
def make_app(
    bcce_make_app: Callable[..., Application],
    bcce_layer_options: LayerOptions,
    tmp_path: Path,
) -> Callable[..., Application]:
    """An application keeping runs under ``tmp_path/runs``, with the test process's PATH."""
    bcce_layer_options.environ["PATH"] = os.environ["PATH"]

    def make(**sections: Any) -> Application:
        workflow = {"state_dir": str(tmp_path / "runs"), "kill_grace_seconds": 0.3}
        return bcce_make_app(workflow=workflow, **sections)

    return make


def _workflow(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


# --- cmd steps, control flow, cancel, resume, a plugin -----------------------------------------

CMD_RUN = """
version: 1
workflow: catalogue-cmd
steps:
  - {id: ok, type: cmd, command: 'echo ok'}
  - id: flaky
    type: cmd
    command: 'test -e flaky.marker || { touch flaky.marker; exit 1; }'
    retry: {max_attempts: 2, backoff_seconds: 0.01, jitter: false}
  - {id: broken, type: cmd, command: 'exit 3', on_error: continue}
  - {id: slow, type: cmd, command: 'sleep 30', timeout_seconds: 1, on_error: continue}
  - {id: only_on_failure, type: cmd, if: failure(), command: 'true'}
  - id: group
    type: composite
    steps:
      - {id: inner, type: cmd, command: 'true'}
  - id: fan
    type: parallel
    steps:
      - {id: left, type: cmd, command: 'true'}
      - {id: right, type: cmd, command: 'true'}
  - id: choose
    type: conditional
    condition: "true"
    then:
      - {id: taken, type: cmd, command: 'true'}
    else:
      - {id: not_taken, type: cmd, command: 'true'}
  - id: denied
    type: cmd
    command: 'touch pwned'
    policy: {cmd_allowlist: [echo]}
    on_error: continue
  - id: query
    type: db:query
    database: DATABASE
    sql: "SELECT 1 AS n"
"""

CANCELLED_RUN = """
version: 1
workflow: catalogue-cancel
steps:
  - {id: wait, type: cmd, command: 'sleep 30'}
  - {id: never, type: cmd, command: 'true'}
"""

RESUMED_RUN = """
version: 1
workflow: catalogue-resume
steps:
  - {id: first, type: cmd, command: 'true'}
  - {id: second, type: cmd, command: 'test -e fixed'}
"""


def test_cmd_control_flow_and_plugin_runs_publish_only_catalogued_events(
    make_app: Callable[..., Application],
    bcce_captured_events: Callable[..., list[Event]],
    tmp_path: Path,
    workspace: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    scope = [f"{data}/**"]
    grants = [
        {"permission": "filesystem:read", "scope": scope},
        {"permission": "filesystem:write", "scope": scope},
    ]
    app = make_app(plugins={"grants": {"sqlite": grants}})
    events = bcce_captured_events(app)
    bus = app.events.bus()
    runner = app.workflow.runner()

    def broken(event: Event) -> None:
        raise RuntimeError("a broken subscriber")

    bus.subscribe("step.completed", broken, name="broken")

    text = CMD_RUN.replace("DATABASE", str(data / "app.db"))
    ran = runner.run(
        _workflow(tmp_path, "cmd", text), RunOptions(run_id="run", workspace=workspace)
    )
    statuses = {step: info["status"] for step, info in ran.state.steps.items()}
    assert statuses == {
        "ok": "succeeded",
        "flaky": "succeeded",
        "broken": "failed",
        "slow": "timed_out",
        "only_on_failure": "skipped",
        "group": "succeeded",
        "inner": "succeeded",
        "fan": "succeeded",
        "left": "succeeded",
        "right": "succeeded",
        "choose": "succeeded",
        "taken": "succeeded",
        "not_taken": "skipped",
        "denied": "failed",
        "query": "succeeded",
    }
    bus.unsubscribe("step.completed", broken)

    # Cancelled while its first step runs: the request comes from a subscriber, in order.
    def cancel(event: Event) -> None:
        if event.run_id == "cancelled" and event.payload.get("step") == "wait":
            runner.request_cancel("cancelled")

    bus.subscribe("step.started", cancel)
    cancelled = runner.run(
        _workflow(tmp_path, "cancel", CANCELLED_RUN),
        RunOptions(run_id="cancelled", workspace=workspace),
    )
    assert cancelled.state.status == "cancelled"

    failed = runner.run(
        _workflow(tmp_path, "resume", RESUMED_RUN),
        RunOptions(run_id="resumed", workspace=workspace),
    )
    assert failed.state.status == "failed"
    (workspace / "fixed").touch()
    resumed = runner.resume("resumed")
    assert resumed.state.status == "succeeded"

    manager = app.plugins.manager()
    assert manager.health("sqlite")["sqlite"]["ok"]
    manager.unload("sqlite")
    manager.load("sqlite")
    with pytest.raises(BcceError):
        manager.load("no-such-plugin")

    assert _problems(events) == []
    assert {e.type for e in events} == CMD_AND_PLUGIN_EVENTS
    # The runner numbers each run's events, and every subscriber sees them in that order.
    for run_id in ("run", "cancelled", "resumed"):
        seqs = [e.seq for e in events if e.run_id == run_id]
        assert seqs == list(range(1, len(seqs) + 1))


# --- agent steps on the real Claude Code ------------------------------------------------------


def _claude_code() -> bool:
    spec = importlib.util.find_spec("claude_agent_sdk")
    return bool(
        spec is not None
        and spec.origin is not None
        and (Path(spec.origin).parent / "_bundled" / "claude").is_file()
    )


def _call(name: str, usage: Mapping[str, int] | None = None, **tool_input: Any) -> dict[str, Any]:
    turn: dict[str, Any] = {"tool_use": [{"name": name, "input": tool_input}]}
    if usage is not None:
        turn["usage"] = dict(usage)
    return turn


AGENT_RUN = """
version: 1
workflow: catalogue-agent
steps:
  - id: fix
    type: agent
    prompt: Fix the typo.
    available_tools: [ReadFile, Diff, WriteFile]
    policy: {allowed_paths: ["src/**"], timeout_seconds: 120}
  - id: apply
    type: apply_diff
    policy: {allowed_paths: ["src/**"]}
"""
FIX = {
    "turns": [
        _call("Read", file_path="{workspace}/src/app.py"),
        _call("Write", file_path="{workspace}/docs/new.txt", content="x\n"),  # denied
        _call(
            "Edit",
            file_path="{workspace}/src/app.py",
            old_string="'helo'",
            new_string="'hello'",
        ),
        {"text": "Done."},
    ]
}

BUDGET_RUN = """
version: 1
workflow: catalogue-budget
steps:
  - id: spend
    type: agent
    prompt: Fix the typo.
    max_budget_usd: 1
    available_tools: [ReadFile, Diff]
    policy: {allowed_paths: ["src/**"], timeout_seconds: 120}
"""
SPEND = {
    "turns": [
        _call(
            "Edit",
            usage={"input_tokens": 1_000_000, "output_tokens": 20},  # about $3 at list price
            file_path="{workspace}/src/app.py",
            old_string="'helo'",
            new_string="'hello'",
        ),
        {"text": "Fixed."},
        {"text": "Really fixed."},
    ]
}


@pytest.fixture
def project(workspace: Path) -> Path:
    (workspace / "src").mkdir()
    (workspace / "src" / "app.py").write_text("def greet():\n    return 'helo'\n")
    (workspace / "docs").mkdir()
    return workspace


@pytest.mark.e2e
@pytest.mark.skipif(not _claude_code(), reason="claude-agent-sdk with its bundled CLI is needed")
def test_agent_runs_publish_only_catalogued_events(
    make_app: Callable[..., Application],
    bcce_captured_events: Callable[..., list[Event]],
    tmp_path: Path,
    project: Path,
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "fix.json").write_text(json.dumps(FIX))
    (scripts / "spend.json").write_text(json.dumps(SPEND))
    app = make_app(
        agent={"provider": "scripted", "script": str(scripts), "max_turns": 20},
        core={"team": "platform", "project": "billing"},
    )
    events = bcce_captured_events(app)
    runner = app.workflow.runner()

    paused = runner.run(
        _workflow(tmp_path, "agent", AGENT_RUN), RunOptions(run_id="agent", workspace=project)
    )
    assert paused.state.status == "awaiting_approval", paused.state.steps
    approve = Approval(Verdict.APPROVED, "tester", "command line")
    done = runner.resume("agent", options=RunOptions(approval=approve))
    assert done.state.status == "succeeded", done.state.steps
    (project / "src" / "app.py").write_text("def greet():\n    return 'helo'\n")
    stopped = runner.run(
        _workflow(tmp_path, "budget", BUDGET_RUN), RunOptions(run_id="budget", workspace=project)
    )
    assert stopped.state.status == "failed"

    assert _problems(events) == []
    assert {e.type for e in events} == AGENT_EVENTS
    denied = [e.payload for e in events if e.type == "policy.denied"]
    assert [d["tool"] for d in denied] == ["Write"]


# --- the bus's own events -----------------------------------------------------------------------


def test_the_bus_reports_match_the_catalogue() -> None:
    bus = InProcessEventBus(timeout=0.05)
    seen: list[Event] = []
    bus.subscribe("events.*", seen.append)
    never = threading.Event()

    def failing(event: Event) -> None:
        raise ValueError("no")

    def slow(event: Event) -> None:
        never.wait(0.2)  # four times the bound

    bus.subscribe("step.*", failing)
    bus.subscribe("step.*", slow)
    bus.publish(Event("step.started", {"step": "a"}, run_id="r1"))
    bus.publish(Event("plugin.health", {"name": "x"}))
    assert bus.flush(5.0)
    bus.close(1.0)

    assert {e.type for e in seen} == BUS_EVENTS
    assert _problems(seen) == []


# --- the catalogue itself -------------------------------------------------------------------------


def test_every_catalogued_event_is_driven_here_or_listed_as_not_driven() -> None:
    driven = CMD_AND_PLUGIN_EVENTS | AGENT_EVENTS | BUS_EVENTS
    assert driven | NOT_DRIVEN == set(catalogue.event_types())
    assert not driven & NOT_DRIVEN


def test_the_catalogue_names_each_event_once_with_unique_fields() -> None:
    types = catalogue.event_types()
    assert len(types) == len(set(types))
    for entry in catalogue.CATALOGUE:
        names = [f.name for f in entry.fields]
        assert len(names) == len(set(names)), entry.type
        assert entry.description and entry.publisher


def test_the_checker_finds_missing_unknown_and_mistyped_fields_and_wrong_run_ids() -> None:
    payload = {"step": "a", "name": "a", "type": "cmd", "attempt": "1", "extra": True}

    found = catalogue.problems("step.started", payload, run_id=None)

    assert found == [
        "step.started: field 'attempt' is '1', not `int`",
        "step.started: required field 'parent' is missing",
        "step.started: field 'extra' is not in the catalogue",
        "step.started: published without the run_id of its run",
    ]
    assert catalogue.problems("step.exploded", {}) == [
        "step.exploded: not in the event catalogue (bcce/events/catalogue.py)"
    ]
    assert catalogue.problems("plugin.health", {**_plugin(), "ok": True, "ms": 1}, "r1") == [
        "plugin.health: a process event published with run_id 'r1'"
    ]


def test_an_open_payload_accepts_fields_beyond_the_declared_ones() -> None:
    payload = {**_plugin(), "ok": True, "ms": 0.5, "queue_depth": 3}

    assert catalogue.problems("plugin.health", payload) == []


def test_the_docs_show_the_catalogue_as_rendered_from_the_code() -> None:
    text = DOCS.read_text(encoding="utf-8")

    assert catalogue.docs_section(text) == catalogue.render_markdown()


def test_the_rendered_catalogue_has_a_section_and_a_row_per_field() -> None:
    rendered = catalogue.render_markdown()

    for entry in catalogue.CATALOGUE:
        assert f"### `{entry.type}`" in rendered
        for field in entry.fields:
            assert f"| `{field.name}` |" in rendered


def _plugin() -> dict[str, Any]:
    return {"name": "x", "version": "1.0.0", "generation": 1, "type": "step"}
