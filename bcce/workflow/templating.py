"""``${{ expression }}`` interpolation in step values at run time (outputs of earlier steps)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from bcce.errors import WorkflowError
from bcce.workflow.expressions import EvaluationContext, Expression, parse

OPEN, CLOSE = "${{", "}}"


def _segments(text: str) -> Iterator[tuple[str, bool, int]]:
    """Yield ``(piece, is_expression, offset)``; quotes inside an expression may contain ``}}``."""
    position = 0
    while True:
        start = text.find(OPEN, position)
        if start < 0:
            yield text[position:], False, position
            return
        yield text[position:start], False, position
        index = start + len(OPEN)
        quoted = False
        while index < len(text):
            char = text[index]
            if char == "'":
                quoted = not quoted
            elif not quoted and text.startswith(CLOSE, index):
                break
            index += 1
        else:
            raise WorkflowError(
                f"unterminated '${{{{' at column {start + 1}",
                hint="close the expression with '}}'",
            )
        yield text[start + len(OPEN) : index], True, start
        position = index + len(CLOSE)


def expressions_in(text: str, roots: frozenset[str]) -> list[tuple[Expression, int]]:
    """Parse every ``${{ }}`` in ``text`` (for validation); each with its column offset."""
    if OPEN not in text:
        return []
    return [
        (parse(piece, roots=roots), offset) for piece, is_expr, offset in _segments(text) if is_expr
    ]


def render(text: str, context: EvaluationContext, roots: frozenset[str]) -> str:
    """Replace each ``${{ expr }}`` in ``text`` with its value as text."""
    if OPEN not in text:
        return text
    out = []
    for piece, is_expr, _ in _segments(text):
        out.append(_as_text(parse(piece, roots=roots).evaluate(context)) if is_expr else piece)
    return "".join(out)


def render_data(value: Any, context: EvaluationContext, roots: frozenset[str]) -> Any:
    if isinstance(value, str):
        return render(value, context, roots)
    if isinstance(value, dict):
        return {k: render_data(v, context, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [render_data(v, context, roots) for v in value]
    return value


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)
