"""Scripts for the scripted model: what the fake model answers, turn by turn.

A script is a YAML or JSON file (or a Python mapping)::

    turns:
      - text: "I'll look at the test."
        tool_use: [{name: Read, input: {file_path: "{workspace}/tests/test_x.py"}}]
      - text: "Done."
    usage: {input_tokens: 100, output_tokens: 20}     # optional, default for every turn
    side_text: "Scripted session"                     # optional, answer to side requests
    subagent:                                         # optional
      marker: "SUBAGENT-1"
      turns: [{text: "Subagent done."}]

The reply to a request is chosen from the request alone, so the fake model is stateless: the turn
index is the number of assistant messages already in the conversation. Requests that offer no
tools are side requests (title generation and the like) and get ``side_text``. A conversation
whose first user message contains the subagent marker is answered from the subagent's turns.
``{name}`` placeholders in texts and tool inputs are replaced from a mapping given at reply time;
names that are not in the mapping are left as written, so code with braces needs no escaping.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bcce.core.strict_yaml import Limits, YamlDocument, load_yaml_file
from bcce.errors import ConfigError

Conversation = Literal["main", "subagent", "side"]
StopReason = Literal["end_turn", "tool_use"]

EXHAUSTED_TEXT = "(script exhausted)"
DEFAULT_SIDE_TEXT = "Scripted session"

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


@dataclass(frozen=True)
class Usage:
    """Token counts reported for one reply."""

    input_tokens: int = 100
    output_tokens: int = 20
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def to_dict(self) -> dict[str, int]:
        return {key: getattr(self, key) for key in _USAGE_KEYS}


@dataclass(frozen=True)
class ToolCall:
    """One scripted tool call; ``id`` is generated deterministically when not given."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Turn:
    """One scripted model reply: optional text, then any tool calls."""

    text: str | None = None
    tool_use: tuple[ToolCall, ...] = ()
    usage: Usage | None = None


@dataclass(frozen=True)
class Subagent:
    """The turns answered to conversations whose first user message contains ``marker``."""

    marker: str
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class Reply:
    """The answer chosen for one request, as Anthropic content blocks."""

    conversation: Conversation
    turn: int | None
    content: list[dict[str, Any]]
    stop_reason: StopReason
    usage: Usage
    exhausted: bool = False


@dataclass(frozen=True)
class Script:
    """A validated script; :meth:`reply` chooses the answer to a Messages request body."""

    turns: tuple[Turn, ...]
    usage: Usage = Usage()
    subagent: Subagent | None = None
    side_text: str = DEFAULT_SIDE_TEXT
    source: str = "<script>"

    def reply(
        self, body: Mapping[str, Any], placeholders: Mapping[str, str] | None = None
    ) -> Reply:
        """The scripted answer to ``body`` (a Messages API request body)."""
        values = dict(placeholders or {})
        if not body.get("tools"):
            return Reply(
                "side", None, [_text_block(self.side_text, values)], "end_turn", self.usage
            )
        messages = body.get("messages")
        messages = messages if isinstance(messages, list) else []
        index = count_assistant_turns(messages)
        conversation: Conversation = "main"
        turns = self.turns
        if self.subagent is not None and self.subagent.marker in first_user_text(messages):
            conversation, turns = "subagent", self.subagent.turns
        if index >= len(turns):
            content = [_text_block(EXHAUSTED_TEXT, {})]
            return Reply(conversation, index, content, "end_turn", self.usage, exhausted=True)
        turn = turns[index]
        content = []
        if turn.text is not None:
            content.append(_text_block(turn.text, values))
        prefix = "toolu_bcce_sub" if conversation == "subagent" else "toolu_bcce"
        for number, call in enumerate(turn.tool_use):
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id or f"{prefix}_{index:03d}_{number:02d}",
                    "name": call.name,
                    "input": substitute(call.input, values),
                }
            )
        stop: StopReason = "tool_use" if turn.tool_use else "end_turn"
        return Reply(conversation, index, content, stop, turn.usage or self.usage)


def count_assistant_turns(messages: Sequence[Any]) -> int:
    """The number of assistant turns: consecutive assistant messages count once."""
    count = 0
    previous = None
    for message in messages:
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "assistant" and previous != "assistant":
            count += 1
        previous = role
    return count


def first_user_text(messages: Sequence[Any]) -> str:
    """The text of the first user message (all its text blocks joined), or ``""``."""
    for message in messages:
        if not isinstance(message, Mapping) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(
                str(block.get("text", ""))
                for block in content
                if isinstance(block, Mapping) and block.get("type") == "text"
            )
        return ""
    return ""


def substitute(value: Any, placeholders: Mapping[str, str]) -> Any:
    """``value`` with ``{name}`` replaced in every string (recursively); unknown names kept."""
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: placeholders.get(m.group(1), m.group(0)), value)
    if isinstance(value, Mapping):
        return {key: substitute(item, placeholders) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(item, placeholders) for item in value]
    return value


def _text_block(text: str, placeholders: Mapping[str, str]) -> dict[str, Any]:
    return {"type": "text", "text": substitute(text, placeholders)}


def load_script(source: Script | Mapping[str, Any] | str | os.PathLike[str]) -> Script:
    """A validated :class:`Script` from a script, a mapping, or a YAML or JSON file path."""
    if isinstance(source, Script):
        return source
    if isinstance(source, Mapping):
        return parse_script(source)
    path = Path(source)
    if path.suffix.lower() == ".json":
        return parse_script(_load_json(path), source=str(path))
    document = load_yaml_file(path)
    return parse_script(document.data, source=str(path), document=document)


def _load_json(path: Path) -> Any:
    limit = Limits().max_bytes
    try:
        with path.open("rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise ConfigError(
            f"cannot read script: {exc.strerror or exc}",
            location=str(path),
            hint="check the path and its permissions",
        ) from exc
    if len(raw) > limit:
        raise ConfigError(f"script is larger than {limit} bytes", location=str(path))

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ConfigError(f"duplicate key {key!r}", location=str(path))
            result[key] = value
        return result

    try:
        return json.loads(raw, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"invalid JSON: {exc}", location=str(path)) from None


def parse_script(
    data: Any, *, source: str = "<script>", document: YamlDocument | None = None
) -> Script:
    """Validate plain data as a script; problems raise :class:`ConfigError` naming the key."""
    return _Parser(source, document).script(data)


class _Parser:
    def __init__(self, source: str, document: YamlDocument | None) -> None:
        self.source = source
        self.document = document

    def fail(self, path: Sequence[str | int], message: str, hint: str | None = None) -> ConfigError:
        mark = self.document.mark_of(path) if self.document is not None else None
        key = ".".join(str(part) for part in path) or None
        return ConfigError(
            message,
            location=str(mark) if mark is not None else self.source,
            key=key,
            hint=hint,
        )

    def mapping(
        self, value: Any, path: tuple[str | int, ...], allowed: Sequence[str]
    ) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping, got {_kind(value)}")
        unknown = sorted(str(key) for key in value if key not in allowed)
        if unknown:
            raise self.fail(
                (*path, unknown[0]),
                f"unknown key {unknown[0]!r}",
                f"allowed keys: {', '.join(allowed)}",
            )
        return value

    def text(self, value: Any, path: tuple[str | int, ...]) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, f"expected a non-empty string, got {_kind(value)}")
        return value

    def script(self, data: Any) -> Script:
        top = self.mapping(data, (), ("turns", "usage", "subagent", "side_text"))
        if "turns" not in top:
            raise self.fail((), "a script needs 'turns'", "add 'turns:' with at least one turn")
        usage = self.usage(top["usage"], ("usage",), Usage()) if "usage" in top else Usage()
        turns = self.turns(top["turns"], ("turns",), usage)
        subagent = None
        if "subagent" in top:
            block = self.mapping(top["subagent"], ("subagent",), ("marker", "turns"))
            if "marker" not in block or "turns" not in block:
                raise self.fail(("subagent",), "'subagent' needs 'marker' and 'turns'")
            subagent = Subagent(
                marker=self.text(block["marker"], ("subagent", "marker")),
                turns=self.turns(block["turns"], ("subagent", "turns"), usage),
            )
        side_text = DEFAULT_SIDE_TEXT
        if "side_text" in top:
            side_text = self.text(top["side_text"], ("side_text",))
        return Script(turns, usage, subagent, side_text, self.source)

    def turns(self, value: Any, path: tuple[str | int, ...], usage: Usage) -> tuple[Turn, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, f"expected a non-empty list of turns, got {_kind(value)}")
        return tuple(self.turn(item, (*path, i), usage) for i, item in enumerate(value))

    def turn(self, value: Any, path: tuple[str | int, ...], default: Usage) -> Turn:
        item = self.mapping(value, path, ("text", "tool_use", "usage"))
        if "text" not in item and "tool_use" not in item:
            raise self.fail(path, "a turn needs 'text', 'tool_use' or both")
        text = self.text(item["text"], (*path, "text")) if "text" in item else None
        calls: tuple[ToolCall, ...] = ()
        if "tool_use" in item:
            raw = item["tool_use"]
            if not isinstance(raw, list) or not raw:
                raise self.fail((*path, "tool_use"), f"expected a non-empty list, got {_kind(raw)}")
            calls = tuple(self.call(call, (*path, "tool_use", i)) for i, call in enumerate(raw))
        usage = self.usage(item["usage"], (*path, "usage"), default) if "usage" in item else None
        return Turn(text, calls, usage)

    def call(self, value: Any, path: tuple[str | int, ...]) -> ToolCall:
        item = self.mapping(value, path, ("name", "input", "id"))
        if "name" not in item:
            raise self.fail(path, "a tool call needs 'name'")
        name = self.text(item["name"], (*path, "name"))
        arguments = item.get("input", {})
        if not isinstance(arguments, Mapping):
            raise self.fail((*path, "input"), f"expected a mapping, got {_kind(arguments)}")
        call_id = self.text(item["id"], (*path, "id")) if "id" in item else None
        return ToolCall(name, dict(arguments), call_id)

    def usage(self, value: Any, path: tuple[str | int, ...], default: Usage) -> Usage:
        item = self.mapping(value, path, _USAGE_KEYS)
        counts = default.to_dict()
        for key, count in item.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise self.fail(
                    (*path, key), f"expected a non-negative integer, got {_kind(count)}"
                )
            counts[key] = count
        return Usage(**counts)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return f"string {value!r}" if len(value) <= 40 else "a string"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__
