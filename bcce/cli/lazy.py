"""A Click group whose subcommands are imported only when they run (keeps ``bcce --help`` fast)."""

from __future__ import annotations

import importlib
from typing import Any

import click


class LazyGroup(click.Group):
    """Subcommands given as ``{"name": "module.path:attribute"}``, imported on first use."""

    def __init__(
        self, *args: Any, lazy_subcommands: dict[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            return self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, name: str) -> click.Command:
        module_name, attribute = self.lazy_subcommands[name].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy_subcommands[name]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help lists names with a short description without importing each subcommand.
        rows = [(name, LAZY_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


LAZY_HELP: dict[str, str] = {
    "config": "Show and validate the layered configuration.",
    "doctor": "Check Python, configuration, AWS access and Claude Code.",
    "models": "List Claude models on Amazon Bedrock and recommend one.",
    "workflow": "Validate, run, resume and inspect workflows.",
    "policy": "Check commands and paths against a step policy.",
    "plugin": "List, inspect, validate, sign and manage plugins.",
    "audit": "Verify and search the tamper-evident audit trail.",
    "cost": "Report model spend by team, project, workflow, model or day.",
}
