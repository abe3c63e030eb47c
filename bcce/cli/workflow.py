"""``bcce workflow``: validate, run, resume, status, cancel, list, report and diagram workflows."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bcce.cli.context import get_app
from bcce.cli.output import echo_json
from bcce.errors import BcceError, ExitCode

if TYPE_CHECKING:
    from bcce.steps.approval import Approval, ApprovalRequest
    from bcce.workflow.runner import RunOptions, RunResult, WorkflowRunner


def _parse_vars(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--var")
        out[name] = value
    return out


@click.group()
def workflow() -> None:
    """Validate, run and inspect workflows."""


@workflow.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--var", "variables", multiple=True, help="A variable NAME=VALUE (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def validate(files: tuple[Path, ...], variables: tuple[str, ...], as_json: bool) -> None:
    """Validate workflow files (syntax, schema and semantics); exit 3 if any is invalid."""
    runner = get_app().workflow.runner()
    parsed = _parse_vars(variables)
    results = []
    for path in files:
        try:
            loaded = runner.load(path, parsed)
            results.append(
                {
                    "file": str(path),
                    "valid": True,
                    "workflow": loaded.name,
                    "steps": sum(1 for _ in loaded.all_steps()),
                }
            )
        except BcceError as error:
            results.append({"file": str(path), "valid": False, "error": error.to_dict()})
    invalid = [r for r in results if not r["valid"]]
    if as_json:
        echo_json({"valid": not invalid, "files": results})
    else:
        for result in results:
            if result["valid"]:
                click.echo(
                    f"{click.style('✓', fg='green')} {result['file']}: "
                    f"{result['workflow']} ({result['steps']} steps)"
                )
            else:
                problem = result["error"]
                where = ": ".join(p for p in (problem["location"], problem["key"]) if p)
                mark = click.style("✗", fg="red")
                click.echo(f"{mark} [{problem['code']}] {where}: {problem['message']}", err=True)
                if problem["hint"]:
                    click.echo(f"  hint: {problem['hint']}", err=True)
    if invalid:
        sys.exit(int(ExitCode.INVALID))


@workflow.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Validate and show the plan; run nothing.")
@click.option("--var", "variables", multiple=True, help="A variable NAME=VALUE (repeatable).")
@click.option("--run-id", help="Use this run id instead of a generated one.")
@click.option(
    "--workspace",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory the steps work in (default: the current directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--approve", is_flag=True, help="Approve the changes apply_diff steps would apply.")
@click.option("--reject", is_flag=True, help="Reject the changes apply_diff steps would apply.")
def run(
    file: Path,
    dry_run: bool,
    variables: tuple[str, ...],
    run_id: str | None,
    workspace: Path | None,
    as_json: bool,
    approve: bool,
    reject: bool,
) -> None:
    """Run a workflow."""
    from bcce.workflow.runner import RunOptions

    app = get_app()
    runner = app.workflow.runner()
    parsed = _parse_vars(variables)
    if dry_run:
        _show_plan(runner, file, parsed, as_json)
        return
    run_id = run_id or app.core.ids().run_id()
    options = RunOptions(variables=parsed, run_id=run_id, workspace=workspace)
    _approvals(options, approve, reject, as_json)
    result = _drive(runner, run_id, as_json, options, lambda: runner.run(file, options))
    sys.exit(result.exit_code)


@workflow.command()
@click.argument("run_id")
@click.option("--from-step", help="Re-run this step and everything after it.")
@click.option("--force", is_flag=True, help="Resume even though the workflow file changed.")
@click.option("--var", "variables", multiple=True, help="A variable NAME=VALUE (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--approve", is_flag=True, help="Approve the changes apply_diff steps would apply.")
@click.option("--reject", is_flag=True, help="Reject the changes apply_diff steps would apply.")
def resume(
    run_id: str,
    from_step: str | None,
    force: bool,
    variables: tuple[str, ...],
    as_json: bool,
    approve: bool,
    reject: bool,
) -> None:
    """Continue a run: finished steps are kept, the rest run."""
    from bcce.workflow.runner import RunOptions

    runner = get_app().workflow.runner()
    options = RunOptions(variables=_parse_vars(variables))
    _approvals(options, approve, reject, as_json)
    result = _drive(
        runner,
        run_id,
        as_json,
        options,
        lambda: runner.resume(run_id, from_step=from_step, force=force, options=options),
    )
    sys.exit(result.exit_code)


@workflow.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(run_id: str, as_json: bool) -> None:
    """Show a run's state and its steps."""
    runner = get_app().workflow.runner()
    state = runner.status(run_id)
    data = state.to_dict()
    data["status"] = runner.effective_status(state)
    if as_json:
        echo_json(data)
        return
    _print_state(data)


@workflow.command()
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Stop a running run and its processes; record it cancelled."""
    click.echo(get_app().workflow.runner().cancel(run_id))


@workflow.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many runs.")
def list_runs(as_json: bool, limit: int) -> None:
    """List runs, newest first."""
    runner = get_app().workflow.runner()
    runs = runner.list_runs()[:limit]
    rows = [
        {
            "run_id": s.run_id,
            "workflow": s.workflow.get("name"),
            "status": runner.effective_status(s),
            "created_at": s.created_at,
            "finished_at": s.finished_at,
        }
        for s in runs
    ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no runs")
        return
    for row in rows:
        click.echo(
            f"{row['run_id']:<28} {_colour(row['status']):<20} "
            f"{row['workflow']:<24} {row['created_at']}"
        )


@workflow.command()
@click.argument("run_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "md", "json"]),
    default="html",
    show_default=True,
    help="A self-contained HTML page, Markdown, or the report's data as JSON.",
)
@click.option(
    "--output",
    "-o",
    metavar="FILE|-",
    help="Write here ('-': standard output). Default: html to <run dir>/report.html, "
    "md and json to standard output.",
)
def report(run_id: str, fmt: str, output: str | None) -> None:
    """Report on a run as one HTML page, Markdown or JSON.

    The timeline of its steps, their durations, retries, cost, policy decisions (denials
    highlighted), the diff that was applied and links to every artifact.
    """
    from bcce.workflow.report import write_report

    app = get_app()
    written = write_report(
        app.workflow.state_store(), run_id, fmt, output, storage=app.storage.backend
    )
    if written.path is None:
        click.echo(written.text, nl=False)
    else:
        click.echo(str(written.path))
    if written.warning:
        click.echo(f"warning: {written.warning}", err=True)


@workflow.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
@click.option("--var", "variables", multiple=True, help="A variable NAME=VALUE (repeatable).")
def diagram(file: Path, fmt: str, variables: tuple[str, ...]) -> None:
    """Print the workflow's step graph as Mermaid or Graphviz dot."""
    from bcce.workflow.diagram import to_dot, to_mermaid

    loaded = get_app().workflow.runner().load(file, _parse_vars(variables))
    click.echo(to_mermaid(loaded) if fmt == "mermaid" else to_dot(loaded))


# -- helpers ---------------------------------------------------------------------------------
def _approvals(options: RunOptions, approve: bool, reject: bool, as_json: bool) -> None:
    """``--approve``/``--reject``, else a person at the terminal when there is one."""
    from bcce.steps.approval import Approval, Verdict

    if approve and reject:
        raise click.UsageError("--approve and --reject exclude each other")
    user = get_app().auth.authenticator().authenticate().user
    if approve or reject:
        verdict = Verdict.APPROVED if approve else Verdict.REJECTED
        options.approval = Approval(verdict, user, "command line")
    elif not as_json and sys.stdin.isatty() and sys.stdout.isatty():
        options.approver = _terminal_approver(user)


def _terminal_approver(user: str) -> Callable[[ApprovalRequest], Approval]:
    from bcce.steps.approval import Approval, Verdict

    def ask(request: ApprovalRequest) -> Approval:
        click.echo(
            click.style(f"\n{request.step_id}: changes to {len(request.files)} file(s)", bold=True)
        )
        for line in request.diff.splitlines():
            colour = "green" if line.startswith("+") else "red" if line.startswith("-") else None
            click.echo(click.style(line, fg=colour))
        approved = click.confirm("Apply these changes to your workspace?", default=False)
        return Approval(Verdict.APPROVED if approved else Verdict.REJECTED, user, "terminal")

    return ask


def _show_plan(
    runner: WorkflowRunner, file: Path, variables: dict[str, str], as_json: bool
) -> None:
    from bcce.workflow.planner import plan_workflow

    loaded = runner.load(file, variables)
    planned = plan_workflow(loaded)
    rows = [runner.describe_step(p) for p in planned]
    if as_json:
        echo_json({"workflow": loaded.name, "dry_run": True, "steps": rows})
        return
    click.echo(f"plan for {loaded.name} ({len(rows)} steps) — nothing will run")
    for planned_step, row in zip(planned, rows, strict=True):
        indent = "  " * (planned_step.depth + 1)
        branch = f"[{planned_step.branch}] " if planned_step.branch else ""
        waits = f" after {', '.join(row['waits_for'])}" if row["waits_for"] else ""
        extras = [f"if {row['if']}"] if row.get("if") else []
        if row.get("timeout_seconds"):
            extras.append(f"timeout {row['timeout_seconds']}s")
        if row.get("retry"):
            extras.append(f"retry x{row['retry']['max_attempts']}")
        if row.get("policy"):
            extras.append("policy " + ", ".join(f"{k}={v}" for k, v in row["policy"].items()))
        suffix = f"  ({'; '.join(extras)})" if extras else ""
        click.echo(f"{indent}{branch}{row['id']} [{row['type']}]{waits}{suffix}")


def _drive(
    runner: WorkflowRunner,
    run_id: str,
    as_json: bool,
    options: RunOptions,
    call: Callable[[], RunResult],
) -> RunResult:
    from bcce.cli.live import LiveView

    view = None if as_json else LiveView(run_id, interactive=sys.stdout.isatty())
    if view is not None:
        options.echo = view.echo if view.interactive else None
    with _cancel_on_signals(runner, run_id), _subscribed(runner, view):
        result = call()
    if as_json:
        data = result.state.to_dict()
        data["exit_code"] = result.exit_code
        echo_json(data)
    elif view is not None:
        view.summary(result)
    return result


@contextlib.contextmanager
def _subscribed(runner: WorkflowRunner, view: Any) -> Iterator[None]:
    if view is None:
        yield
        return
    runner.bus.subscribe("*", view.on_event)
    try:
        yield
    finally:
        runner.bus.unsubscribe("*", view.on_event)


@contextlib.contextmanager
def _cancel_on_signals(runner: WorkflowRunner, run_id: str) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop the run cleanly. A second SIGINT interrupts at once."""
    requested = False

    def handler(signum: int, _frame: object) -> None:
        nonlocal requested
        if requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested = True
        click.echo("\nstopping the run; always() steps still run (again to stop at once)", err=True)
        with contextlib.suppress(BcceError):
            runner.request_cancel(run_id)

    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (embedded use): no handlers
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


_COLOURS = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "interrupted": "magenta",
    "awaiting_approval": "blue",
    "timed_out": "red",
    "skipped": None,
    "pending": None,
    "retrying": "yellow",
}


def _colour(status: str) -> str:
    return click.style(status, fg=_COLOURS.get(status))


def _print_state(data: dict[str, Any]) -> None:
    click.echo(
        f"run {data['run_id']}  {_colour(data['status'])}  workflow {data['workflow'].get('name')}"
    )
    click.echo(
        f"  started {data.get('started_at') or '-'}  finished {data.get('finished_at') or '-'}"
    )
    if data.get("error"):
        click.echo(f"  {data['error']}")
    for step_id in data["order"]:
        info = data["steps"].get(step_id, {})
        duration = info.get("duration_seconds")
        took = f"{duration:.2f}s" if isinstance(duration, int | float) else ""
        attempts = info.get("attempts") or 0
        extra = f" attempts={attempts}" if attempts > 1 else ""
        error = f"  {info['error']}" if info.get("error") else ""
        click.echo(
            f"  {step_id:<24} {_colour(info.get('status', 'pending')):<20} {took:>8}{extra}{error}"
        )
