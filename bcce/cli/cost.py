"""``bcce cost``: what agent and prompt steps spent, from the cost ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import click

from bcce.cli.context import get_app
from bcce.cli.output import echo_json
from bcce.errors import UsageError

if TYPE_CHECKING:
    from bcce.events.cost import CostReport, GroupBy, ReportRow

GROUP_CHOICES = ["team", "project", "workflow", "model", "day"]


@click.group()
def cost() -> None:
    """Report model spend by team, project, workflow, model or day."""


@cost.command(name="report")
@click.option(
    "--since", help="From this time: 7d (also 12h, 2w, 30m) ago, a date 2026-12-01, or ISO time."
)
@click.option("--until", help="Up to this time (a date includes that whole UTC day).")
@click.option(
    "--by",
    type=click.Choice(GROUP_CHOICES),
    default="team",
    show_default=True,
    help="Group the spend by this.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV: one line per group, then (total).")
def report(since: str | None, until: str | None, by: str, as_json: bool, as_csv: bool) -> None:
    """Spend of agent and prompt steps: runs, steps, tokens and US dollars per group."""
    from bcce.core.when import parse_when
    from bcce.events.cost import CostLedger, ledger_path
    from bcce.events.cost import report as build

    if as_json and as_csv:
        raise UsageError("--json and --csv cannot be used together", hint="choose one format")
    start = parse_when(since, option="--since") if since else None
    end = parse_when(until, option="--until", end=True) if until else None
    if start is not None and end is not None and start >= end:
        raise UsageError(
            f"--since ({start.isoformat()}) is not before --until ({end.isoformat()})",
            hint="swap them, or widen the period",
        )
    ledger = CostLedger(ledger_path(get_app().settings().workflow.state_dir))
    result = build(ledger, cast("GroupBy", by), since=start, until=end)
    if ledger.skipped:
        click.echo(
            f"warning: {ledger.skipped} unreadable line(s) in {ledger.path} were skipped", err=True
        )
    if as_json:
        echo_json(result.to_dict())
    elif as_csv:
        click.echo(result.to_csv(), nl=False)
    else:
        _table(result)


def _table(result: CostReport) -> None:
    period = " ".join(
        part
        for part in (
            f"since {result.since.isoformat(timespec='seconds')}" if result.since else "",
            f"until {result.until.isoformat(timespec='seconds')}" if result.until else "",
        )
        if part
    )
    click.echo(f"spend by {result.by}" + (f", {period}" if period else ""))
    if not result.rows:
        click.echo("no recorded spend")
        return
    width = max(len(result.by), len("total"), *(len(row.key) for row in result.rows))
    header = (
        f"{result.by:<{width}}  {'runs':>5}  {'steps':>5}  "
        f"{'input tokens':>12}  {'output tokens':>13}  {'cost (USD)':>12}"
    )
    click.echo(header)
    for row in result.rows:
        click.echo(_line(row, row.key, width))
    click.echo("-" * len(header))
    click.echo(_line(result.total, "total", width))


def _line(row: ReportRow, label: str, width: int) -> str:
    return (
        f"{label:<{width}}  {row.runs:>5}  {row.steps:>5}  {row.input_tokens:>12,}  "
        f"{row.output_tokens:>13,}  {row.cost_usd:>12.4f}"
    )
