"""One Claude Code session through claude-agent-sdk, under bcce's control.

Claude Code is started through a small wrapper script (the SDK's ``cli_path``) so that it gets
exactly the environment bcce chose (the SDK would otherwise merge in ours: AWS keys, proxies,
``CLAUDE_CODE_*`` switches); its Bash commands run in Claude Code's bubblewrap sandbox when
the isolation layer enables it. Every process it starts carries the step's cookie, so a
timeout or a cancel can stop the whole tree (see :mod:`bcce.workflow.process`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import gc
import json
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bcce.workflow.process import COOKIE_VARIABLE, kill_cookie, processes_with_cookie

#: Variables the SDK sets for the CLI, passed through the wrapper.
SDK_VARIABLES = (
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_AGENT_SDK_VERSION",
    "CLAUDE_CODE_SDK_READS_SESSION_STATE",
    "CLAUDE_AGENT_SDK_CLIENT_APP",
    "PWD",
)
BASE_VARIABLES = ("PATH", "LANG", "LC_ALL", "TERM", "TZ", "TMPDIR")
#: Seconds without any process carrying the session's cookie before the CLI counts as gone.
CLI_GONE_AFTER = 2.0


@dataclass
class AgentRequest:
    """Everything one agent session needs; the step executor fills it in."""

    prompt: str
    workspace: Path
    home: Path
    cli: Path | None  # None: the runtime's own Claude Code
    env: Mapping[str, str]
    tools: Sequence[str]
    disallowed_tools: Sequence[str]
    hooks: Mapping[Any, Any] | None
    cookie: str
    system_append: str = ""
    model: str | None = None
    max_turns: int | None = None
    #: Claude Code stops the session once it has cost this much (result error_max_budget_usd).
    max_budget_usd: float | None = None
    deadline: float | None = None
    should_stop: Callable[[], bool] = lambda: False
    on_message: Callable[[dict[str, Any]], None] = lambda _message: None
    sandbox: Mapping[str, Any] | None = None
    settings: Mapping[str, Any] | None = None  # Claude Code settings (credential helpers)
    stderr: Callable[[str], None] | None = None


@dataclass
class AgentResult:
    """What the session produced, from its final ``result`` message."""

    text: str = ""
    is_error: bool = True
    subtype: str = "none"
    num_turns: int = 0
    duration_ms: int = 0
    total_cost_usd: float | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    model_usage: dict[str, Any] = field(default_factory=dict)
    permission_denials: list[Any] = field(default_factory=list)
    terminal_reason: str | None = None
    session_id: str | None = None
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None
    messages: int = 0


def write_wrapper(request: AgentRequest, directory: Path) -> Path:
    """A launcher that clears the environment and runs the CLI."""
    names = sorted({*request.env, *BASE_VARIABLES, *SDK_VARIABLES, COOKIE_VARIABLE, "HOME"})
    # ${NAME+"NAME=$NAME"}: passed only when set (an empty TMPDIR is not an unset one).
    keep = " ".join(f'${{{name}+"{name}=${name}"}}' for name in names)
    script = directory / "claude-launcher.sh"
    script.write_text(
        "#!/bin/sh\n"
        "# Written by bcce for one agent step: Claude Code with exactly these variables.\n"
        f'exec /usr/bin/env -i {keep} {shlex.quote(str(request.cli))} "$@"\n'
    )
    script.chmod(0o700)
    return script


def run_session(request: AgentRequest, launcher_dir: Path) -> AgentResult:
    """Run one session to its end, its deadline, or a stop request."""
    if request.cli is None:
        raise ValueError("the request names no Claude Code executable")
    return asyncio.run(_run(request, write_wrapper(request, launcher_dir)))


async def _run(request: AgentRequest, launcher: Path) -> AgentResult:
    from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query

    env = {
        **request.env,
        "HOME": str(request.home),
        COOKIE_VARIABLE: request.cookie,
    }
    options = ClaudeAgentOptions(
        tools=list(request.tools),
        # The hook's "allow" is the permission grant; without a hook (tests of the other
        # layers) the offered tools are pre-approved instead.
        allowed_tools=[] if request.hooks else list(request.tools),
        disallowed_tools=list(request.disallowed_tools),
        hooks=dict(request.hooks) if request.hooks else None,
        permission_mode="default",
        setting_sources=[],  # no user or project settings can loosen the step
        system_prompt={"type": "preset", "preset": "claude_code", "append": request.system_append},
        cwd=str(request.workspace),
        cli_path=str(launcher),
        env=env,
        model=request.model,
        max_turns=request.max_turns,
        max_budget_usd=request.max_budget_usd,
        stderr=request.stderr,
        verbatim_prompts=True,  # templated prompts must not trigger @file or /commands
        sandbox=dict(request.sandbox) if request.sandbox else None,  # type: ignore[arg-type]
        settings=json.dumps(dict(request.settings)) if request.settings else None,
    )
    result = AgentResult()
    started = time.monotonic()

    async def consume() -> None:
        async for message in query(prompt=request.prompt, options=options):
            record = message_record(message)
            result.messages += 1
            request.on_message(record)
            if isinstance(message, ResultMessage):
                _fill(result, message)

    task = asyncio.create_task(consume())
    last_seen = time.monotonic()
    try:
        while not task.done():
            remaining = None if request.deadline is None else request.deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                result.timed_out = True
                break
            if request.should_stop():
                result.cancelled = True
                break
            await asyncio.wait({task}, timeout=0.1 if remaining is None else min(0.1, remaining))
            # The SDK waits long for a CLI that died before its handshake: notice it ourselves
            # (once the result has arrived, the CLI exiting is the normal end).
            now = time.monotonic()
            if result.subtype == "none" and now - last_seen > CLI_GONE_AFTER and not task.done():
                if processes_with_cookie(request.cookie):
                    last_seen = now
                else:
                    result.error = "Claude Code exited before finishing the session"
                    break
        if task.done():
            exception = task.exception()
            if exception is not None:
                result.error = f"{type(exception).__name__}: {exception}"
    finally:
        if not task.done():
            # Stop the processes first (the CLI and everything it started carry the cookie,
            # escaped sessions included), then let the SDK wind down what it holds.
            kill_cookie(request.cookie)
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, timeout=5)
            # The SDK's subprocess transport of a killed CLI is only garbage now: finalise it
            # while this loop is open, not after asyncio.run has closed it.
            del task
            gc.collect()
        kill_cookie(request.cookie)
    if result.duration_ms == 0:
        result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def _fill(result: AgentResult, message: Any) -> None:
    result.text = message.result or ""
    result.is_error = bool(message.is_error)
    result.subtype = message.subtype
    result.num_turns = message.num_turns
    result.duration_ms = message.duration_ms
    result.total_cost_usd = message.total_cost_usd
    result.usage = dict(message.usage or {})
    result.model_usage = {
        model: _plain(usage) for model, usage in (message.model_usage or {}).items()
    }
    result.permission_denials = list(message.permission_denials or [])
    result.terminal_reason = message.terminal_reason
    result.session_id = message.session_id


def message_record(message: Any) -> dict[str, Any]:
    """A JSON-ready dict of an SDK message, with its kind and the time it arrived."""
    data = _plain(message)
    if not isinstance(data, dict):
        data = {"raw": data}
    return {
        "kind": type(message).__name__,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
        **json.loads(json.dumps(data, default=str)),
    }


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value
