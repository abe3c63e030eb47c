"""The ``bcce`` root command."""

from __future__ import annotations

import sys
from typing import Any

import click

from bcce._version import __version__
from bcce.cli.context import AppHandle, is_debug
from bcce.cli.lazy import LazyGroup
from bcce.errors import BcceError, ExitCode

LOG_LEVELS = ["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"]

SUBCOMMANDS = {
    "config": "bcce.cli.config:config",
    "doctor": "bcce.cli.doctor:doctor",
    "models": "bcce.cli.models:models",
    "workflow": "bcce.cli.workflow:workflow",
    "policy": "bcce.cli.policy:policy",
    "plugin": "bcce.cli.plugin:plugin",
    "audit": "bcce.cli.audit:audit",
    "cost": "bcce.cli.cost:cost",
}


class BcceGroup(LazyGroup):
    """Turns bcce's errors into one clear message and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BcceError as error:
            if is_debug(ctx):
                import traceback

                traceback.print_exc(file=sys.stderr)
            click.echo(click.style("error: ", fg="red", bold=True) + error.render(), err=True)
            ctx.exit(int(error.exit_code))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))


@click.group(
    cls=BcceGroup,
    lazy_subcommands=SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--config",
    "config_files",
    multiple=True,
    # Converted to Path in build(): importing pathlib here would slow every `bcce --help`.
    type=click.Path(dir_okay=False),
    help="A YAML configuration file (repeatable; later files win).",
)
@click.option("--env", "env_name", help="Environment: loads config/environments/ENV.yaml.")
@click.option(
    "--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), help="Log verbosity."
)
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log record format.")
@click.version_option(__version__, prog_name="bcce")
@click.pass_context
def cli(
    ctx: click.Context,
    config_files: tuple[str, ...],
    env_name: str | None,
    log_level: str | None,
    log_format: str | None,
) -> None:
    """bcce: governed, auditable, resumable Claude Code workflows on Amazon Bedrock.

    Exit codes: 0 ok, 1 a run failed, 2 usage, 3 invalid configuration or workflow,
    4 plugin error, 5 denied by policy, 6 not authorised, 130 interrupted.
    """
    if isinstance(ctx.obj, AppHandle):
        return
    if ctx.obj is not None:  # a test or an embedding program handed us its application
        ctx.obj = AppHandle(app=ctx.obj)
        return
    core: dict[str, str] = {}
    if log_level:
        core["log_level"] = log_level.upper()
    if log_format:
        core["log_format"] = log_format

    def build() -> Any:
        from pathlib import Path

        from bcce.application import create_application
        from bcce.settings.layers import LayerOptions

        options = LayerOptions(
            config_files=tuple(Path(f) for f in config_files),
            env_name=env_name,
            override_label="command line",
        )
        overrides: dict[str, Any] = {"core": core} if core else {}
        return create_application(options=options, **overrides)

    ctx.obj = AppHandle(build)


def run(args: list[str]) -> int:
    """Run the command line with ``args``; return the exit code."""
    try:
        cli.main(args=args, prog_name="bcce", standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
