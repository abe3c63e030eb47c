"""``bcce policy``: try a policy against a command or a path before a workflow relies on it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bcce.cli.output import echo_json
from bcce.errors import ExitCode


@click.group()
def policy() -> None:
    """Check commands and paths against a step policy."""


@policy.command()
@click.option("--policy", "policy_ref", required=True, help="A preset name or a policy YAML file.")
@click.option("--command", help="A command line to check against the allowlist.")
@click.option("--read", "read_path", help="A path the agent would read.")
@click.option("--write", "write_path", help="A path the agent would write.")
@click.option(
    "--workspace",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(),
    help="The workspace paths are relative to (default: current directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(
    policy_ref: str,
    command: str | None,
    read_path: str | None,
    write_path: str | None,
    workspace: Path,
    as_json: bool,
) -> None:
    """Exit 0 if the policy allows it, 5 if it denies it (with the rule and the reason)."""
    from bcce.policy.checks import check_against
    from bcce.policy.presets import load_policy

    chosen = [o for o in (command, read_path, write_path) if o is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --command, --read, --write")
    decision = check_against(
        load_policy(policy_ref), workspace, command=command, read=read_path, write=write_path
    )
    if as_json:
        echo_json({"allowed": decision.allowed, "rule": decision.rule, "reason": decision.reason})
    else:
        verdict = click.style(
            "allow" if decision.allowed else "deny",
            fg="green" if decision.allowed else "red",
            bold=True,
        )
        click.echo(f"{verdict} [{decision.rule}] {decision.reason}")
    sys.exit(int(ExitCode.OK if decision.allowed else ExitCode.POLICY_DENIED))
