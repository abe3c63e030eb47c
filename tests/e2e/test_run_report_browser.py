"""The HTML run report, rendered in headless Chromium and checked as a person would see it.

One real run for the module: the quickstart's steps (a failing test run, the agent step whose
scripted replies make two denied tool calls and a fix, apply_diff applying it) with cmd steps
around them (a retried step, a parallel block, a skipped step). Its ``bcce workflow report`` page
is loaded from its file:// URL with every other request blocked, and the page's geometry and
computed styles are compared with what events.jsonl and the run directory say. A full-page
screenshot is kept in ``test-artifacts/run-report.png`` at the repository root.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pytest
import yaml
from click.testing import CliRunner

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"
SCREENSHOT = REPO / "test-artifacts" / "run-report.png"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Steps added around the quickstart's own: known durations, a retry, parallel, a skip.
EXTRA_BEFORE_FIX: list[dict[str, Any]] = [
    {"id": "warm_up", "type": "cmd", "command": "sleep 0.4"},
    {
        "id": "flaky",
        "type": "cmd",
        "command": 'test -f "$BCCE_RUN_DIR/flaky.flag" || '
        '{ touch "$BCCE_RUN_DIR/flaky.flag"; sleep 0.3; exit 1; }; sleep 0.5',
        "retry": {"max_attempts": 2, "backoff_seconds": 0.3, "jitter": False},
    },
    {
        "id": "checks",
        "type": "parallel",
        "steps": [
            {"id": "lint", "type": "cmd", "command": "sleep 0.5"},
            {"id": "unit", "type": "cmd", "command": "sleep 0.9"},
        ],
    },
]
EXTRA_BEFORE_LAST: list[dict[str, Any]] = [
    {"id": "docs", "type": "cmd", "command": "echo never", "if": "false"},
]
ENDS = {
    "step.completed",
    "step.failed",
    "step.timed_out",
    "step.cancelled",
    "step.retrying",
    "step.awaiting_approval",
}
MIN_CHECKED_WIDTH = 4.0  # px: narrower bars are drawn at a minimum width


@dataclass
class Rendered:
    """The report of the run, open in Chromium, and what the run recorded."""

    run_dir: Path
    report: Path
    context: BrowserContext
    page: Page
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    blocked: list[str] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "run.json").read_text())
        return data

    def attempts(self) -> list[tuple[str, int, float, float]]:
        """(step, attempt, start, end) of every attempt, in seconds, from events.jsonl."""
        started: dict[str, tuple[int, float]] = {}
        found = []
        for line in (self.run_dir / "events.jsonl").read_text().splitlines():
            event = json.loads(line)
            step = event["payload"].get("step")
            moment = datetime.datetime.fromisoformat(event["time"]).timestamp()
            if event["type"] == "step.started":
                started[step] = (event["payload"]["attempt"], moment)
            elif event["type"] in ENDS and step in started:
                attempt, began = started.pop(step)
                found.append((step, attempt, began, moment))
        return found


def _workflow(path: Path) -> Path:
    """The quickstart workflow with the extra steps spliced in."""
    document = yaml.safe_load((QUICKSTART / "workflow.yml").read_text())
    steps = document["steps"]
    at_fix = next(i for i, s in enumerate(steps) if s["id"] == "fix")
    steps[at_fix:at_fix] = EXTRA_BEFORE_FIX
    steps[-1:-1] = EXTRA_BEFORE_LAST
    document["workflow"] = "report-browser"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium package "
            "(apt-get install chromium, or `make system-deps`)"
        )
    from bcce.application import create_application
    from bcce.cli.main import cli
    from bcce.settings.layers import LayerOptions

    root = tmp_path_factory.mktemp("report-browser")
    project = root / "project"
    shutil.copytree(QUICKSTART / "project", project)
    runs = root / "runs"
    app = create_application(
        options=LayerOptions(
            environ={"PATH": os.environ["PATH"]}, cwd=root, user_config_file=root / "none.yaml"
        ),
        storage={"root": str(runs)},
        workflow={"state_dir": str(runs), "kill_grace_seconds": 0.3},
        agent={"provider": "scripted", "script": str(QUICKSTART / "scripts"), "max_turns": 20},
    )
    try:
        workflow = _workflow(root / "workflow.yml")
        argv = ["workflow", "run", str(workflow), "--run-id", "browser", "--approve"]
        ran = CliRunner().invoke(cli, [*argv, "--workspace", str(project)], obj=app)
        assert ran.exit_code == 0, ran.output
        reported = CliRunner().invoke(cli, ["workflow", "report", "browser"], obj=app)
        assert reported.exit_code == 0, reported.output
        report = Path(reported.output.strip())
    finally:
        app.shutdown_resources()
        app.reset_singletons()

    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(root / "chromium-profile"),  # a fresh user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        rendered = Rendered(runs / "browser", report, context, context.new_page())

        def gate(route: Any) -> None:
            if route.request.url.startswith("file:"):
                route.continue_()
            else:
                rendered.blocked.append(route.request.url)
                route.abort()

        context.route("**/*", gate)
        context.on("request", lambda request: rendered.requests.append(request.url))
        rendered.page.goto(report.as_uri(), wait_until="load")
        try:
            yield rendered
        finally:
            context.close()


def _bars(page: Page) -> list[dict[str, Any]]:
    """Every timeline bar: its data attributes and its box on the page (CSS pixels)."""
    bars: list[dict[str, Any]] = page.eval_on_selector_all(
        "svg.timeline rect.bar",
        """els => els.map(el => {
            const box = el.getBoundingClientRect();
            return {step: el.dataset.step, attempt: Number(el.dataset.attempt || 0),
                    status: el.dataset.status, mark: el.classList.contains('mark'),
                    x: box.x, width: box.width, fill: getComputedStyle(el).fill};
        })""",
    )
    return bars


def _rgb(colour: str) -> tuple[int, ...]:
    return tuple(int(float(v)) for v in colour[colour.index("(") + 1 : -1].split(",")[:3])


def _scale(rendered: Rendered) -> tuple[float, float]:
    """Pixels per second and the x of time 0, fitted over every attempt's bar."""
    boxes = {(b["step"], b["attempt"]): b for b in _bars(rendered.page) if not b["mark"]}
    points = [(began, boxes[(step, n)]["x"]) for step, n, began, _ in rendered.attempts()]
    mean_t = sum(t for t, _ in points) / len(points)
    mean_x = sum(x for _, x in points) / len(points)
    slope = sum((t - mean_t) * (x - mean_x) for t, x in points) / sum(
        (t - mean_t) ** 2 for t, _ in points
    )
    return slope, mean_x - slope * mean_t


# -- the page --------------------------------------------------------------------------------
def test_the_page_requests_nothing_but_its_own_file(rendered: Rendered) -> None:
    assert rendered.blocked == []
    assert [url for url in rendered.requests if not url.startswith("file:")] == []
    assert rendered.requests == [rendered.report.as_uri()]


def test_each_step_has_a_bar_and_a_retried_step_one_per_attempt(rendered: Rendered) -> None:
    counts: dict[str, int] = {}
    for bar in _bars(rendered.page):
        counts[bar["step"]] = counts.get(bar["step"], 0) + 1
    expected = dict.fromkeys(rendered.state()["order"], 1)
    expected["flaky"] = 2
    assert counts == expected


def test_bars_sit_on_the_time_axis_at_their_start_time(rendered: Rendered) -> None:
    slope, origin = _scale(rendered)
    boxes = {(b["step"], b["attempt"]): b for b in _bars(rendered.page) if not b["mark"]}
    attempts = sorted(rendered.attempts(), key=lambda a: a[2])
    xs = [boxes[(step, n)]["x"] for step, n, _, _ in attempts]
    assert slope > 50  # px per second: the run spans a good part of the page
    assert xs == sorted(xs)
    for step, n, began, _ in attempts:
        assert boxes[(step, n)]["x"] == pytest.approx(origin + slope * began, abs=1.5), step


def test_bar_widths_are_in_proportion_to_durations(rendered: Rendered) -> None:
    slope, _ = _scale(rendered)
    boxes = {(b["step"], b["attempt"]): b for b in _bars(rendered.page) if not b["mark"]}
    checked = 0
    for step, n, began, ended in rendered.attempts():
        expected = (ended - began) * slope
        if expected >= MIN_CHECKED_WIDTH:
            assert boxes[(step, n)]["width"] == pytest.approx(expected, abs=1.5), step
            checked += 1
    assert checked >= 8  # warm_up, flaky twice, checks, lint, unit, fix, tests_before...


def test_bars_are_coloured_by_status_as_the_legend_says(rendered: Rendered) -> None:
    fills: dict[str, set[tuple[int, ...]]] = {}
    for bar in _bars(rendered.page):
        fills.setdefault(bar["status"], set()).add(_rgb(bar["fill"]))
    assert set(fills) == {"succeeded", "failed", "retried", "skipped"}
    assert all(len(colours) == 1 for colours in fills.values()), fills
    colour = {status: next(iter(colours)) for status, colours in fills.items()}
    red, green, blue = colour["succeeded"]
    assert green > red + 40 and green > blue + 40
    red, green, blue = colour["failed"]
    assert red > green + 80 and red > blue + 80
    assert len(set(colour.values())) == 4
    legend = rendered.page.eval_on_selector_all(
        "#legend [data-status]",
        "els => els.map(el => [el.dataset.status,"
        " getComputedStyle(el.querySelector('.swatch')).backgroundColor])",
    )
    assert {status: _rgb(swatch) for status, swatch in legend} == colour


def test_denied_tool_calls_are_highlighted(rendered: Rendered) -> None:
    page = rendered.page
    rows = page.locator("#step-fix table.decisions tr[data-allowed]")
    denied = page.locator("#step-fix table.decisions tr[data-allowed='false']")
    assert denied.count() == 2 and rows.count() > denied.count()
    highlight = _rgb(
        denied.first.locator("td").first.evaluate("e => getComputedStyle(e).backgroundColor")
    )
    plain = page.locator("#step-fix table.decisions tr[data-allowed='true'] td").first.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    assert highlight[0] > highlight[1] + 10 and plain == "rgba(0, 0, 0, 0)"
    chip = denied.first.locator(".chip")
    assert chip.inner_text() == "denied"
    assert _rgb(chip.evaluate("e => getComputedStyle(e).backgroundColor"))[0] > 200
    assert "path.outside_workspace" in denied.nth(0).inner_text()
    assert "cmd.not_allowlisted" in denied.nth(1).inner_text()
    assert page.locator("svg.timeline .denial-mark[data-step='fix']").count() == 2


def test_the_applied_diff_is_visible_with_its_lines_coloured(rendered: Rendered) -> None:
    block = rendered.page.locator("#step-apply .diff-block.kind-applied")
    assert block.is_visible()
    added = block.locator(".ln.add", has_text="return sum(values) / len(values)")
    removed = block.locator(".ln.del", has_text="return sum(values) // len(values)")
    assert added.is_visible() and removed.is_visible()
    red, green, _ = _rgb(added.evaluate("e => getComputedStyle(e).backgroundColor"))
    assert green > red
    red, green, _ = _rgb(removed.evaluate("e => getComputedStyle(e).backgroundColor"))
    assert red > green
    approval = rendered.page.locator("#step-apply .approval").inner_text()
    assert approval.startswith("Approved by ") and approval.endswith(" via command line")


def test_every_link_points_to_an_existing_artifact(rendered: Rendered) -> None:
    hrefs = rendered.page.eval_on_selector_all(
        "a[href]:not([href^='#'])", "els => els.map(el => el.href)"
    )
    files = [Path(unquote(urlparse(href).path)) for href in hrefs]
    assert all(href.startswith("file://") for href in hrefs)
    assert all(path.is_file() for path in files), [p for p in files if not p.is_file()]
    artifacts = {
        p.resolve()
        for step in rendered.state()["order"]
        if (rendered.run_dir / step).is_dir()
        for p in (rendered.run_dir / step).rglob("*")
        if p.is_file()
    }
    assert artifacts <= {p.resolve() for p in files}


def test_a_narrow_window_keeps_the_page_within_its_width(rendered: Rendered) -> None:
    page = rendered.context.new_page()
    try:
        page.set_viewport_size({"width": 420, "height": 800})
        page.goto(rendered.report.as_uri(), wait_until="load")
        assert page.evaluate("document.documentElement.scrollWidth") <= 420
        wrap = page.locator(".timeline-wrap")  # the timeline scrolls inside its own box
        assert wrap.evaluate("e => e.scrollWidth > e.clientWidth")
    finally:
        page.close()


def test_a_full_page_screenshot_is_kept(rendered: Rendered) -> None:
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    rendered.page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
