"""``${VAR}`` substitution in workflow values.

Variables come from, highest first: built-ins (``RUN_ID``, ``WORKFLOW_DIR``, ``BEDROCK_MODEL_ID``,
``AWS_REGION``), ``--var K=V``, the workflow's ``env``, and the process environment restricted to
``workflow.env_allowlist``. ``$${VAR}`` is a literal ``${VAR}``. ``${{ expr }}`` is an expression,
evaluated at run time, and left alone here. An undefined variable is an error, never "".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


class UndefinedVariable(Exception):
    def __init__(self, name: str, column: int) -> None:
        super().__init__(name)
        self.name = name
        self.column = column


def substitute_text(text: str, variables: Mapping[str, str]) -> str:
    """Replace each ``${NAME}``; raise :class:`UndefinedVariable` for an unknown name."""

    def replace(match: re.Match[str]) -> str:
        escaped, name = match.groups()
        if escaped:
            return "${" + name + "}"
        try:
            return variables[name]
        except KeyError:
            raise UndefinedVariable(name, match.start()) from None

    return VARIABLE.sub(replace, text) if "${" in text else text


def substitute(
    value: Any,
    variables: Mapping[str, str],
    on_error: Callable[[UndefinedVariable, tuple[str | int, ...]], Exception],
    path: tuple[str | int, ...] = (),
) -> Any:
    """Substitute in every string of nested data; ``on_error`` makes the error for a miss."""
    if isinstance(value, str):
        try:
            return substitute_text(value, variables)
        except UndefinedVariable as exc:
            raise on_error(exc, path) from None
    if isinstance(value, Mapping):
        return {k: substitute(v, variables, on_error, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables, on_error, (*path, i)) for i, v in enumerate(value)]
    return value


def variable_names(text: str) -> list[str]:
    return [m.group(2) for m in VARIABLE.finditer(text) if not m.group(1)]
