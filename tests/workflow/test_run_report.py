"""The run report (``bcce workflow report``): its model and its renderers, from real runs.

Two runs are made once for the module: a cmd workflow (success, a failure the run goes on after,
a retry, a skipped step, parallel, composite and conditional blocks, a step printing hostile
markup) and the quickstart with scripted model replies (an agent step with two denied tool calls
and a fix that apply_diff applies). Tests check what the report says against what the run
recorded, not snapshots of whole files.
"""

from __future__ import annotations

import contextlib
import datetime
import html.parser
import importlib.util
import json
import os
import re
import shutil
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import pytest
import yaml
from click.testing import CliRunner, Result

from bcce.workflow.report import build_report, render, write_report
from bcce.workflow.report.model import RunReport

if TYPE_CHECKING:
    from bcce.containers.application import Application

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
HOSTILE = """<script>alert("x")</script> & <b>bold</b>"""

CMD_WORKFLOW = """
version: 1
workflow: report-demo
steps:
  - id: prepare
    name: Prepare the <b>build</b>
    type: cmd
    command: sleep 0.3; echo '<script>alert("x")</script> & <b>bold</b>'
  - id: flaky
    type: cmd
    command: test -f flaky.flag || { touch flaky.flag; sleep 0.2; exit 1; }; sleep 0.2
    retry: {max_attempts: 3, backoff_seconds: 0.2, jitter: false}
  - id: checks
    type: parallel
    steps:
      - {id: lint, type: cmd, command: sleep 0.3}
      - {id: unit, type: cmd, command: sleep 0.5}
  - id: broken
    type: cmd
    command: echo boom >&2; exit 3
    on_error: continue
  - id: never
    type: cmd
    command: echo never
    if: "false"
  - id: group
    type: composite
    steps:
      - {id: inner, type: cmd, command: sleep 0.1}
      - id: pick
        type: conditional
        condition: "true"
        then:
          - {id: yes_branch, type: cmd, command: "true"}
        else:
          - {id: no_branch, type: cmd, command: "true"}
"""
CMD_ORDER = [
    "prepare",
    "flaky",
    "checks",
    "lint",
    "unit",
    "broken",
    "never",
    "group",
    "inner",
    "pick",
    "yes_branch",
    "no_branch",
]


# -- the runs ----------------------------------------------------------------------------------
@dataclass
class Run:
    """A finished run made for the module, and its application (same state directory)."""

    app: Application
    run_id: str
    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def directory(self) -> Path:
        return self.runs / self.run_id

    def report(self) -> RunReport:
        return build_report(self.app.workflow.state_store(), self.run_id)

    def cli(self, *args: str | Path) -> Result:
        from bcce.cli.main import cli

        return CliRunner().invoke(cli, [str(a) for a in args], obj=self.app)

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.directory / "run.json").read_text())
        return data

    def events(self) -> list[dict[str, Any]]:
        lines = (self.directory / "events.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


def _make_app(root: Path, **overrides: Any) -> Application:
    from bcce.application import create_application
    from bcce.settings.layers import LayerOptions

    runs = str(root / "runs")
    options = LayerOptions(
        environ={"PATH": os.environ["PATH"]}, cwd=root, user_config_file=root / "none.yaml"
    )
    sections: dict[str, Any] = {
        "storage": {"root": runs},
        "workflow": {"state_dir": runs, "kill_grace_seconds": 0.3},
        **overrides,
    }
    return create_application(options=options, **sections)


def _run(root: Path, app: Application, workflow: Path, run_id: str, *args: str | Path) -> Run:
    from bcce.cli.main import cli

    result = CliRunner().invoke(
        cli,
        ["workflow", "run", str(workflow), "--run-id", run_id, *map(str, args)],
        obj=app,
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return Run(app, run_id, root)


@pytest.fixture(scope="module")
def cmd_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("report-cmd")
    workflow = root / "workflow.yml"
    workflow.write_text(textwrap.dedent(CMD_WORKFLOW).lstrip())
    app = _make_app(root)
    try:
        yield _run(root, app, workflow, "cmd-run", "--workspace", root)
    finally:
        app.shutdown_resources()
        app.reset_singletons()


def _needs_claude_code() -> None:
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or spec.origin is None:
        pytest.skip("claude-agent-sdk is not installed")
    if not (Path(spec.origin).parent / "_bundled" / "claude").is_file():
        pytest.skip("claude-agent-sdk has no bundled Claude Code CLI")


@contextlib.contextmanager
def _quickstart(
    root: Path, run_id: str, workflow: Path = QUICKSTART / "workflow.yml"
) -> Iterator[Run]:
    """The quickstart as ``make demo`` runs it (scripted replies, the real Claude Code), on a
    copy of its project."""
    _needs_claude_code()
    project = root / "project"
    shutil.copytree(QUICKSTART / "project", project)
    app = _make_app(
        root,
        agent={"provider": "scripted", "script": str(QUICKSTART / "scripts"), "max_turns": 20},
    )
    try:
        yield _run(root, app, workflow, run_id, "--workspace", project, "--approve")
    finally:
        app.shutdown_resources()
        app.reset_singletons()


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with _quickstart(tmp_path_factory.mktemp("report-quickstart"), "qs-run") as run:
        assert run.state()["status"] == "succeeded"
        yield run


@pytest.fixture(scope="module")
def cmd_report(cmd_run: Run) -> RunReport:
    return cmd_run.report()


@pytest.fixture(scope="module")
def qs_report(quickstart_run: Run) -> RunReport:
    return quickstart_run.report()


# -- reading what was rendered -----------------------------------------------------------------
class Page(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text, of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def hrefs(self) -> list[str]:
        return [a["href"] for tag, a in self.tags if tag == "a" and "href" in a]

    def all_text(self) -> str:
        return "".join(self.text)

    def with_class(self, tag: str, name: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and name in a.get("class", "").split()]


def _files_under(run_dir: Path) -> set[Path]:
    """Every file the report should link: each step folder's files and the run's own files."""
    state = json.loads((run_dir / "run.json").read_text())
    found = {
        path.resolve()
        for step_id in state["order"]
        if (run_dir / step_id).is_dir()
        for path in (run_dir / step_id).rglob("*")
        if path.is_file()
    }
    for name in ("run.json", "journal.jsonl", "events.jsonl", "junit.xml"):
        found.add((run_dir / name).resolve())
    return found


def _linked_files(hrefs: list[str], report_dir: Path) -> set[Path]:
    return {(report_dir / unquote(h)).resolve() for h in hrefs if not h.startswith("#")}


def _times(events: list[dict[str, Any]], step: str) -> list[tuple[str, datetime.datetime]]:
    return [
        (e["type"], datetime.datetime.fromisoformat(e["time"]))
        for e in events
        if e["payload"].get("step") == step and e["type"].startswith("step.")
    ]


# -- the model of a cmd run --------------------------------------------------------------------
def test_steps_come_in_plan_order_with_their_nesting(cmd_report: RunReport) -> None:
    assert [s.id for s in cmd_report.steps] == CMD_ORDER
    nesting = {s.id: (s.parent, s.depth, s.branch) for s in cmd_report.steps}
    assert nesting["prepare"] == (None, 0, None)
    assert nesting["unit"] == ("checks", 1, None)
    assert nesting["pick"] == ("group", 1, None)
    assert nesting["yes_branch"] == ("pick", 2, "then")
    assert nesting["no_branch"] == ("pick", 2, "else")
    assert {s.id for s in cmd_report.steps if s.control} == {"checks", "group", "pick"}


def test_each_attempt_of_a_retried_step_is_a_segment_of_its_own(cmd_report: RunReport) -> None:
    flaky = cmd_report.step("flaky")
    assert [(s.attempt, s.status) for s in flaky.segments] == [(1, "retried"), (2, "succeeded")]
    assert flaky.attempts == 2 and flaky.retries == 1
    assert flaky.segments[0].error == "command exited with code 1"
    first, second = flaky.segments
    backoff = second.offset_seconds - (first.offset_seconds + first.duration_seconds)
    assert backoff >= 0.19  # backoff_seconds: 0.2, no jitter


def test_segments_start_and_end_when_the_events_say(cmd_run: Run, cmd_report: RunReport) -> None:
    events = cmd_run.events()
    start = datetime.datetime.fromisoformat(cmd_run.state()["started_at"])
    for step in ("prepare", "unit", "broken"):
        (_, began), (_, ended) = _times(events, step)
        (segment,) = cmd_report.step(step).segments
        assert segment.offset_seconds == pytest.approx((began - start).total_seconds(), abs=1e-3)
        assert segment.duration_seconds == pytest.approx((ended - began).total_seconds(), abs=1e-3)


def test_step_durations_are_the_recorded_ones(cmd_run: Run, cmd_report: RunReport) -> None:
    recorded = cmd_run.state()["steps"]
    for step in cmd_report.steps:
        assert step.duration_seconds == recorded[step.id].get("duration_seconds"), step.id
    assert (cmd_report.step("prepare").duration_seconds or 0) >= 0.3
    assert (cmd_report.step("unit").duration_seconds or 0) >= 0.5


def test_the_run_duration_is_from_its_start_to_its_end(cmd_run: Run, cmd_report: RunReport) -> None:
    state = cmd_run.state()
    took = datetime.datetime.fromisoformat(state["finished_at"]) - datetime.datetime.fromisoformat(
        state["started_at"]
    )
    assert cmd_report.status == "succeeded"
    assert cmd_report.duration_seconds == pytest.approx(took.total_seconds(), abs=1e-3)
    assert cmd_report.status_counts() == {"succeeded": 6, "failed": 1, "skipped": 2}


def test_a_failed_step_keeps_its_exit_code_error_and_output(cmd_report: RunReport) -> None:
    broken = cmd_report.step("broken")
    assert (broken.status, broken.exit_code, broken.conclusion) == ("failed", 3, "success")
    assert broken.error == "command exited with code 3"
    assert "boom" in {t.name: t.text for t in broken.tails}["error.txt"]


def test_a_skipped_step_has_its_reason_and_when_it_was_skipped(cmd_report: RunReport) -> None:
    never = cmd_report.step("never")
    assert never.status == "skipped" and never.segments == []
    assert never.reason == "skipped: condition false is false"
    broken_end = cmd_report.step("broken").segments[0]
    assert never.skipped_offset_seconds is not None
    assert never.skipped_offset_seconds >= broken_end.offset_seconds
    assert cmd_report.step("no_branch").reason == "skipped: branch not taken"


def test_a_control_step_spans_its_children(cmd_report: RunReport) -> None:
    (checks,) = cmd_report.step("checks").segments
    for child in ("lint", "unit"):
        (segment,) = cmd_report.step(child).segments
        assert checks.offset_seconds <= segment.offset_seconds
        end = segment.offset_seconds + segment.duration_seconds
        assert end <= checks.offset_seconds + checks.duration_seconds + 1e-3


def test_cmd_steps_show_their_command_policy_decisions(cmd_report: RunReport) -> None:
    (decision,) = cmd_report.step("prepare").decisions
    assert decision.kind == "command" and decision.allowed
    assert decision.subject.startswith("sleep 0.3; echo")
    assert decision.rule == "cmd.no_allowlist"


def test_each_step_lists_every_file_of_its_folder(cmd_run: Run, cmd_report: RunReport) -> None:
    for step in cmd_report.steps:
        folder = cmd_run.directory / step.id
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert [a.name for a in step.artifacts] == (files if folder.is_dir() else []), step.id


# -- HTML --------------------------------------------------------------------------------------
def test_html_escapes_hostile_step_output(cmd_report: RunReport) -> None:
    text = render(cmd_report, "html")
    page = Page(text)
    assert "script" not in {tag for tag, _ in page.tags}
    assert "<script>" not in text and "<b>bold</b>" not in text and "<b>build</b>" not in text
    assert HOSTILE in page.all_text()  # shown as text, in the outputs and the output file
    assert "Prepare the <b>build</b>" in page.all_text()


def test_html_fetches_nothing_and_runs_nothing(cmd_report: RunReport) -> None:
    page = Page(render(cmd_report, "html"))
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "base", "form"}
    assert not [a for _, a in page.tags if "src" in a or any(k.startswith("on") for k in a)]
    assert all(not re.match(r"^[a-z]+:", h) for h in page.hrefs())  # relative links only
    (policy,) = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert policy["content"].startswith("default-src 'none';")


def test_html_links_reach_every_artifact_file(cmd_run: Run, cmd_report: RunReport) -> None:
    page = Page(render(cmd_report, "html"))
    linked = _linked_files(page.hrefs(), cmd_run.directory)
    assert linked == _files_under(cmd_run.directory)
    assert all(path.is_file() for path in linked)


def test_links_follow_the_report_to_another_directory(cmd_run: Run, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "deep" / "report.html"
    written = write_report(cmd_run.app.workflow.state_store(), cmd_run.run_id, "html", target)
    assert written.path == target and target.is_file()
    hrefs = Page(target.read_text()).hrefs()
    assert all(h.startswith("../") for h in hrefs if not h.startswith("#"))
    assert _linked_files(hrefs, target.parent) == _files_under(cmd_run.directory)


def test_html_timeline_has_a_bar_per_attempt_and_a_mark_per_skipped_step(
    cmd_report: RunReport,
) -> None:
    page = Page(render(cmd_report, "html"))
    bars = page.with_class("rect", "bar")
    per_step: dict[str, list[str]] = {}
    for bar in bars:
        per_step.setdefault(bar["data-step"], []).append(bar["data-status"])
    assert per_step["flaky"] == ["retried", "succeeded"]
    assert per_step["broken"] == ["failed"]
    assert per_step["never"] == ["skipped"]
    assert set(per_step) == set(CMD_ORDER)
    assert [b["data-step"] for b in bars if "mark" in b["class"]] == ["never", "no_branch"]


# -- Markdown and JSON -------------------------------------------------------------------------
def _outside_fences(text: str) -> str:
    kept, fence = [], ""
    for line in text.splitlines():
        marks = re.match(r"^(`{3,})", line)
        if fence:
            if marks and marks.group(1) == fence:
                fence = ""
            continue
        if marks:
            fence = marks.group(1)
            continue
        kept.append(line)
    return "\n".join(kept)


def test_markdown_has_a_row_per_step_and_fenced_output(cmd_report: RunReport) -> None:
    text = render(cmd_report, "md")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for step in CMD_ORDER:
        assert any(re.match(rf"^\| (&nbsp;)*{step} \|", r) for r in rows), step
    assert any("flaky" in r and "2 (1 retried)" in r for r in rows)
    assert f"```text\n{HOSTILE}\n```" in text  # output.txt, untouched inside its fence


def test_markdown_escapes_hostile_text_outside_code(cmd_report: RunReport) -> None:
    prose = _outside_fences(render(cmd_report, "md"))
    assert "<script" not in prose and "<b>" not in prose  # the step's name and its output
    assert "&lt;script&gt;" in prose  # the stdout output, in a table cell


def test_markdown_links_reach_every_artifact_file(cmd_run: Run, cmd_report: RunReport) -> None:
    text = render(cmd_report, "md")
    hrefs = re.findall(r"\]\(([^)]+)\)", text)
    assert _linked_files(hrefs, cmd_run.directory) == _files_under(cmd_run.directory)


def test_json_is_the_report_model(cmd_report: RunReport) -> None:
    data = json.loads(render(cmd_report, "json"))
    assert data == json.loads(json.dumps(cmd_report.to_dict()))
    assert data["format"] == "bcce.run-report/1"
    flaky = next(s for s in data["steps"] if s["id"] == "flaky")
    assert [s["status"] for s in flaky["segments"]] == ["retried", "succeeded"]
    assert flaky["retries"] == 1


# -- the command -------------------------------------------------------------------------------
def test_report_writes_html_into_the_run_directory_and_prints_its_path(cmd_run: Run) -> None:
    result = cmd_run.cli("workflow", "report", cmd_run.run_id)
    assert result.exit_code == 0, result.output
    path = cmd_run.directory / "report.html"
    assert result.output.strip() == str(path)
    assert Page(path.read_text()).all_text().count("flaky") >= 3


def test_report_md_and_json_go_to_standard_output(cmd_run: Run) -> None:
    markdown = cmd_run.cli("workflow", "report", cmd_run.run_id, "--format", "md")
    data = cmd_run.cli("workflow", "report", cmd_run.run_id, "--format", "json")
    assert markdown.exit_code == 0 and data.exit_code == 0
    assert markdown.output.startswith("# Run cmd-run — report-demo (succeeded)\n")
    assert json.loads(data.output)["run_id"] == cmd_run.run_id


def test_report_output_option_writes_that_file(cmd_run: Run, tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.json"
    result = cmd_run.cli("workflow", "report", cmd_run.run_id, "--format", "json", "-o", target)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(target)
    assert json.loads(target.read_text())["workflow"] == "report-demo"


def test_html_can_go_to_standard_output(cmd_run: Run) -> None:
    result = cmd_run.cli("workflow", "report", cmd_run.run_id, "--output", "-")
    assert result.exit_code == 0
    assert result.output.startswith("<!DOCTYPE html>")


def test_an_unknown_run_gets_the_error_status_gives(cmd_run: Run) -> None:
    report = cmd_run.cli("workflow", "report", "no-such-run")
    status = cmd_run.cli("workflow", "status", "no-such-run")
    assert report.exit_code == status.exit_code == 2
    assert report.output == status.output
    assert "no run no-such-run" in report.output and "Traceback" not in report.output


def test_the_html_report_is_stored_with_the_runs_files(
    make_workflow_app: Callable[..., Application],
    run_workflow: Callable[..., Any],
    tmp_path: Path,
) -> None:
    from bcce.cli.main import cli

    elsewhere = tmp_path / "stored"
    app = make_workflow_app(storage={"root": str(elsewhere)})
    ran = run_workflow("version: 1\nworkflow: w\nsteps:\n  - {id: a, type: cmd, command: 'true'}\n")
    result = CliRunner().invoke(cli, ["workflow", "report", ran.run_id], obj=app)
    assert result.exit_code == 0, result.output
    assert (elsewhere / ran.run_id / "report.html").read_bytes() == (
        ran.directory / "report.html"
    ).read_bytes()


# -- runs still running, killed, resumed, damaged -----------------------------------------------
SLEEPER = """
version: 1
workflow: long
steps:
  - {id: quick, type: cmd, command: "true"}
  - {id: sleeper, type: cmd, command: "echo $$ > sleeper.pid; exec sleep 30"}
  - {id: after, type: cmd, command: "true"}
"""


@pytest.fixture
def sleeping_run(
    write_workflow: Callable[..., Path],
    spawn_bcce: Callable[..., Any],
    wait_until: Callable[..., None],
    read_pids: Callable[[Path], list[int]],
    kill_leftovers: Callable[[list[int]], None],
    tmp_path: Path,
) -> Any:
    """A run driven by a subprocess, waiting in its ``sleeper`` step; returns the process."""
    path = write_workflow(SLEEPER)
    process = spawn_bcce("workflow", "run", path, "--run-id", "sleepy")
    pid_file = tmp_path / "sleeper.pid"
    wait_until(lambda: pid_file.is_file() and pid_file.read_text().strip(), what="the sleeper")
    kill_leftovers(read_pids(pid_file))
    return process


def test_a_running_run_is_reported_running_with_an_open_segment(
    sleeping_run: Any, workflow_app: Application
) -> None:
    report = build_report(workflow_app.workflow.state_store(), "sleepy")
    assert report.status == "running"
    (segment,) = report.step("sleeper").segments
    assert (segment.status, segment.open) == ("running", True)
    assert report.step("after").status == "pending" and report.step("after").segments == []
    assert "still running" in render(report, "html")


def test_a_killed_run_is_reported_interrupted(
    sleeping_run: Any, workflow_app: Application, wait_until: Callable[..., None]
) -> None:
    sleeping_run.kill()
    sleeping_run.wait(timeout=10)
    store = workflow_app.workflow.state_store()
    wait_until(lambda: not store.is_driven("sleepy"), what="the lock to be free")
    report = build_report(store, "sleepy")
    assert report.status == "interrupted"
    sleeper = report.step("sleeper")
    assert sleeper.status == "interrupted"
    assert [(s.status, s.open) for s in sleeper.segments] == [("interrupted", True)]
    assert "bcce workflow resume sleepy" in Page(render(report, "html")).all_text()


def test_a_resumed_run_shows_each_attempt_and_the_resume(
    run_workflow: Callable[..., Any],
    bcce: Callable[..., Result],
    workflow_app: Application,
    tmp_path: Path,
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: resumable
        steps:
          - {id: first, type: cmd, command: "true"}
          - {id: gated, type: cmd, command: "test -f gate.flag"}
        """,
        run_id="resumed",
    )
    assert ran.exit_code == 1
    (tmp_path / "gate.flag").touch()
    assert bcce("workflow", "resume", "resumed").exit_code == 0
    report = build_report(workflow_app.workflow.state_store(), "resumed")
    assert (report.status, report.resumes, len(report.resume_offsets)) == ("succeeded", 1, 1)
    gated = report.step("gated")
    assert [(s.attempt, s.status) for s in gated.segments] == [(1, "failed"), (2, "succeeded")]
    assert gated.segments[0].offset_seconds < report.resume_offsets[0]
    assert gated.segments[1].offset_seconds >= report.resume_offsets[0]
    assert report.step("first").kept


def test_missing_and_damaged_files_leave_their_parts_empty(
    run_workflow: Callable[..., Any], workflow_app: Application
) -> None:
    ran = run_workflow(
        """
        version: 1
        workflow: damaged
        steps:
          - {id: one, type: cmd, command: "echo hi"}
          - {id: two, type: cmd, command: "echo there"}
        """,
        run_id="damaged",
    )
    events = ran.directory / "events.jsonl"
    lines = events.read_text().splitlines()
    events.write_text("\n".join(lines[:-3]) + '\n{"type": "step.comp')  # a torn last line
    shutil.rmtree(ran.directory / "two")
    (ran.directory / "junit.xml").unlink()
    report = build_report(workflow_app.workflow.state_store(), "damaged")
    assert [s.status for s in report.steps] == ["succeeded", "succeeded"]
    assert report.step("two").artifacts == [] and report.step("two").tails == []
    assert "junit.xml" not in {f.name for f in report.files}
    assert all(render(report, fmt) for fmt in ("html", "md", "json"))


# -- the quickstart: an agent step, denials, an applied fix ------------------------------------
@pytest.mark.e2e
def test_agent_denials_come_from_its_decisions_and_are_highlighted(
    quickstart_run: Run, qs_report: RunReport
) -> None:
    recorded = [
        json.loads(line)
        for line in (quickstart_run.directory / "fix" / "decisions.jsonl").read_text().splitlines()
    ]
    fix = qs_report.step("fix")
    assert [(d.tool, d.allowed, d.rule) for d in fix.decisions] == [
        (r["tool"], r["allowed"], r["rule"]) for r in recorded
    ]
    assert {d.rule for d in fix.denials} == {"path.outside_workspace", "cmd.not_allowlisted"}
    rows = Page(render(qs_report, "html")).with_class("tr", "denied")
    assert sum(1 for r in rows if r.get("data-allowed") == "false") == 2


@pytest.mark.e2e
def test_the_applied_diff_is_shown_with_added_and_removed_lines_marked(
    quickstart_run: Run, qs_report: RunReport
) -> None:
    (applied,) = [d for d in qs_report.step("apply").diffs if d.kind == "applied"]
    assert applied.text == (
        quickstart_run.directory / "apply" / "applied.patch"
    ).read_text().rstrip("\n")
    assert (applied.files, applied.added, applied.removed) == (["calculator.py"], 1, 1)
    text = render(qs_report, "html")
    assert (
        '<span class="ln add">+    return sum(values) / len(values)</span>' in text
        and '<span class="ln del">-    return sum(values) // len(values)</span>' in text
    )
    assert "```diff\n" in render(qs_report, "md")


@pytest.mark.e2e
def test_the_approval_says_who_and_how(qs_report: RunReport) -> None:
    approval = qs_report.step("apply").approval
    assert approval is not None
    assert (approval.verdict, approval.via, approval.steps) == ("approved", "command line", ["fix"])


@pytest.mark.e2e
def test_cost_and_tokens_are_the_recorded_usage(quickstart_run: Run, qs_report: RunReport) -> None:
    (recorded,) = [e["payload"] for e in quickstart_run.events() if e["type"] == "cost.recorded"]
    usage = json.loads((quickstart_run.directory / "fix" / "usage.json").read_text())
    fix = qs_report.step("fix").usage
    assert fix is not None
    assert fix.cost_usd == pytest.approx(recorded["total_cost_usd"])
    assert fix.cost_usd == pytest.approx(usage["total_cost_usd"])
    assert (fix.input_tokens, fix.output_tokens) == (
        recorded["input_tokens"],
        recorded["output_tokens"],
    )
    assert qs_report.total_cost_usd == pytest.approx(usage["total_cost_usd"])
    assert "$0.0042" in Page(render(qs_report, "html")).all_text()


@pytest.mark.e2e
def test_agent_run_links_reach_every_artifact_file(
    quickstart_run: Run, qs_report: RunReport
) -> None:
    hrefs = Page(render(qs_report, "html")).hrefs()
    assert _linked_files(hrefs, quickstart_run.directory) == _files_under(quickstart_run.directory)


@pytest.mark.e2e
def test_a_step_stopped_by_its_budget_says_so(tmp_path: Path) -> None:
    document = yaml.safe_load((QUICKSTART / "workflow.yml").read_text())
    fix = next(step for step in document["steps"] if step["id"] == "fix")
    fix["max_budget_usd"] = 0.001  # the scripted session costs $0.0042
    workflow = tmp_path / "budget.yml"
    workflow.write_text(yaml.safe_dump(document, sort_keys=False))
    with _quickstart(tmp_path, "over-budget", workflow) as run:
        report = run.report()
    step = report.step("fix")
    assert (report.status, step.status) == ("failed", "failed")
    (note,) = step.budget_notes
    assert note.startswith("the step budget was exceeded: $") and note.endswith(" of $0.0010")
    assert step.error is not None and step.error.startswith("budget exceeded")
    assert "Budget: the step budget was exceeded" in Page(render(report, "html")).all_text()
