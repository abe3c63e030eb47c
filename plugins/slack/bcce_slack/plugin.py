"""Slack notifications and approval requests, posted to a Slack incoming webhook.

The plugin runs in the plugin sandbox, so it uses the standard library and
:mod:`bcce.plugin.api` only. Each call brings the integration's options (its entry in the
configuration: ``webhook``, ``channel``, ``username``, ``timeout_seconds``, ``events``); the
plugin's own configuration (``plugins.config.slack``) gives defaults for the options an entry
leaves out. The host already filters events by the entry's ``events`` patterns.

An incoming webhook is one-way: an approval request is posted with the commands that answer it,
and its verdict is ``pending``. A webhook that does not answer 2xx raises, so the host counts the
delivery as failed. The webhook URL is a secret, so no error message contains it, only its host.
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from bcce.plugin.api import approval

INTEGRATION_TYPES: Final = ("notification:slack", "approval:slack")
DEFAULT_TIMEOUT: Final = 10.0
USER_AGENT: Final = "bcce-slack/1.0"
#: Slack's limits: a section's text, a header's text.
SECTION_CHARS: Final = 3000
HEADER_CHARS: Final = 150
DIFF_CHARS: Final = 2500
MAX_FILES: Final = 30
_REPLY_BYTES: Final = 2048
_OPTION_KEYS: Final = ("webhook", "channel", "username", "timeout_seconds")
_HUNK: Final = re.compile(r"@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_GIT_HEADER: Final = re.compile(r"diff --git a/(.+) b/(.+)\Z")

_EVENTS: Final[Mapping[str, tuple[str, str]]] = {
    "workflow.started": (":arrow_forward:", "started"),
    "workflow.completed": (":white_check_mark:", "succeeded"),
    "workflow.failed": (":x:", "failed"),
    "workflow.cancelled": (":no_entry_sign:", "was cancelled"),
    "step.started": (":arrow_forward:", "started"),
    "step.completed": (":heavy_check_mark:", "succeeded"),
    "step.failed": (":x:", "failed"),
    "step.timed_out": (":alarm_clock:", "timed out"),
    "step.cancelled": (":no_entry_sign:", "was cancelled"),
    "step.skipped": (":fast_forward:", "was skipped"),
    "step.retrying": (":repeat:", "is retrying"),
    "step.awaiting_approval": (":raised_hand:", "is awaiting approval"),
}


class SlackError(Exception):
    """The webhook could not be reached or did not accept the message."""


@dataclass(frozen=True)
class _Settings:
    webhook: str
    host: str
    channel: str | None
    username: str | None
    timeout: float


class SlackPlugin:
    """The slack plugin: provides ``notification:slack`` and ``approval:slack``."""

    def __init__(self) -> None:
        self._defaults: dict[str, Any] = {}

    def configure(self, config: dict[str, Any]) -> None:
        """Keep the configured defaults (``webhook``, ``channel``, ...) for every call."""
        self._defaults = {key: config[key] for key in _OPTION_KEYS if key in config}

    def handle_event(self, type: str, event: dict[str, Any], options: dict[str, Any]) -> None:
        """Post a message summarising ``event`` (``{type, time, seq, run_id, payload}``)."""
        _check_type(type)
        text, blocks = event_message(event)
        _post(self._settings(options), text, blocks)

    def request_approval(
        self, type: str, request: dict[str, Any], options: dict[str, Any]
    ) -> dict[str, str]:
        """Post the change set awaiting approval and how to answer; the verdict is pending."""
        _check_type(type)
        text, blocks = approval_message(request)
        _post(self._settings(options), text, blocks)
        return approval("pending", reason="asked in Slack; answered with bcce workflow resume")

    def _settings(self, options: Mapping[str, Any]) -> _Settings:
        merged = {**self._defaults, **{k: v for k, v in options.items() if v is not None}}
        webhook = merged.get("webhook")
        if not isinstance(webhook, str) or not webhook:
            raise ValueError(
                "no webhook: set the integration's webhook option, or plugins.config.slack.webhook"
            )
        parts = urllib.parse.urlsplit(webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the webhook must be an https:// URL (a Slack incoming webhook)")
        timeout = merged.get("timeout_seconds", DEFAULT_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError("timeout_seconds must be a number of seconds above 0")
        return _Settings(
            webhook=webhook,
            host=parts.hostname,
            channel=_optional_text(merged, "channel"),
            username=_optional_text(merged, "username"),
            timeout=float(timeout),
        )


def _check_type(integration_type: str) -> None:
    if integration_type not in INTEGRATION_TYPES:
        raise ValueError(
            f"unsupported integration type {integration_type!r}; "
            f"this plugin provides {', '.join(INTEGRATION_TYPES)}"
        )


def _optional_text(options: Mapping[str, Any], key: str) -> str | None:
    value = options.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value or None


# -- posting -------------------------------------------------------------------------------
def _post(settings: _Settings, text: str, blocks: list[dict[str, Any]]) -> None:
    message: dict[str, Any] = {"text": text, "blocks": blocks}
    if settings.channel:
        message["channel"] = settings.channel
    if settings.username:
        message["username"] = settings.username
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http(s)
        settings.webhook,
        data=json.dumps(message).encode("utf-8"),
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT},
        method="POST",
    )
    # No proxies from the environment: the sandbox decides what the plugin can reach.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    where = f"the Slack webhook at {settings.host}"
    try:
        with opener.open(request, timeout=settings.timeout) as response:
            response.read(_REPLY_BYTES)
    except urllib.error.HTTPError as exc:
        reply = " ".join(exc.read(_REPLY_BYTES).decode("utf-8", "replace").split())[:200]
        raise SlackError(
            f"{where} answered {exc.code} {exc.reason}" + (f": {reply}" if reply else "")
        ) from None
    except urllib.error.URLError as exc:
        raise SlackError(f"cannot reach {where}: {_reason(exc.reason)}") from None
    except TimeoutError:
        raise SlackError(f"{where} did not answer within {settings.timeout:g} s") from None
    except OSError as exc:
        raise SlackError(f"posting to {where} failed: {_reason(exc)}") from None


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason) or type(reason).__name__


# -- event messages ------------------------------------------------------------------------
def event_message(event: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the blocks of the message for one event."""
    kind = str(event.get("type") or "event")
    payload = event.get("payload")
    payload = payload if isinstance(payload, Mapping) else {}
    run_id = str(event.get("run_id") or "")
    icon, summary = _summary(kind, payload, run_id)
    detail = _detail(kind, payload)
    blocks: list[dict[str, Any]] = [_section(f"{icon} {summary}")]
    if detail:
        blocks.append(_section(detail))
    context = [f"event `{_code(kind)}`"]
    if run_id:
        context.insert(0, f"run `{_code(run_id)}`")
    if event.get("seq") is not None:
        context.append(f"#{_escape(str(event['seq']))}")
    if event.get("time"):
        context.append(_escape(str(event["time"])))
    blocks.append({"type": "context", "elements": [_mrkdwn(" · ".join(context))]})
    return _clip(summary.replace("*", "").replace("`", ""), SECTION_CHARS), blocks


def _summary(kind: str, payload: Mapping[str, Any], run_id: str) -> tuple[str, str]:
    icon, verb = _EVENTS.get(kind, (":information_source:", ""))
    run = f" (run `{_code(run_id)}`)" if run_id else ""
    if kind.startswith("workflow."):
        name = _escape(str(payload.get("workflow") or "?"))
        if kind == "workflow.completed" and payload.get("status") == "awaiting_approval":
            icon, verb = ":raised_hand:", "is waiting for approval"
        took = _duration(payload.get("duration_seconds"))
        return icon, f"Workflow *{name}* {verb or kind}{run}{f' in {took}' if took else ''}"
    if kind.startswith("step.") and payload.get("step"):
        step = _code(str(payload["step"]))
        step_type = f" ({_escape(str(payload['type']))})" if payload.get("type") else ""
        return icon, f"Step `{step}`{step_type} {verb or kind}{run}"
    return icon, f"`{_code(kind)}`{run}"


def _detail(kind: str, payload: Mapping[str, Any]) -> str:
    lines: list[str] = []
    if kind == "workflow.started":
        steps = payload.get("steps")
        lines.append(f"{steps} steps" if steps is not None else "")
        if payload.get("resumed"):
            lines.append("resumed")
    failed = payload.get("failed_steps")
    if isinstance(failed, list) and failed:
        lines.append("Failed steps: " + ", ".join(f"`{_code(str(s))}`" for s in failed))
    attempts = payload.get("attempts")
    if kind.startswith("step.") and isinstance(attempts, int) and attempts > 1:
        lines.append(f"after {attempts} attempts")
    error = payload.get("error")
    text = " · ".join(line for line in lines if line)
    if error:
        text += f"\n```{_fence(_clip(str(error), SECTION_CHARS - 200))}```"
    if not text and kind not in _EVENTS:
        fields = [
            f"*{_escape(str(key))}:* {_escape(_clip(_scalar(value), 200))}"
            for key, value in payload.items()
        ]
        text = "\n".join(fields[:20])
    return text.strip()


def _duration(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _scalar(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


# -- approval messages ---------------------------------------------------------------------
def approval_message(request: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the blocks of an approval request: changes and how to answer."""
    run_id = str(request.get("run_id") or "")
    step = str(request.get("step_id") or "?")
    workflow = str(request.get("workflow") or "?")
    files = [str(f) for f in request.get("files") or [] if isinstance(f, str)]
    diff = request.get("diff") if isinstance(request.get("diff"), str) else ""
    stats = diff_stats(str(diff))
    approve, reject = resume_commands(run_id)

    listed = list(dict.fromkeys([*files, *stats]))
    lines = []
    for path in listed[:MAX_FILES]:
        added, removed = stats.get(path, (0, 0))
        lines.append(f"• `{_code(path)}`  +{added} -{removed}")
    if len(listed) > MAX_FILES:
        lines.append(f"… and {len(listed) - MAX_FILES} more")
    added = sum(a for a, _ in stats.values())
    removed = sum(r for _, r in stats.values())
    stat = (
        f"{len(listed)} file{'s' if len(listed) != 1 else ''} changed, "
        f"{added} insertion{'s' if added != 1 else ''}(+), "
        f"{removed} deletion{'s' if removed != 1 else ''}(-)"
    )
    by = str(request.get("requested_by") or "")
    facts = [
        f"*Workflow:* {_escape(workflow)}",
        f"*Step:* `{_code(step)}`",
        f"*Run:* `{_code(run_id)}`",
    ]
    if by:
        facts.append(f"*Requested by:* {_escape(by)}")
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _clip(f"Approval requested: {workflow} / {step}", HEADER_CHARS),
            },
        },
        _section("\n".join(facts)),
        _section(f"*Changes:* {stat}\n" + "\n".join(lines) if lines else f"*Changes:* {stat}"),
    ]
    if diff:
        shown, hidden = _truncate_lines(str(diff), DIFF_CHARS)
        more = f"\n_… {hidden} more lines not shown_" if hidden else ""
        blocks.append(_section(f"```{_fence(shown)}```{more}"))
    blocks.append(_section(f"*To answer:*\nApprove: `{_code(approve)}`\nReject: `{_code(reject)}`"))
    text = (
        f"Approval requested for step {step} of workflow {workflow} (run {run_id}): {stat}. "
        f"Approve: {approve} — Reject: {reject}"
    )
    return _clip(_escape(text), SECTION_CHARS), blocks


def resume_commands(run_id: str) -> tuple[str, str]:
    """The commands that approve and reject the run's pending changes."""
    quoted = shlex.quote(run_id)
    return (
        f"bcce workflow resume {quoted} --approve",
        f"bcce workflow resume {quoted} --reject",
    )


def diff_stats(diff: str) -> dict[str, tuple[int, int]]:
    """Lines added and removed per file of a unified (git) diff, in the diff's order."""
    stats: dict[str, list[int]] = {}
    current: str | None = None
    old_path: str | None = None
    old_left = new_left = 0
    for line in diff.splitlines():
        if old_left > 0 or new_left > 0:
            # Inside a hunk: its header said how many lines it holds, so a removed line that
            # starts with "--" is not mistaken for a file header.
            if line.startswith("+"):
                new_left -= 1
                if current is not None:
                    stats[current][0] += 1
            elif line.startswith("-"):
                old_left -= 1
                if current is not None:
                    stats[current][1] += 1
            elif not line.startswith("\\"):
                old_left -= 1
                new_left -= 1
            continue
        if hunk := _HUNK.match(line):
            old_left = int(hunk.group(1) or 1)
            new_left = int(hunk.group(2) or 1)
        elif header := _GIT_HEADER.match(line):
            current = header.group(2)
            stats.setdefault(current, [0, 0])
        elif line.startswith("--- "):
            old_path = _diff_path(line[4:], "a/")
        elif line.startswith("+++ "):
            current = _diff_path(line[4:], "b/") or old_path
            if current is not None:
                stats.setdefault(current, [0, 0])
    return {path: (counts[0], counts[1]) for path, counts in stats.items()}


def _diff_path(text: str, prefix: str) -> str | None:
    path = text.split("\t")[0].strip()
    if path == "/dev/null":
        return None
    return path.removeprefix(prefix)


def _truncate_lines(text: str, limit: int) -> tuple[str, int]:
    """At most ``limit`` characters, cut at a line end; and how many lines were left out."""
    if len(text) <= limit:
        return text, 0
    lines = text.splitlines()
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    if not kept:
        return text[:limit], len(lines) - 1
    return "\n".join(kept), len(lines) - len(kept)


# -- Slack formatting ----------------------------------------------------------------------
def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(_clip(text, SECTION_CHARS))}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def _escape(text: str) -> str:
    """Slack's mrkdwn escaping: &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    """Text for inside `inline code`: escaped, and without backticks that would end it."""
    return _escape(text).replace("`", "'")


def _fence(text: str) -> str:
    """Text for inside a ``` block: escaped, and without a fence that would end it."""
    return _escape(text).replace("```", "`\u200b``")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "INTEGRATION_TYPES",
    "SlackError",
    "SlackPlugin",
    "approval_message",
    "diff_stats",
    "event_message",
    "resume_commands",
]
