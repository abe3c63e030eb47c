"""``bcce doctor``: is this machine ready to run bcce workflows?"""

from __future__ import annotations

import click

from bcce.cli.context import AppHandle
from bcce.cli.output import echo_json
from bcce.errors import ConfigError, ExitCode

SYMBOLS = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red"), "skip": ("-", None)}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--check", "only", multiple=True, help="Run only this check (repeatable).")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, only: tuple[str, ...]) -> None:
    """Check Python, configuration, AWS access and Claude Code; fail on a required failure."""
    from bcce.doctor.registry import DoctorContext, load_checks

    handle = ctx.find_object(AppHandle)
    assert handle is not None
    try:
        doctor_context = DoctorContext(app=handle.get())
        registry = doctor_context.app.doctor_checks() if doctor_context.app else load_checks()
    except ConfigError as error:
        doctor_context = DoctorContext(app=None, config_error=error)
        registry = load_checks()
    unknown = set(only) - set(registry.names())
    if unknown:
        raise click.BadParameter(
            f"unknown check(s) {', '.join(sorted(unknown))}; known: {', '.join(registry.names())}",
            param_hint="--check",
        )
    outcomes = registry.run(doctor_context, set(only) or None)
    failed = [o for o in outcomes if o.result.status == "fail"]
    if as_json:
        echo_json({"ok": not failed, "checks": [o.to_dict() for o in outcomes]})
    else:
        for outcome in outcomes:
            symbol, colour = SYMBOLS[outcome.result.status]
            click.echo(
                f"{click.style(symbol, fg=colour, bold=True)} {outcome.check.title}: "
                f"{outcome.result.message}"
            )
            if outcome.result.fix and outcome.result.status in ("fail", "warn"):
                click.echo(f"    fix: {outcome.result.fix}")
        summary = (
            f"{len(failed)} required check(s) failed" if failed else "all required checks passed"
        )
        click.echo(click.style(summary, fg="red" if failed else "green"))
    if doctor_context.config_error is not None:
        ctx.exit(int(ExitCode.INVALID))
    if failed:
        ctx.exit(int(ExitCode.RUN_FAILED))
