"""Small rendering helpers shared by commands."""

from __future__ import annotations

import json
from typing import Any

import click


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value)
