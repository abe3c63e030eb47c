"""``bcce workflow``: validate, run, resume, status, cancel, list, report and diagram workflows;
list and get a run's artifacts, archive runs and prune old ones."""

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
    from bcce.auth.provider import Identity
    from bcce.steps.approval import Approval, ApprovalRequest
    from bcce.workflow.artifacts import ArchivedRun
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
    _approvals(runner, options, approve, reject, as_json)
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
    _approvals(runner, options, approve, reject, as_json)
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
    """Show a run's state and its steps.

    A run that is not in the state directory is read back from its archive in the storage
    backend, when there is one (``archive`` in the JSON says where from).
    """
    from bcce.workflow.artifacts import locate_run

    app = get_app()
    runner = app.workflow.runner()
    found = locate_run(runner.store, app.storage.backend, run_id)
    if found.archived is None:
        state = runner.status(run_id)
        data = state.to_dict()
        data["status"] = runner.effective_status(state)
    else:
        data = found.store.load(run_id).to_dict()  # as archived: no process drives it here
        data["archive"] = _archive_note(found.archived, runner.store.root)
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
    from bcce.workflow.artifacts import locate_run
    from bcce.workflow.report import write_report

    app = get_app()
    found = locate_run(app.workflow.state_store(), app.storage.backend, run_id)
    if found.archived is not None:
        _archive_note(found.archived, app.workflow.state_store().root)
    written = write_report(
        found.store,
        run_id,
        fmt,
        output,
        # An archived run's copy is not the run: a report of it is not stored with its files.
        storage=app.storage.backend if found.archived is None else None,
    )
    if written.path is None:
        click.echo(written.text, nl=False)
    else:
        click.echo(str(written.path))
    if written.warning:
        click.echo(f"warning: {written.warning}", err=True)


@workflow.command()
@click.argument("run_id")
@click.option("--step", "step", metavar="ID", help="Only this step's artifacts.")
@click.option(
    "--get",
    "name",
    metavar="NAME",
    help="Write one artifact's content: its path in the run (build/output.txt), or in the "
    "--step folder (output.txt).",
)
@click.option(
    "--output",
    "-o",
    metavar="FILE|-",
    help="With --get: write to FILE (atomically) instead of standard output ('-').",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def artifacts(
    run_id: str, step: str | None, name: str | None, output: str | None, as_json: bool
) -> None:
    """List a run's artifacts with their sizes, from the storage backend; or get one."""
    from bcce.core.durable import atomic_writer
    from bcce.errors import UsageError
    from bcce.workflow.artifacts import get_artifact, list_artifacts
    from bcce.workflow.report.text import size

    app = get_app()
    backend = app.storage.backend()
    store = app.workflow.state_store()
    if name is None:
        if output is not None:
            raise UsageError("--output goes with --get NAME", hint="add --get NAME")
        items = list_artifacts(backend, store, run_id, step=step)
        if as_json:
            echo_json(
                {
                    "run_id": run_id,
                    "location": backend.location(run_id),
                    "artifacts": [{"name": a.name, "step": a.step, "size": a.size} for a in items],
                }
            )
            return
        click.echo(f"artifacts of run {run_id} in {backend.location(run_id)}")
        for item in items:
            click.echo(f"  {size(item.size):>10}  {item.name}")
        total = sum(a.size for a in items)
        click.echo(f"{len(items)} file(s), {size(total)}")
        return
    if as_json:
        raise UsageError(
            "--json lists artifacts; --get writes one's content", hint="drop one of them"
        )
    if output is None or output == "-":
        stdout = sys.stdout.buffer
        get_artifact(backend, store, run_id, name, into=stdout, step=step)
        stdout.flush()
        return
    target = Path(output)
    if target.is_dir():
        raise UsageError(
            f"--output {target} is a directory",
            hint=f"name a file, e.g. {target / Path(name).name}",
        )
    with atomic_writer(target) as handle:
        written = get_artifact(backend, store, run_id, name, into=handle, step=step)
    click.echo(f"{target} ({size(written.size)})")


@workflow.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def archive(run_id: str, as_json: bool) -> None:
    """Archive a run in the storage backend now: its files, then the manifest.

    Refuses a run that a process is driving (exit 1). Prints where the archive is.
    """
    from bcce.events.bus import Event
    from bcce.workflow.artifacts import archive_now

    app = get_app()
    bus = app.events.bus()

    def publish(event_type: str, payload: dict[str, Any]) -> None:
        bus.publish(Event(event_type, payload, run_id=run_id))

    outcome = archive_now(
        app.workflow.state_store(), app.storage.backend(), run_id, publish=publish
    )
    result = outcome.result
    if as_json:
        echo_json(
            {
                "run_id": run_id,
                "location": outcome.location,
                "archived": result is not None,
                "files": result.files if result else None,
                "bytes": result.total_bytes if result else None,
                "uploaded": result.uploaded if result else None,
            }
        )
        return
    if result is None:
        click.echo(
            f"run {run_id} is kept in {outcome.location}: the storage backend is the run "
            "directory itself, so there is nothing to archive"
        )
        return
    from bcce.workflow.report.text import size

    click.echo(result.location)
    click.echo(
        f"{result.files} file(s), {size(result.total_bytes)}; {result.uploaded} uploaded now",
        err=True,
    )


@workflow.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="AGE",
    help="Remove runs that finished, and cached archive copies last used, before then: "
    "an age (30d, 12h, 2w) or a date.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@click.option(
    "--include-unarchived",
    is_flag=True,
    help="With a remote storage backend, also remove runs it holds no archive of.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def prune(older_than: str, dry_run: bool, include_unarchived: bool, as_json: bool) -> None:
    """Delete local run directories of runs that finished before a cutoff.

    Never a run that is running, interrupted, awaiting approval or driven by a process; with a
    remote storage backend, only runs archived there (unless --include-unarchived). Copies of
    archived runs read back into the state directory go when unused since the cutoff.
    """
    from bcce.core.when import parse_when
    from bcce.workflow.report.text import size
    from bcce.workflow.retention import prune_runs

    cutoff = parse_when(older_than, option="--older-than")
    app = get_app()
    report = prune_runs(
        app.workflow.state_store(),
        cutoff=cutoff,
        backend=app.storage.backend(),
        include_unarchived=include_unarchived,
        dry_run=dry_run,
    )
    if as_json:
        echo_json(report.to_dict())
        return
    verb = "would remove" if dry_run else "removed"
    for decision in report.removed:
        click.echo(
            f"{verb:<12} {decision.run_id:<28} {_padded(decision.status, 20)} "
            f"{size(decision.bytes):>9}  {decision.reason}"
        )
    for decision in report.kept:
        click.echo(
            f"{'kept':<12} {decision.run_id:<28} {_padded(decision.status, 20)} "
            f"{'':>9}  {decision.reason}"
        )
    for copy in report.cached:
        click.echo(
            f"{verb:<12} {copy.run_id:<28} {'cached copy':<20} {size(copy.bytes):>9}  {copy.reason}"
        )
    freed = size(sum(d.bytes for d in report.removed))
    summary = f"{len(report.removed)} {verb} ({freed}), {len(report.kept)} kept"
    if report.cached:
        copies = "copy" if len(report.cached) == 1 else "copies"
        cached = size(sum(c.bytes for c in report.cached))
        summary += f"; {verb} {len(report.cached)} cached archive {copies} ({cached})"
    click.echo(summary + (" — dry run: nothing was deleted" if dry_run else ""))


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
def _archive_note(archived: ArchivedRun, state_dir: Path) -> dict[str, Any]:
    """Say on standard error that the run was read back from its archive; the JSON of it."""
    click.echo(
        f"run {archived.run_id} is not in {state_dir}: read back from its archive "
        f"{archived.location} (archived {archived.manifest.archived_at}; copy in "
        f"{archived.directory})",
        err=True,
    )
    return {
        "location": archived.location,
        "archived_at": archived.manifest.archived_at,
        "copy": str(archived.directory),
    }


def _approvals(
    runner: WorkflowRunner, options: RunOptions, approve: bool, reject: bool, as_json: bool
) -> None:
    """``--approve``/``--reject``, else a person at the terminal when there is one.

    Either carries the authenticated identity: authorisation checks who approves by it.
    """
    from bcce.steps.approval import Approval, Verdict

    if approve and reject:
        raise click.UsageError("--approve and --reject exclude each other")
    identity = runner.authoriser.authenticate()  # a failed login is audited (auth.failed)
    if approve or reject:
        verdict = Verdict.APPROVED if approve else Verdict.REJECTED
        options.approval = Approval(verdict, identity.user, "command line", identity=identity)
    elif not as_json and sys.stdin.isatty() and sys.stdout.isatty():
        options.approver = _terminal_approver(identity)


def _terminal_approver(identity: Identity) -> Callable[[ApprovalRequest], Approval]:
    from bcce.steps.approval import Approval, Verdict

    def ask(request: ApprovalRequest) -> Approval:
        click.echo(
            click.style(f"\n{request.step_id}: changes to {len(request.files)} file(s)", bold=True)
        )
        for line in request.diff.splitlines():
            colour = "green" if line.startswith("+") else "red" if line.startswith("-") else None
            click.echo(click.style(line, fg=colour))
        approved = click.confirm("Apply these changes to your workspace?", default=False)
        verdict = Verdict.APPROVED if approved else Verdict.REJECTED
        return Approval(verdict, identity.user, "terminal", identity=identity)

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


def _padded(status: str, width: int) -> str:
    """The coloured status, padded by its visible width (colour codes take none)."""
    return _colour(status) + " " * max(width - len(status), 0)


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
