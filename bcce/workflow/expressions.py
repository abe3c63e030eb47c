"""Workflow condition expressions: the language of a step's ``if:`` and a ``conditional`` step's
``condition:``, compatible with GitHub Actions expressions.

User text is never handed to ``eval``, ``exec`` or ``compile``: a hand-written tokenizer and a
recursive-descent parser build a small tree, and an evaluator walks it. Text is at most
``MAX_LENGTH`` characters and nests at most ``MAX_DEPTH`` levels, so neither parsing nor
evaluation can exhaust the stack; every failure is an :class:`ExpressionError`.

Grammar, lowest precedence first (binary operators are left-associative)::

    expression  := or
    or          := and ( "||" and )*
    and         := equality ( "&&" equality )*
    equality    := comparison ( ( "==" | "!=" ) comparison )*
    comparison  := unary ( ( "<" | "<=" | ">" | ">=" ) unary )*
    unary       := "!" unary | postfix
    postfix     := primary ( "." NAME | "[" expression "]" )*   -- after a root, a call or ( )
    primary     := literal | ROOT | FUNCTION "(" [ expression ( "," expression )* ] ")"
                 | "(" expression ")"
    literal     := 'string' ('' is a quote) | number | true | false | null | NaN | Infinity

The whole text may be wrapped in ``${{ ... }}``. Names are ``[A-Za-z_][A-Za-z0-9_-]*``. Numbers are
JSON-like decimals with an optional sign (``-1``, ``2.5``, ``1e3``, ``.5``) or ``0x``/``0o``/``0b``
integers. A root is one of the names given to :func:`parse` (``steps``, ``env``, ``vars``,
``inputs`` by default); any other bare name is an error. Roots and function names are matched
case-insensitively.

Values are null (``None``), booleans, numbers (``int``/``float``), strings, arrays (``list``/
``tuple``) and objects (``Mapping``); any other Python object behaves as an empty object.

- Truthiness: ``false``, ``0``, ``-0``, ``NaN``, ``''`` and ``null`` are falsy; everything else,
  empty arrays and objects included, is truthy. ``!`` returns a boolean; ``a && b`` and ``a || b``
  short-circuit and return the operand that decided (``null || 'x'`` is ``'x'``).
- ``==`` and ``!=``: values of one type compare directly: strings case-insensitively, arrays
  and objects by identity. Otherwise null and booleans become numbers (null and false 0, true 1)
  and a string compared with a number becomes a number ('' and blanks 0, a number literal as
  above, anything else NaN); an array or object never equals a value of another type, and NaN
  equals nothing.
- ``<``, ``>`` use the same coercion; numbers compare numerically, strings case-insensitively,
  ``false < true``; NaN and mismatched types make them false. ``<=`` is ``<`` or ``==``, and
  ``>=`` is ``>`` or ``==``.
- To a string (``format``, ``join``, ``contains``, ``startsWith``, ``endsWith``): null is '',
  booleans 'true'/'false', numbers to 15 decimals without a trailing '.0', arrays 'Array',
  objects 'Object'.
- ``a.name`` and ``a['name']`` look a key up in an object (exact first, then ignoring case);
  ``a[n]`` indexes an array (n floored; negative or out of range is null). Anything missing, or
  a lookup on a value that is not an object or array, is null.

Functions (names case-insensitive): ``success()``, ``failure()``, ``cancelled()`` and
``always()`` answer from :attr:`EvaluationContext.status`; ``contains(search, item)`` (substring
of a string, or an element of an array by ``==``), ``startsWith(s, prefix)``,
``endsWith(s, suffix)`` (case-insensitive); ``format(fmt, args...)`` (``{0}`` placeholders,
``{{``/``}}`` escape braces); ``join(array, sep=',')``; ``toJSON(value)`` (two-space indented);
``fromJSON(text)``. An expression that calls no status function is, under GitHub's rule for
``if:``, implicitly ``success() && (expr)``: :attr:`Expression.has_status_function` tells the
engine, and :meth:`Expression.should_run` applies the rule.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple, TypeAlias

from bcce.errors import WorkflowError

MAX_LENGTH: Final = 4096
MAX_DEPTH: Final = 50
DEFAULT_ROOTS: Final = frozenset({"env", "inputs", "steps", "vars"})
STATUS_FUNCTIONS: Final = frozenset({"always", "cancelled", "failure", "success"})

Status: TypeAlias = Literal["success", "failure", "cancelled"]
_STATUSES: Final = frozenset({"success", "failure", "cancelled"})

# toJSON refuses data nested deeper than this: it bounds the recursion and catches cycles.
_MAX_DATA_DEPTH: Final = 256
# Numbers are doubles in GitHub: integers longer than this become floats, as they would there.
_MAX_INT_DIGITS: Final = 15
_JS_EXPONENT_FROM: Final = 10**21


class ExpressionError(WorkflowError):
    """An expression that cannot be parsed or evaluated.

    ``position`` is the 0-based offset into ``source`` (the text given to :func:`parse`) where the
    problem is; the message gives it as a 1-based column. ``reason`` is the message without it.
    """

    def __init__(
        self,
        reason: str,
        *,
        position: int,
        source: str = "",
        hint: str | None = None,
        location: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(
            f"{reason} at column {position + 1}", hint=hint, location=location, key=key
        )
        self.reason = reason
        self.position = position
        self.source = source


@dataclass(frozen=True)
class EvaluationContext:
    """What an expression is evaluated against: the roots' values and the run's status so far."""

    values: Mapping[str, object] = field(default_factory=dict)
    status: Status = "success"

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise ValueError(f"status must be one of {sorted(_STATUSES)}, not {self.status!r}")


# --- syntax tree -------------------------------------------------------------------------------
# ``depth`` is the height of the node (0 for leaves); it bounds every walk of the tree.


@dataclass(frozen=True, slots=True)
class _Const:
    position: int
    value: object
    depth: int = 0


@dataclass(frozen=True, slots=True)
class _Root:
    position: int
    name: str
    depth: int = 0


@dataclass(frozen=True, slots=True)
class _Access:
    position: int
    target: _Node
    path: tuple[str | _Node, ...]  # a str is ``.name``; a node is ``[expression]``
    depth: int


@dataclass(frozen=True, slots=True)
class _Not:
    position: int
    operand: _Node
    depth: int


@dataclass(frozen=True, slots=True)
class _Compare:
    position: int
    operator: str
    left: _Node
    right: _Node
    depth: int


@dataclass(frozen=True, slots=True)
class _Logical:
    position: int
    operator: str  # "&&" or "||"; n-ary so that long chains stay shallow
    operands: tuple[_Node, ...]
    depth: int


@dataclass(frozen=True, slots=True)
class _Call:
    position: int
    name: str
    args: tuple[_Node, ...]
    depth: int


_Node: TypeAlias = _Const | _Root | _Access | _Not | _Compare | _Logical | _Call


def _children(node: _Node) -> tuple[_Node, ...]:
    if isinstance(node, _Access):
        return (node.target, *(part for part in node.path if not isinstance(part, str)))
    if isinstance(node, _Not):
        return (node.operand,)
    if isinstance(node, _Compare):
        return (node.left, node.right)
    if isinstance(node, _Logical):
        return node.operands
    if isinstance(node, _Call):
        return node.args
    return ()


def _walk(root: _Node) -> Iterator[_Node]:
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(_children(node))


class Expression:
    """A parsed expression; build one with :func:`parse`."""

    __slots__ = ("_tree", "has_status_function", "source")

    def __init__(self, source: str, tree: _Node) -> None:
        self.source = source
        self._tree = tree
        self.has_status_function = any(
            isinstance(node, _Call) and node.name in STATUS_FUNCTIONS for node in _walk(tree)
        )

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def evaluate(self, context: EvaluationContext) -> object:
        """The expression's value; raises :class:`ExpressionError` if a function fails."""
        return _Evaluator(context, self.source).evaluate(self._tree)

    def truthy(self, context: EvaluationContext) -> bool:
        """Whether the expression's value is truthy."""
        return _truthy(self.evaluate(context))

    def should_run(self, context: EvaluationContext) -> bool:
        """GitHub's ``if:`` rule: without a status function, the expression is
        ``success() && (expr)``."""
        if not self.has_status_function and context.status != "success":
            return False
        return self.truthy(context)

    def references(self) -> set[tuple[str, ...]]:
        """The static paths read from roots, e.g. ``("steps", "build", "outcome")``.

        A path stops at the first index that is not a string literal (``steps[inputs.id]`` gives
        ``("steps",)`` and ``("inputs", "id")``). Roots are spelled as given to :func:`parse`;
        property names as written.
        """
        found: set[tuple[str, ...]] = set()
        stack: list[_Node] = [self._tree]
        while stack:
            node = stack.pop()
            if isinstance(node, _Root):
                found.add((node.name,))
            elif isinstance(node, _Access) and isinstance(node.target, _Root):
                path = [node.target.name]
                static = True
                for part in node.path:
                    if isinstance(part, str):
                        if static:
                            path.append(part)
                        continue
                    if static and isinstance(part, _Const) and isinstance(part.value, str):
                        path.append(part.value)
                    else:
                        static = False
                        stack.append(part)
                found.add(tuple(path))
            else:
                stack.extend(_children(node))
        return found


# --- tokenizer ---------------------------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "string", "number", "name", "end", or the operator itself
    text: str
    start: int
    value: object = None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+"
    r"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|Infinity)"
)
_NUMBER_TAIL = re.compile(r"[A-Za-z0-9_.]")
_OPERATORS: Final = ("==", "!=", "<=", ">=", "&&", "||", "!", "<", ">", "(", ")", "[", "]", ",")
_STRAY_HINTS: Final = {
    "=": "compare with '=='",
    "&": "use '&&'",
    "|": "use '||'",
    '"': "strings are in single quotes: 'text' ('' for a quote)",
    "*": "object filters ('*') are not supported",
}


def _number_value(lexeme: str) -> int | float:
    """The value of a lexeme that ``_NUMBER`` matched in full."""
    sign = -1 if lexeme.startswith("-") else 1
    body = lexeme.lstrip("+-")
    if body == "Infinity":
        return sign * math.inf
    prefix = body[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        return sign * int(body[2:], {"0x": 16, "0o": 8, "0b": 2}[prefix])
    if body.isdigit() and len(body) <= _MAX_INT_DIGITS:
        return sign * int(body)
    return float(lexeme)


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "end of expression"
    text = token.text if len(token.text) <= 24 else token.text[:21] + "..."
    return f"token {text!r}" if token.kind != "string" else f"string {text}"


def _tokenize(text: str, start: int, end: int) -> list[_Token]:
    tokens: list[_Token] = []
    i = start
    while i < end:
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if char == "'":
            i = _read_string(text, i, end, tokens)
            continue
        previous = tokens[-1].kind if tokens else "end"
        starts_number = "0" <= char <= "9" or char in "+-"
        if char == "." and previous not in ("name", ")", "]"):
            starts_number = True
        if starts_number and (match := _NUMBER.match(text, i, end)):
            stop = match.end()
            if stop < end and _NUMBER_TAIL.match(text, stop):
                tail = _NAME.match(text, stop, end)
                bad = text[i : tail.end() if tail else stop + 1]
                raise ExpressionError(f"invalid number {bad!r}", position=i, source=text)
            tokens.append(_Token("number", match.group(), i, _number_value(match.group())))
            i = stop
            continue
        if match := _NAME.match(text, i, end):
            tokens.append(_Token("name", match.group(), i))
            i = match.end()
            continue
        if char == ".":
            tokens.append(_Token(".", ".", i))
            i += 1
            continue
        operator = next((op for op in _OPERATORS if text.startswith(op, i, end)), None)
        if operator is None:
            shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
            raise ExpressionError(
                f"unexpected character {shown}",
                position=i,
                source=text,
                hint=_STRAY_HINTS.get(char),
            )
        tokens.append(_Token(operator, operator, i))
        i += len(operator)
    tokens.append(_Token("end", "", end))
    return tokens


def _read_string(text: str, start: int, end: int, tokens: list[_Token]) -> int:
    parts: list[str] = []
    i = start + 1
    while True:
        quote = text.find("'", i, end)
        if quote < 0:
            raise ExpressionError(
                "unterminated string",
                position=start,
                source=text,
                hint="close it with ' (write '' for a quote inside)",
            )
        parts.append(text[i:quote])
        if text.startswith("''", quote, end):
            parts.append("'")
            i = quote + 2
            continue
        tokens.append(_Token("string", text[start : quote + 1], start, "".join(parts)))
        return quote + 1


def _unwrap(text: str) -> tuple[int, int]:
    """The span inside an optional ``${{ ... }}``, surrounding blanks excluded."""
    start, end = 0, len(text)
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if not text.startswith("${{", start, end):
        return start, end
    if end - start < 5 or not text.endswith("}}", start, end):
        raise ExpressionError("'${{' is not closed by '}}'", position=start, source=text)
    return start + 3, end - 2


# --- parser ------------------------------------------------------------------------------------

_KEYWORDS: Final[Mapping[str, object]] = {
    "true": True,
    "false": False,
    "null": None,
    "NaN": math.nan,
    "Infinity": math.inf,
}
_LEVELS: Final = (("||",), ("&&",), ("==", "!="), ("<", "<=", ">", ">="))


class _Parser:
    def __init__(self, text: str, tokens: list[_Token], roots: AbstractSet[str]) -> None:
        self._text = text
        self._tokens = tokens
        self._index = 0
        self._nesting = 0
        self._roots = {root.lower(): root for root in roots}

    def parse(self) -> _Node:
        if self._peek().kind == "end":
            raise self._error("empty expression", self._peek().start)
        tree = self._binary(0)
        if self._peek().kind != "end":
            raise self._unexpected(self._peek())
        return tree

    # helpers

    def _peek(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind != "end":
            self._index += 1
        return token

    def _expect(self, kind: str) -> None:
        token = self._peek()
        if token.kind != kind:
            raise self._error(f"expected '{kind}' but found {_describe(token)}", token.start)
        self._advance()

    def _error(self, reason: str, position: int, hint: str | None = None) -> ExpressionError:
        return ExpressionError(reason, position=position, source=self._text, hint=hint)

    def _unexpected(self, token: _Token) -> ExpressionError:
        return self._error(f"unexpected {_describe(token)}", token.start)

    def _height(self, position: int, *children: _Node) -> int:
        depth = 1 + max((child.depth for child in children), default=0)
        if depth > MAX_DEPTH:
            raise self._error(f"expression nests deeper than {MAX_DEPTH} levels", position)
        return depth

    def _nested(self, opener: int) -> _Node:
        """A sub-expression in ( ), [ ] or call arguments; bounded before recursing."""
        self._nesting += 1
        try:
            if self._nesting > MAX_DEPTH:
                raise self._error(f"expression nests deeper than {MAX_DEPTH} levels", opener)
            return self._binary(0)
        finally:
            self._nesting -= 1

    # grammar

    def _binary(self, level: int) -> _Node:
        if level == len(_LEVELS):
            return self._unary()
        operators = _LEVELS[level]
        left = self._binary(level + 1)
        if operators[0] in ("&&", "||"):
            if self._peek().kind != operators[0]:
                return left
            position = self._peek().start
            operands = [left]
            while self._peek().kind == operators[0]:
                self._advance()
                operands.append(self._binary(level + 1))
            depth = self._height(position, *operands)
            return _Logical(position, operators[0], tuple(operands), depth)
        while self._peek().kind in operators:
            operator = self._advance()
            right = self._binary(level + 1)
            depth = self._height(operator.start, left, right)
            left = _Compare(operator.start, operator.kind, left, right, depth)
        return left

    def _unary(self) -> _Node:
        # Iterative, so a long run of '!' cannot recurse.
        bangs: list[int] = []
        while self._peek().kind == "!":
            bangs.append(self._advance().start)
        node = self._postfix()
        for position in reversed(bangs):
            node = _Not(position, node, self._height(position, node))
        return node

    def _postfix(self) -> _Node:
        node, accessible = self._primary()
        if not accessible:
            return node
        path: list[str | _Node] = []
        while self._peek().kind in (".", "["):
            opener = self._advance()
            if opener.kind == ".":
                name = self._peek()
                if name.kind != "name":
                    raise self._error(
                        f"expected a property name after '.' but found {_describe(name)}",
                        name.start,
                    )
                path.append(self._advance().text)
            else:
                path.append(self._nested(opener.start))
                self._expect("]")
        if not path:
            return node
        indexes = [part for part in path if not isinstance(part, str)]
        return _Access(
            node.position, node, tuple(path), self._height(node.position, node, *indexes)
        )

    def _primary(self) -> tuple[_Node, bool]:
        """The node, and whether ``.name``/``[ ]`` may follow it (as in GitHub's grammar)."""
        token = self._advance()
        if token.kind in ("string", "number"):
            return _Const(token.start, token.value), False
        if token.kind == "(":
            inner = self._nested(token.start)
            self._expect(")")
            return inner, True
        if token.kind != "name":
            raise self._unexpected(token)
        if self._peek().kind == "(":
            return self._call(token), True
        if token.text in _KEYWORDS:
            return _Const(token.start, _KEYWORDS[token.text]), False
        root = self._roots.get(token.text.lower())
        if root is None:
            raise self._error(
                f"unknown name {token.text!r}",
                token.start,
                hint=f"expressions can read {', '.join(sorted(self._roots.values()))}",
            )
        return _Root(token.start, root), True

    def _call(self, name: _Token) -> _Node:
        function = _FUNCTIONS.get(name.text.lower())
        if function is None:
            raise self._error(
                f"unknown function {name.text!r}",
                name.start,
                hint=f"functions: {', '.join(sorted(f.name for f in _FUNCTIONS.values()))}",
            )
        opener = self._peek().start
        self._expect("(")
        args: list[_Node] = []
        if self._peek().kind != ")":
            args.append(self._nested(opener))
            while self._peek().kind == ",":
                self._advance()
                args.append(self._nested(opener))
        self._expect(")")
        if not function.min_args <= len(args) <= function.max_args:
            raise self._error(
                f"{function.name}() takes {function.arity()} but got {len(args)}", name.start
            )
        first = args[0] if args else None
        if function.name == "format" and isinstance(first, _Const) and isinstance(first.value, str):
            # A literal format string is checked now, so the mistake shows when the workflow loads.
            try:
                _format_string(first.value, [None] * (len(args) - 1))
            except _CallFailed as failure:
                raise self._error(failure.reason, name.start) from None
        return _Call(name.start, function.name, tuple(args), self._height(name.start, *args))


def parse(text: str, *, roots: AbstractSet[str] = DEFAULT_ROOTS) -> Expression:
    """Parse an ``if:``/``condition:`` expression, with or without ``${{ }}`` around it.

    ``roots`` are the names an expression may read (matched ignoring case). Raises
    :class:`ExpressionError` for text that is too long, nests too deeply, or is not valid.
    """
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"expression is longer than {MAX_LENGTH} characters", position=MAX_LENGTH, source=text
        )
    start, end = _unwrap(text)
    return Expression(text, _Parser(text, _tokenize(text, start, end), roots).parse())


# --- values ------------------------------------------------------------------------------------

_Kind: TypeAlias = Literal["null", "boolean", "number", "string", "array", "object"]


def _kind(value: object) -> _Kind:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object"


def _is_primitive(value: object) -> bool:
    return _kind(value) in ("null", "boolean", "number", "string")


def _truthy(value: object) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == value and value != 0  # NaN is the value that is not equal to itself
    if isinstance(value, str):
        return value != ""
    return True


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _to_number(value: object) -> int | float:
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0
        return _number_value(text) if _NUMBER.fullmatch(text) else math.nan
    return math.nan


def _number_to_string(number: int | float) -> str:
    if isinstance(number, int):
        if abs(number) < _JS_EXPONENT_FROM:
            return str(number)
        try:
            number = float(number)
        except OverflowError:
            return "Infinity" if number > 0 else "-Infinity"
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    number = round(number, 15)  # GitHub prints at most 15 decimals
    if number == 0:
        return "0"
    if number.is_integer() and abs(number) < _JS_EXPONENT_FROM:
        return str(int(number))
    return repr(number)


def _to_string(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number_to_string(value)
    if isinstance(value, str):
        return value
    return "Array" if isinstance(value, list | tuple) else "Object"


_DOTLESS_I: Final = "\u0131"


def _fold(text: str) -> str:
    # Upper-casing like GitHub, which leaves the dotless i alone (it would become 'I').
    return _DOTLESS_I.join(part.upper() for part in text.split(_DOTLESS_I))


def _coerce(left: object, right: object) -> tuple[object, object]:
    left_kind, right_kind = _kind(left), _kind(right)
    if left_kind == right_kind:
        return left, right
    if left_kind in ("null", "boolean"):
        return _coerce(_to_number(left), right)
    if right_kind in ("null", "boolean"):
        return _coerce(left, _to_number(right))
    if (left_kind, right_kind) == ("number", "string"):
        return left, _to_number(right)
    if (left_kind, right_kind) == ("string", "number"):
        return _to_number(left), right
    return left, right


def _equals(left: object, right: object) -> bool:
    left, right = _coerce(left, right)
    kind = _kind(left)
    if kind != _kind(right):
        return False
    if kind == "null":
        return True
    if kind == "string":
        return _fold(str(left)) == _fold(str(right))
    if kind in ("number", "boolean"):
        return left == right  # NaN == NaN is already False
    return left is right


def _greater(left: object, right: object) -> bool:
    left, right = _coerce(left, right)
    kind = _kind(left)
    if kind != _kind(right) or _is_nan(left) or _is_nan(right):
        return False
    if kind == "number":
        return _to_number(left) > _to_number(right)
    if kind == "string":
        return _fold(str(left)) > _fold(str(right))
    if kind == "boolean":
        return left is True and right is False
    return False


def _less(left: object, right: object) -> bool:
    return _greater(right, left)


_COMPARISONS: Final[Mapping[str, Callable[[object, object], bool]]] = {
    "==": _equals,
    "!=": lambda left, right: not _equals(left, right),
    "<": _less,
    ">": _greater,
    "<=": lambda left, right: _equals(left, right) or _less(left, right),
    ">=": lambda left, right: _equals(left, right) or _greater(left, right),
}


def _member(value: object, name: str) -> object:
    if not isinstance(value, Mapping):
        return None
    if name in value:
        return value[name]
    folded = _fold(name)
    for key in value:
        if isinstance(key, str) and _fold(key) == folded:
            return value[key]
    return None


def _index(value: object, index: object) -> object:
    if isinstance(value, Mapping):
        return _member(value, _to_string(index)) if _is_primitive(index) else None
    if isinstance(value, list | tuple):
        number = _to_number(index)
        if isinstance(number, float):
            if not math.isfinite(number):
                return None
            number = math.floor(number)
        return value[number] if 0 <= number < len(value) else None
    return None


# --- functions ---------------------------------------------------------------------------------


class _CallFailed(Exception):
    """Raised by a function; the evaluator turns it into an ExpressionError at the call."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_Impl: TypeAlias = Callable[[Sequence[object], EvaluationContext], object]


@dataclass(frozen=True)
class _Function:
    name: str
    min_args: int
    max_args: int
    impl: _Impl

    def arity(self) -> str:
        if self.min_args == self.max_args:
            plural = "" if self.min_args == 1 else "s"
            return f"{self.min_args} argument{plural}"
        if self.max_args >= _MANY:
            return f"at least {self.min_args} argument{'' if self.min_args == 1 else 's'}"
        return f"{self.min_args} to {self.max_args} arguments"


_MANY: Final = 1 << 30


def _contains(args: Sequence[object], _: EvaluationContext) -> bool:
    search, item = args
    if _is_primitive(search):
        return _is_primitive(item) and _fold(_to_string(item)) in _fold(_to_string(search))
    if isinstance(search, list | tuple):
        return any(_equals(item, element) for element in search)
    return False


def _starts_with(args: Sequence[object], _: EvaluationContext) -> bool:
    text, prefix = args
    if not (_is_primitive(text) and _is_primitive(prefix)):
        return False
    return _fold(_to_string(text)).startswith(_fold(_to_string(prefix)))


def _ends_with(args: Sequence[object], _: EvaluationContext) -> bool:
    text, suffix = args
    if not (_is_primitive(text) and _is_primitive(suffix)):
        return False
    return _fold(_to_string(text)).endswith(_fold(_to_string(suffix)))


def _format_string(template: str, args: Sequence[object]) -> str:
    out: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if char not in "{}":
            brace = min(
                (p for p in (template.find("{", i), template.find("}", i)) if p >= 0),
                default=len(template),
            )
            out.append(template[i:brace])
            i = brace
        elif template.startswith(char * 2, i):
            out.append(char)
            i += 2
        elif char == "}":
            raise _CallFailed(f"format string {template!r} has an unmatched '}}' (write '}}}}')")
        else:
            close = template.find("}", i)
            digits = template[i + 1 : close] if close > i else ""
            if not (digits.isascii() and digits.isdigit()):
                raise _CallFailed(
                    f"format string {template!r} has an invalid placeholder (use {{0}}, {{1}}, "
                    "... and '{{' for a brace)"
                )
            if len(digits) > 6 or int(digits) >= len(args):
                raise _CallFailed(
                    f"format string {template!r} refers to {{{digits}}} but only "
                    f"{len(args)} argument(s) follow it"
                )
            out.append(_to_string(args[int(digits)]))
            i = close + 1
    return "".join(out)


def _format(args: Sequence[object], _: EvaluationContext) -> str:
    return _format_string(_to_string(args[0]), args[1:])


def _join(args: Sequence[object], _: EvaluationContext) -> str:
    value = args[0]
    if _is_primitive(value):
        return _to_string(value)
    if not isinstance(value, list | tuple):
        return ""
    separator = _to_string(args[1]) if len(args) > 1 and _is_primitive(args[1]) else ","
    return separator.join(_to_string(item) for item in value)


def _json_data(value: object, depth: int) -> object:
    if depth > _MAX_DATA_DEPTH:
        raise _CallFailed(f"toJSON: value nests deeper than {_MAX_DATA_DEPTH} levels")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        if abs(value) < _JS_EXPONENT_FROM:
            return value
        try:
            value = float(value)
        except OverflowError:
            return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # as JSON.stringify does
    if isinstance(value, list | tuple):
        return [_json_data(item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        return {
            _to_string(key): _json_data(item, depth + 1)
            for key, item in value.items()
            if _is_primitive(key)
        }
    return {}


def _to_json(args: Sequence[object], _: EvaluationContext) -> str:
    return json.dumps(_json_data(args[0], 0), indent=2, ensure_ascii=False)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _from_json(args: Sequence[object], _: EvaluationContext) -> object:
    text = _to_string(args[0])
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise _CallFailed("fromJSON: the JSON nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        raise _CallFailed(f"fromJSON: invalid JSON ({exc})") from None


def _status_is(status: Status) -> _Impl:
    return lambda _, context: context.status == status


_FUNCTIONS: Final[Mapping[str, _Function]] = {
    function.name.lower(): function
    for function in (
        _Function("success", 0, 0, _status_is("success")),
        _Function("failure", 0, 0, _status_is("failure")),
        _Function("cancelled", 0, 0, _status_is("cancelled")),
        _Function("always", 0, 0, lambda _, __: True),
        _Function("contains", 2, 2, _contains),
        _Function("startsWith", 2, 2, _starts_with),
        _Function("endsWith", 2, 2, _ends_with),
        _Function("format", 1, _MANY, _format),
        _Function("join", 1, 2, _join),
        _Function("toJSON", 1, 1, _to_json),
        _Function("fromJSON", 1, 1, _from_json),
    )
}


# --- evaluator ---------------------------------------------------------------------------------


class _Evaluator:
    def __init__(self, context: EvaluationContext, source: str) -> None:
        self._context = context
        self._source = source

    def evaluate(self, node: _Node) -> object:
        if isinstance(node, _Const):
            return node.value
        if isinstance(node, _Root):
            return _member(self._context.values, node.name)
        if isinstance(node, _Access):
            value = self.evaluate(node.target)
            for part in node.path:
                if isinstance(part, str):
                    value = _member(value, part)
                else:
                    value = _index(value, self.evaluate(part))
            return value
        if isinstance(node, _Not):
            return not _truthy(self.evaluate(node.operand))
        if isinstance(node, _Compare):
            left, right = self.evaluate(node.left), self.evaluate(node.right)
            return _COMPARISONS[node.operator](left, right)
        if isinstance(node, _Logical):
            return self._logical(node)
        args = [self.evaluate(arg) for arg in node.args]
        try:
            return _FUNCTIONS[node.name.lower()].impl(args, self._context)
        except _CallFailed as failure:
            raise ExpressionError(
                failure.reason, position=node.position, source=self._source
            ) from None

    def _logical(self, node: _Logical) -> object:
        value: object = None
        for operand in node.operands:
            value = self.evaluate(operand)
            # && stops at the first falsy operand, || at the first truthy one.
            if _truthy(value) == (node.operator == "||"):
                return value
        return value


__all__ = [
    "DEFAULT_ROOTS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "STATUS_FUNCTIONS",
    "EvaluationContext",
    "Expression",
    "ExpressionError",
    "Status",
    "parse",
]
