"""Strict, bounded YAML loading for configuration and workflow files.

Untrusted YAML is dangerous before any object exists: a few hundred bytes of nested aliases expand
to gigabytes, and deep nesting exhausts the stack. So the event stream is scanned first (it is
produced iteratively) and the size, nesting depth and alias-expanded node count are checked
before a single object is built. Objects are then built from the composed node graph by our own
code, which rejects duplicate keys and unsupported tags and remembers where every value came from
(``marks``), so later validation errors can point at ``file:line:col``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bcce.errors import BcceError, ConfigError

try:  # libyaml is much faster; fall back to the pure-Python parser where it is absent
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on the PyYAML build
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

PathKey = tuple[str | int, ...]

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Limits:
    """Bounds checked before any object is built."""

    max_bytes: int = 1024 * 1024
    max_depth: int = 64
    max_nodes: int = 100_000


@dataclass(frozen=True)
class Mark:
    """A 1-based position in a source file."""

    source: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column}"


@dataclass
class YamlDocument:
    """A loaded document: plain data (dict/list/str/int/float/bool/None) and where each value is."""

    data: Any
    source: str
    marks: dict[PathKey, Mark] = field(default_factory=dict)

    def mark_of(self, path: Sequence[str | int]) -> Mark | None:
        """The position of ``path``, or of its nearest ancestor that has one."""
        key = tuple(path)
        while True:
            mark = self.marks.get(key)
            if mark is not None or not key:
                return mark
            key = key[:-1]


def load_yaml_file(
    path: str | Path, *, limits: Limits = Limits(), error: type[BcceError] = ConfigError
) -> YamlDocument:
    """Load one YAML file strictly; every problem raises ``error`` with ``file:line:col``."""
    source = str(path)
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(limits.max_bytes + 1)
    except OSError as exc:
        raise error(
            f"cannot read file: {exc.strerror or exc}",
            location=source,
            hint="check the path and its permissions",
        ) from exc
    return load_yaml(raw, source=source, limits=limits, error=error)


def load_yaml(
    text: str | bytes,
    *,
    source: str = "<string>",
    limits: Limits = Limits(),
    error: type[BcceError] = ConfigError,
) -> YamlDocument:
    """Load one YAML document strictly from text or bytes."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(raw) > limits.max_bytes:
        raise error(
            f"file is larger than the limit of {limits.max_bytes} bytes",
            location=source,
            hint="split the file, or raise the limit if this size is intended",
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"file is not valid UTF-8 (byte offset {exc.start})",
            location=source,
            hint="save the file as UTF-8",
        ) from exc
    _Scanner(decoded, source, limits, error).scan()
    try:
        node = yaml.compose(decoded, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source, error, decoded) from None
    document = YamlDocument(data=None, source=source)
    if node is not None:
        document.data = _Builder(source, document.marks, error).build(node, ())
    return document


def _yaml_error(exc: yaml.YAMLError, source: str, error: type[BcceError], text: str) -> BcceError:
    if isinstance(exc, yaml.reader.ReaderError):
        # The reader rejects control characters before any token exists, so it has no mark;
        # libyaml reports a byte offset, the pure-Python reader a character offset.
        before = (
            text.encode("utf-8", "surrogatepass")[: exc.position].decode("utf-8", "ignore")
            if _Loader.__name__.startswith("C")
            else text[: exc.position]
        )
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        return error(
            f"invalid YAML: character #x{exc.character:04x} is not allowed ({exc.reason})",
            location=f"{source}:{line}:{column}",
            hint="remove control characters from the file",
        )
    if not isinstance(exc, yaml.MarkedYAMLError):  # pragma: no cover - parser errors are marked
        return error(f"invalid YAML: {exc}", location=source)
    mark = exc.problem_mark or exc.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    problem = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
    return error(
        f"invalid YAML: {problem}",
        location=where,
        hint="check indentation, quoting and that every ':' after a key is followed by a space",
    )


class _Scanner:
    """Checks depth, alias expansion and document count on the event stream."""

    def __init__(self, text: str, source: str, limits: Limits, error: type[BcceError]) -> None:
        self.text = text
        self.source = source
        self.limits = limits
        self.error = error

    def _fail(self, message: str, mark: Any, hint: str) -> BcceError:
        return self.error(
            message, location=f"{self.source}:{mark.line + 1}:{mark.column + 1}", hint=hint
        )

    def _events(self) -> Iterator[yaml.Event]:
        try:
            yield from yaml.parse(self.text, Loader=_Loader)
        except yaml.MarkedYAMLError as exc:
            # PyYAML >= 6.0.3 refuses deep flow collections itself, while scanning ahead of
            # the events our own (lower) limit is checked on: report it as our limit.
            if "maximum nesting depth" in (exc.problem or "") and exc.problem_mark is not None:
                raise self._nesting(exc.problem_mark) from None
            raise _yaml_error(exc, self.source, self.error, self.text) from None
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, self.source, self.error, self.text) from None

    def _nesting(self, mark: Any) -> BcceError:
        return self._fail(
            f"nesting deeper than the limit of {self.limits.max_depth} levels",
            mark,
            "flatten the structure",
        )

    def scan(self) -> None:
        sizes: dict[str, int] = {}
        stack: list[list[Any]] = []  # [anchor, expanded node count]
        documents = 0
        total = 0
        for event in self._events():
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise self._fail(
                        "more than one YAML document in the file",
                        event.start_mark,
                        "remove the '---' separator: one file holds one document",
                    )
                continue
            if isinstance(event, yaml.CollectionStartEvent):
                stack.append([event.anchor, 1])
                if len(stack) > self.limits.max_depth:
                    raise self._nesting(event.start_mark)
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, size = stack.pop()
                if anchor is not None:
                    sizes[anchor] = size
            elif isinstance(event, yaml.ScalarEvent):
                size = 1
                if event.anchor is not None:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in sizes:
                    raise self._fail(
                        f"alias *{event.anchor} refers to an undefined or enclosing anchor",
                        event.start_mark,
                        "define the anchor (&name) before using it, outside the aliased block",
                    )
                size = sizes[event.anchor]
            else:
                continue
            if stack:
                stack[-1][1] += size
            else:
                total += size
            if total + sum(frame[1] for frame in stack) > self.limits.max_nodes:
                raise self._fail(
                    f"document expands to more than {self.limits.max_nodes} values "
                    "(alias expansion limit)",
                    event.start_mark,
                    "repeated aliases multiply the size of the document; write it out plainly",
                )


class _Builder:
    """Builds plain Python data from composed nodes, recording marks and rejecting surprises."""

    def __init__(self, source: str, marks: dict[PathKey, Mark], error: type[BcceError]) -> None:
        self.source = source
        self.marks = marks
        self.error = error
        self.constructor = yaml.SafeLoader("")

    def _mark(self, node: yaml.Node) -> Mark:
        return Mark(self.source, node.start_mark.line + 1, node.start_mark.column + 1)

    def _fail(self, message: str, node: yaml.Node, hint: str | None = None) -> BcceError:
        return self.error(message, location=str(self._mark(node)), hint=hint)

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        self.marks.setdefault(path, self._mark(node))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self._fail(f"unsupported tag {node.tag}", node, "remove the tag")
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                raise self._fail(f"unsupported tag {node.tag}", node, "remove the tag")
            return self._mapping(node, path)
        raise self._fail("unsupported YAML node", node)  # pragma: no cover

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in _SCALAR_TAGS:
            raise self._fail(
                f"unsupported tag {node.tag}",
                node,
                "only plain strings, numbers, booleans and null are allowed; quote the value",
            )
        if node.tag == "tag:yaml.org,2002:timestamp":
            return node.value  # keep dates as the text the user wrote
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (ArithmeticError, LookupError, TypeError, ValueError, yaml.YAMLError):
            # An explicit tag on a value that does not fit it, e.g. `!!int abc`.
            raise self._fail(
                f"{node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}",
                node,
                "remove the tag or fix the value",
            ) from None
        if isinstance(value, datetime.date):  # pragma: no cover - guarded by the tag check
            return node.value
        return value

    def _key(self, node: yaml.Node) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self._fail("mapping keys must be plain scalars", node, "use a string as the key")
        return str(node.value)

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        result: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        merged: list[yaml.MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.extend(self._merge_sources(value_node))
                continue
            key = self._key(key_node)
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise self._fail(
                    f"duplicate key {key!r} (first defined on line {first})",
                    key_node,
                    "remove one of the two definitions",
                )
            seen[key] = key_node
            result[key] = self.build(value_node, (*path, key))
        for source in merged:  # explicit keys win over merged ones, earlier merges over later
            for key_node, value_node in source.value:
                key = self._key(key_node)
                if key not in result:
                    result[key] = self.build(value_node, (*path, key))
        return result

    def _merge_sources(self, node: yaml.Node) -> list[yaml.MappingNode]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(item, yaml.MappingNode) for item in node.value
        ):
            return list(node.value)
        raise self._fail("'<<' must merge a mapping or a list of mappings", node)


def dotted(path: Sequence[str | int]) -> str:
    """``("policy", "default", "max_files")`` -> ``policy.default.max_files``; items as ``[i]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def flatten(data: Mapping[str, Any], prefix: PathKey = ()) -> Iterator[tuple[PathKey, Any]]:
    """Yield ``(path, leaf)`` for every non-mapping value of nested mappings."""
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, Mapping) and value:
            yield from flatten(value, path)
        else:
            yield path, value
