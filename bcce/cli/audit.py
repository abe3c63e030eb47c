"""``bcce audit``: verify and search the tamper-evident audit trail.

Both commands read the trail that ``events.audit.file`` names (default
``<workflow.state_dir>/audit.jsonl``), or ``--file``; ``verify`` uses ``events.audit.key``
(from any settings layer, SSM included) to check an HMAC-keyed trail.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bcce.cli.context import get_app
from bcce.cli.output import echo_json
from bcce.errors import BcceError

if TYPE_CHECKING:
    import datetime

    from bcce.events.audit import Problem, VerifyReport

DETAIL_WIDTH = 80


class TimeBound(click.ParamType["datetime.datetime"]):
    """A date, an ISO time or an age such as ``7d``; ``end`` reads a bare date as its end."""

    name = "time"

    def __init__(self, *, end: bool = False) -> None:
        self.end = end

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime.datetime:
        from bcce.core.when import parse_when

        option = param.opts[0] if param is not None and param.opts else "time"
        try:
            return parse_when(str(value), option=option, end=self.end)
        except BcceError as error:
            self.fail(f"{error.message} ({error.hint})", param, ctx)


FILE_OPTION = click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The trail to read (default: events.audit.file, else <workflow.state_dir>/audit.jsonl).",
)


@click.group()
def audit() -> None:
    """Verify and search the tamper-evident audit trail."""


@audit.command()
@click.option("--run", "run_id", help="Report the problems that concern this run's records.")
@FILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify(run_id: str | None, file: Path | None, as_json: bool) -> None:
    """Check that no record was edited, deleted, reordered or cut off the end.

    Exit 0 when the trail is intact; otherwise every problem is listed with its kind and where
    it is, and the exit status is 1 (BCCE900). A missing trail exits 1 (BCCE901).
    """
    from bcce.events.audit import trail_key, trail_path
    from bcce.events.audit import verify as verify_trail

    settings = get_app().settings()
    report = verify_trail(file or trail_path(settings), key=trail_key(settings), run_id=run_id)
    if as_json:
        echo_json(report.to_dict())
        if not report.intact:
            sys.exit(int(report.error().exit_code))
        return
    _print_report(report)
    if not report.intact:
        raise report.error()


@audit.command()
@click.option("--run", "run_id", help="Only this run's records.")
@click.option("--user", help="Only records of this user (the auth provider's user name).")
@click.option(
    "--type",
    "types",
    multiple=True,
    help="Only these event types; wildcards allowed (policy.*). Repeatable.",
)
@click.option("--since", type=TimeBound(), help="From: 2026-12-01, 2026-12-01T09:30, 7d, 2h.")
@click.option("--until", type=TimeBound(end=True), help="Before (a date includes its day).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the last N matching records.")
@FILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def search(
    run_id: str | None,
    user: str | None,
    types: tuple[str, ...],
    since: datetime.datetime | None,
    until: datetime.datetime | None,
    limit: int | None,
    file: Path | None,
    as_json: bool,
) -> None:
    """List the records that match every filter given, oldest first.

    Searching does not verify the trail: run `bcce audit verify` for that.
    """
    from bcce.events.audit import search as search_trail
    from bcce.events.audit import trail_path

    path = file or trail_path(get_app().settings())
    records = search_trail(
        path, run_id=run_id, user=user, types=types, since=since, until=until, limit=limit
    )
    if as_json:
        echo_json({"file": str(path), "count": len(records), "records": records})
        return
    if not records:
        click.echo("no matching records")
        return
    rows = [
        [
            str(record.get("time", "")),
            str(record.get("seq", "")),
            _user(record),
            str(record.get("type", "")),
            str(record.get("run_id") or "-"),
            str(record.get("step") or "-"),
            _detail(record.get("payload")),
        ]
        for record in records
    ]
    _table(["TIME", "SEQ", "USER", "TYPE", "RUN", "STEP", "DETAIL"], rows)


# -- rendering -------------------------------------------------------------------------------
def _print_report(report: VerifyReport) -> None:
    chains: dict[tuple[str, ...], str] = {
        ("hmac-sha256",): "HMAC-SHA256 chain",
        ("sha256",): "SHA-256 chain (no key)",
    }
    chain = chains.get(report.algorithms, " + ".join(report.algorithms) or "empty")
    span = f"seq {report.first_seq}-{report.last_seq}" if report.first_seq is not None else "no seq"
    anchor = f"anchor at seq {report.anchor.seq}" if report.anchor is not None else "no anchor"
    click.echo(f"{report.path}: {report.records} records, {span}, {chain}, {anchor}")
    if report.run_id is not None:
        click.echo(f"run {report.run_id}: {report.run_records} records")
    for note in report.notes:
        click.echo(f"note: {note}")
    if report.other_runs:
        many = report.other_runs != 1
        click.echo(
            f"{report.other_runs} problem{'s' if many else ''} concern{'' if many else 's'} "
            "other runs' records (bcce audit verify lists them)"
        )
    if report.intact:
        scope = f" for run {report.run_id}" if report.run_id else ""
        click.echo(click.style("✓", fg="green") + f" intact{scope}")
        return
    if report.problems:
        title = f"problems concerning run {report.run_id}" if report.run_id else "problems"
        _print_problems(f"{title} ({len(report.problems)}):", report.problems)
    if report.unattributed:
        _print_problems(
            f"problems that cannot be attributed to a run; they may concern "
            f"{report.run_id} ({len(report.unattributed)}):",
            report.unattributed,
        )


def _print_problems(title: str, problems: list[Problem]) -> None:
    click.echo(f"\n{title}")
    width = max(len(p.kind) for p in problems)
    for problem in problems:
        mark = click.style("✗", fg="red")
        run = f" (run {problem.run_id})" if problem.run_id else ""
        click.echo(f"  {mark} {problem.kind.ljust(width)}  {problem.where}{run}: {problem.message}")


def _user(record: dict[str, Any]) -> str:
    actor = record.get("actor")
    return str(actor.get("user", "?")) if isinstance(actor, dict) else "?"


def _detail(payload: Any) -> str:
    if not isinstance(payload, dict):
        return ""
    import json

    parts = [
        f"{key}={value if isinstance(value, str) else json.dumps(value, default=str)}"
        for key, value in payload.items()
        if key != "step"
    ]
    text = " ".join(parts)
    return text if len(text) <= DETAIL_WIDTH else text[: DETAIL_WIDTH - 1] + "…"


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        click.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
